"""Representation alignment (REPA) for training: one UNet block's features are pulled towards what a frozen,
pre-trained vision encoder sees in the clean training image.

Yu et al. 2024, "Representation Alignment for Generation: Training Diffusion Transformers Is Easier Than You Think",
project a diffusion transformer's hidden states through a small MLP onto a self-supervised encoder's patch features
(DINOv2) and add `-weight * mean cosine similarity` to the denoising loss. Here the features are a UNet block's output
map `(B, C, h, w)`, each of its `h * w` positions a token; the encoder is any ViT-style vision model, or the vision
tower of a vision-language model (the toy world uses its own toy VLM's). The projector exists only for training: it is
checkpointed with the trainable weights (a resumed run continues exactly) and left out of the saved pipeline.

    alignment = RepresentationAlignment.from_pretrained("facebook/dinov2-small", unet, block="mid_block")
    projector = alignment.make_projector(hidden_dim=2048)
    with alignment.capture():
        pred = unet(noisy, t, encoder_hidden_states=cond).sample
    loss = diffusion_loss(...) - weight * alignment.cosine(projector, clean_pixels)
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import nn

from .training_config import REPA_BLOCK

# attributes under which transformers' multimodal and dual-encoder models keep their vision tower
VISION_TOWER_ATTRIBUTES = ("vision_model", "vision_tower", "visual", "vision_encoder")


def unet_block_channels(unet_config, block: str) -> int:
    """Channels of the output of `block` of a `UNet2DConditionModel` with `unet_config`: `mid_block`,
    `down_blocks.<i>` or `up_blocks.<i>`; a clear error for any other name or an index out of range."""
    channels = list(unet_config.block_out_channels)
    names = ["mid_block"] + [f"down_blocks.{i}" for i in range(len(channels))]
    names += [f"up_blocks.{i}" for i in range(len(channels))]
    match = REPA_BLOCK.fullmatch(block)
    index = int(match.group(2)) if match and match.group(2) else 0
    if match is None or index >= len(channels):
        raise ValueError(f"`repa_block`={block!r} is not a block of this UNet; use one of {names}.")
    if block == "mid_block":
        return channels[-1]
    return channels[index] if match.group(1) == "down" else channels[::-1][index]


class RepaProjector(nn.Module):
    """The MLP (three Linear layers with SiLU between, as in REPA) from a UNet block's channels to the encoder's
    feature size, applied to every position of the block's output map."""

    def __init__(self, in_channels: int, out_dim: int, hidden_dim: int = 2048):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(in_channels, hidden_dim),
            nn.SiLU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.SiLU(),
            nn.Linear(hidden_dim, out_dim),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """`(B, C, h, w)` -> `(B, h * w, out_dim)`, positions in row-major order."""
        return self.layers(features.flatten(2).transpose(1, 2))


def vision_tower(model: nn.Module) -> tuple[str, nn.Module]:
    """`(attribute, encoder)`: the vision encoder inside `model` (a VLM's or CLIP/SigLIP's vision tower) and the
    attribute holding it, or `("", model)` when `model` is the encoder itself."""
    for name in VISION_TOWER_ATTRIBUTES:
        tower = getattr(model, name, None)
        if isinstance(tower, nn.Module):
            return name, tower
    return "", model


