"""Assemble stage: the soundtrack of each image from its retrieved clips.

Per source: decode, mono, resample, loop/trim to the duration, reverb with the scene's RT60 (direct-to-reverberant
ratio from the distance), set the loudness to the target LUFS of its prominence/distance. Then mix and limit the true
peak (4x oversampled, ITU-R BS.1770-4 Annex 2) to `peak_ceiling_dbfs` dBTP.
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
    TRUE_PEAK_OVERSAMPLING,
    apply_reverb,
    decode_audio,
    fit_to_duration,
    gain_to_lufs,
    limit_peaks,
    measure_loudness,
    mix,
    resample,
    synthetic_impulse_response,
    to_mono,
    true_peak,
)
from .index import source_suffix, too_short_reason

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
    """Assemble stage (batched): `audio` (FLAC bytes), per-source gains/loudness, `rt60`, mix loudness and peaks,
    and `limiter_lu`: how much the true-peak limiter changed the mix's loudness (0.0 when it did not engage).

    Rows already skipped pass through. A source whose clip fails to decode, is silent or shorter than
    `min_clip_seconds` is dropped and listed in `dropped_sources`; a row left with no source is skipped.
    `image_id` is carried through so the caller can check the join.
    """
    n = len(batch["image_id"])
    out = {
        "image_id": list(batch["image_id"]),
        "audio": [None] * n,
        "sources": [[] for _ in range(n)],
        "rt60": [None] * n,
        "mix_lufs": [None] * n,
        "mix_peak_dbfs": [None] * n,
        "mix_true_peak_dbtp": [None] * n,
        "limiter_lu": [None] * n,
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
            cell = audio_corpus[int(source["clip_index"])]
            try:
                wave, sr = decode_audio(cell, max_seconds=config.duration_s, arg="audio clip")
                if wave.shape[-1] < config.min_clip_seconds * sr:
                    raise ValueError(too_short_reason(wave.shape[-1] / sr, config.min_clip_seconds, cell))
                x, target, measured = render_source(wave, sr, source, rt60, config, seed + 7919 * (j + 1))
            except (ValueError, FileNotFoundError) as err:
                out["dropped_sources"][i].append(
                    f"{source['name']}: clip {source['clip_id']}{source_suffix(cell)}: {err}"[:400]
                )
                continue
            rendered.append(x)
            kept.append({**source, "target_lufs": float(target), "measured_lufs": float(measured)})
        if not rendered:
            out["skip_reason"][i] = "assemble: no source clip could be decoded"
            continue
        unlimited = mix(rendered)
        mixed = limit_peaks(
            unlimited, config.sample_rate, ceiling_dbfs=config.peak_ceiling_dbfs, oversampling=TRUE_PEAK_OVERSAMPLING
        )
        peak = float(mixed.abs().max())
        tpeak = true_peak(mixed)
        out["audio"][i] = {"bytes": encode_flac(mixed, config.sample_rate), "path": None}
        out["sources"][i] = kept
        out["rt60"][i] = float(rt60)
        out["mix_lufs"][i] = measure_loudness(mixed, config.sample_rate)
        out["mix_peak_dbfs"][i] = 20.0 * math.log10(peak) if peak > 0 else float("-inf")
        out["mix_true_peak_dbtp"][i] = 20.0 * math.log10(tpeak) if tpeak > 0 else float("-inf")
        engaged = mixed is not unlimited
        out["limiter_lu"][i] = out["mix_lufs"][i] - measure_loudness(unlimited, config.sample_rate) if engaged else 0.0
    return out
