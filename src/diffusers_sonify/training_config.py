"""Configuration of `train_scripts/train.py`: one dataclass, parsed from YAML + flags by the shared loader.

    accelerate launch train_scripts/train.py train_scripts/configs/sd15_clap.yaml --learning_rate 5e-5

`__post_init__` checks every field and every cross-field rule (and every local path), so a wrong combination fails
at parse time, in about a second, with a message naming the fields involved. This module does not import torch.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from typing import ClassVar, Optional

from .config_loading import load_mapping, parse_config_args, require_positive

ADAPTER_INPUT_TYPES = ("pooled", "hidden_states", "both")
ADAPTER_HIDDEN_POOLS = ("mean", "max")
MIXED_PRECISION = ("no", "fp16", "bf16")
TIMESTEP_SAMPLINGS = ("uniform", "logit_normal")
OPTIMIZERS = ("adamw", "muon")
LOSS_TYPES = ("mse", "rms", "l1", "huber")
# diffusers' processors for the plain attention of UNet2DConditionModel: products and softmax, or torch's fused kernel
ATTENTION_PROCESSORS = ("AttnProcessor", "AttnProcessor2_0")
REPA_BLOCK = re.compile(r"mid_block|(down|up)_blocks\.(\d+)")  # the names diffusers_sonify.repa accepts

# diffusers.optimization.SchedulerType values (a test keeps them equal; importing diffusers here would cost seconds)
LR_SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "piecewise_constant",
)
# the same pattern huggingface_hub's validate_repo_id applies: optional namespace, then a name
HUB_ID = re.compile(r"(\b[\w\-.]{1,96}\b/)?\b[\w\-.]{1,96}\b")
UNET_DEFAULT_BLOCKS = 4  # UNet2DConditionModel's default block_out_channels has four entries
BAD_ROWS_HELP = (
    "Rows whose image or audio cannot be decoded (corrupt or truncated file, NaN/inf samples, empty clip) are "
    "found before training, skipped and counted; each is logged as `<dataset> row <i> column <name>: <reason>` "
    "and listed in <output_dir>/skipped_rows.jsonl. Training stops if no row is left."
)


def _help(text: str, **kw):
    return field(metadata={"help": text}, **kw)


def is_hub_id(value: str) -> bool:
    """Whether `value` has the shape of a Hub repo id (`name` or `namespace/name`)."""
    return bool(HUB_ID.fullmatch(value)) and "--" not in value and ".." not in value and not value.endswith(".git")


def looks_like_local_path(value: str) -> bool:
    """Paths a user means as local files: absolute, `~`, `./`, `../`, or more than one `/`."""
    return (
        value.startswith(("/", "~", "./", "../", ".\\")) or value.count("/") > 1 or (os.sep != "/" and os.sep in value)
    )


def check_local_or_hub(name: str, value: str | None) -> None:
    """A value that names an existing local path or has the shape of a Hub id; otherwise a clear error."""
    if value is None or os.path.exists(os.path.expanduser(value)):
        return
    if looks_like_local_path(value) or not is_hub_id(value):
        raise FileNotFoundError(
            f"`{name}`={value!r} is not an existing local path (relative paths start at {os.getcwd()}) and not a "
            "Hub id like `org/name`."
        )


def spatial_multiple(unet_config: dict, vae_config: dict | None = None) -> int:
    """The factor training images' sides must be a multiple of: the VAE's downsampling times the UNet's.

    A UNet with `n` down blocks halves its input `n - 1` times; a VAE with `m` blocks downsamples `2 ** (m - 1)`.
    """
    unet_blocks = len(unet_config.get("block_out_channels") or [0] * UNET_DEFAULT_BLOCKS)
    vae = 1 if vae_config is None else 2 ** (len(vae_config.get("block_out_channels") or [0]) - 1)
    return vae * 2 ** (unet_blocks - 1)


def check_resolution(resolution: int, multiple: int, where: str) -> None:
    if resolution % multiple:
        lower, upper = resolution // multiple * multiple, (resolution // multiple + 1) * multiple
        raise ValueError(
            f"`resolution`={resolution} is not a multiple of {multiple}, the spatial multiple of {where}; "
            f"use {lower or upper} or {upper}."
        )


def check_logit_normal(mean: float, std: float) -> None:
    """Raise `ValueError` unless a logit-normal timestep draw's mean is finite and its std finite and positive."""
    if not (math.isfinite(mean) and math.isfinite(std)):
        raise ValueError(
            "`timestep_logit_mean` and `timestep_logit_std` must be finite numbers (0.0 and 1.0 are the paper's "
            f"values), got {mean} and {std}."
        )
    if not std > 0:
        raise ValueError(f"`timestep_logit_std` must be positive (1.0 is the paper's value), got {std}.")


