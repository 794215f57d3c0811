"""Audio input handling shared by the pipeline, the dataset builder and training.

Waveforms are `torch.float32` tensors shaped `(channels, samples)` (torchaudio's convention) or mono `(samples,)`.
"""

from __future__ import annotations

import math
import os
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


def load_audio(path: str | os.PathLike, max_seconds: float | None = None, arg: str = "audio") -> tuple[torch.Tensor, int]:
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
            raise ValueError(f"`sampling_rate` is required when `{arg}` is an array or tensor; pass the clip's rate in Hz.")
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
