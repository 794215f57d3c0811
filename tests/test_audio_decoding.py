"""The one audio decoder (`diffusers_sonify.audio.decode_audio`): every input form the pipeline, the builder and the
trainer meet gives the same waveform, and each bad input fails with a message naming it."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from sounds import SR, tone

from diffusers_sonify.audio import decode_audio, prepare_waveform

FREEDESKTOP = Path("/usr/share/sounds/freedesktop/stereo")


def _wav_bytes(wave: np.ndarray, sr: int = SR) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, wave.T if wave.ndim == 2 else wave, sr, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def stereo() -> np.ndarray:
    return np.stack([tone(440.0), tone(660.0, amplitude=0.3)])  # (2, samples)


@pytest.fixture(scope="module")
def audio_rows(stereo, tmp_path_factory):
    """A real `datasets` Audio column: row 0 from bytes, row 1 from a file path."""
    from datasets import Audio, Dataset

    path = tmp_path_factory.mktemp("audio") / "clip.wav"
    sf.write(path, stereo.T, SR, subtype="FLOAT")
    cells = [{"bytes": _wav_bytes(stereo), "path": None}, {"bytes": None, "path": str(path)}]
    return Dataset.from_dict({"audio": cells}).cast_column("audio", Audio()), path


def test_every_form_of_the_same_clip_decodes_to_the_same_waveform(stereo, audio_rows):
    from datasets import Audio

    ds, path = audio_rows
    expected = torch.from_numpy(stereo)
    decoded_column = ds[0]["audio"]
    assert type(decoded_column).__name__ == "AudioDecoder"  # what datasets 5 gives
    forms = {
        "path": str(path),
        "pathlib": Path(path),
        "bytes": _wav_bytes(stereo),
        "AudioDecoder": decoded_column,
        "AudioDecoder from a path": ds[1]["audio"],
        "array dict": {"array": stereo, "sampling_rate": SR},
        "bytes dict (decode=False)": ds.cast_column("audio", Audio(decode=False))[0]["audio"],
        "path dict": {"bytes": None, "path": str(path)},
        "numpy": stereo,
        "torch": torch.from_numpy(stereo),
        "int16 PCM": (stereo * 32767).astype(np.int16),
    }
    for name, value in forms.items():
        waveform, rate = decode_audio(value, SR)
        assert rate == SR and waveform.dtype == torch.float32, name
        assert waveform.shape == expected.shape, name
        atol = 1e-4 if name == "int16 PCM" else 1e-6
        assert torch.allclose(waveform, expected, atol=atol), name


def test_max_seconds_decodes_only_the_start_for_every_form(stereo, audio_rows):
    ds, path = audio_rows
    for value in (str(path), _wav_bytes(stereo), ds[0]["audio"], stereo, {"array": stereo, "sampling_rate": SR}):
        waveform, rate = decode_audio(value, SR, max_seconds=0.25)
        assert waveform.shape == (2, SR // 4)
        assert torch.allclose(waveform, torch.from_numpy(stereo[:, : SR // 4]), atol=1e-6)


def test_prepare_waveform_makes_mono_at_the_target_rate(stereo, audio_rows):
    ds, _ = audio_rows
    mono = prepare_waveform(ds[0]["audio"], target_sr=8000)
    assert mono.shape == (8000,) and mono.dtype == np.float32
    assert np.allclose(mono, prepare_waveform(stereo, target_sr=8000, sampling_rate=SR), atol=1e-6)


@pytest.mark.skipif(not FREEDESKTOP.is_dir(), reason="needs Debian's sound-theme-freedesktop")
def test_real_oga_files_decode():
    for name in ("bell.oga", "complete.oga"):
        waveform, rate = decode_audio(FREEDESKTOP / name)
        assert rate in (44100, 48000, 96000) and waveform.shape[0] in (1, 2) and waveform.shape[1] > rate // 10
        assert 0.0 < float(waveform.abs().max()) <= 1.0


@pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("ffmpeg") is None, reason="needs espeak-ng")
def test_espeak_speech_as_wav_and_mp3_decodes_to_the_same_length(tmp_path):
    wav, mp3 = tmp_path / "speech.wav", tmp_path / "speech.mp3"
    subprocess.run(["espeak-ng", "-w", str(wav), "a bell rings in the hall"], check=True)
    subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(wav), str(mp3)], check=True)
    a, rate_a = decode_audio(wav)
    b, rate_b = decode_audio(mp3.read_bytes())  # bytes of a format libsndfile may not read: torchcodec
    assert rate_a == rate_b
    assert abs(a.shape[1] - b.shape[1]) < 0.1 * rate_a  # mp3 adds encoder padding only


BAD = [
    (3.5, {}, TypeError, "numpy array, a torch tensor or a path"),
    (3.5, {}, TypeError, "audio_column"),
    ({"sampling_rate": SR}, {}, ValueError, "neither audio `bytes`, a `path` nor an `array`"),
    ({"array": np.zeros(100, np.float32)}, {}, ValueError, "without `sampling_rate`"),
    (b"RIFF garbage", {}, ValueError, "the audio bytes is not a readable audio file"),
    (np.zeros(100, np.float32), {}, ValueError, "`sampling_rate` is required"),
    (np.zeros(100, np.float32), {"sampling_rate": 0}, ValueError, "positive integer"),
    (np.array([0.0, np.nan], np.float32), {"sampling_rate": SR}, ValueError, "NaN or infinite"),
    (np.zeros((SR, 2), np.float32), {"sampling_rate": SR}, ValueError, "transpose"),
]


@pytest.mark.parametrize("value, kwargs, error, match", BAD)
def test_bad_inputs_name_the_problem(value, kwargs, error, match):
    with pytest.raises(error, match=match):
        decode_audio(value, **kwargs)


def test_nan_in_a_file_and_missing_files_are_reported(tmp_path):
    path = tmp_path / "nan.wav"
    sf.write(path, np.array([0.1, np.nan] * 800, np.float32), SR, subtype="FLOAT")
    with pytest.raises(ValueError, match=r"nan.wav' decodes to NaN"):
        decode_audio(path)
    with pytest.raises(ValueError, match="decodes to NaN"):
        decode_audio({"bytes": path.read_bytes(), "path": "nan.wav"})
    with pytest.raises(FileNotFoundError, match="no audio file at"):
        decode_audio(tmp_path / "missing.wav")


def test_pipeline_accepts_what_datasets_gives_it(tiny_pipe, audio_rows, stereo):
    """#10.9: `pipe(row["audio"])` (an AudioDecoder), `{"array", "sampling_rate"}` dicts and raw bytes all work and
    equal the array input."""
    ds, _ = audio_rows
    reference = tiny_pipe.prepare_audio(stereo, sampling_rate=SR)[0]
    for value in (ds[0]["audio"], {"array": stereo, "sampling_rate": SR}, _wav_bytes(stereo), ds[1]["audio"]):
        (prepared,) = tiny_pipe.prepare_audio(value)
        assert np.allclose(prepared, reference, atol=1e-6)
    generator = torch.Generator().manual_seed(0)
    from_row = tiny_pipe(ds[0]["audio"], num_inference_steps=2, generator=generator, output_type="np").images
    generator = torch.Generator().manual_seed(0)
    from_array = tiny_pipe(stereo, sampling_rate=SR, num_inference_steps=2, generator=generator, output_type="np")
    assert np.allclose(from_row, from_array.images, atol=1e-4)