def check_loss_options(loss_type: str, huber_c: float, rms_max_timestep: int | None) -> None:
    """Raise `ValueError` unless `loss_type` is known, `huber_c` finite and positive, and `rms_max_timestep` unset or
    a positive integer given with `loss_type: rms` (the training config and `training_utils.diffusion_loss` both)."""
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"`loss_type` must be one of {LOSS_TYPES}, got {loss_type!r}.")
    if not (math.isfinite(huber_c) and huber_c > 0):
        raise ValueError(f"`huber_c` must be positive, got {huber_c}.")
    if rms_max_timestep is None:
        return
    if loss_type != "rms":
        raise ValueError(
            f"`rms_max_timestep` applies to `loss_type: rms` only, got it with `loss_type: {loss_type}`; unset it or "
            "use `loss_type: rms`."
        )
    if isinstance(rms_max_timestep, bool) or not isinstance(rms_max_timestep, int) or rms_max_timestep <= 0:
        raise ValueError(f"`rms_max_timestep` must be a positive integer timestep, got {rms_max_timestep!r}.")


@dataclass
class TrainingConfig:
    """All settings of one training run. Fields are grouped: model, data, optimisation, conditioning, state,
    validation, Hub."""

    # fields whose relative paths in a YAML file are resolved against the YAML file's folder
    PATH_FIELDS: ClassVar[tuple[str, ...]] = ("validation_audio", "unet_config", "scheduler_config")

    # ---- model ----------------------------------------------------------------------------------------------------
    pretrained_pipeline: Optional[str] = _help(
        "Continue from an AudioToImagePipeline folder or Hub id (its components replace the model fields below).",
        default=None,
    )
    pretrained_model_name_or_path: Optional[str] = _help(
        "Base text-to-image model (folder/id with unet, vae, scheduler subfolders).", default=None
    )
    revision: Optional[str] = _help("Revision of the base model on the Hub.", default=None)
    unet_config: Optional[str] = _help(
        "Build a fresh UNet2DConditionModel from this config (inline YAML mapping, JSON string or JSON/YAML path). "
        "3 input channels: pixel space, no VAE.",
        default=None,
    )
    scheduler_config: Optional[str] = _help(
        "DDPMScheduler config (inline mapping, JSON or path) when no base model supplies `scheduler/`.", default=None
    )
    audio_encoder_name_or_path: Optional[str] = _help(
        "Audio encoder + feature extractor folder/id, e.g. laion/clap-htsat-unfused.", default=None
    )
    audio_encoder_class: str = _help(
        "transformers class: ClapModel, ClapAudioModelWithProjection or ASTModel.",
        default="ClapAudioModelWithProjection",
    )
    adapter_input_type: str = _help("AudioProjectionModel input: pooled, hidden_states or both.", default="both")
    num_pooled_tokens: int = _help("Adapter tokens from the pooled embedding.", default=4)
    num_hidden_tokens: int = _help("Adapter tokens from the encoder hidden states.", default=8)
    adapter_hidden_pool: str = _help(
        "How the adapter pools runs of encoder hidden states into tokens: mean, or max (keeps short events).",
        default="mean",
    )
    use_text_encoder: bool = _help(
        "Keep the base model's text encoder (frozen); text tokens precede the audio tokens.", default=False
    )

    # ---- data -----------------------------------------------------------------------------------------------------
    dataset_name: Optional[str] = _help(
        "save_to_disk folder, Parquet/Hub-layout folder or Hub dataset id. " + BAD_ROWS_HELP, default=None
    )
    dataset_split: str = _help("Split to train on.", default="train")
    image_column: str = _help("Image column.", default="image")
    audio_column: str = _help("Audio column.", default="audio")
    caption_column: Optional[str] = _help("Optional text column (needs `use_text_encoder`).", default=None)
    resolution: int = _help(
        "Training images are resized and centre-cropped to this; a multiple of the model's spatial multiple "
        "(VAE x UNet downsampling, e.g. 64 for SD 1.5).",
        default=512,
    )
    max_train_samples: Optional[int] = _help("Use only the first N rows.", default=None)
    dataloader_num_workers: int = _help("DataLoader worker processes.", default=0)

    # ---- optimisation ---------------------------------------------------------------------------------------------
    output_dir: str = _help(
        "Where the pipeline, LoRA weights, model card, checkpoints and logs go.", default="sonify-model"
    )
    seed: int = _help("Seeds initialisation, data order, noise, dropout and validation.", default=0)
    train_batch_size: int = _help("Batch size per process.", default=4)
    num_train_epochs: int = _help("Epochs (ignored when max_train_steps is set).", default=1)
    max_train_steps: Optional[int] = _help("Total optimizer steps.", default=None)
    gradient_accumulation_steps: int = _help("Micro-batches per optimizer step.", default=1)
    learning_rate: float = _help("Learning rate (AdamW's; Muon's is matched to it), in (0, 1].", default=1e-4)
    optimizer: str = _help(
        f"{' or '.join(OPTIMIZERS)}: `muon` orthogonalises the updates of the Linear and Conv2d weight matrices "
        "(Muon) and gives every other parameter AdamW (diffusers_sonify.optimization).",
        default="adamw",
    )
    muon_momentum: float = _help("Muon's momentum (Nesterov), in [0, 1); used with `optimizer: muon`.", default=0.95)
    lr_scheduler: str = _help(
        f"Learning-rate schedule (diffusers get_scheduler): {', '.join(LR_SCHEDULERS)}.", default="constant"
    )
    lr_warmup_steps: int = _help("Warm-up optimizer steps.", default=0)
    adam_beta1: float = _help("AdamW beta1 (decay of the gradient mean).", default=0.9)
    adam_beta2: float = _help("AdamW beta2 (decay of the squared-gradient mean).", default=0.999)
    adam_weight_decay: float = _help("AdamW decoupled weight decay.", default=1e-2)
    adam_epsilon: float = _help("AdamW epsilon (numerical floor of the denominator).", default=1e-8)
    max_grad_norm: float = _help("Gradient clipping norm.", default=1.0)
    mixed_precision: Optional[str] = _help(
        "no, fp16 or bf16; frozen models run in this dtype. Unset: `accelerate launch --mixed_precision` or the "
        "accelerate config decides.",
        default=None,
    )
    gradient_checkpointing: bool = _help("Recompute activations in backward (less memory, slower).", default=False)
    attention_processor: Optional[str] = _help(
        f"The UNet's attention processor for training, one of {', '.join(ATTENTION_PROCESSORS)} (diffusers' classes; "
        "AttnProcessor computes attention with matrix products, AttnProcessor2_0 with torch's "
        "scaled_dot_product_attention). Unset: the UNet's own default. The saved pipeline is the same either way.",
        default=None,
    )
    snr_gamma: Optional[float] = _help("Min-SNR weighting gamma (5.0 recommended); unset: plain MSE.", default=None)
    loss_type: str = _help(
        f"Regression loss: {', '.join(LOSS_TYPES)} (rms: each sample's root-mean-square error, so every sample pulls "
        "equally; huber: pseudo-Huber; training_utils.diffusion_loss).",
        default="mse",
    )
    huber_c: float = _help("Pseudo-Huber threshold c (`loss_type: huber`): MSE below it, L1-like above.", default=0.1)
    rms_max_timestep: Optional[int] = _help(
        "With `loss_type: rms`, only timesteps below it get the equal pull; those at or above it keep MSE's (their "
        "squared error over the batch's mean RMS error). Unset: every timestep.",
        default=None,
    )
    repa_encoder_name_or_path: Optional[str] = _help(
        "Representation alignment (REPA): a vision encoder (model id or folder: DINOv2, CLIP, SigLIP, or a "
        "vision-language model, whose vision tower is used) whose patch features of the clean image one UNet block "
        "learns to predict through a projector trained alongside; the projector is checkpointed but not saved in "
        "the pipeline (diffusers_sonify.repa). Unset: off.",
        default=None,
    )
    repa_weight: float = _help("REPA: weight of the mean cosine similarity subtracted from the loss.", default=0.5)
    repa_block: str = _help(
        "REPA: the UNet block whose output is aligned: mid_block, down_blocks.<i> or up_blocks.<i>.",
        default="mid_block",
    )
    repa_projector_dim: int = _help("REPA: hidden width of the projector (a 3-layer MLP).", default=2048)
    cache_repa_targets: bool = _help(
        "REPA: run the encoder once over every training image (and its mirror image, with `random_flip`) before "
        "the first step and reuse its targets, instead of running it at every step. Memory: rows x 2 x the "
        "aligned block's positions x the encoder's width floats (toy world: 131 MB); in a multi-process run every "
        "process holds them all. No effect without REPA.",
        default=False,
    )
    noise_offset: float = _help(
        "Add offset * N(0, 1) per image and channel to the training noise (0 = off).", default=0.0
    )
    timestep_sampling: str = _help(
        "How training timesteps are drawn: uniform, or logit_normal (middle noise levels favoured).", default="uniform"
    )
    timestep_logit_mean: float = _help("Mean of the logit-normal timestep draw (0 = the middle).", default=0.0)
    timestep_logit_std: float = _help("Spread of the logit-normal timestep draw.", default=1.0)
    use_ema: bool = _help("Keep an EMA of the trainable weights; saved weights are the EMA.", default=False)
    ema_decay: float = _help("EMA decay (with diffusers' 1+t/10+t warm-up).", default=0.9999)
    lora_rank: int = _help("LoRA rank on the UNet attention; 0 = no LoRA.", default=0)
    lora_alpha: Optional[float] = _help("LoRA alpha (default: the rank).", default=None)
    train_unet: bool = _help("Unfreeze the whole UNet (exclusive with `lora_rank`).", default=False)
    train_audio_encoder: bool = _help("Unfreeze the audio encoder (its features are then not cached).", default=False)

    # ---- conditioning ---------------------------------------------------------------------------------------------
    audio_drop_prob: float = _help("P(audio -> adapter null tokens), for guidance.", default=0.1)
    text_drop_prob: float = _help("P(caption -> empty prompt).", default=0.1)
    audio_augment: bool = _help(
        "Random window, polarity, +-augment_gain_db gain (only while audio features are not cached).", default=True
    )
    augment_gain_db: float = _help("Max gain change of the augmentation, in dB.", default=1.0)
    random_flip: bool = _help("Mirror training images left-right with p=0.5 (not with cached latents).", default=False)

    # ---- caching and state ----------------------------------------------------------------------------------------
    cache_latents: bool = _help("Encode images with the frozen VAE once and reuse (latent models only).", default=True)
    cache_audio_features: bool = _help("Encode audio once while the encoder is frozen.", default=True)
    cache_dir: Optional[str] = _help("Feature cache root (default ~/.cache/diffusers_sonify/training).", default=None)
    checkpointing_steps: int = _help("Save a resumable checkpoint every N steps.", default=500)
    checkpoints_total_limit: Optional[int] = _help("Keep at most N checkpoints (oldest removed).", default=None)
    resume_from_checkpoint: Optional[str] = _help(
        "'latest' (the newest checkpoint in output_dir; a fresh start if there is none) or a checkpoint folder.",
        default=None,
    )
    max_steps_this_run: Optional[int] = _help(
        "Checkpoint and exit after N steps of this invocation (wall-time-limited jobs); resume with `latest`.",
        default=None,
    )
    expected_num_processes: Optional[int] = _help(
        "Fail fast unless exactly this many processes run (catches launcher mistakes).", default=None
    )

    # ---- validation -----------------------------------------------------------------------------------------------
    validation_audio: list[str] = _help(
        "Audio files to generate from during training and after the final save (checked at startup).",
        default_factory=list,
    )
    validation_steps: int = _help("Validate every N steps and once after the final save.", default=500)
    validation_inference_steps: int = _help("Denoising steps for validation.", default=25)
    validation_guidance_scale: float = _help("Audio guidance for validation.", default=4.0)
    report_to: str = _help("Tracker: tensorboard (if installed) or none.", default="tensorboard")

    # ---- Hub ------------------------------------------------------------------------------------------------------
    push_to_hub: bool = _help(
        "Upload the output folder (without checkpoints and logs) to `hub_model_id`; the repo is created at startup.",
        default=False,
    )
    hub_model_id: Optional[str] = _help(
        "Hub repo `org/name` (default: the output_dir's folder name, as diffusers' scripts do). Token: HF_TOKEN.",
        default=None,
    )
    hub_private: bool = _help("Create the Hub repo private.", default=False)

    def __post_init__(self):
        self.unet_config = load_mapping(self.unet_config, "unet_config")
        self.scheduler_config = load_mapping(self.scheduler_config, "scheduler_config")
        self._check_values()
        self._check_combinations()
        self._check_paths()

    def _check_values(self):
        require_positive(
            self,
            (
                "train_batch_size",
                "num_train_epochs",
                "gradient_accumulation_steps",
                "checkpointing_steps",
                "validation_steps",
                "validation_inference_steps",
                "resolution",
                "num_pooled_tokens",
            ),
        )
        for name in ("max_train_steps", "max_train_samples", "max_steps_this_run", "checkpoints_total_limit"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"`{name}` must be positive (or unset), got {value}.")
        for name in ("lr_warmup_steps", "dataloader_num_workers", "num_hidden_tokens", "lora_rank", "noise_offset"):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be >= 0, got {getattr(self, name)}.")
        if not (math.isfinite(self.learning_rate) and 0 < self.learning_rate <= 1):
            raise ValueError(
                f"`learning_rate`={self.learning_rate} is outside (0, 1]; AdamW rates for diffusion training are "
                "about 1e-6 to 1e-3 (e.g. 1e-4)."
            )
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"`optimizer` must be one of {OPTIMIZERS}, got {self.optimizer!r}.")
        if self.lr_scheduler not in LR_SCHEDULERS:
            raise ValueError(f"`lr_scheduler` must be one of {LR_SCHEDULERS}, got {self.lr_scheduler!r}.")
        if self.mixed_precision is not None and self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(
                f"`mixed_precision` must be one of {MIXED_PRECISION} or unset, got {self.mixed_precision!r}."
            )
        if self.adapter_input_type not in ADAPTER_INPUT_TYPES:
            raise ValueError(
                f"`adapter_input_type` must be one of {ADAPTER_INPUT_TYPES}, got {self.adapter_input_type!r}."
            )
        if self.adapter_hidden_pool not in ADAPTER_HIDDEN_POOLS:
            raise ValueError(
                f"`adapter_hidden_pool` must be one of {ADAPTER_HIDDEN_POOLS}, got {self.adapter_hidden_pool!r}."
            )
        for name in ("audio_drop_prob", "text_drop_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"`{name}` is a probability in [0, 1], got {getattr(self, name)}.")
        for name in ("adam_beta1", "adam_beta2", "ema_decay", "muon_momentum"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"`{name}` must be in [0, 1), got {getattr(self, name)}.")
        if self.snr_gamma is not None and self.snr_gamma <= 0:
            raise ValueError(
                f"`snr_gamma` must be positive (5.0 is the paper's value) or unset, got {self.snr_gamma}."
            )
        check_loss_options(self.loss_type, self.huber_c, self.rms_max_timestep)
        if self.timestep_sampling not in TIMESTEP_SAMPLINGS:
            raise ValueError(
                f"`timestep_sampling` must be one of {TIMESTEP_SAMPLINGS}, got {self.timestep_sampling!r}."
            )
        check_logit_normal(self.timestep_logit_mean, self.timestep_logit_std)
        if self.attention_processor is not None and self.attention_processor not in ATTENTION_PROCESSORS:
            raise ValueError(
                f"`attention_processor` must be one of {ATTENTION_PROCESSORS} or unset, got "
                f"{self.attention_processor!r}."
            )
        if not (math.isfinite(self.repa_weight) and self.repa_weight > 0):
            raise ValueError(
                f"`repa_weight` must be a positive number (0.5 in the REPA paper), got {self.repa_weight}; leave "
                "`repa_encoder_name_or_path` unset to train without REPA."
            )
        if not REPA_BLOCK.fullmatch(self.repa_block):
            raise ValueError(
                f"`repa_block`={self.repa_block!r} is not a UNet block name: use mid_block, down_blocks.<i> or "
                "up_blocks.<i>."
            )
        require_positive(self, ("repa_projector_dim",))
        if self.max_grad_norm <= 0 or self.augment_gain_db < 0 or self.adam_epsilon <= 0:
            raise ValueError(
                "`max_grad_norm` and `adam_epsilon` must be positive and `augment_gain_db` >= 0, got "
                f"{self.max_grad_norm}, {self.adam_epsilon}, {self.augment_gain_db}."
            )

    @property
    def pixel_space(self) -> bool | None:
        """True/False when the config itself fixes whether images are the UNet's input; None when a model decides."""
        if self.pretrained_pipeline:
            return None
        if self.unet_config is not None:
            return self.unet_config.get("in_channels", 4) == 3
        return False if self.pretrained_model_name_or_path else None

    @property
    def hub_repo_id(self) -> str:
        """The repo the output is pushed to: `hub_model_id`, or the output folder's name (diffusers' convention)."""
        return self.hub_model_id or os.path.basename(os.path.normpath(self.output_dir))

    def _check_combinations(self):
        if self.lora_rank and self.train_unet:
            raise ValueError(
                f"`lora_rank`={self.lora_rank} and `train_unet` are exclusive: LoRA trains a low-rank update of a "
                "frozen UNet. Set `lora_rank: 0` to train the whole UNet, or drop `train_unet`."
            )
        needs_images = [name for name in ("random_flip", "repa_encoder_name_or_path") if getattr(self, name)]
        if needs_images and self.cache_latents and self.pixel_space is not True:
            raise ValueError(
                f"`{needs_images[0]}` needs the images, but `cache_latents` stores VAE latents: set `cache_latents: "
                "false` (pixel-space models built from `unet_config` with 3 input channels cache nothing)."
            )
        if self.caption_column and not self.pretrained_pipeline and not self.use_text_encoder:
            raise ValueError(
                f"`caption_column`={self.caption_column!r} needs a text encoder: set `use_text_encoder: true` "
                "(with a base model that has one), or drop `caption_column`."
            )
        if self.use_text_encoder and not (self.pretrained_model_name_or_path or self.pretrained_pipeline):
            raise ValueError(
                "`use_text_encoder` loads the base model's text_encoder/ and tokenizer/: set "
                "`pretrained_model_name_or_path` too."
            )
        if self.train_audio_encoder and self.audio_encoder_class == "ClapModel":
            raise ValueError(
                "`train_audio_encoder` with `audio_encoder_class: ClapModel` would carry CLAP's unused text tower "
                "into the optimizer and DDP; use `audio_encoder_class: ClapAudioModelWithProjection` (same weights)."
            )
        if self.pixel_space is not None:
            # pixel space: the UNet's own downsampling; latent models also need the VAE's (checked at startup)
            if self.pixel_space:
                check_resolution(self.resolution, spatial_multiple(self.unet_config), "the UNet of `unet_config`")
        if self.push_to_hub and not is_hub_id(self.hub_repo_id):
            source = "hub_model_id" if self.hub_model_id else "output_dir"
            raise ValueError(
                f"`push_to_hub` uploads to `{source}`={self.hub_repo_id!r}, which is not a Hub repo id: set "
                "`hub_model_id` to `org/name` (letters, digits, `-`, `_`, `.`; at most one `/`)."
            )
        if self.hub_model_id and not is_hub_id(self.hub_model_id):
            raise ValueError(f"`hub_model_id`={self.hub_model_id!r} is not a Hub repo id like `org/name`.")

    def _check_paths(self):
        for name in (
            "pretrained_pipeline",
            "pretrained_model_name_or_path",
            "audio_encoder_name_or_path",
            "dataset_name",
            "repa_encoder_name_or_path",
        ):
            check_local_or_hub(name, getattr(self, name))
        missing = [p for p in self.validation_audio if not os.path.isfile(os.path.expanduser(p))]
        if missing:
            raise FileNotFoundError(
                f"`validation_audio` files not found: {missing} (relative paths start at {os.getcwd()}, or at the "
                "YAML file's folder for paths written in it)."
            )
        resume = self.resume_from_checkpoint
        if resume and resume != "latest" and not os.path.isdir(resume):
            raise FileNotFoundError(f"`resume_from_checkpoint`={resume!r} is neither 'latest' nor a folder.")
        if self.cache_dir and os.path.isfile(self.cache_dir):
            raise ValueError(f"`cache_dir`={self.cache_dir!r} is a file, not a folder.")
        if os.path.isfile(self.output_dir):
            raise ValueError(f"`output_dir`={self.output_dir!r} is a file, not a folder.")

    def validate_for_training(self) -> None:
        """Check the fields a run needs but a partial config (e.g. tiny.yaml, completed by flags) may omit."""
        if not self.dataset_name:
            raise ValueError(
                "`dataset_name` is required: a save_to_disk folder, a Parquet folder or a Hub dataset id."
            )
        if self.pretrained_pipeline:
            return
        if not self.audio_encoder_name_or_path:
            raise ValueError(
                "Set `audio_encoder_name_or_path` (e.g. laion/clap-htsat-unfused), or `pretrained_pipeline`."
            )
        if not self.pretrained_model_name_or_path and not (self.unet_config and self.scheduler_config):
            raise ValueError(
                "Set `pretrained_model_name_or_path`, or both `unet_config` and `scheduler_config`, or "
                "`pretrained_pipeline`."
            )
        if self.pixel_space is False and not self.pretrained_model_name_or_path:
            raise ValueError(
                "`unet_config` with latent input channels needs a VAE: set `pretrained_model_name_or_path`, or "
                "`in_channels: 3` for a pixel-space UNet."
            )


def parse_training_config(argv: list[str] | None = None) -> TrainingConfig:
    """`[config.yaml] [--field value ...]` -> a checked [`TrainingConfig`] (see `train.py --help`)."""
    (config,) = parse_config_args(
        (TrainingConfig,), argv, description="Train an AudioToImagePipeline on an image+audio dataset."
    )
    return config
