"""Example sounds for the tests (imported by test modules; fixtures live in conftest.py)."""

from __future__ import annotations

import numpy as np

SR = 16_000


def tone(freq: float, seconds: float = 1.0, sr: int = SR, amplitude: float = 0.5) -> np.ndarray:
    """A sine tone with a short fade, float32 mono."""
    t = np.arange(int(seconds * sr)) / sr
    env = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.01)
    return (amplitude * env * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def chirp(f0: float, f1: float, seconds: float = 1.0, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds))
    return (0.4 * np.sin(phase)).astype(np.float32)
