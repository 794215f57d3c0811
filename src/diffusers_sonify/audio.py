"""Audio input handling shared by the pipeline, the dataset builder and training.

Waveforms are `torch.float32` tensors shaped `(channels, samples)` (torchaudio's convention) or mono `(samples,)`.
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torchaudio

AudioLike = "np.ndarray | torch.Tensor | str | os.PathLike"
MAX_CHANNELS = 8


def _shape_error(arg: str, shape: tuple) -> ValueError:
    return ValueError(
        f"`{arg}` has shape {shape}: expected mono `(samples,)` or `(channels, samples)` with at most "
        f"{MAX_CHANNELS} channels. If your array is `(samples, channels)` (as soundfile returns it), transpose it."
    )


def validate_waveform(waveform, arg: str = "audio", min_samples: int = 1) -> torch.Tensor:
    """Check a numpy array / tensor and return it as a float32 tensor `(channels, samples)`.

    Raises `TypeError` for non-numeric data and `ValueError` for bad shapes, NaN/inf samples or too-short clips,
    each message naming `arg` and the fix.
    """
    if isinstance(waveform, np.ndarray):
        if not (np.issubdtype(waveform.dtype, np.floating) or np.issubdtype(waveform.dtype, np.integer)):
            raise TypeError(f"`{arg}` has dtype {waveform.dtype}; pass float or integer PCM samples.")
        integer_scale = np.iinfo(waveform.dtype).max if np.issubdtype(waveform.dtype, np.integer) else None
        tensor = torch.from_numpy(np.ascontiguousarray(waveform).astype(np.float32))
    elif isinstance(waveform, torch.Tensor):
        if waveform.dtype == torch.bool or waveform.is_complex():
            raise TypeError(f"`{arg}` has dtype {waveform.dtype}; pass float or integer PCM samples.")
        integer_scale = torch.iinfo(waveform.dtype).max if not waveform.is_floating_point() else None
        tensor = waveform.detach().to("cpu", torch.float32)
    else:
        raise TypeError(
            f"`{arg}` must be a numpy array, a torch tensor or a path to an audio file, got {type(waveform).__name__}."
        )
    if integer_scale is not None:  # int16/int32 PCM -> [-1, 1]
        tensor = tensor / float(integer_scale)
    if tensor.ndim == 1:
        tensor = tensor.unsqueeze(0)
    if tensor.ndim != 2 or tensor.shape[0] > MAX_CHANNELS or tensor.shape[0] == 0:
        raise _shape_error(arg, tuple(waveform.shape))
    if not torch.isfinite(tensor).all():
        raise ValueError(f"`{arg}` contains NaN or infinite samples; clean or replace them before calling.")
    if tensor.shape[1] < min_samples:
        raise ValueError(
            f"`{arg}` has {tensor.shape[1]} samples; at least {min_samples} are needed. Pass a longer clip "
            "(or pad it with silence yourself)."
        )
    return tensor


def to_mono(waveform: torch.Tensor) -> torch.Tensor:
    """`(channels, samples)` -> `(samples,)` by averaging channels."""
    return waveform.mean(dim=0) if waveform.ndim == 2 else waveform


def resample(waveform: torch.Tensor, orig_sr: int, target_sr: int) -> torch.Tensor:
    """Band-limited resampling with torchaudio (identity when the rates match)."""
    if orig_sr == target_sr:
        return waveform
    return torchaudio.functional.resample(waveform, int(orig_sr), int(target_sr))


def load_audio(
    path: str | os.PathLike, max_seconds: float | None = None, arg: str = "audio"
) -> tuple[torch.Tensor, int]:
    """Read an audio file as `(channels, samples)` float32 and its sampling rate.

    Only the first `max_seconds` are decoded, so a long file is never held in memory whole. WAV/FLAC/OGG are read
    with soundfile; any other format FFmpeg knows is decoded with torchcodec.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"`{arg}`: no audio file at {str(path)!r}. Check the path.")
    import soundfile as sf

    try:
        with sf.SoundFile(str(path)) as f:
            frames = -1 if max_seconds is None else min(f.frames, math.ceil(max_seconds * f.samplerate))
            data = f.read(frames=frames, dtype="float32", always_2d=True)
            return torch.from_numpy(data.T.copy()), f.samplerate
    except sf.LibsndfileError:
        pass
    try:
        from torchcodec.decoders import AudioDecoder

        decoder = AudioDecoder(str(path))
        samples = decoder.get_samples_played_in_range(0.0, max_seconds) if max_seconds else decoder.get_all_samples()
        return samples.data.to(torch.float32), int(samples.sample_rate)
    except Exception as err:  # torchcodec raises RuntimeError/ValueError variants for undecodable input
        raise ValueError(f"`{arg}`: {str(path)!r} is not a readable audio file ({err}).") from err


