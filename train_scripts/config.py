"""Configuration of `train.py`: three dataclasses parsed by `HfArgumentParser` from a YAML file plus CLI overrides.

accelerate launch train_scripts/train.py train_scripts/configs/sd15_clap.yaml --learning_rate 5e-5
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field, fields

import yaml
from transformers import HfArgumentParser


@dataclass
class ModelConfig:
    """Where the models come from: an existing pipeline, or a base text-to-image model + an audio encoder."""

    pretrained_pipeline: str | None = field(
        default=None, metadata={"help": "Continue from an AudioToImagePipeline folder or Hub id (overrides the rest)."}
    )
    pretrained_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Base text-to-image model (folder/id with unet, vae, scheduler subfolders)."}
    )
    revision: str | None = field(default=None, metadata={"help": "Revision of the base model on the Hub."})
    unet_config: str | None = field(
        default=None,
        metadata={
            "help": "Build a fresh UNet2DConditionModel from this config (inline YAML mapping, JSON/YAML path)."
        },
    )
    scheduler_config: str | None = field(
        default=None,
        metadata={"help": "DDPMScheduler config (inline mapping or path) when no base model supplies `scheduler/`."},
    )
    audio_encoder_name_or_path: str | None = field(
        default=None, metadata={"help": "Audio encoder + feature extractor folder/id, e.g. laion/clap-htsat-unfused."}
    )
    audio_encoder_class: str = field(
        default="ClapAudioModelWithProjection",
        metadata={"help": "transformers class: ClapModel, ClapAudioModelWithProjection or ASTModel."},
    )
    adapter_input_type: str = field(
        default="both", metadata={"help": "AudioProjectionModel input: pooled|hidden_states|both."}
    )
    num_pooled_tokens: int = field(default=4, metadata={"help": "Adapter tokens from the pooled embedding."})
    num_hidden_tokens: int = field(default=8, metadata={"help": "Adapter tokens from the encoder hidden states."})
    use_text_encoder: bool = field(
        default=False, metadata={"help": "Keep the base model's text encoder; text tokens precede the audio tokens."}
    )


@dataclass
class DataConfig:
    dataset_name: str | None = field(
        default=None, metadata={"help": "save_to_disk folder, Parquet/Hub-layout folder or Hub dataset id."}
    )
    dataset_split: str = field(default="train", metadata={"help": "Split to train on."})
    image_column: str = field(default="image", metadata={"help": "Image column."})
    audio_column: str = field(default="audio", metadata={"help": "Audio column."})
    caption_column: str | None = field(
        default=None, metadata={"help": "Optional text column (needs use_text_encoder)."}
    )
    resolution: int = field(default=512, metadata={"help": "Training images are resized and centre-cropped to this."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N rows."})
    dataloader_num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes."})


@dataclass
class TrainConfig:
    output_dir: str = field(default="sonify-model", metadata={"help": "Pipeline, LoRA weights, card, checkpoints."})
    seed: int = field(default=0, metadata={"help": "Seeds data order, noise, dropout and validation."})
    train_batch_size: int = field(default=4, metadata={"help": "Batch size per process."})
    num_train_epochs: int = field(default=1, metadata={"help": "Epochs (ignored when max_train_steps is set)."})
    max_train_steps: int | None = field(default=None, metadata={"help": "Total optimizer steps."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    learning_rate: float = field(default=1e-4, metadata={"help": "AdamW learning rate."})
    lr_scheduler: str = field(default="constant", metadata={"help": "diffusers get_scheduler name."})
    lr_warmup_steps: int = field(default=0, metadata={"help": "Warm-up optimizer steps."})
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm."})
    mixed_precision: str = field(default="no", metadata={"help": "no|fp16|bf16; frozen models run in this dtype."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Recompute activations in backward."})
    snr_gamma: float | None = field(default=None, metadata={"help": "Min-SNR weighting gamma (5.0 recommended)."})
    noise_offset: float = field(
        default=0.0, metadata={"help": "Add offset * N(0, 1) per image and channel to the training noise (0 = off)."}
    )
    use_ema: bool = field(
        default=False, metadata={"help": "Keep an EMA of the trainable weights; saved weights are EMA."}
    )
    ema_decay: float = field(default=0.9999, metadata={"help": "EMA decay (with diffusers' 1+t/10+t warm-up)."})
    lora_rank: int = field(default=0, metadata={"help": "LoRA rank on the UNet attention; 0 = no LoRA."})
    lora_alpha: float | None = field(default=None, metadata={"help": "LoRA alpha (default: the rank)."})
    train_unet: bool = field(default=False, metadata={"help": "Unfreeze the whole UNet (exclusive with LoRA)."})
    train_audio_encoder: bool = field(default=False, metadata={"help": "Unfreeze the audio encoder (no audio cache)."})
    audio_drop_prob: float = field(default=0.1, metadata={"help": "P(audio -> adapter null tokens), for guidance."})
    text_drop_prob: float = field(default=0.1, metadata={"help": "P(caption -> empty prompt)."})
    audio_augment: bool = field(
        default=True, metadata={"help": "Random window, polarity, +-augment_gain_db gain (only without audio cache)."}
    )
    augment_gain_db: float = field(default=1.0, metadata={"help": "Max gain change of the augmentation, in dB."})
    random_flip: bool = field(
        default=False, metadata={"help": "Mirror training images left-right with p=0.5 (not with cached latents)."}
    )
    cache_latents: bool = field(default=True, metadata={"help": "Encode images with the frozen VAE once and reuse."})
    cache_audio_features: bool = field(
        default=True, metadata={"help": "Encode audio once when the encoder is frozen."}
    )
    cache_dir: str | None = field(
        default=None, metadata={"help": "Feature cache root (default ~/.cache/diffusers_sonify)."}
    )
    checkpointing_steps: int = field(default=500, metadata={"help": "Save a resumable checkpoint every N steps."})
    checkpoints_total_limit: int | None = field(default=None, metadata={"help": "Keep at most N checkpoints."})
    resume_from_checkpoint: str | None = field(default=None, metadata={"help": "'latest' or a checkpoint folder."})
    max_steps_this_run: int | None = field(
        default=None,
        metadata={"help": "Checkpoint and exit after N steps of this invocation (wall-time-limited jobs)."},
    )
    validation_audio: list[str] = field(default_factory=list, metadata={"help": "Audio files to generate from."})
    validation_steps: int = field(default=500, metadata={"help": "Validate every N steps (and at the end)."})
    validation_inference_steps: int = field(default=25, metadata={"help": "Denoising steps for validation."})
    validation_guidance_scale: float = field(default=4.0, metadata={"help": "Audio guidance for validation."})
    report_to: str = field(default="tensorboard", metadata={"help": "Tracker: tensorboard (if installed) or none."})
    expected_num_processes: int | None = field(
        default=None,
        metadata={"help": "Fail fast unless exactly this many processes run (catches launcher mistakes)."},
    )
    push_to_hub: bool = field(default=False, metadata={"help": "Upload the output folder to hub_model_id."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Hub repo, e.g. org/sonify (token: HF_TOKEN)."})
    hub_private: bool = field(default=False, metadata={"help": "Create the Hub repo private."})


CONFIG_CLASSES = (ModelConfig, DataConfig, TrainConfig)


def make_parser() -> HfArgumentParser:
    return HfArgumentParser(CONFIG_CLASSES)


def parse_config(argv: list[str] | None = None) -> tuple[ModelConfig, DataConfig, TrainConfig]:
    """`[config.yaml] [--flag value ...]`: YAML values become defaults, CLI flags override them."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = make_parser()
    if argv and argv[0].endswith((".yaml", ".yml")):
        with open(argv.pop(0)) as f:
            values = yaml.safe_load(f) or {}
        known = {f.name for cls in CONFIG_CLASSES for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown config keys {unknown}; see `train.py --help` for the valid names.")
        parser.set_defaults(**values)
    return parser.parse_args_into_dataclasses(args=argv)


def load_mapping(value, arg: str) -> dict | None:
    """An inline mapping, a JSON string, or a path to a JSON/YAML file -> dict (None stays None)."""
    if value is None or isinstance(value, dict):
        return value
    if os.path.isfile(value):
        with open(value) as f:
            return yaml.safe_load(f)  # YAML is a superset of JSON
    try:
        loaded = json.loads(value)
    except json.JSONDecodeError:
        loaded = None
    if not isinstance(loaded, dict):
        raise ValueError(f"`{arg}` must be a mapping, a JSON object or a path to a JSON/YAML file, got {value!r}.")
    return loaded
