"""Training logic for `train_scripts/train.py`, kept here so it is unit-tested.

Model assembly, conditioning dropout, the diffusion loss (with optional min-SNR weighting), which parameters train,
checkpoints that hold only trainable weights (listing, rotation, resume), feature caching keyed by the dataset
fingerprint, audio/image preprocessing with a light augmentation that keeps loudness and reverb cues, the bad-row
scan, deterministic per-step randomness (for exact resume), validation that leaves the training state untouched,
data collation and the Hub upload of a training output folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import PIL.Image
import torch
from diffusers.training_utils import compute_snr
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from . import audio as audio_utils
from .audio import prepare_waveform
from .data import load_split
from .models.audio_projection import AudioProjectionModel
from .training_config import TIMESTEP_SAMPLINGS, check_logit_normal, check_loss_options

logger = logging.getLogger(__name__)

LORA_TARGET_MODULES = ["to_k", "to_q", "to_v", "to_out.0"]
# Files of a training output folder that are not part of the model: resumable state, logs, the local bad-row list.
PUSH_IGNORE_PATTERNS = ["checkpoint-*", "checkpoint-*/**", "logs/**", "train_log.jsonl", "skipped_rows.jsonl"]


# ----------------------------------------------------------------------------------------------- randomness
def step_generator(seed: int, step: int, micro_step: int = 0, rank: int = 0) -> torch.Generator:
    """A CPU generator seeded from `(seed, step, micro_step, rank)`.

    Every random draw of a training step (noise, timesteps, condition dropout, VAE sampling, augmentation) comes
    from this generator, so a step's randomness depends only on its position: a resumed run repeats an
    uninterrupted one exactly without restoring any global RNG, and ranks draw different noise.
    """
    key = hashlib.sha256(f"{seed}/{step}/{micro_step}/{rank}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(key[:8], "little") & ((1 << 63) - 1))


class EpochShuffleSampler(torch.utils.data.Sampler):
    """A random permutation of `range(num_rows)` that depends only on `(seed, epoch)`; call `set_epoch` per epoch.

    Resuming mid-epoch then means skipping the batches already seen (`accelerator.skip_first_batches`).
    """

    def __init__(self, num_rows: int, seed: int):
        self.num_rows, self.seed, self.epoch = num_rows, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.num_rows, generator=gen).tolist())

    def __len__(self) -> int:
        return self.num_rows


# ----------------------------------------------------------------------------------------------- conditioning dropout
def drop_audio_condition(
    audio_embeds: torch.Tensor, audio_projection: AudioProjectionModel, drop_prob: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Classifier-free-guidance dropout: replace each row by the adapter's learned null tokens with `drop_prob`.

    The null tokens are `AudioProjectionModel.null_audio_embeds`, the same ones the pipeline uses as the
    unconditional branch at inference, so training and guidance agree and the null tokens are learned.

    Returns:
        the embeddings `(batch, tokens, dim)` and the bool mask `(batch,)` of dropped rows.
    """
    if not 0.0 <= drop_prob <= 1.0:
        raise ValueError(f"`audio_drop_prob` must be in [0, 1], got {drop_prob}.")
    mask = torch.rand(audio_embeds.shape[0], generator=generator) < drop_prob
    return audio_projection.drop_condition(audio_embeds, mask.to(audio_embeds.device)), mask


