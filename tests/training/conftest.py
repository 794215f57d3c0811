"""Tiny saved models and a tiny image+audio dataset for the training tests (built once per session)."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import soundfile as sf


REPO = Path(__file__).resolve().parents[2]
TRAIN = REPO / "train_scripts" / "train.py"
TINY_YAML = REPO / "train_scripts" / "configs" / "tiny.yaml"
SR = 16_000


def wav_bytes(wave: np.ndarray, sr: int = SR) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave, sr, format="WAV", subtype="FLOAT")
    return buf.getvalue()


def scene(i: int, size: int = 40) -> PIL.Image.Image:
    """A procedural picture: a coloured square on a background, position and colour depending on `i`."""
    rng = np.random.default_rng(i)
    img = np.zeros((size, size, 3), np.uint8) + rng.integers(0, 255, 3, dtype=np.uint8)
    x, y = rng.integers(0, size // 2, 2)
    img[y : y + size // 2, x : x + size // 2] = rng.integers(0, 255, 3, dtype=np.uint8)
    return PIL.Image.fromarray(img)


def sound(i: int, seconds: float = 1.5) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * (200 + 150 * i) * t)).astype(np.float32)


@pytest.fixture(scope="session")
def tiny_dataset_dir(tmp_path_factory) -> str:
    """8 rows: `image` (Image), `audio` (Audio, 16 kHz WAV bytes), `caption`; saved with save_to_disk."""
    from datasets import Audio, Dataset, Features, Image, Value

    n = 8
    features = Features({"image": Image(), "audio": Audio(decode=False), "caption": Value("string")})
    ds = Dataset.from_dict(
        {
            "image": [scene(i) for i in range(n)],
            "audio": [{"bytes": wav_bytes(sound(i)), "path": None} for i in range(n)],
            "caption": [f"scene {i}" for i in range(n)],
        },
        features=features,
    ).cast_column("audio", Audio())
    path = tmp_path_factory.mktemp("data") / "tiny"
    ds.save_to_disk(str(path))
    return str(path)


@pytest.fixture(scope="session")
def validation_wavs(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("val")
    paths = []
    for i, freq in enumerate((330.0, 990.0)):
        p = folder / f"val{i}.wav"
        t = np.arange(SR) / SR
        sf.write(p, (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32), SR)
        paths.append(str(p))
    return paths


@pytest.fixture(scope="session")
def tiny_text_pipe_dir(tmp_path_factory) -> str:
    """A tiny latent AudioToImagePipeline with a CLIP text encoder, saved."""
    from diffusers_sonify.tiny import tiny_pipeline

    path = tmp_path_factory.mktemp("pipe_text")
    tiny_pipeline(seed=0, with_text=True).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_base_dirs(tmp_path_factory) -> tuple[str, str]:
    """(base text-to-image folder with unet/vae/scheduler/text_encoder/tokenizer, audio encoder folder)."""
    from diffusers_sonify.tiny import tiny_pipeline_components

    c = tiny_pipeline_components(seed=1, with_text=True)
    base = tmp_path_factory.mktemp("base")
    for name in ("unet", "vae", "scheduler", "text_encoder", "tokenizer"):
        c[name].save_pretrained(base / name)
    audio = tmp_path_factory.mktemp("clap")
    c["audio_encoder"].save_pretrained(audio)
    c["feature_extractor"].save_pretrained(audio)
    return str(base), str(audio)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(launcher_args: list[str], script_args: list[str], timeout: int = 240) -> subprocess.CompletedProcess:
    """`accelerate launch <launcher_args> train.py tiny.yaml <script_args>`; fails the test with the log on error."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *launcher_args, str(TRAIN), str(TINY_YAML), *script_args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONHASHSEED": "0"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
    assert proc.returncode == 0, f"train.py failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
    return proc
