"""Helpers shared by the training tests: paths, tiny procedural images and sounds, launching train.py."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
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


def launch(launcher_args: list[str], script_args: list[str], timeout: int = 240) -> subprocess.CompletedProcess:
    """`accelerate launch <launcher_args> train.py tiny.yaml <script_args>`; fails the test with the log on error."""
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        *launcher_args,
        str(TRAIN),
        str(TINY_YAML),
        *script_args,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONHASHSEED": "0"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
    assert proc.returncode == 0, f"train.py failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
    return proc
