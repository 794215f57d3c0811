"""Audio input handling shared by the pipeline, the dataset builder and training.

Waveforms are `torch.float32` tensors shaped `(channels, samples)` (torchaudio's convention) or mono `(samples,)`.
"""

from __future__ import annotations

import functools
import io
import math
import os
import re
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torchaudio

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


def _type_error(arg: str, value) -> TypeError:
    return TypeError(
        f"`{arg}` must be a numpy array, a torch tensor or a path to an audio file, audio file bytes, or a "
        "`datasets` Audio value (an `AudioDecoder`, `{'array', 'sampling_rate'}` or `{'bytes', 'path'}`), got "
        f"{type(value).__name__}. If it came from a dataset, check the audio column (`audio_column`)."
    )


def _decode_encoded(source, max_seconds: float | None, arg: str, name: str) -> tuple[torch.Tensor, int]:
    """A file path or encoded bytes: soundfile where it can (WAV/FLAC/OGG, fast, reads only the needed frames),
    torchcodec (FFmpeg: MP3, Opus, AAC, ...) for everything else."""
    import soundfile as sf

    try:
        with sf.SoundFile(io.BytesIO(source) if isinstance(source, bytes) else str(source)) as f:
            frames = -1 if max_seconds is None else min(f.frames, math.ceil(max_seconds * f.samplerate))
            data = f.read(frames=frames, dtype="float32", always_2d=True)
            return torch.from_numpy(data.T.copy()), int(f.samplerate)
    except (sf.LibsndfileError, RuntimeError, TypeError):
        pass
    try:
        from torchcodec.decoders import AudioDecoder

        samples = _decoder_samples(AudioDecoder(source if isinstance(source, bytes) else str(source)), max_seconds)
    except Exception as err:  # torchcodec raises RuntimeError/ValueError variants for undecodable input
        detail = re.sub(r"^.*\.cpp:\d+, ", "", str(err).strip().splitlines()[0] if str(err).strip() else "")
        raise ValueError(f"`{arg}`: {name} is not a readable audio file ({detail[:160]}).") from err
    return samples


def _decoder_samples(decoder, max_seconds: float | None) -> tuple[torch.Tensor, int]:
    samples = decoder.get_samples_played_in_range(0.0, max_seconds) if max_seconds else decoder.get_all_samples()
    return samples.data.to(torch.float32), int(samples.sample_rate)


