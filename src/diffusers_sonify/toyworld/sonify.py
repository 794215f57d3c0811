"""Loudness, reverb and mixing for the toy world's soundtracks and held-out evaluation sounds.

Built on the builder's audio functions (`diffusers_sonify.audio`) in the builder's order (reverb with the scene's
RT60, then loudness set to the source's target LUFS, mix, peak limit), with the toy world's settings: a 20 LU
prominence range, no distance offsets, a -6 dB direct-to-reverberant ratio and RT60 0.9 / 1.2 s indoors. The
builder's toy config must use the same values (see RECIPE.md) so evaluation sounds match the training data.
"""

from __future__ import annotations

import numpy as np
import torch

from ..audio import TRUE_PEAK_OVERSAMPLING, gain_to_lufs, limit_peaks, measure_loudness, synthetic_impulse_response
from ..audio import apply_reverb as _convolve
from ..audio import mix as _sum
from .world import SAMPLING_RATE

LUFS_RANGE = (-42.0, -22.0)  # prominence 0 -> -42 LUFS, 1 -> -22: a 20 LU range, clearly audible
RT60_BY_SPACE = {"small": 0.6, "medium": 0.9, "large": 1.2, "open": 0.0}  # open: free field, dry
# Four times as much reverberant as direct energy: a source beyond the room's critical distance, where a listener
# usually is (Sabine's estimate r_c ~ 0.057 sqrt(V / RT60) m puts it under 1 m in a 200 m^3 room at 0.9 s, so a
# source 2 m away is heard at about -7 dB). At 0 dB (until d29) a dry and a reverberated clip of a sustained sound
# (rain, engine) differed too little for the toy audio encoder to tell apart (RECIPE.md, d30).
DIRECT_TO_REVERB_DB = -6.0
PEAK_CEILING_DBFS = -1.0
PEAK_LIMIT = 10 ** (PEAK_CEILING_DBFS / 20)


def lufs_from_prominence(prominence: float, lufs_range: tuple[float, float] = LUFS_RANGE) -> float:
    """Target loudness of a source: linear in prominence over `lufs_range`."""
    lo, hi = lufs_range
    return lo + float(np.clip(prominence, 0, 1)) * (hi - lo)


def loudness(clip: np.ndarray) -> float:
    """Integrated loudness (ITU-R BS.1770) of a mono 16 kHz clip in LUFS."""
    return measure_loudness(torch.as_tensor(clip, dtype=torch.float32), SAMPLING_RATE)


def set_loudness(clip: np.ndarray, target_lufs: float) -> np.ndarray:
    """Scale `clip` so its integrated loudness is `target_lufs`."""
    scaled, _ = gain_to_lufs(torch.as_tensor(clip, dtype=torch.float32), SAMPLING_RATE, target_lufs)
    return scaled.numpy().astype(np.float32)


def impulse_response(rt60: float, seed: int) -> np.ndarray:
    """The builder's synthetic room response with the toy world's direct-to-reverberant ratio."""
    return synthetic_impulse_response(rt60, SAMPLING_RATE, seed=seed, direct_to_reverb_db=DIRECT_TO_REVERB_DB).numpy()


def apply_reverb(clip: np.ndarray, rt60: float, seed: int) -> np.ndarray:
    """Convolve with `impulse_response(rt60, seed)` keeping the length; `rt60 <= 0` returns the clip (dry)."""
    if rt60 <= 0:
        return np.asarray(clip, np.float32)
    ir = torch.from_numpy(impulse_response(rt60, seed))
    return _convolve(torch.as_tensor(clip, dtype=torch.float32), ir).numpy()


def mix(clips: list[np.ndarray]) -> np.ndarray:
    """Sum clips and limit the true peak to -1 dBTP (the builder's limiter, with its oversampling)."""
    summed = _sum([torch.as_tensor(c, dtype=torch.float32) for c in clips])
    limited = limit_peaks(summed, SAMPLING_RATE, PEAK_CEILING_DBFS, oversampling=TRUE_PEAK_OVERSAMPLING)
    return limited.numpy().astype(np.float32)


def sonify_scene(scene: dict, clips: list[np.ndarray], seed: int, lufs_range=LUFS_RANGE) -> np.ndarray:
    """The soundtrack of `scene` as the builder makes it: `clips[i]` (one per object, of its class) reverberated
    by the scene's space, set to the object's prominence loudness, mixed and peak-limited."""
    if len(clips) != len(scene["objects"]):
        raise ValueError(f"`clips` has {len(clips)} clips for {len(scene['objects'])} objects; pass one per object.")
    rt60 = RT60_BY_SPACE[scene["space"]]
    sources = [
        set_loudness(apply_reverb(c, rt60, seed + 7919 * (j + 1)), lufs_from_prominence(o["prominence"], lufs_range))
        for j, (c, o) in enumerate(zip(clips, scene["objects"]))
    ]
    return mix(sources)