def prepare_waveform(
    audio,
    target_sr: int,
    sampling_rate: int | None = None,
    max_seconds: float | None = None,
    min_seconds: float = 0.0,
    arg: str = "audio",
) -> np.ndarray:
    """One clip (array, tensor or path) -> mono float32 numpy at `target_sr`, cropped to the first `max_seconds`.

    `sampling_rate` is required for arrays and tensors, and ignored for paths (the file says its own rate).
    """
    if isinstance(audio, (str, os.PathLike)):
        waveform, sampling_rate = load_audio(audio, max_seconds=max_seconds, arg=arg)
        if not torch.isfinite(waveform).all():
            raise ValueError(f"`{arg}`: {str(audio)!r} decodes to NaN or infinite samples.")
    else:
        if sampling_rate is None:
            raise ValueError(
                f"`sampling_rate` is required when `{arg}` is an array or tensor; pass the clip's rate in Hz."
            )
        waveform = validate_waveform(audio, arg=arg)
    if not isinstance(sampling_rate, (int, np.integer)) or sampling_rate <= 0:
        raise ValueError(f"`sampling_rate` must be a positive integer number of Hz, got {sampling_rate!r}.")
    min_samples = max(1, math.ceil(min_seconds * sampling_rate))
    if waveform.shape[-1] < min_samples:
        raise ValueError(
            f"`{arg}` is {waveform.shape[-1] / sampling_rate:.3f} s long; at least {min_seconds} s is needed. "
            "Pass a longer clip."
        )
    if max_seconds is not None:
        waveform = waveform[:, : math.ceil(max_seconds * sampling_rate)]
    mono = resample(to_mono(waveform), int(sampling_rate), int(target_sr))
    return mono.numpy().astype(np.float32, copy=False)


# ---------------------------------------------------------------------------------------------------------------------
# Loudness, reverb and mixing (used by the sonification builder's assemble stage)
# ---------------------------------------------------------------------------------------------------------------------

# -1 dBFS: EBU R128 / EBU Tech 3343 maximum permitted (true) peak level of a programme
DEFAULT_PEAK_CEILING_DBFS = -1.0
# Below this ITU-R BS.1770 gates every block (absolute gate, -70 LKFS): the clip counts as silent
SILENCE_LUFS = -70.0


def _as_channels(waveform: torch.Tensor) -> torch.Tensor:
    return waveform.unsqueeze(0) if waveform.ndim == 1 else waveform