def decode_audio(
    audio, sampling_rate: int | None = None, *, max_seconds: float | None = None, arg: str = "audio"
) -> tuple[torch.Tensor, int]:
    """The one audio decoder of the project (pipeline, dataset builder and trainer): any audio value ->
    `(waveform (channels, samples) float32, sampling_rate)`.

    Accepted values:
        - a path (`str` / `os.PathLike`) to a file in any format FFmpeg reads (WAV, FLAC, OGG/OGA, Opus, MP3, AAC,
          ...); WAV/FLAC/OGG are read with soundfile, the rest with torchcodec;
        - the encoded bytes of such a file;
        - a `datasets` Audio value: a torchcodec `AudioDecoder` (what `Audio()` returns in datasets >= 4), an
          `{"array", "sampling_rate"}` dict, or an `{"bytes", "path"}` dict (`Audio(decode=False)`);
        - a numpy array or torch tensor `(samples,)` or `(channels, samples)`, with `sampling_rate`.

    One set of rules for all of them: float or integer PCM (integers scaled to [-1, 1]); at most `MAX_CHANNELS`
    channels; no NaN/inf; at least one sample; `sampling_rate` a positive integer; only the first `max_seconds` are
    decoded (a long file is never held whole). `sampling_rate` is required for arrays and ignored for values that
    carry their own rate.

    Raises:
        `TypeError` for a value of another type or non-numeric samples; `ValueError` for a missing file,
        undecodable data, a bad shape, NaN/inf or empty audio, or a missing/invalid rate. Messages name `arg`.
    """
    if isinstance(audio, (str, os.PathLike)):
        path = Path(audio)
        if not path.is_file():
            raise FileNotFoundError(f"`{arg}`: no audio file at {str(path)!r}. Check the path.")
        waveform, rate = _decode_encoded(path, max_seconds, arg, repr(str(path)))
        name = repr(str(path))
    elif isinstance(audio, (bytes, bytearray, memoryview)):
        waveform, rate = _decode_encoded(bytes(audio), max_seconds, arg, "the audio bytes")
        name = "the audio bytes"
    elif isinstance(audio, dict):
        if audio.get("array") is not None:
            if audio.get("sampling_rate") is None:
                raise ValueError(f"`{arg}` is an `{{'array'}}` dict without `sampling_rate`; add the rate in Hz.")
            return decode_audio(audio["array"], audio["sampling_rate"], max_seconds=max_seconds, arg=arg)
        if audio.get("bytes"):
            label = repr(audio["path"]) if audio.get("path") else "the audio bytes"
            waveform, rate = _decode_encoded(bytes(audio["bytes"]), max_seconds, arg, label)
            name = label
        elif audio.get("path"):
            return decode_audio(audio["path"], max_seconds=max_seconds, arg=arg)
        else:
            raise ValueError(
                f"`{arg}` is a dict with neither audio `bytes`, a `path` nor an `array` (keys {sorted(audio)})."
            )
    elif hasattr(audio, "get_samples_played_in_range"):  # torchcodec / datasets AudioDecoder
        try:
            waveform, rate = _decoder_samples(audio, max_seconds)
        except Exception as err:  # torchcodec raises RuntimeError/ValueError variants
            raise ValueError(f"`{arg}`: the AudioDecoder could not decode its audio ({err}).") from err
        name = "the decoded audio"
    elif isinstance(audio, (np.ndarray, torch.Tensor)):
        if sampling_rate is None:
            raise ValueError(
                f"`sampling_rate` is required when `{arg}` is an array or tensor; pass the clip's rate in Hz."
            )
        waveform, rate = validate_waveform(audio, arg=arg), sampling_rate
        if max_seconds is not None and isinstance(rate, (int, np.integer)) and rate > 0:
            waveform = waveform[:, : math.ceil(max_seconds * rate)]
        name = None
    else:
        raise _type_error(arg, audio)
    if not isinstance(rate, (int, np.integer)) or isinstance(rate, bool) or rate <= 0:
        raise ValueError(f"`sampling_rate` must be a positive integer number of Hz, got {rate!r}.")
    if name is not None:  # decoded data: the same checks the array path ran in `validate_waveform`
        if waveform.ndim != 2 or waveform.shape[0] == 0 or waveform.shape[0] > MAX_CHANNELS:
            raise _shape_error(arg, tuple(waveform.shape))
        if waveform.shape[1] == 0:
            raise ValueError(f"`{arg}`: {name} holds 0 samples; at least 1 is needed.")
        if not torch.isfinite(waveform).all():
            raise ValueError(f"`{arg}`: {name} decodes to NaN or infinite samples.")
        if max_seconds is not None:
            waveform = waveform[:, : math.ceil(max_seconds * rate)]
    return waveform, int(rate)


