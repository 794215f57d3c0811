"""Fixtures for the evaluation tests: a tiny random CLIP (real classes, no download) and a tiny labelled dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch


def tiny_clip(seed: int = 0):
    """A random `CLIPModel` at toy width, a `CLIPImageProcessor` at 32 px and the package's tiny tokenizer."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from diffusers_sonify.tiny import tiny_clip_tokenizer

    tokenizer = tiny_clip_tokenizer(model_max_length=32)
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": 32,
            "bos_token_id": 0,
            "eos_token_id": 1,
            "pad_token_id": 1,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    model = CLIPModel(config).eval()
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return model, CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> str:
    model, processor = tiny_clip()
    path = tmp_path_factory.mktemp("tiny_clip")
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return str(path)


class _UnitScale(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(x, dim=1) * x.shape[1] ** 0.5


def tiny_feature_net(seed: int = 0) -> torch.nn.Module:
    """A tiny random conv feature network `(B, 3, H, W)` -> `(B, 64)`, features of norm 8 (KID's kernel range)."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 16, 3, stride=2),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(2),
        torch.nn.Flatten(),
        _UnitScale(),
    ).eval()


def toy_renders(n: int, seed: int) -> torch.Tensor:
    from diffusers_sonify.toyworld.classifier import render_training_set

    return render_training_set(n, seed).images


def noisy(images: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (images + sigma * torch.randn(images.shape, generator=g)).clamp(0, 1)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
