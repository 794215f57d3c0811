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
from collections import OrderedDict

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


def dry_clip(wave: torch.Tensor, sr: int, config) -> torch.Tensor:
    """A decoded clip at `config.sample_rate`, mono, looped or trimmed to `config.duration_s` with fades."""
    num_samples = int(round(config.duration_s * config.sample_rate))
    x = resample(to_mono(wave), sr, config.sample_rate)
    return fit_to_duration(x, num_samples, fade_samples=int(config.fade_ms * 1e-3 * config.sample_rate))


def render_source(
    wave: torch.Tensor, sr: int, source: dict, rt60: float, config, seed: int
) -> tuple[torch.Tensor, float, float]:
    """One source -> `(waveform at config.sample_rate, target_lufs, measured_lufs)`."""
    return place_source(dry_clip(wave, sr, config), source, rt60, config, seed)


def place_source(x: torch.Tensor, source: dict, rt60: float, config, seed: int) -> tuple[torch.Tensor, float, float]:
    """A [`dry_clip`] in the scene: reverb with the scene's `rt60` (direct-to-reverberant ratio from the source's
    distance), gain to the target LUFS of its prominence and distance. Returns `(waveform, target, measured)`."""
    if rt60 > 0:
        ir = synthetic_impulse_response(
            rt60, config.sample_rate, seed=seed, direct_to_reverb_db=config.direct_to_reverb_db(source["distance"])
        )
        x = apply_reverb(x, ir)
    target = config.target_lufs(source["prominence"], source["distance"])
    x, measured = gain_to_lufs(x, config.sample_rate, target)
    return x, target, measured


# decoded clips kept per assemble shard ([`DryClipCache`]): 512 toy clips (2 s at 16 kHz) or 33 ten-second clips
# at 48 kHz
DRY_CLIP_CACHE_BYTES = 64 << 20


class DryClipCache:
    """Dry clips ([`dry_clip`]) by audio-corpus row, the least recently used evicted past `max_bytes`.

    A clip is retrieved for up to `max_clip_uses` rows; with the cache it is decoded and resampled once per
    assemble shard while it stays in use, not once per row. Clips that fail to decode are not kept (each use
    reports its own error).
    """

    def __init__(self, max_bytes: int = DRY_CLIP_CACHE_BYTES):
        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self._clips: OrderedDict[int, torch.Tensor] = OrderedDict()

    def get(self, index: int, load) -> torch.Tensor:
        """The clip of corpus row `index`, from the cache or from `load()` (then kept)."""
        clip = self._clips.get(index)
        if clip is not None:
            self._clips.move_to_end(index)
            return clip
        clip = load()
        self._clips[index] = clip
        self.nbytes += clip.element_size() * clip.nelement()
        while self.nbytes > self.max_bytes and len(self._clips) > 1:
            _, old = self._clips.popitem(last=False)
            self.nbytes -= old.element_size() * old.nelement()
        return clip


def _load_dry_clip(cell, config) -> torch.Tensor:
    wave, sr = decode_audio(cell, max_seconds=config.duration_s, arg="audio clip")
    if wave.shape[-1] < config.min_clip_seconds * sr:
        raise ValueError(too_short_reason(wave.shape[-1] / sr, config.min_clip_seconds, cell))
    return dry_clip(wave, sr, config)


def assemble_soundscapes(
    batch: dict, rank: int | None = None, *, audio_corpus, config, clips: DryClipCache | None = None
) -> dict:
    """Assemble stage (batched): `audio` (FLAC bytes), per-source gains/loudness, `rt60`, mix loudness and peaks,
    and `limiter_lu`: how much the true-peak limiter changed the mix's loudness (0.0 when it did not engage).

    Rows already skipped pass through. A source whose clip fails to decode, is silent or shorter than
    `min_clip_seconds` is dropped and listed in `dropped_sources`; a row left with no source is skipped.
    `image_id` is carried through so the caller can check the join. Pass one `clips` cache for all the batches of
    a shard to decode each reused clip once.
    """
    clips = clips if clips is not None else DryClipCache(0)
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
            index = int(source["clip_index"])
            try:
                dry = clips.get(index, lambda: _load_dry_clip(audio_corpus[index], config))
                x, target, measured = place_source(dry, source, rt60, config, seed + 7919 * (j + 1))
            except (ValueError, FileNotFoundError) as err:
                suffix = source_suffix(audio_corpus[index])
                out["dropped_sources"][i].append(f"{source['name']}: clip {source['clip_id']}{suffix}: {err}"[:400])
                continue
            rendered.append(x)
            kept.append({**source, "target_lufs": float(target), "measured_lufs": float(measured)})
        if not rendered:
            out["skip_reason"][i] = "assemble: no source clip could be decoded"
            continue
        mixed = unlimited = mix(rendered)
        tpeak = true_peak(unlimited)
        if tpeak > 10.0 ** (config.peak_ceiling_dbfs / 20.0):  # the limiter engages: measure what it left
            mixed = limit_peaks(
                unlimited, config.sample_rate, config.peak_ceiling_dbfs, oversampling=TRUE_PEAK_OVERSAMPLING
            )
            tpeak = true_peak(mixed)
        peak = float(mixed.abs().max())
        out["audio"][i] = {"bytes": encode_flac(mixed, config.sample_rate), "path": None}
        out["sources"][i] = kept
        out["rt60"][i] = float(rt60)
        out["mix_lufs"][i] = measure_loudness(mixed, config.sample_rate)
        out["mix_peak_dbfs"][i] = 20.0 * math.log10(peak) if peak > 0 else float("-inf")
        out["mix_true_peak_dbtp"][i] = 20.0 * math.log10(tpeak) if tpeak > 0 else float("-inf")
        engaged = mixed is not unlimited
        out["limiter_lu"][i] = out["mix_lufs"][i] - measure_loudness(unlimited, config.sample_rate) if engaged else 0.0
    return out