def drop_text_condition(
    text_embeds: torch.Tensor, null_text_embeds: torch.Tensor, drop_prob: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace each row of `text_embeds` `(batch, seq, dim)` by the empty-prompt embedding `(1, seq, dim)` with
    `drop_prob` (what the pipeline feeds as its negative prompt). Independent of the audio dropout."""
    if not 0.0 <= drop_prob <= 1.0:
        raise ValueError(f"`text_drop_prob` must be in [0, 1], got {drop_prob}.")
    mask = torch.rand(text_embeds.shape[0], generator=generator) < drop_prob
    null = null_text_embeds.to(text_embeds).expand_as(text_embeds)
    return torch.where(mask.to(text_embeds.device).view(-1, 1, 1), null, text_embeds), mask


# ----------------------------------------------------------------------------------------------- loss
def training_noise(shape: tuple[int, ...], generator: torch.Generator, offset: float = 0.0) -> torch.Tensor:
    """Gaussian noise for one training batch, plus `offset` times one N(0, 1) draw per image and channel.

    The offset ("offset noise", N. Guttenberg, Crosslabs 2023) hides the mean of the noisy input from the model at
    high noise levels. Without it, a noise schedule whose first sampling step keeps a trace of signal lets the model
    read an image's mean brightness off its noisy input during training; at sampling time that trace is absent, so
    very dark or very bright images come out grey.
    """
    if offset < 0:
        raise ValueError(f"`noise_offset` must be >= 0 (0.1 is a common value), got {offset}.")
    noise = torch.randn(shape, generator=generator)
    if offset:
        noise = noise + offset * torch.randn(*shape[:2], *([1] * (len(shape) - 2)), generator=generator)
    return noise


def sample_timesteps(
    batch_size: int,
    num_timesteps: int,
    generator: torch.Generator,
    sampling: str = "uniform",
    logit_mean: float = 0.0,
    logit_std: float = 1.0,
) -> torch.Tensor:
    """Training timesteps for one batch: `uniform` over [0, num_timesteps), or `logit_normal`: t / T is the sigmoid
    of a N(logit_mean, logit_std) draw, which puts most of the training on middle noise levels and little on the
    nearly clean and the nearly pure-noise ends (Esser et al. 2024, "Scaling Rectified Flow Transformers for
    High-Resolution Image Synthesis", sec. 3.1; their default is mean 0, std 1)."""
    if sampling == "uniform":
        return torch.randint(0, num_timesteps, (batch_size,), generator=generator)
    if sampling == "logit_normal":
        check_logit_normal(logit_mean, logit_std)
        u = torch.sigmoid(logit_mean + logit_std * torch.randn(batch_size, generator=generator))
        return (u * num_timesteps).long().clamp_(0, num_timesteps - 1)
    raise ValueError(f"`timestep_sampling` must be one of {TIMESTEP_SAMPLINGS}, got {sampling!r}.")


def training_target(scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What the UNet regresses, from the scheduler's `prediction_type`: `epsilon` (the noise), `v_prediction`
    (the velocity) or `sample` (the clean latents)."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    if kind == "sample":
        return latents
    raise ValueError(f"Unsupported scheduler `prediction_type` {kind!r}; use epsilon, v_prediction or sample.")


def diffusion_loss(
    model_pred: torch.Tensor,
    target: torch.Tensor,
    timesteps: torch.Tensor,
    scheduler,
    snr_gamma: float | None = None,
    loss_type: str = "mse",
    huber_c: float = 0.1,
    rms_max_timestep: int | None = None,
) -> torch.Tensor:
    """Regression loss (MSE, per-sample RMS, L1 or pseudo-Huber) between prediction and target, min-SNR optional.

    Min-SNR (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting Strategy") weights each sample by
    `min(SNR(t), gamma) / SNR(t)` for epsilon prediction, `min(SNR(t), gamma) / (SNR(t) + 1)` for v-prediction and
    `min(SNR(t), gamma)` for sample prediction; gamma = 5 is the paper's recommendation.

    `loss_type`: `mse` regresses to the mean of what the noisy input allows, `l1` to its per-pixel median; `huber` is
    the pseudo-Huber loss `2 c (sqrt(d^2 + c^2) - c)` of each difference `d`, equal to `d^2` for `|d| << c` and
    growing like `2 c |d|` beyond it (`huber_c` = c). `rms` is each sample's squared error divided by its own
    root-mean-square error (held constant): the gradient of twice the sample's RMS error, so that every sample of the
    batch pulls with the same strength whatever its noise level, where under `mse` the samples with the largest errors
    dominate; its minimiser is the geometric median of whole images rather than the per-pixel mean. With
    `rms_max_timestep` only the samples below that timestep get the equal pull; those at or above it keep MSE's
    (their squared errors divided by one constant, the batch's mean RMS error). RECIPE.md ("Robust losses") measures
    them in the toy world.
    """
    check_loss_options(loss_type, huber_c, rms_max_timestep)
    if snr_gamma is not None and snr_gamma <= 0:
        raise ValueError(f"`snr_gamma` must be positive (5.0 is the paper's value) or None, got {snr_gamma}.")
    if snr_gamma is None and loss_type == "mse":
        return nn.functional.mse_loss(model_pred.float(), target.float(), reduction="mean")
    diff = model_pred.float() - target.float()
    sample_dims = list(range(1, diff.ndim))
    if loss_type == "rms":
        squared = diff.square().mean(dim=sample_dims)
        rms = squared.detach().sqrt().clamp_min(1e-8)
        if rms_max_timestep is not None:
            rms = torch.where(timesteps.to(rms.device) >= rms_max_timestep, rms.mean(), rms)
        per_sample = squared / rms
    else:
        if loss_type == "mse":
            elementwise = diff.square()
        elif loss_type == "l1":
            elementwise = diff.abs()
        else:
            # sqrt(d^2 + c^2) - c written as d^2 / (sqrt(d^2 + c^2) + c): no cancellation when |d| << c
            squared = diff.square()
            elementwise = 2 * huber_c * squared / (torch.sqrt(squared + huber_c**2) + huber_c)
        if snr_gamma is None:
            return elementwise.mean()
        per_sample = elementwise.mean(dim=sample_dims)
    if snr_gamma is None:
        return per_sample.mean()
    return (per_sample * _min_snr_weights(scheduler, timesteps, snr_gamma).to(per_sample)).mean()


def _min_snr_weights(scheduler, timesteps: torch.Tensor, snr_gamma: float) -> torch.Tensor:
    snr = compute_snr(scheduler, timesteps)
    clipped = torch.clamp(snr, max=snr_gamma)
    kind = scheduler.config.prediction_type
    return clipped / snr if kind == "epsilon" else clipped / (snr + 1) if kind == "v_prediction" else clipped


# ----------------------------------------------------------------------------------------------- what trains
def count_parameters(module: nn.Module | None) -> tuple[int, int]:
    """`(trainable, total)` parameter counts of a module (`(0, 0)` for `None`)."""
    if module is None:
        return 0, 0
    params = list(module.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def configure_trainable_parameters(
    modules: dict[str, nn.Module | None],
    lora_rank: int = 0,
    lora_alpha: float | None = None,
    train_unet: bool = False,
    train_audio_encoder: bool = False,
) -> list[nn.Parameter]:
    """Freeze everything, then unfreeze the training set and return it as a *list* of parameters.

    The adapter (`audio_projection`) always trains. `lora_rank > 0` adds peft LoRA (`init_lora_weights="gaussian"`)
    to the UNet's attention projections; `train_unet` unfreezes the whole UNet instead; `train_audio_encoder`
    unfreezes the audio encoder (the text encoder, when present, stays frozen). A list (not a `filter` iterator) so the
    optimizer and
    gradient clipping see the same parameters.

    Args:
        modules (`dict`): names `unet`, `audio_projection`, `audio_encoder`, and optionally `vae`, `text_encoder`.
    """
    if lora_rank < 0:
        raise ValueError(f"`lora_rank` must be >= 0 (0 disables LoRA), got {lora_rank}.")
    if lora_rank and train_unet:
        raise ValueError("`lora_rank` and `train_unet` are exclusive: LoRA trains a low-rank update of a frozen UNet.")
    if train_audio_encoder and hasattr(modules["audio_encoder"], "get_text_features"):
        raise ValueError(
            "`train_audio_encoder` with a full ClapModel would carry its unused text tower into the optimizer "
            "and DDP; "
            "set `audio_encoder_class: ClapAudioModelWithProjection` (same checkpoint, audio tower + projection only)."
        )
    for module in modules.values():
        if module is not None:
            module.requires_grad_(False)
    unet = modules["unet"]
    if lora_rank:
        from peft import LoraConfig

        config = LoraConfig(
            r=lora_rank,
            lora_alpha=lora_alpha or lora_rank,
            init_lora_weights="gaussian",
            target_modules=LORA_TARGET_MODULES,
        )
        unet.add_adapter(config)  # new LoRA parameters are created trainable
    elif train_unet:
        unet.requires_grad_(True)
    modules["audio_projection"].requires_grad_(True)
    if train_audio_encoder:
        modules["audio_encoder"].requires_grad_(True)
    return [p for m in modules.values() if m is not None for p in m.parameters() if p.requires_grad]


def build_optimizer(config, modules: dict[str, nn.Module | None], params: list[nn.Parameter]) -> torch.optim.Optimizer:
    """The optimizer `config.optimizer` names over `params` (the trainable parameters of `modules`): AdamW, or
    Muon on the weight matrices with AdamW on the rest ([`~optimization.make_optimizer`])."""
    from .optimization import make_optimizer

    return make_optimizer(
        config.optimizer,
        modules,
        params,
        lr=config.learning_rate,
        betas=(config.adam_beta1, config.adam_beta2),
        eps=config.adam_epsilon,
        weight_decay=config.adam_weight_decay,
        momentum=config.muon_momentum,
    )


def trainable_summary(modules: dict[str, nn.Module | None]) -> str:
    """One line: trainable/total parameters per component, e.g. `unet 0.1M/1.2M, audio_projection 0.2M/0.2M`."""
    parts = []
    for name, module in modules.items():
        if module is None:
            continue
        trainable, total = count_parameters(module)
        parts.append(f"{name} {trainable / 1e6:.3f}M/{total / 1e6:.3f}M")
    total_trainable = sum(count_parameters(m)[0] for m in modules.values())
    return f"training {total_trainable / 1e6:.3f}M parameters (trainable/total: " + ", ".join(parts) + ")"


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable tensors of `model` only (what a checkpoint must hold), detached and contiguous on CPU."""
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Inverse of [`trainable_state_dict`]; every trainable parameter must be present, nothing else may be."""
    params = dict(model.named_parameters())
    wanted = {n for n, p in params.items() if p.requires_grad}
    missing, extra = wanted - state.keys(), state.keys() - wanted
    if missing or extra:
        raise ValueError(
            f"Checkpoint does not match the trainable set of {type(model).__name__}: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(extra)[:5]}. Resume with the same `lora_rank`/`train_*` settings it was saved with."
        )
    with torch.no_grad():
        for name, tensor in state.items():
            params[name].copy_(tensor)


def unet_lora_state_dict(unet: nn.Module) -> dict[str, torch.Tensor]:
    """The UNet's LoRA layers in the diffusers key format `save_lora_weights(unet_lora_layers=...)` expects."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    return convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))


# ----------------------------------------------------------------------------------------------- audio preprocessing
def decode_audio(value, arg: str = "audio") -> tuple[np.ndarray, int]:
    """A `datasets` audio cell -> `(samples (channels, n) float32, sampling_rate)` (see `audio.decode_audio`)."""
    waveform, sampling_rate = audio_utils.decode_audio(value, arg=arg)
    return waveform.numpy(), sampling_rate


def load_training_audio(value, target_sr: int, max_seconds: float | None, arg: str = "audio") -> np.ndarray:
    """Decode a dataset audio cell to mono float32 at `target_sr`, keeping at most `2 * max_seconds` so that
    [`augment_waveform`] has room to pick a random window."""
    keep = None if max_seconds is None else 2 * max_seconds
    return prepare_waveform(value, target_sr=target_sr, max_seconds=keep, min_seconds=0.1, arg=arg)


def crop_waveform(waveform: np.ndarray, num_samples: int | None, offset: int = 0) -> np.ndarray:
    """`waveform[offset : offset + num_samples]` (the whole clip when it is shorter or `num_samples` is None)."""
    if num_samples is None or len(waveform) <= num_samples:
        return waveform
    return waveform[offset : offset + num_samples]


def augment_waveform(
    waveform: np.ndarray, num_samples: int | None, generator: torch.Generator, max_gain_db: float = 1.0
) -> np.ndarray:
    """Light augmentation that keeps the cues the images should follow.

    * a random window of `num_samples` when the clip is longer (the sonified scenes are stationary mixtures, so
      any window describes the same scene);
    * polarity inversion with probability 1/2 (inaudible: same spectrum, loudness and reverb);
    * a gain change uniform in `[-max_gain_db, +max_gain_db]` (default 1 dB, about the just-noticeable loudness
      difference) so the model does not key on exact sample levels, while loudness differences of several dB
      that the sonification uses for distance and size survive.

    No EQ, added noise, added reverb or time stretching: those would change the loudness and room cues.
    """
    span = len(waveform) - num_samples if num_samples is not None and len(waveform) > num_samples else 0
    draws = torch.rand(3, generator=generator).tolist()
    offset = int(draws[0] * (span + 1)) if span else 0
    sign = -1.0 if draws[1] < 0.5 else 1.0
    gain = 10 ** ((2 * draws[2] - 1) * max_gain_db / 20)
    return (crop_waveform(waveform, num_samples, min(offset, span)) * (sign * gain)).astype(np.float32)


def random_hflip(
    images: torch.Tensor, generator: torch.Generator, p: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip each image of `(batch, channels, height, width)` left-right with probability `p` (from `generator`,
    so a resumed run flips exactly as an uninterrupted one); returns the images and which were flipped (bools).
    Sound carries no left/right cue here, so a mirrored scene is an equally valid picture of the same soundtrack."""
    flip = (torch.rand(images.shape[0], generator=generator) < p).to(images.device)
    return torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images), flip


def image_batches(dataset: SonifiedImageAudioDataset, batch_size: int) -> Iterator[torch.Tensor]:
    """The `pixel_values` of every row of `dataset`, in row order, as `(B, 3, R, R)` batches."""
    for start in range(0, len(dataset), batch_size):
        rows = range(start, min(start + batch_size, len(dataset)))
        yield torch.stack([dataset.pixel_values(i) for i in rows])


def preprocess_image(image: PIL.Image.Image, resolution: int) -> torch.Tensor:
    """Resize the short side to `resolution`, centre-crop, scale to `[-1, 1]`: `(3, resolution, resolution)`."""
    if not isinstance(image, PIL.Image.Image):
        raise TypeError(f"Image cell of type {type(image).__name__} is not an image; check `image_column`.")
    image = image.convert("RGB")
    scale = resolution / min(image.size)
    size = (max(resolution, round(image.width * scale)), max(resolution, round(image.height * scale)))
    image = image.resize(size, PIL.Image.Resampling.BICUBIC)
    left, top = (image.width - resolution) // 2, (image.height - resolution) // 2
    image = image.crop((left, top, left + resolution, top + resolution))
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


# ----------------------------------------------------------------------------------------------- data
def load_training_dataset(source: str, split: str = "train", image_column: str = "image", audio_column: str = "audio"):
    """Load a `datasets` source: a `save_to_disk` folder, a Parquet/Hub-layout folder or a Hub id.

    The audio column is cast to `Audio(decode=False)` so that decoding happens here, on our terms.
    """
    from datasets import Audio, Dataset

    if source is None:
        raise ValueError("`dataset_name` is required: a save_to_disk folder, a Parquet folder or a Hub dataset id.")
    ds = load_split(source, split, arg="dataset_name")
    assert isinstance(ds, Dataset)
    for arg, column in (("image_column", image_column), ("audio_column", audio_column)):
        if column not in ds.column_names:
            raise ValueError(f"`{arg}`={column!r} is not a column of {source!r}; it has {ds.column_names}.")
    return ds.cast_column(audio_column, Audio(decode=False))


@dataclass
class FeatureCaches:
    """Per-row tensors computed once: `pooled` `(N, P)` and `hidden_states` `(N, S, H)` audio features,
    `latent_moments` `(N, 2C, h, w)` (VAE mean and log-variance; a fresh latent is sampled every step)."""

    audio: dict[str, torch.Tensor] | None = None
    latents: dict[str, torch.Tensor] | None = None


class SonifiedImageAudioDataset(torch.utils.data.Dataset):
    """Rows of an image+audio `datasets.Dataset` as training examples, reading cached features where given.

    Each example has `index`, one of `pixel_values` `(3, R, R)` / `latent_moments`, one of `waveform` (mono
    float32 at `sampling_rate`) / `pooled` + `hidden_states`, and `caption` (a string, empty without a caption
    column).
    """

    def __init__(
        self,
        dataset,
        resolution: int,
        sampling_rate: int,
        max_audio_seconds: float | None,
        image_column: str = "image",
        audio_column: str = "audio",
        caption_column: str | None = None,
        caches: FeatureCaches | None = None,
    ):
        self.caches = caches or FeatureCaches()
        if caption_column is not None and caption_column not in dataset.column_names:
            raise ValueError(
                f"`caption_column`={caption_column!r} is not a dataset column; it has {dataset.column_names}."
            )
        columns = [c for c in (image_column, audio_column, caption_column) if c is not None]
        skip = {image_column} if self.caches.latents else set()
        skip |= {audio_column} if self.caches.audio else set()
        self.columns = [c for c in columns if c not in skip]
        self.num_rows = len(dataset)
        self.dataset = dataset.select_columns(self.columns) if self.columns else None  # all cached: read no rows
        self.images = None if self.caches.latents else dataset.select_columns([image_column])
        self.resolution, self.sampling_rate, self.max_audio_seconds = resolution, sampling_rate, max_audio_seconds
        self.image_column, self.audio_column, self.caption_column = image_column, audio_column, caption_column

    def __len__(self) -> int:
        return self.num_rows

    def pixel_values(self, index: int) -> torch.Tensor:
        """Row `index`'s image as `(3, R, R)` in [-1, 1], as [`__getitem__`] gives it (no other column is read)."""
        if self.images is None:
            raise ValueError("This dataset reads cached VAE latents, not images.")
        return preprocess_image(self.images[int(index)][self.image_column], self.resolution)

    def __getitem__(self, index: int) -> dict:
        row = self.dataset[int(index)] if self.dataset is not None else {}
        example = {"index": int(index), "caption": row[self.caption_column] if self.caption_column else ""}
        if self.caches.latents:
            example["latent_moments"] = self.caches.latents["latent_moments"][index]
        else:
            example["pixel_values"] = preprocess_image(row[self.image_column], self.resolution)
        if self.caches.audio:
            example.update({k: v[index] for k, v in self.caches.audio.items()})
        else:
            example["waveform"] = load_training_audio(
                row[self.audio_column], self.sampling_rate, self.max_audio_seconds, arg=f"{self.audio_column}[{index}]"
            )
        return example


def collate_examples(examples: list[dict]) -> dict:
    """Stack tensors; keep `waveform` (variable length) and `caption` as lists; `index` as a long tensor."""
    batch = {"index": torch.tensor([e["index"] for e in examples]), "caption": [e["caption"] for e in examples]}
    for key in ("pixel_values", "latent_moments", "pooled", "hidden_states"):
        if key in examples[0]:
            batch[key] = torch.stack([e[key] for e in examples])
    if "waveform" in examples[0]:
        batch["waveform"] = [e["waveform"] for e in examples]
    return batch


# ----------------------------------------------------------------------------------------------- caching
def model_fingerprint(*modules: nn.Module | None, extra: object = None) -> str:
    """A hash of the modules' classes, configs and weights (+ `extra`, e.g. preprocessing settings)."""
    h = hashlib.sha256(json.dumps(extra, sort_keys=True, default=str).encode())
    for module in modules:
        if module is None:
            h.update(b"none")
            continue
        h.update(type(module).__name__.encode())
        config = getattr(module, "config", None)
        if config is not None:
            h.update(
                json.dumps(
                    dict(config) if not hasattr(config, "to_dict") else config.to_dict(), sort_keys=True, default=str
                ).encode()
            )
        for name, tensor in module.state_dict().items():
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def feature_cache_path(cache_dir: str | os.PathLike, kind: str, dataset_fingerprint: str, model_key: str) -> Path:
    """`<cache_dir>/<dataset_fingerprint>/<kind>-<model_key>.safetensors`."""
    return Path(cache_dir) / dataset_fingerprint / f"{kind}-{model_key}.safetensors"


def cached_features(
    path: str | os.PathLike,
    compute: Callable[[list[int]], dict[str, torch.Tensor]],
    num_rows: int,
    batch_size: int = 16,
    desc: str = "Caching features",
    write: bool = True,
) -> dict[str, torch.Tensor]:
    """Load per-row features from `path`, or compute them in batches (`compute(indices) -> {name: (b, ...)}`),
    save them there (when `write`) and return them. The file is written atomically (temporary name + rename)."""
    path = Path(path)
    if path.is_file():
        features = load_file(str(path))
        if all(len(v) == num_rows for v in features.values()):
            logger.info("Loaded cached features from %s", path)
            return features
        logger.warning("Cache %s has the wrong row count; recomputing it.", path)
    parts: dict[str, list[torch.Tensor]] = {}
    for start in tqdm(range(0, num_rows, batch_size), desc=desc, disable=num_rows <= batch_size):
        out = compute(list(range(start, min(start + batch_size, num_rows))))
        for key, value in out.items():
            parts.setdefault(key, []).append(value.detach().float().cpu())
    features = {k: torch.cat(v).contiguous() for k, v in parts.items()}
    if write:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        save_file(features, str(tmp))
        os.replace(tmp, path)
        logger.info("Cached %d rows of %s to %s", num_rows, sorted(features), path)
    return features


def default_cache_dir() -> str:
    """`$DIFFUSERS_SONIFY_CACHE` or `$XDG_CACHE_HOME/diffusers_sonify/training` (default `~/.cache/...`)."""
    if os.environ.get("DIFFUSERS_SONIFY_CACHE"):
        return os.environ["DIFFUSERS_SONIFY_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "diffusers_sonify", "training")


# ----------------------------------------------------------------------------------------------- hub
def files_to_push(output_dir: str | os.PathLike) -> list[str]:
    """The files of a training output folder that `push_training_output` uploads (checkpoints and logs excluded),
    selected with the same `filter_repo_objects` that `upload_folder` applies to `PUSH_IGNORE_PATTERNS`."""
    from huggingface_hub.utils import filter_repo_objects

    root = Path(output_dir)
    relative = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    return list(filter_repo_objects(relative, ignore_patterns=PUSH_IGNORE_PATTERNS))


def push_training_output(
    output_dir: str | os.PathLike, repo_id: str, token: str | None = None, private: bool | None = None
):
    """Create `repo_id` (if needed) and upload the output folder minus checkpoints and logs; returns the commit.

    A failed upload raises one [`~diffusers_sonify.hub.HubPushError`]; running the push again completes it."""
    from .hub import push_folder

    return push_folder(
        output_dir,
        repo_id,
        token=token,
        private=private,
        ignore_patterns=PUSH_IGNORE_PATTERNS,
        commit_message="Upload AudioToImagePipeline trained with diffusers-sonify",
    )


# ----------------------------------------------------------------------------------------------- model assembly
def set_attention_processor(unet, name: str) -> None:
    """Give every attention layer of `unet` a fresh diffusers processor of class `name` (one of
    `training_config.ATTENTION_PROCESSORS`). Processors hold no weights: the state dict and the saved UNet do not
    change, only how attention is computed. On CPU, torch's fused kernel (`AttnProcessor2_0`, diffusers' default)
    takes about a fifth of a toy-world training step in its backward at 64 tokens and head dim 8, where
    `AttnProcessor`'s matrix products and softmax take about 6 % (toyworld/RECIPE.md, d31)."""
    from diffusers.models import attention_processor

    unet.set_attn_processor(getattr(attention_processor, name)())


def build_training_components(config) -> dict:
    """The pipeline components a [`~training_config.TrainingConfig`] names, as a dict for `AudioToImagePipeline`.

    From `pretrained_pipeline`; or from a base text-to-image model / an inline `unet_config` + `scheduler_config`,
    the audio encoder and a new `AudioProjectionModel` sized to both. Weights load quietly (no progress bars).
    """
    import transformers
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import AutoFeatureExtractor, CLIPTextModel, CLIPTokenizer

    from .pipelines import AudioToImagePipeline

    if config.pretrained_pipeline:
        return dict(AudioToImagePipeline.from_pretrained(config.pretrained_pipeline).components)
    base, rev = config.pretrained_model_name_or_path, config.revision
    encoder_cls = getattr(transformers, config.audio_encoder_class, None)
    if encoder_cls is None or not hasattr(encoder_cls, "from_pretrained"):
        raise ValueError(f"`audio_encoder_class`={config.audio_encoder_class!r} is not a transformers model class.")
    if config.unet_config:
        unet = UNet2DConditionModel.from_config(config.unet_config)
    else:
        unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet", revision=rev)
    if config.scheduler_config:
        scheduler = DDIMScheduler.from_config(config.scheduler_config)
    else:
        scheduler = DDIMScheduler.from_pretrained(base, subfolder="scheduler", revision=rev)
    pixel_space = config.unet_config is not None and unet.config.in_channels == 3
    vae = None if pixel_space else AutoencoderKL.from_pretrained(base, subfolder="vae", revision=rev)
    text_encoder = tokenizer = None
    if config.use_text_encoder:
        text_encoder = CLIPTextModel.from_pretrained(base, subfolder="text_encoder", revision=rev)
        tokenizer = CLIPTokenizer.from_pretrained(base, subfolder="tokenizer", revision=rev)
    audio_encoder = encoder_cls.from_pretrained(config.audio_encoder_name_or_path)
    feature_extractor = AutoFeatureExtractor.from_pretrained(config.audio_encoder_name_or_path)
    if getattr(feature_extractor, "truncation", None) == "fusion" and not getattr(
        audio_encoder.config, "enable_fusion", True
    ):
        logger.info("Unfused CLAP takes one mel channel: using truncation='rand_trunc' instead of 'fusion'.")
        feature_extractor.truncation = "rand_trunc"
    audio_cfg = getattr(audio_encoder.config, "audio_config", audio_encoder.config)
    audio_projection = AudioProjectionModel(
        cross_attention_dim=unet.config.cross_attention_dim,
        pooled_dim=getattr(audio_encoder.config, "projection_dim", None) or audio_cfg.hidden_size,
        hidden_dim=audio_cfg.hidden_size,
        input_type=config.adapter_input_type,
        num_pooled_tokens=config.num_pooled_tokens,
        num_hidden_tokens=config.num_hidden_tokens,
        hidden_pool=config.adapter_hidden_pool,
    )
    return dict(
        unet=unet,
        scheduler=scheduler,
        audio_encoder=audio_encoder,
        feature_extractor=feature_extractor,
        audio_projection=audio_projection,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
    )


def check_model_resolution(resolution: int, unet, vae=None) -> None:
    """Raise unless `resolution` is a multiple of the VAE's times the UNet's downsampling (64 for SD 1.5)."""
    from .training_config import check_resolution, spatial_multiple

    where = "the UNet" if vae is None else "the VAE and UNet"
    check_resolution(resolution, spatial_multiple(unet.config, None if vae is None else vae.config), where)


class TextConditioner:
    """Captions -> frozen text-encoder states `(batch, seq, dim)`; the empty prompt (the null text) is encoded once."""

    def __init__(self, tokenizer, text_encoder, device):
        self.tokenizer, self.text_encoder, self.device = tokenizer, text_encoder, device
        self.null = self.encode([""])

    @torch.no_grad()
    def encode(self, captions: list[str]) -> torch.Tensor:
        ids = self.tokenizer(
            captions,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(self.device)
        return self.text_encoder(ids)[0].float()

    def __call__(self, captions: list[str]) -> torch.Tensor:
        if not any(captions):  # no captions at all: the empty prompt, encoded once
            return self.null.expand(len(captions), -1, -1)
        return self.encode(captions)


# ----------------------------------------------------------------------------------------------- checkpoints
CHECKPOINT_PATTERN = re.compile(r"checkpoint-(\d+)")


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """The complete `checkpoint-<step>` folders of `output_dir`, oldest step first."""
    root = Path(output_dir)
    found = [p for p in root.glob("checkpoint-*") if p.is_dir() and CHECKPOINT_PATTERN.fullmatch(p.name)]
    return sorted(found, key=checkpoint_step)


def checkpoint_step(path: str | os.PathLike) -> int:
    """The optimizer step a `checkpoint-<step>` folder was saved at."""
    match = CHECKPOINT_PATTERN.fullmatch(Path(path).name)
    if match is None:
        raise ValueError(f"{str(path)!r} is not a `checkpoint-<step>` folder.")
    return int(match.group(1))


def rotate_checkpoints(output_dir: str | os.PathLike, total_limit: int | None, room_for: int = 1) -> list[Path]:
    """Delete the oldest checkpoints so that `room_for` new ones fit under `total_limit`; returns what was removed."""
    if not total_limit:
        return []
    old = list_checkpoints(output_dir)
    removed = old[: max(0, len(old) - total_limit + room_for)]
    for path in removed:
        shutil.rmtree(path)
    return removed


def save_checkpoint(accelerator, output_dir: str | os.PathLike, step: int, total_limit: int | None = None) -> Path:
    """`accelerator.save_state` into `checkpoint-<step>`, atomically: written under a temporary name and renamed,
    so a run killed while saving leaves no half-written checkpoint for `latest` to pick up."""
    final = Path(output_dir) / f"checkpoint-{step}"
    tmp = Path(output_dir) / f".checkpoint-{step}.tmp"
    if accelerator.is_main_process:
        rotate_checkpoints(output_dir, total_limit)
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    accelerator.wait_for_everyone()
    return final


def resolve_resume_checkpoint(output_dir: str | os.PathLike, value: str | None) -> Path | None:
    """`resume_from_checkpoint` -> the folder to load, or None for a fresh start ('latest' with no checkpoint yet,
    as in diffusers' scripts: a job re-launched in a loop then starts, and later resumes, with one command)."""
    if not value:
        return None
    if value == "latest":
        found = list_checkpoints(output_dir)
        if not found:
            logger.info("`resume_from_checkpoint=latest`: no checkpoint in %s yet; starting a new run.", output_dir)
        return found[-1] if found else None
    path = Path(value)
    if not path.is_dir() or CHECKPOINT_PATTERN.fullmatch(path.name) is None:
        raise FileNotFoundError(f"`resume_from_checkpoint`={value!r} is not a `checkpoint-<step>` folder.")
    return path


def truncate_train_log(path: str | os.PathLike, last_step: int) -> int:
    """Keep the entries of a `train_log.jsonl` up to `last_step` (the resumed checkpoint's step): steps a killed
    run logged after its last checkpoint are run again and must not appear twice. Returns the entries kept."""
    path = Path(path)
    if not path.is_file():
        return 0
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= last_step]
    path.write_text("".join(line + "\n" for line in kept))
    return len(kept)


class TrainableCheckpointHooks:
    """`accelerator.register_save_state_pre_hook(hooks.save)` / `register_load_state_pre_hook(hooks.load)`:
    checkpoints hold the trainable weights only (`trainable_<i>.safetensors`), not the frozen base models."""

    def __init__(self, accelerator):
        self.accelerator = accelerator

    def save(self, models: list, weights: list, output_dir: str) -> None:
        if self.accelerator.is_main_process:
            for i, model in enumerate(models):
                state = trainable_state_dict(self.accelerator.unwrap_model(model))
                save_file(state, os.path.join(output_dir, f"trainable_{i}.safetensors"))
        weights.clear()  # accelerate would otherwise write every model's full state dict

    def load(self, models: list, input_dir: str) -> None:
        for i, model in enumerate(models):
            state = load_file(os.path.join(input_dir, f"trainable_{i}.safetensors"))
            load_trainable_state_dict(self.accelerator.unwrap_model(model), state)
        models.clear()


# ----------------------------------------------------------------------------------------------- validation
@contextlib.contextmanager
def preserved_training_state(modules: list[nn.Module | None]) -> Iterator[None]:
    """Run a block (validation) in eval mode without touching the training state.

    Inside: every module and submodule is in eval mode (no dropout; BatchNorm uses and keeps its running
    statistics). After: each submodule is back in the mode it had, and the torch (CPU and CUDA), NumPy and Python
    RNG states are what they were, so a run with validation draws the same random numbers as one without.
    """
    modes = [(m, m.training) for module in modules if module is not None for m in module.modules()]
    numpy_state, python_state = np.random.get_state(), random.getstate()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=devices):
            for module in modules:
                if module is not None:
                    module.eval()
            yield
    finally:
        for module, training in modes:
            module.training = training
        np.random.set_state(numpy_state)
        random.setstate(python_state)


def image_grid(images: list[PIL.Image.Image]) -> PIL.Image.Image:
    """The images side by side, left to right."""
    grid = PIL.Image.new("RGB", (sum(i.width for i in images), max(i.height for i in images)))
    for k, image in enumerate(images):
        grid.paste(image, (sum(i.width for i in images[:k]), 0))
    return grid


def generate_validation_images(
    pipeline, audio: list, num_inference_steps: int, guidance_scale: float, seed: int, autocast: bool = False
) -> list[PIL.Image.Image]:
    """Images from `audio` with the real pipeline, inside [`preserved_training_state`] (fixed `seed`)."""
    pipeline.set_progress_bar_config(disable=True)
    modules = [m for m in pipeline.components.values() if isinstance(m, nn.Module)]
    with preserved_training_state(modules), torch.autocast(pipeline.device.type, enabled=autocast):
        return pipeline(
            audio,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            generator=torch.Generator().manual_seed(seed),
        ).images


# ----------------------------------------------------------------------------------------------- bad rows
def find_bad_rows(dataset, image_column: str, audio_column: str, dataset_name: str = "dataset") -> list[dict]:
    """Decode every row's image and audio once; return `{"row", "column", "reason"}` for each row that fails.

    A row is bad when its image cannot be decoded (corrupt or truncated file) or its audio cannot be decoded, is
    empty, or holds NaN/inf samples. Each is logged as `<dataset_name> row <i> column <name>: <reason>`. The scan
    reads encoded bytes (no resampling, no resizing): a few milliseconds per row.
    """
    from datasets import Audio, Image

    view = dataset.select_columns([image_column, audio_column])
    view = view.cast_column(image_column, Image(decode=False)).cast_column(audio_column, Audio(decode=False))
    bad = []
    for index, row in enumerate(tqdm(view, desc="Checking rows", disable=len(view) < 256)):
        column, reason = image_column, _image_problem(row[image_column])
        if reason is None:
            column, reason = audio_column, _audio_problem(row[audio_column])
        if reason is not None:
            bad.append({"row": index, "column": column, "reason": reason})
            logger.warning("%s row %d column %s: %s; skipping the row.", dataset_name, index, column, reason)
    return bad


def _image_problem(cell) -> str | None:
    from io import BytesIO

    try:
        if cell is None:
            return "no image"
        data = cell.get("bytes")
        if data is None:
            with open(cell["path"], "rb") as f:
                data = f.read()
        with PIL.Image.open(BytesIO(data)) as image:
            image.load()
            if min(image.size) == 0:
                return "empty image"
    except (OSError, ValueError, SyntaxError, PIL.Image.DecompressionBombError) as err:
        return f"image does not decode ({type(err).__name__}: {err})"
    return None


def _audio_problem(cell) -> str | None:
    if cell is None:
        return "no audio"
    try:
        array, _ = decode_audio(cell)
    except (OSError, RuntimeError, ValueError) as err:
        return f"audio does not decode ({type(err).__name__}: {err})"
    if array.size == 0:
        return "empty audio"
    if not np.isfinite(array).all():
        return "NaN or infinite samples"
    return None


def load_unet_lora(pipeline, folder: str | os.PathLike) -> None:
    """Load the LoRA file a training run saved in `folder` into `pipeline.unet` only (the trainer's LoRA holds no
    text-encoder layers; `load_lora_weights` would also try the text encoder and warn that it found none)."""
    state_dict, alphas, metadata = pipeline.lora_state_dict(str(folder), return_lora_metadata=True)
    pipeline.load_lora_into_unet(
        state_dict, network_alphas=alphas, unet=pipeline.unet, metadata=metadata, _pipeline=pipeline
    )


# ----------------------------------------------------------------------------------------------- frozen features
def encode_waveforms(audio_encoder, feature_extractor, waveforms: list[np.ndarray], device, dtype):
    """Mono waveforms at the feature extractor's rate -> `AudioFeatures` (`pooled`, `hidden_states`)."""
    from .models.audio_encoders import audio_encoder_inputs, encode_audio_features

    return encode_audio_features(
        audio_encoder, audio_encoder_inputs(feature_extractor, audio_encoder, waveforms, device, dtype)
    )


def _audio_feature_rows(indices, *, dataset, column, components, window, max_seconds, device, dtype, keys):
    fe = components["feature_extractor"]
    waves = [
        crop_waveform(load_training_audio(dataset[i][column], fe.sampling_rate, max_seconds), window) for i in indices
    ]
    with torch.no_grad():
        features = encode_waveforms(components["audio_encoder"], fe, waves, device, dtype)
    return {k: getattr(features, k) for k in keys}


def _latent_rows(indices, *, dataset, column, vae, resolution, device, dtype):
    pixels = torch.stack([preprocess_image(dataset[i][column], resolution) for i in indices])
    with torch.no_grad():
        return {"latent_moments": vae.encode(pixels.to(device, dtype)).latent_dist.parameters}


def cache_frozen_features(
    accelerator, dataset, components: dict, config, window: int | None, max_seconds: float | None, dtype
) -> FeatureCaches:
    """Encode what frozen models make of every row once, keyed by the dataset fingerprint and the model weights:
    audio features (unless the audio encoder trains or `cache_audio_features` is off) and VAE latent moments (when
    there is a VAE and `cache_latents` is on). The main process computes and writes; the others then read."""
    from functools import partial

    caches = FeatureCaches()
    root = config.cache_dir or default_cache_dir()
    write = accelerator.is_main_process
    common = {"dataset": dataset, "device": accelerator.device, "dtype": dtype}
    if config.cache_audio_features and not config.train_audio_encoder:
        proj, fe = components["audio_projection"], components["feature_extractor"]
        keys = [k for k, used in (("pooled", proj.use_pooled), ("hidden_states", proj.use_hidden)) if used]
        compute = partial(
            _audio_feature_rows,
            column=config.audio_column,
            components=components,
            window=window,
            max_seconds=max_seconds,
            keys=keys,
            **common,
        )
        key = model_fingerprint(components["audio_encoder"], extra={"fe": fe.to_dict(), "window": window})
        path = feature_cache_path(root, "audio", dataset._fingerprint, key)
        with accelerator.main_process_first():
            caches.audio = cached_features(path, compute, len(dataset), desc="Caching audio features", write=write)
    if config.cache_latents and components["vae"] is not None:
        vae = components["vae"]
        compute = partial(_latent_rows, column=config.image_column, vae=vae, resolution=config.resolution, **common)
        key = model_fingerprint(vae, extra={"resolution": config.resolution})
        path = feature_cache_path(root, "latents", dataset._fingerprint, key)
        with accelerator.main_process_first():
            caches.latents = cached_features(path, compute, len(dataset), desc="Caching latents", write=write)
    return caches