@contextmanager
def torch_threads(num_threads: int):
    """Run a block on `num_threads` torch intra-op threads, restoring the previous count afterwards.

    Loudness of short clips is the use: BS.1770's IIR filters (torchaudio `lfilter`) run several times faster on
    one thread than on two here (measured 5.5 ms vs 41 ms per 2 s clip on the 2-core box, toyworld/RECIPE.md).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def measure_loudness(waveform: torch.Tensor, sample_rate: int) -> float:
    """Integrated loudness in LUFS (ITU-R BS.1770-4, via `torchaudio.functional.loudness`).

    Args:
        waveform (`torch.Tensor`): mono `(samples,)` or `(channels, samples)`, float.
        sample_rate (`int`): in Hz.

    Returns:
        `float`: loudness in LUFS; `-inf` for silence or a clip shorter than one 400 ms gating block.
    """
    waveform = _as_channels(waveform).to(torch.float32)
    if waveform.shape[-1] < round(0.4 * sample_rate):
        return float("-inf")
    # torchaudio's K-weighting filters clamp to [-1, 1]: measure loud signals scaled down (peak 0.25 leaves room
    # for the +4 dB shelf) and add the gain back, so loudness stays exactly 6 dB per doubling of amplitude.
    peak = float(waveform.abs().max())
    if peak == 0.0:
        return float("-inf")
    scale = min(1.0, 0.25 / peak)
    value = float(torchaudio.functional.loudness(waveform * scale, int(sample_rate))) - 20.0 * math.log10(scale)
    return value if math.isfinite(value) and value > SILENCE_LUFS else float("-inf")


def gain_to_lufs(
    waveform: torch.Tensor, sample_rate: int, target_lufs: float, iterations: int = 2
) -> tuple[torch.Tensor, float]:
    """Scale `waveform` so its integrated loudness is `target_lufs`; returns `(scaled, measured_lufs)`.

    BS.1770's absolute gate (-70 LUFS) makes loudness slightly non-linear in gain, so the gain is refined
    `iterations` times. Raises `ValueError` for a silent clip (nothing to scale).
    """
    out = waveform
    measured = measure_loudness(out, sample_rate)
    if not math.isfinite(measured):
        raise ValueError("`waveform` is silent (below -70 LUFS) or shorter than 0.4 s; its loudness cannot be set.")
    for _ in range(max(1, iterations)):
        out = out * (10.0 ** ((target_lufs - measured) / 20.0))
        measured = measure_loudness(out, sample_rate)
        if abs(measured - target_lufs) < 0.01:
            break
    return out, measured


def synthetic_impulse_response(
    rt60: float, sample_rate: int, seed: int = 0, direct_to_reverb_db: float = 0.0, length_factor: float = 1.2
) -> torch.Tensor:
    """A room impulse response: a direct-path impulse plus exponentially decaying Gaussian noise.

    The tail's energy falls by 60 dB in `rt60` seconds (Sabine's definition of reverberation time): amplitude
    envelope `exp(-3 ln(10) t / rt60)`.

    Args:
        rt60 (`float`): reverberation time in seconds, > 0.
        sample_rate (`int`): in Hz.
        seed (`int`): seeds the noise, so the same row always gets the same response.
        direct_to_reverb_db (`float`): energy of the direct impulse relative to the whole tail, in dB.
        length_factor (`float`): response length as a multiple of `rt60`.

    Returns:
        `torch.Tensor`: `(samples,)` float32, direct impulse at index 0 with amplitude 1.
    """
    if not rt60 > 0:
        raise ValueError(f"`rt60` must be > 0 seconds, got {rt60!r}; use no reverb for a free field.")
    n = max(2, int(round(length_factor * rt60 * sample_rate)))
    generator = torch.Generator().manual_seed(int(seed))
    t = torch.arange(n, dtype=torch.float64) / sample_rate
    tail = torch.randn(n, generator=generator, dtype=torch.float64) * torch.exp(-3.0 * math.log(10.0) * t / rt60)
    tail[0] = 0.0
    tail = tail / tail.pow(2).sum().sqrt() * 10.0 ** (-direct_to_reverb_db / 20.0)
    tail[0] = 1.0
    return tail.to(torch.float32)


def estimate_rt60(
    impulse_response: torch.Tensor, sample_rate: int, decay_range_db: tuple[float, float] = (-5.0, -25.0)
) -> float:
    """Reverberation time of an impulse response by Schroeder backward integration (ISO 3382-1).

    The energy decay curve `EDC(t) = sum_{tau >= t} h(tau)^2` is fitted by a line in dB between
    `decay_range_db` (T20 by default) and extrapolated to a 60 dB decay.
    """
    h = to_mono(_as_channels(impulse_response)).to(torch.float64)
    edc = torch.flip(torch.cumsum(torch.flip(h.pow(2), [0]), 0), [0])
    if edc[0] <= 0:
        raise ValueError("`impulse_response` is all zeros; it has no decay to measure.")
    edc_db = 10.0 * torch.log10(edc / edc[0] + 1e-300)
    upper, lower = decay_range_db
    mask = (edc_db <= upper) & (edc_db >= lower)
    if int(mask.sum()) < 2:
        raise ValueError(f"`impulse_response` does not decay through {decay_range_db} dB; pass a longer response.")
    t = torch.arange(h.shape[0], dtype=torch.float64)[mask] / sample_rate
    y = edc_db[mask]
    slope = float(((t - t.mean()) * (y - y.mean())).sum() / ((t - t.mean()).pow(2).sum()))
    if slope >= 0:
        raise ValueError("`impulse_response` energy does not decay; cannot estimate RT60.")
    return -60.0 / slope


def apply_reverb(waveform: torch.Tensor, impulse_response: torch.Tensor) -> torch.Tensor:
    """Convolve with an impulse response (`torchaudio.functional.fftconvolve`), keeping the input length."""
    wet = torchaudio.functional.fftconvolve(waveform.to(torch.float32), impulse_response.to(torch.float32))
    return wet[..., : waveform.shape[-1]]


def fit_to_duration(waveform: torch.Tensor, num_samples: int, fade_samples: int = 0) -> torch.Tensor:
    """Loop (tile) a short clip or trim a long one to exactly `num_samples` along the last axis.

    `fade_samples` applies a linear fade-in/out of that length at each loop seam and at the ends, avoiding clicks.
    """
    if waveform.shape[-1] == 0:
        raise ValueError("`waveform` is empty; it cannot be looped to a duration.")
    if num_samples <= 0:
        raise ValueError(f"`num_samples` must be positive, got {num_samples}.")
    clip = waveform
    fade = min(fade_samples, clip.shape[-1] // 4)
    if fade > 0:
        ramp = torch.linspace(0.0, 1.0, fade, dtype=clip.dtype)
        clip = clip.clone()
        clip[..., :fade] *= ramp
        clip[..., -fade:] *= ramp.flip(0)
    repeats = math.ceil(num_samples / clip.shape[-1])
    return clip.repeat(*([1] * (clip.ndim - 1)), repeats)[..., :num_samples]


def mix(waveforms: list[torch.Tensor]) -> torch.Tensor:
    """Sum equally long mono waveforms."""
    if not waveforms:
        raise ValueError("`waveforms` is empty; pass at least one waveform to mix.")
    lengths = {w.shape[-1] for w in waveforms}
    if len(lengths) != 1:
        raise ValueError(f"`waveforms` have different lengths {sorted(lengths)}; fit them to one duration first.")
    return torch.stack([w.to(torch.float32) for w in waveforms]).sum(0)


def limit_peaks(
    waveform: torch.Tensor, sample_rate: int, ceiling_dbfs: float = DEFAULT_PEAK_CEILING_DBFS, window_ms: float = 5.0
) -> torch.Tensor:
    """Look-ahead peak limiter: the output's sample peak never exceeds `ceiling_dbfs`.

    The per-sample gain needed to stay below the ceiling is spread over `window_ms` (a running minimum followed
    by a moving average of the same width, so the smoothed gain is never above the needed gain). Only
    the neighbourhood of peaks is attenuated, so the loudness of the rest of the signal is kept.
    """
    ceiling = 10.0 ** (ceiling_dbfs / 20.0)
    x = _as_channels(waveform).to(torch.float32)
    peak = x.abs().amax(0)
    if float(peak.max()) <= ceiling:
        return waveform
    needed = torch.clamp(ceiling / peak.clamp_min(1e-12), max=1.0)
    width = max(1, int(round(window_ms * 1e-3 * sample_rate))) | 1  # odd, so the windows are centred
    pad = width // 2
    running_min = -torch.nn.functional.max_pool1d(
        torch.nn.functional.pad(-needed[None, None], (pad, pad), value=-1.0), width, stride=1
    )
    smooth = torch.nn.functional.avg_pool1d(
        torch.nn.functional.pad(running_min, (pad, pad), value=1.0), width, stride=1
    )[0, 0]
    gain = torch.minimum(smooth, needed)  # guard against float round-off
    out = x * gain
    return out[0] if waveform.ndim == 1 else out
