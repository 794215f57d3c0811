"""Assemble stage: the soundtrack of each image from its retrieved clips.

Per source: decode, mono, resample, loop/trim to the duration, reverb with the scene's RT60 (direct-to-reverberant
ratio from the distance), set the loudness to the target LUFS of its prominence/distance. Then mix and limit peaks.
All mappings come from [`BuilderConfig`] (`target_lufs`, `rt60`, `direct_to_reverb_db`).
"""

from __future__ import annotations

import io
import logging
import math
import zlib

import numpy as np
import soundfile as sf
import torch

from ..audio import (
    apply_reverb,
    fit_to_duration,
    gain_to_lufs,
    limit_peaks,
    measure_loudness,
    mix,
    resample,
    synthetic_impulse_response,
    to_mono,
)
from .index import decode_audio_cell

logger = logging.getLogger(__name__)


def row_seed(seed: int, image_id: str) -> int:
    """A per-row seed that is the same in every process and run (unlike Python's salted `hash`)."""
    return (int(seed) * 1_000_003 + zlib.crc32(str(image_id).encode())) % (2**31)


def encode_flac(waveform: torch.Tensor, sample_rate: int) -> bytes:
    """Mono float waveform -> FLAC bytes (24-bit PCM: lossless for our levels, half the size of float WAV)."""
    buffer = io.BytesIO()
    sf.write(buffer, waveform.numpy().astype(np.float32), int(sample_rate), format="FLAC", subtype="PCM_24")
    return buffer.getvalue()


def render_source(
    wave: torch.Tensor, sr: int, source: dict, rt60: float, config, seed: int
) -> tuple[torch.Tensor, float, float]:
    """One source -> `(waveform at config.sample_rate, target_lufs, measured_lufs)`."""
    num_samples = int(round(config.duration_s * config.sample_rate))
    x = resample(to_mono(wave), sr, config.sample_rate)
    x = fit_to_duration(x, num_samples, fade_samples=int(config.fade_ms * 1e-3 * config.sample_rate))
    if rt60 > 0:
        ir = synthetic_impulse_response(
            rt60, config.sample_rate, seed=seed, direct_to_reverb_db=config.direct_to_reverb_db(source["distance"])
        )
        x = apply_reverb(x, ir)
    target = config.target_lufs(source["prominence"], source["distance"])
    x, measured = gain_to_lufs(x, config.sample_rate, target)
    return x, target, measured


def assemble_soundscapes(batch: dict, rank: int | None = None, *, audio_corpus, config) -> dict:
    """Assemble stage (batched): `audio` (FLAC bytes), per-source gains/loudness, `rt60`, mix loudness and peak.

    Rows already skipped pass through. A source whose clip fails to decode or is silent is dropped and listed in
    `dropped_sources`; a row left with no source is skipped.
    """
    n = len(batch["image_id"])
    out = {
        "audio": [None] * n,
        "sources": [[] for _ in range(n)],
        "rt60": [None] * n,
        "mix_lufs": [None] * n,
        "mix_peak_dbfs": [None] * n,
        "dropped_sources": [[] for _ in range(n)],
        "skip_reason": list(batch["skip_reason"]),
    }
    for i in range(n):
        if out["skip_reason"][i] is not None:
            continue
        scene = batch["scene"][i]
        rt60 = config.rt60(scene["setting"], scene["space"])
        seed = row_seed(config.seed, batch["image_id"][i])
        rendered, kept = [], []
        for j, source in enumerate(batch["sources"][i]):
            try:
                wave, sr = decode_audio_cell(audio_corpus[int(source["clip_index"])], max_seconds=config.duration_s)
                x, target, measured = render_source(wave, sr, source, rt60, config, seed + 7919 * (j + 1))
            except ValueError as err:
                out["dropped_sources"][i].append(f"{source['name']}: clip {source['clip_id']}: {err}"[:300])
                continue
            rendered.append(x)
            kept.append({**source, "target_lufs": float(target), "measured_lufs": float(measured)})
        if not rendered:
            out["skip_reason"][i] = "assemble: no source clip could be decoded"
            continue
        mixed = limit_peaks(mix(rendered), config.sample_rate, ceiling_dbfs=config.peak_ceiling_dbfs)
        peak = float(mixed.abs().max())
        out["audio"][i] = {"bytes": encode_flac(mixed, config.sample_rate), "path": None}
        out["sources"][i] = kept
        out["rt60"][i] = float(rt60)
        out["mix_lufs"][i] = measure_loudness(mixed, config.sample_rate)
        out["mix_peak_dbfs"][i] = 20.0 * math.log10(peak) if peak > 0 else float("-inf")
    return out