def load_repa_encoder(name_or_path: str, revision: str | None = None) -> tuple[nn.Module, dict]:
    """`(vision_encoder, preprocessing)` for REPA from a model id or folder: a vision model (DINOv2, a ViT) or a
    model holding one (CLIP, SigLIP, a vision-language model such as Idefics3/SmolVLM, whose vision tower is kept and
    the rest dropped). Loaded in eval mode with safetensors weights only, never with remote code.

    `preprocessing` holds the image processor's `image_mean` and `image_std` and the encoder's `image_size` and
    `patch_size` (from its config): the clean training images are resized to `image_size` and normalised as the
    encoder saw its own training images.
    """
    from transformers import AutoImageProcessor, AutoModel
    from transformers.utils import logging as hf_logging

    # the load report would list a VLM's language-model head as unexpected; missing vision weights are checked below
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model, info = AutoModel.from_pretrained(
            name_or_path, revision=revision, use_safetensors=True, output_loading_info=True
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    attribute, tower = vision_tower(model)
    missing = [k for k in info["missing_keys"] if k.startswith(f"{attribute}." if attribute else "")]
    if missing:
        raise ValueError(
            f"`repa_encoder_name_or_path`={name_or_path!r} has no weights for {len(missing)} vision-encoder tensors "
            f"(e.g. {missing[:3]}): REPA needs a trained encoder. Name a checkpoint with the vision weights."
        )
    config = tower.config
    patch_size, image_size = getattr(config, "patch_size", None), getattr(config, "image_size", None)
    if not isinstance(patch_size, int) or not isinstance(image_size, int):
        raise ValueError(
            f"`repa_encoder_name_or_path`={name_or_path!r} is a {type(tower).__name__}, whose config has no integer "
            "`patch_size` and `image_size`: REPA aligns with patch tokens, so name a ViT-style encoder (DINOv2, "
            "CLIP, SigLIP) or a vision-language model built on one."
        )
    processor = AutoImageProcessor.from_pretrained(name_or_path, revision=revision)
    preprocessing = {
        "image_mean": list(processor.image_mean),
        "image_std": list(processor.image_std),
        "image_size": image_size,
        "patch_size": patch_size,
    }
    return tower.eval().requires_grad_(False), preprocessing


class RepresentationAlignment:
    """The frozen encoder's patch features of clean images, and their cosine similarity with a projection of the
    features one UNet block produced (captured by a forward hook while [`capture`] is active).

    Args:
        encoder (`nn.Module`): a vision model whose forward takes `pixel_values` and returns `last_hidden_state`
            `(B, tokens, dim)`; its last `(image_size / patch_size) ** 2` tokens are the patches (class and register
            tokens, which come first, are dropped).
        preprocessing (`dict`): `image_mean`, `image_std`, `image_size`, `patch_size` (see [`load_repa_encoder`]).
        unet: the `UNet2DConditionModel` being trained (unwrapped).
        block (`str`): `mid_block`, `down_blocks.<i>` or `up_blocks.<i>`.
    """

    def __init__(self, encoder: nn.Module, preprocessing: dict, unet: nn.Module, block: str = "mid_block"):
        self.encoder = encoder
        self.image_size = int(preprocessing["image_size"])
        self.num_patches = (self.image_size // int(preprocessing["patch_size"])) ** 2
        self.mean = torch.tensor(preprocessing["image_mean"], dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(preprocessing["image_std"], dtype=torch.float32).view(1, -1, 1, 1)
        self.in_channels = unet_block_channels(unet.config, block)
        self.encoder_dim = int(getattr(encoder.config, "hidden_size"))
        self._features: torch.Tensor | None = None
        self._capturing = False
        unet.get_submodule(block).register_forward_hook(self._hook)

    @classmethod
    def from_pretrained(
        cls, name_or_path: str, unet: nn.Module, block: str = "mid_block", revision: str | None = None
    ) -> RepresentationAlignment:
        unet_block_channels(unet.config, block)  # a wrong block name fails before the encoder loads
        encoder, preprocessing = load_repa_encoder(name_or_path, revision)
        return cls(encoder, preprocessing, unet, block)

    def make_projector(self, hidden_dim: int = 2048) -> RepaProjector:
        return RepaProjector(self.in_channels, self.encoder_dim, hidden_dim)

    def _hook(self, module, inputs, output) -> None:
        if self._capturing:
            self._features = output[0] if isinstance(output, (tuple, list)) else output

    @contextlib.contextmanager
    def capture(self) -> Iterator[None]:
        """Keep the block's output of the UNet forward passes inside the block (only there: sampling is not held)."""
        self._capturing, self._features = True, None
        try:
            yield
        finally:
            self._capturing = False

    @torch.no_grad()
    def target_features(self, pixels: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
        """The encoder's patch features `(B, h * w, dim)` of `pixels` `(B, 3, H, W)` in [-1, 1], resampled to the
        UNet block's `grid` `(h, w)` (area average when coarser, bilinear when finer)."""
        param = next(self.encoder.parameters())
        x = (pixels.float() + 1) / 2
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = nn.functional.interpolate(x, size=(self.image_size,) * 2, mode="bilinear", antialias=True)
        x = (x - self.mean.to(x.device)) / self.std.to(x.device)
        tokens = self.encoder(pixel_values=x.to(param.device, param.dtype)).last_hidden_state
        if tokens.shape[1] < self.num_patches:
            raise ValueError(
                f"The REPA encoder returned {tokens.shape[1]} tokens for a {self.image_size}px image, fewer than its "
                f"{self.num_patches} patches."
            )
        side = math.isqrt(self.num_patches)
        patches = tokens[:, -self.num_patches :].float().transpose(1, 2).reshape(len(x), -1, side, side)
        h, w = grid
        if (h, w) != (side, side):
            if h <= side and w <= side:
                patches = nn.functional.adaptive_avg_pool2d(patches, (h, w))
            else:
                patches = nn.functional.interpolate(patches, size=(h, w), mode="bilinear")
        return patches.flatten(2).transpose(1, 2)

    @property
    def captured_grid(self) -> tuple[int, int]:
        """`(h, w)` of the block's output in the last captured forward pass."""
        if self._features is None:
            raise RuntimeError("No UNet features captured: run the UNet forward inside `with alignment.capture():`.")
        return tuple(self._features.shape[-2:])

    @torch.no_grad()
    def cache_targets(self, batches: Iterable[torch.Tensor], grid: Sequence[int], mirrored: bool) -> CachedTargets:
        """[`target_features`] of every image of `batches` (`(B, 3, H, W)` tensors in [-1, 1], the training rows in
        order), and of each image mirrored left-right when `mirrored`, computed once."""
        plain, flipped = [], []
        for pixels in batches:
            plain.append(self.target_features(pixels, grid))
            if mirrored:
                flipped.append(self.target_features(pixels.flip(-1), grid))
        return CachedTargets(torch.cat(plain), torch.cat(flipped) if mirrored else None)

    def cosine(self, projector: nn.Module, pixels: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        """Mean cosine similarity between the projected features of the last captured forward pass and the
        encoder's patch features of the clean `pixels` (a scalar with gradients into the projector and the UNet),
        or `target`, those features looked up in a [`CachedTargets`]."""
        grid = self.captured_grid
        features = self._features
        if target is None:
            target = self.target_features(pixels, grid)
        target = target.to(features.device)
        projected = projector(features.float())
        return nn.functional.cosine_similarity(projected, target, dim=-1).mean()


class CachedTargets:
    """The REPA encoder's targets of a fixed set of training images (rows `0..N-1`), and of their mirror images,
    made once by [`RepresentationAlignment.cache_targets`]: a training step reads its rows' targets instead of
    running the encoder. Valid while every row's image is the same at every epoch (no random crops)."""

    def __init__(self, targets: torch.Tensor, mirrored: torch.Tensor | None = None):
        self.targets, self.mirrored = targets, mirrored

    def __len__(self) -> int:
        return len(self.targets)

    def __call__(self, rows: torch.Tensor, flips: torch.Tensor | None = None) -> torch.Tensor:
        """The targets `(B, h * w, dim)` of `rows` (dataset indices), mirrored where `flips` (bools) is true."""
        rows = rows.to(self.targets.device)
        out = self.targets[rows]
        if flips is None or not bool(flips.any()):
            return out
        if self.mirrored is None:
            raise ValueError(
                "These targets were cached without mirror images (`mirrored=False`): flipped rows need them."
            )
        return torch.where(flips.to(out.device).view(-1, 1, 1), self.mirrored[rows], out)
