"""Loudness, reverb and mixing used to make the toy world's soundtracks and held-out evaluation sounds.

These follow the builder's recipe (per-source LUFS from prominence, reverb from the acoustic space, mix, peak
limit). They are private to the toy world so that evaluation sounds do not depend on builder internals; the
dataset itself is built by the real builder.
"""

from __future__ import annotations

import numpy as np
import torch
import torchaudio

from .world import SAMPLING_RATE


LUFS_RANGE = (-42.0, -22.0)  # prominence 0 -> -42 LUFS, 1 -> -22: a 20 LU range, clearly audible
RT60_BY_SPACE = {"small": 0.6, "medium": 0.9, "large": 1.2, "open": 0.05}
PEAK_LIMIT = 10 ** (-1 / 20)  # -1 dBFS


def lufs_from_prominence(prominence: float, lufs_range: tuple[float, float] = LUFS_RANGE) -> float:
    """Target loudness of a source: linear in prominence over `lufs_range`."""
    lo, hi = lufs_range
    return lo + float(np.clip(prominence, 0, 1)) * (hi - lo)


def loudness(clip: np.ndarray) -> float:
    """Integrated loudness (ITU-R BS.1770, torchaudio) of a mono 16 kHz clip in LUFS."""
    return float(torchaudio.functional.loudness(torch.as_tensor(clip, dtype=torch.float32)[None], SAMPLING_RATE))


def set_loudness(clip: np.ndarray, target_lufs: float) -> np.ndarray:
    """Scale `clip` so its integrated loudness is `target_lufs`."""
    return (clip * 10 ** ((target_lufs - loudness(clip)) / 20)).astype(np.float32)


def impulse_response(rt60: float, rng: np.random.Generator) -> np.ndarray:
    """Exponentially decaying noise with the given RT60 (60 dB decay time), direct path first, unit energy."""
    n = max(1, int(min(rt60 * 1.2, 2.0) * SAMPLING_RATE))
    t = np.arange(n) / SAMPLING_RATE
    ir = rng.normal(0, 1, n) * np.exp(-6.9078 * t / rt60)  # ln(1000) = 6.9078: amplitude falls 60 dB at rt60
    ir[0] = 0.0
    ir *= np.sqrt(0.5 / max((ir**2).sum(), 1e-12)) if rt60 > 0.2 else 0.1
    ir[0] = 1.0
    return (ir / np.sqrt((ir**2).sum())).astype(np.float32)


def apply_reverb(clip: np.ndarray, rt60: float, rng: np.random.Generator) -> np.ndarray:
    """Convolve with an `impulse_response(rt60)`, keeping the clip's length."""
    ir = torch.from_numpy(impulse_response(rt60, rng))
    wet = torchaudio.functional.fftconvolve(torch.from_numpy(np.asarray(clip, np.float32)), ir)
    return wet[: len(clip)].numpy()


def mix(clips: list[np.ndarray]) -> np.ndarray:
    """Sum clips and scale down only if the peak would exceed -1 dBFS."""
    out = np.sum(np.stack(clips), axis=0)
    peak = np.abs(out).max()
    return (out * (PEAK_LIMIT / peak) if peak > PEAK_LIMIT else out).astype(np.float32)


def sonify_scene(scene: dict, clips: list[np.ndarray], rng: np.random.Generator, lufs_range=LUFS_RANGE) -> np.ndarray:
    """The soundtrack of `scene`: `clips[i]` (one per object, of its class) at the object's prominence loudness,
    reverberated by the scene's space, mixed."""
    if len(clips) != len(scene["objects"]):
        raise ValueError(f"`clips` has {len(clips)} clips for {len(scene['objects'])} objects; pass one per object.")
    rt60 = RT60_BY_SPACE[scene["space"]]
    leveled = [set_loudness(c, lufs_from_prominence(o["prominence"], lufs_range)) for c, o in zip(clips, scene["objects"])]
    return mix([apply_reverb(c, rt60, rng) for c in leveled])
