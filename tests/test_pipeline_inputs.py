"""Audio inputs: formats, conversion, cropping, and a clear error for every bad input before any model runs."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf
import torch
from sounds import SR, tone

from diffusers_sonify.audio import load_audio


@pytest.fixture
def model_calls(tiny_pipe):
    """Counts forward calls of every model in the pipeline."""
    calls = []
    handles = [
        module.register_forward_pre_hook(lambda mod, args, name=name: calls.append(name))
        for name, module in [
            ("audio_encoder", tiny_pipe.audio_encoder),
            ("unet", tiny_pipe.unet),
            ("vae", tiny_pipe.vae),
        ]
    ]
    yield calls
    for handle in handles:
        handle.remove()


def _peak_hz(x: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(x))
    return np.fft.rfftfreq(len(x), 1 / sr)[spectrum.argmax()]


def test_resample_mono_and_integer_pcm(tiny_pipe):
    sr = 44_100
    stereo = np.stack([tone(1000.0, sr=sr), tone(1000.0, sr=sr)])
    (wave,) = tiny_pipe.prepare_audio(stereo, sampling_rate=sr)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert len(wave) == SR  # one second at the feature extractor's 16 kHz
    assert abs(_peak_hz(wave, SR) - 1000.0) < 2.0
    pcm16 = (tone(500.0) * 32767).astype(np.int16)
    (from_int,) = tiny_pipe.prepare_audio(pcm16, sampling_rate=SR)
    np.testing.assert_allclose(from_int, tone(500.0), atol=1e-4)
    (from_tensor,) = tiny_pipe.prepare_audio(torch.from_numpy(tone(500.0)), sampling_rate=SR)
    np.testing.assert_array_equal(from_tensor, tone(500.0))


def test_file_paths_equal_arrays(tiny_pipe, tmp_path):
    path = tmp_path / "a.wav"
    sf.write(path, tone(440.0, sr=22_050), 22_050, subtype="FLOAT")
    (from_file,) = tiny_pipe.prepare_audio(str(path))
    (from_array,) = tiny_pipe.prepare_audio(tone(440.0, sr=22_050), sampling_rate=22_050)
    np.testing.assert_allclose(from_file, from_array, atol=1e-6)
    torch.testing.assert_close(tiny_pipe.encode_audio(path), tiny_pipe.encode_audio(from_array, sampling_rate=SR))


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg CLI to make an AAC file")
def test_formats_beyond_libsndfile_decode_through_torchcodec(tiny_pipe, tmp_path):
    wav, m4a = tmp_path / "a.wav", tmp_path / "a.m4a"
    sf.write(wav, tone(880.0, seconds=1.5), SR)
    subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(wav), str(m4a)], check=True)
    (decoded,) = tiny_pipe.prepare_audio(str(m4a))
    assert abs(len(decoded) - 1.5 * SR) < 0.1 * SR
    assert abs(_peak_hz(decoded, SR) - 880.0) < 5.0


def test_long_audio_is_cropped_to_the_feature_extractor_window(tiny_pipe, tmp_path):
    assert tiny_pipe.max_audio_seconds == 2.0
    minute = np.tile(tone(300.0), 60)
    (cropped,) = tiny_pipe.prepare_audio(minute, sampling_rate=SR)
    assert len(cropped) == 2 * SR
    path = tmp_path / "long.wav"
    sf.write(path, minute, SR)
    waveform, sr = load_audio(path, max_seconds=tiny_pipe.max_audio_seconds)
    assert sr == SR and waveform.shape == (1, 2 * SR)  # only the needed frames were read


BAD_INPUTS = [
    ({"audio": np.array([0.0, np.nan] * 8000, dtype=np.float32)}, ValueError, "NaN or infinite"),
    ({"audio": np.full(SR, np.inf, dtype=np.float32)}, ValueError, "NaN or infinite"),
    ({"audio": np.zeros(0, dtype=np.float32)}, ValueError, "samples; at least"),
    ({"audio": np.zeros(SR // 20, dtype=np.float32)}, ValueError, r"at least 0.1 s"),
    ({"audio": []}, ValueError, "empty list"),
    ({"audio": np.zeros((2, 2, SR), dtype=np.float32)}, ValueError, r"shape \(2, 2, 16000\)"),
    ({"audio": np.zeros((SR, 2), dtype=np.float32)}, ValueError, "transpose"),
    ({"audio": np.array(["a", "b"] * 8000)}, TypeError, "dtype"),
    ({"audio": torch.ones(SR, dtype=torch.bool)}, TypeError, "dtype"),
    ({"audio": 3.5}, TypeError, "numpy array, a torch tensor or a path"),
    ({"audio": tone(200.0), "sampling_rate": None}, ValueError, "`sampling_rate` is required"),
    ({"audio": tone(200.0), "sampling_rate": -5}, ValueError, "positive integer"),
    ({"audio": [tone(200.0), tone(300.0)], "audio_weights": [1.0]}, ValueError, "1 weights for 2 sounds"),
    ({"audio": [tone(200.0), tone(300.0)], "audio_weights": [1.0, -0.5]}, ValueError, "non-negative"),
    ({"audio": [tone(200.0), tone(300.0)], "audio_weights": [0.0, 0.0]}, ValueError, "all zero"),
    ({"height": 30}, ValueError, "`height`=30 must be a positive multiple of 4"),
    ({"width": 18}, ValueError, "`width`=18 must be a positive multiple of 4"),
    ({"guidance_scale": -1.0}, ValueError, "`guidance_scale` must be >= 0"),
    ({"guidance_rescale": 1.5}, ValueError, r"`guidance_rescale` must be in \[0, 1\]"),
    ({"num_inference_steps": 0}, ValueError, "num_inference_steps"),
    ({"prompt": "a bell"}, ValueError, "needs a pipeline with `text_encoder`"),
    ({"audio": None}, ValueError, "exactly one of `audio`"),
    ({"audio_embeds": torch.zeros(1, 6, 32)}, ValueError, "exactly one of `audio`"),
    ({"negative_audio": [tone(200.0)] * 3, "audio": [tone(300.0)] * 2}, ValueError, "3 negative sounds for 2"),
    ({"negative_audio": np.zeros(10, dtype=np.float32)}, ValueError, "`negative_audio` is 0.001 s long"),
]


@pytest.mark.parametrize("overrides,error,match", BAD_INPUTS, ids=[m for _, _, m in BAD_INPUTS])
def test_bad_input_is_rejected_before_any_model_runs(tiny_pipe, model_calls, overrides, error, match):
    kwargs = {"audio": tone(200.0), "sampling_rate": SR, "num_inference_steps": 2, "output_type": "np", **overrides}
    with pytest.raises(error, match=match):
        tiny_pipe(**kwargs)
    assert model_calls == []


def test_missing_and_non_audio_paths(tiny_pipe, model_calls, tmp_path):
    with pytest.raises(FileNotFoundError, match="no audio file at"):
        tiny_pipe(str(tmp_path / "missing.wav"), num_inference_steps=1)
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio")
    with pytest.raises(ValueError, match="is not a readable audio file"):
        tiny_pipe(str(text), num_inference_steps=1)
    with pytest.raises(ValueError, match=r"`audio\[1\]`"):
        tiny_pipe([tone(100.0), str(text)], sampling_rate=SR, num_inference_steps=1)
    assert model_calls == []
