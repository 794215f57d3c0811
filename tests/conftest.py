"""Shared fixtures: tiny real-class components (saved once per session) and example sounds."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import numpy as np
import pytest
import torch
from sounds import SR, chirp, tone

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One datasets cache per test session (set before `datasets` is imported; subprocesses inherit it): results never
# depend on what earlier sessions left in ~/.cache, and the session leaves nothing behind there.
_DATASETS_CACHE = tempfile.mkdtemp(prefix="sonify-tests-datasets-")
os.environ["HF_DATASETS_CACHE"] = _DATASETS_CACHE
atexit.register(shutil.rmtree, _DATASETS_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def sounds() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "low": tone(220.0),
        "high": tone(1760.0),
        "sweep": chirp(300.0, 3000.0),
        "noise": (0.2 * rng.standard_normal(SR)).astype(np.float32),
    }


@pytest.fixture(scope="session")
def tiny_pipe_dir(tmp_path_factory) -> str:
    """A tiny latent-diffusion AudioToImagePipeline saved once per session."""
    from diffusers_sonify.tiny import tiny_pipeline

    path = tmp_path_factory.mktemp("tiny_pipe")
    tiny_pipeline(seed=0).save_pretrained(path)
    return str(path)


@pytest.fixture
def tiny_pipe(tiny_pipe_dir):
    from diffusers_sonify import AudioToImagePipeline

    pipe = AudioToImagePipeline.from_pretrained(tiny_pipe_dir)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def generator():
    return torch.Generator().manual_seed(0)