def load_audio(
    path: str | os.PathLike, max_seconds: float | None = None, arg: str = "audio"
) -> tuple[torch.Tensor, int]:
    """Read an audio file as `(channels, samples)` float32 and its rate ([`decode_audio`] for a path)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`{arg}` must be a path, got {type(path).__name__}; use `decode_audio` for other values.")
    return decode_audio(path, max_seconds=max_seconds, arg=arg)


def prepare_waveform(
    audio,
    target_sr: int,
    sampling_rate: int | None = None,
    max_seconds: float | None = None,
    min_seconds: float = 0.0,
    arg: str = "audio",
) -> np.ndarray:
    """Any audio value [`decode_audio`] accepts -> mono float32 numpy at `target_sr`, cropped to the first
    `max_seconds`. Raises `ValueError` for a clip shorter than `min_seconds`."""
    waveform, sampling_rate = decode_audio(audio, sampling_rate, max_seconds=max_seconds, arg=arg)
    min_samples = max(1, math.ceil(min_seconds * sampling_rate))
    if waveform.shape[-1] < min_samples:
        raise ValueError(
            f"`{arg}` is {waveform.shape[-1] / sampling_rate:.3f} s long; at least {min_seconds} s is needed. "
            "Pass a longer clip."
        )
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

    The uses: one thread per worker process or thread where several run side by side (assembly shards, concurrent
    generation), so they do not oversubscribe the cores.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# ITU-R BS.1770-4: 400 ms gating blocks overlapping by 75 %, absolute gate -70 LKFS, relative gate -10 LU, channel
# weights 1.0 (L, R, C) and 1.41 (surrounds), -0.691 dB so that a 997 Hz sine at 0 dBFS reads -3.01 LKFS
GATE_SECONDS = 0.4
GATE_OVERLAP = 0.75
RELATIVE_GATE_LU = -10.0
K_WEIGHTING_OFFSET_DB = -0.691
CHANNEL_WEIGHTS = (1.0, 1.0, 1.0, 1.41, 1.41)


@functools.lru_cache(maxsize=8)
def k_weighting_sos(sample_rate: int) -> np.ndarray:
    """BS.1770's K-weighting at `sample_rate` as two second-order sections (`scipy.signal.sosfilt` layout): a +4 dB
    high shelf at 1500 Hz (Q 1/sqrt(2)) followed by a 38 Hz high-pass (Q 0.5).

    The biquads are designed with R. Bristow-Johnson's Audio EQ Cookbook formulas from those four parameters (the
    same parametrisation torchaudio's and pyloudnorm's meters use), so any sample rate gets its own filter.
    """
    w0 = 2.0 * math.pi * 1500.0 / sample_rate
    a = 10.0 ** (4.0 / 40.0)
    alpha = math.sin(w0) / 2.0 * math.sqrt(2.0)  # Q = 1/sqrt(2)
    cos, root = math.cos(w0), 2.0 * math.sqrt(a) * alpha
    shelf = [
        a * ((a + 1) + (a - 1) * cos + root),
        -2.0 * a * ((a - 1) + (a + 1) * cos),
        a * ((a + 1) + (a - 1) * cos - root),
        (a + 1) - (a - 1) * cos + root,
        2.0 * ((a - 1) - (a + 1) * cos),
        (a + 1) - (a - 1) * cos - root,
    ]
    w0 = 2.0 * math.pi * 38.0 / sample_rate
    alpha, cos = math.sin(w0) / 2.0 / 0.5, math.cos(w0)
    highpass = [(1 + cos) / 2, -(1 + cos), (1 + cos) / 2, 1 + alpha, -2.0 * cos, 1 - alpha]
    sos = np.array([shelf, highpass], dtype=np.float64)
    return sos / sos[:, 3:4]  # normalise so a0 = 1


def loudness_block_powers(waveform: torch.Tensor, sample_rate: int) -> np.ndarray:
    """Channel-weighted mean square of the K-weighted signal in each BS.1770 gating block, `(blocks,)` float64.

    Integrated loudness is a function of these powers alone ([`integrated_loudness`]), and scaling the waveform by
    `g` scales every power by `g**2` exactly (the filters are linear), so one filter pass serves any gain.
    """
    from scipy.signal import sosfilt

    x = _as_channels(waveform).to(torch.float64).numpy()
    if x.shape[0] > len(CHANNEL_WEIGHTS):
        raise ValueError(
            f"BS.1770 loudness is defined for up to {len(CHANNEL_WEIGHTS)} channels, got {x.shape[0]}; "
            "downmix first (e.g. `to_mono`)."
        )
    gate = int(round(GATE_SECONDS * sample_rate))
    step = int(round(gate * (1.0 - GATE_OVERLAP)))
    if x.shape[-1] < gate:
        return np.zeros(0)
    y = sosfilt(k_weighting_sos(int(sample_rate)), x, axis=-1)
    energy = np.zeros((y.shape[0], y.shape[1] + 1))
    np.cumsum(y * y, axis=-1, out=energy[:, 1:])
    starts = np.arange(0, x.shape[-1] - gate + 1, step)
    blocks = (energy[:, starts + gate] - energy[:, starts]) / gate
    return np.asarray(CHANNEL_WEIGHTS[: x.shape[0]]) @ blocks


def integrated_loudness(block_powers: np.ndarray, gain: float = 1.0) -> float:
    """Gated integrated loudness in LUFS of a signal with [`loudness_block_powers`] `block_powers`, scaled by
    `gain` (linear amplitude); `-inf` when every block is below the absolute gate (or there is none)."""
    powers = np.asarray(block_powers, dtype=np.float64) * float(gain) ** 2
    with np.errstate(divide="ignore"):
        levels = K_WEIGHTING_OFFSET_DB + 10.0 * np.log10(powers)
    gated = levels > SILENCE_LUFS
    if not gated.any():
        return float("-inf")
    relative = K_WEIGHTING_OFFSET_DB + 10.0 * math.log10(powers[gated].mean()) + RELATIVE_GATE_LU
    value = K_WEIGHTING_OFFSET_DB + 10.0 * math.log10(powers[gated & (levels > relative)].mean())
    return value if math.isfinite(value) and value > SILENCE_LUFS else float("-inf")


def measure_loudness(waveform: torch.Tensor, sample_rate: int) -> float:
    """Integrated loudness in LUFS (ITU-R BS.1770-4: K-weighting, 400 ms blocks, absolute and relative gates).

    Args:
        waveform (`torch.Tensor`): mono `(samples,)` or `(channels, samples)` with up to 5 channels, float.
        sample_rate (`int`): in Hz.

    Returns:
        `float`: loudness in LUFS; `-inf` for silence or a clip shorter than one 400 ms gating block.
    """
    return integrated_loudness(loudness_block_powers(waveform, sample_rate))


def gain_to_lufs(
    waveform: torch.Tensor, sample_rate: int, target_lufs: float, iterations: int = 4
) -> tuple[torch.Tensor, float]:
    """Scale `waveform` so its integrated loudness is `target_lufs`; returns `(scaled, measured_lufs)`.

    The waveform is filtered once: the loudness of every trial gain is computed from its block powers (exact, the
    K-weighting being linear). BS.1770's absolute gate (-70 LUFS) makes loudness slightly non-linear in gain, so
    the gain is refined up to `iterations` times. Raises `ValueError` for a silent clip (nothing to scale).
    """
    powers = loudness_block_powers(waveform, sample_rate)
    measured = integrated_loudness(powers)
    if not math.isfinite(measured):
        raise ValueError("`waveform` is silent (below -70 LUFS) or shorter than 0.4 s; its loudness cannot be set.")
    gain = 1.0
    for _ in range(max(1, iterations)):
        gain *= 10.0 ** ((target_lufs - measured) / 20.0)
        measured = integrated_loudness(powers, gain)
        if abs(measured - target_lufs) < 0.01:
            break
    return waveform * gain, measured


@functools.lru_cache(maxsize=16)
def _decay_envelope(n: int, rt60: float, sample_rate: int) -> torch.Tensor:
    t = torch.arange(n, dtype=torch.float64) / sample_rate
    return torch.exp(-3.0 * math.log(10.0) * t / rt60)


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
    tail = torch.randn(n, generator=generator, dtype=torch.float64) * _decay_envelope(n, float(rt60), int(sample_rate))
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


def fast_fft_length(n: int) -> int:
    """The smallest 5-smooth number (2^a 3^b 5^c) >= `n`: a length pocketfft transforms fast. An FFT of an arbitrary
    length (e.g. one with a large prime factor) can be many times slower."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            p235 = p35 << max(0, (-(-n // p35) - 1).bit_length())  # times the smallest power of 2 reaching n
            best = min(best, p235)
            p35 *= 3
        p5 *= 5
    return best


