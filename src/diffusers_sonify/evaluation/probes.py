"""Controllability probes: change one property of the input sound and read how an image scorer's reading moves.

Any pipeline (through a `generate(sounds) -> images` callable, [`pipeline_generator`]) and any scorer (a
`read(images) -> (N,)` callable) can be probed:

* loudness sweep: one clip set to rising loudness (LUFS steps, `audio.gain_to_lufs`);
* reverb sweep: one clip from dry to a large hall (RT60 steps, `audio.synthetic_impulse_response` +
  `audio.apply_reverb`), loudness held equal so only the reverberation changes;
* two-source mixing: two clips of different classes at equal loudness, summed: are both pictured?
* A -> B interpolation: clips A and B mixed with gains `(1 - w, w)` over rising `w`.

Every image of one probe uses the same seed, so only the sound differs between them. A sweep reports the
Spearman correlation of the reading with the swept value, its monotonicity (fraction of steps where the reading
does not fall) and the number of inversions; mixing reports the both-present rate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ..audio import (
    TRUE_PEAK_OVERSAMPLING,
    apply_reverb,
    gain_to_lufs,
    limit_peaks,
    synthetic_impulse_response,
    validate_waveform,
)
from .metrics import spearman

DEFAULT_LUFS_STEPS = (-40.0, -35.0, -30.0, -25.0, -20.0)
# RT60 in seconds: 0 dry (free field), ~0.3 small room, ~0.9 medium room, 2.0 a large concert hall
DEFAULT_RT60_STEPS = (0.0, 0.3, 0.6, 0.9, 1.4, 2.0)
DEFAULT_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
MIX_LUFS = -27.0  # each source of a two-source probe mixture
PEAK_CEILING_DBFS = -1.0

GenerateFn = Callable[[list[np.ndarray]], list]
ReadFn = Callable[[list], Sequence[float]]


def _clip(waveform, arg: str) -> torch.Tensor:
    return validate_waveform(waveform, arg).to(torch.float32).reshape(-1)


def loudness_sweep_sounds(clip, sampling_rate: int, lufs_steps: Sequence[float] = DEFAULT_LUFS_STEPS):
    """`clip` set to each loudness of `lufs_steps` (ITU-R BS.1770 integrated loudness); list of `(samples,)`."""
    x = _clip(clip, "clip")
    return [gain_to_lufs(x, sampling_rate, float(level))[0].numpy() for level in lufs_steps]


def reverb_sweep_sounds(
    clip, sampling_rate: int, rt60_steps: Sequence[float] = DEFAULT_RT60_STEPS, seed: int = 0, lufs: float = -25.0
):
    """`clip` dry (`rt60 <= 0`) or convolved with a synthetic room of each RT60, every version set to `lufs`."""
    x = _clip(clip, "clip")
    out = []
    for rt60 in rt60_steps:
        wet = x if rt60 <= 0 else apply_reverb(x, synthetic_impulse_response(rt60, sampling_rate, seed=seed))
        out.append(gain_to_lufs(wet, sampling_rate, lufs)[0].numpy())
    return out


def mixing_sound(clip_a, clip_b, sampling_rate: int, lufs: float = MIX_LUFS) -> np.ndarray:
    """A and B, each set to `lufs`, summed (cut to the shorter) and peak-limited to -1 dBFS."""
    a = gain_to_lufs(_clip(clip_a, "clip_a"), sampling_rate, lufs)[0]
    b = gain_to_lufs(_clip(clip_b, "clip_b"), sampling_rate, lufs)[0]
    n = min(len(a), len(b))
    return limit_peaks(a[:n] + b[:n], sampling_rate, PEAK_CEILING_DBFS, oversampling=TRUE_PEAK_OVERSAMPLING).numpy()


def interpolation_sounds(clip_a, clip_b, sampling_rate: int, weights: Sequence[float] = DEFAULT_WEIGHTS, lufs=-25.0):
    """A and B (each first set to `lufs`) mixed with gains `(1 - w, w)` for each weight `w` in [0, 1]."""
    if any(not 0 <= w <= 1 for w in weights):
        raise ValueError(f"`weights` must lie in [0, 1], got {list(weights)}.")
    a = gain_to_lufs(_clip(clip_a, "clip_a"), sampling_rate, lufs)[0]
    b = gain_to_lufs(_clip(clip_b, "clip_b"), sampling_rate, lufs)[0]
    n = min(len(a), len(b))
    return [
        limit_peaks(
            (1 - w) * a[:n] + w * b[:n], sampling_rate, PEAK_CEILING_DBFS, oversampling=TRUE_PEAK_OVERSAMPLING
        ).numpy()
        for w in weights
    ]


@dataclass
class SweepResult:
    """How a scorer's reading moved along one sweep."""

    probe: str
    values: list[float]  # the swept property (LUFS, RT60 s, mixing weight)
    readings: list[float]
    spearman: float
    monotonicity: float  # fraction of consecutive steps where the reading does not fall
    inversions: int  # steps where it falls
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def sweep_statistics(probe: str, values: Sequence[float], readings: Sequence[float], **meta) -> SweepResult:
    """Spearman, monotonicity and inversions of `readings` along `values` (sorted by value)."""
    values, readings = list(map(float, values)), list(map(float, readings))
    if len(values) != len(readings) or len(values) < 2:
        raise ValueError(f"A sweep needs >= 2 values with one reading each, got {len(values)} and {len(readings)}.")
    order = np.argsort(values, kind="stable")
    r = np.asarray(readings)[order]
    falls = int((np.diff(r) < 0).sum())
    return SweepResult(
        probe,
        [values[i] for i in order],
        r.tolist(),
        spearman(np.asarray(values)[order], r),
        1.0 - falls / (len(r) - 1),
        falls,
        dict(meta),
    )


def run_sweep(probe: str, generate: GenerateFn, sounds: list, values: Sequence[float], read: ReadFn, **meta):
    """Generate one image per sound, read each, and return ([`SweepResult`], images)."""
    if len(sounds) != len(values):
        raise ValueError(f"{len(sounds)} sounds for {len(values)} sweep values; pass one value per sound.")
    images = generate(sounds)
    return sweep_statistics(probe, values, read(images), **meta), images


def both_present_rate(presence: Sequence[Sequence[bool]]) -> float:
    """Fraction of mixture images in which both sources were detected (`presence[i] = (a_present, b_present)`)."""
    p = np.asarray(presence, dtype=bool)
    if p.ndim != 2 or p.shape[1] != 2 or len(p) == 0:
        raise ValueError(f"`presence` must be `(N, 2)` booleans with N >= 1, got shape {p.shape}.")
    return float(p.all(1).mean())


def pipeline_generator(pipe, sampling_rate: int, seed: int = 0, **call_kwargs) -> GenerateFn:
    """A `generate(sounds) -> PIL images` over an `AudioToImagePipeline`, every image from the same seed."""

    def generate(sounds: list[np.ndarray]) -> list:
        generators = [torch.Generator().manual_seed(seed) for _ in sounds]
        return pipe(list(sounds), sampling_rate=sampling_rate, generator=generators, **call_kwargs).images

    return generate