def apply_reverb(waveform: torch.Tensor, impulse_response: torch.Tensor) -> torch.Tensor:
    """Convolve with an impulse response (linear convolution through the FFT), keeping the input length.

    The transforms are zero-padded to [`fast_fft_length`] of the full convolution's length (so nothing wraps
    around); `torchaudio.functional.fftconvolve` uses the exact length, whose FFT was the slowest part of assembly.
    They run in `scipy.fft` (pocketfft), 2.5x faster than `torch.fft` on one CPU thread here at these lengths
    (benchmarks/RESULTS.md).
    """
    import scipy.fft

    x = waveform.to(torch.float32).numpy()
    h = impulse_response.to(torch.float32).numpy()
    n = fast_fft_length(x.shape[-1] + h.shape[-1] - 1)
    wet = scipy.fft.irfft(scipy.fft.rfft(x, n=n) * scipy.fft.rfft(h, n=n), n=n)
    return torch.from_numpy(np.ascontiguousarray(wet[..., : waveform.shape[-1]]))


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


# ITU-R BS.1770-4 Annex 2: true peak is estimated on the signal oversampled 4x (for 48 kHz input)
TRUE_PEAK_OVERSAMPLING = 4
# Zero crossings of the interpolating sinc per side: longer than the BS.1770 example filter (12 taps per phase),
# which under-reads peaks near Nyquist; 32 agrees with an FFT (ideal band-limited) interpolation to ~0.05 dB here.
LOWPASS_WIDTH = 32


@functools.lru_cache(maxsize=4)
def _oversampler(oversampling: int) -> torchaudio.transforms.Resample:
    """torchaudio's windowed-sinc resampler from 1 to `oversampling` (its kernel built once)."""
    return torchaudio.transforms.Resample(1, oversampling, lowpass_filter_width=LOWPASS_WIDTH)


def _peak_envelope(x: torch.Tensor, oversampling: int) -> torch.Tensor:
    """Per-sample peak over channels; with `oversampling` > 1 the max of the band-limited interpolated points
    between each sample and the next (torchaudio's windowed-sinc resampler), i.e. the true-peak envelope."""
    peak = x.abs().amax(0)
    if oversampling <= 1:
        return peak
    up = _oversampler(oversampling)(x)
    up = up.abs().amax(0)[: oversampling * x.shape[-1]]
    up = torch.nn.functional.pad(up, (0, oversampling * x.shape[-1] - up.shape[-1]))
    return torch.maximum(peak, up.reshape(-1, oversampling).amax(1))


def true_peak(waveform: torch.Tensor, oversampling: int = TRUE_PEAK_OVERSAMPLING) -> float:
    """True peak (linear) of `waveform`: the largest magnitude of the signal oversampled `oversampling` times
    (ITU-R BS.1770-4 Annex 2). In dBTP: `20 * log10(true_peak(x))`."""
    x = _as_channels(waveform).to(torch.float32)
    peak = float(x.abs().max())
    if oversampling <= 1:
        return peak
    return max(peak, float(_oversampler(oversampling)(x).abs().max()))


def limit_peaks(
    waveform: torch.Tensor,
    sample_rate: int,
    ceiling_dbfs: float = DEFAULT_PEAK_CEILING_DBFS,
    window_ms: float = 5.0,
    oversampling: int = 1,
) -> torch.Tensor:
    """Look-ahead peak limiter: the output's peak never exceeds `ceiling_dbfs`.

    With `oversampling=1` the sample peak is limited; with `oversampling=TRUE_PEAK_OVERSAMPLING` (4) the true peak
    (ITU-R BS.1770-4 Annex 2), so the ceiling is in dBTP. The per-sample gain needed to stay below the ceiling is
    spread over `window_ms` (a running minimum followed by a moving average of the same width, so the smoothed gain
    is never above the needed gain). Only the neighbourhood of peaks is attenuated, so the loudness of the rest of
    the signal is kept. Gain changes move inter-sample peaks slightly, so the true-peak case repeats the pass on
    its own output (and, as a last resort, scales the whole clip) until the measured peak is at the ceiling.
    """
    ceiling = 10.0 ** (ceiling_dbfs / 20.0)
    x = _as_channels(waveform).to(torch.float32)
    if float(_peak_envelope(x, oversampling).max()) <= ceiling:
        return waveform
    width = max(1, int(round(window_ms * 1e-3 * sample_rate))) | 1  # odd, so the windows are centred
    pad = width // 2
    out = x
    for _ in range(4 if oversampling > 1 else 1):
        peak = _peak_envelope(out, oversampling)
        if float(peak.max()) <= ceiling:
            break
        needed = torch.clamp(ceiling / peak.clamp_min(1e-12), max=1.0)
        running_min = -torch.nn.functional.max_pool1d(
            torch.nn.functional.pad(-needed[None, None], (pad, pad), value=-1.0), width, stride=1
        )
        smooth = torch.nn.functional.avg_pool1d(
            torch.nn.functional.pad(running_min, (pad, pad), value=1.0), width, stride=1
        )[0, 0]
        out = out * torch.minimum(smooth, needed)  # minimum: guard against float round-off
    final = float(_peak_envelope(out, oversampling).max())
    if final > ceiling:
        out = out * (ceiling / final)
    return out[0] if waveform.ndim == 1 else out
