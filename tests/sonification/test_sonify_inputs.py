"""A user's own inputs: every mistake is found before describing starts, in one line; `audiofolder:` keeps every
format the decoder reads and names what it ignored; leftovers of killed builds are cleaned."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from sonify_helpers import PROMPT, REPO, make_corpora

from diffusers_sonify.data import load_audio_folder
from diffusers_sonify.sonification import BuilderConfig, BuildInputError, build_sonified_dataset
from diffusers_sonify.sonification.checks import remove_stale_tmp

FREEDESKTOP = Path("/usr/share/sounds/freedesktop/stereo")
BUILD = str(REPO / "dataset_builder" / "build.py")
SR = 16_000


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    return make_corpora(tmp_path_factory.mktemp("inputs"), num_images=4, num_clips=6, bad_rows=False)


def _config(tmp_path, corpora, **overrides) -> BuilderConfig:
    image_path, audio_path = corpora
    values = dict(
        image_dataset=image_path,
        audio_dataset=audio_path,
        output_dir=str(tmp_path / "out"),
        describer="sonify_helpers:ScriptedDescriber",
        sample_rate=SR,
        duration_s=1.0,
    )
    values.update(overrides)
    return BuilderConfig(**values)


def _assert_fails_before_describing(config, match):
    with pytest.raises(BuildInputError, match=match):
        build_sonified_dataset(config)
    cache = config.resolved_cache_dir()
    assert not list(cache.glob("describe-*")) and not Path(config.output_dir).exists()


def test_missing_audio_folder(tmp_path, corpora):
    config = _config(tmp_path, corpora, audio_dataset=f"audiofolder:{tmp_path / 'nowhere'}")
    _assert_fails_before_describing(config, "is not a folder")


def test_empty_audio_folder(tmp_path, corpora):
    (tmp_path / "sounds").mkdir()
    config = _config(tmp_path, corpora, audio_dataset=f"audiofolder:{tmp_path / 'sounds'}")
    _assert_fails_before_describing(config, "is empty")


def test_audio_folder_without_any_audio(tmp_path, corpora):
    (tmp_path / "sounds").mkdir()
    (tmp_path / "sounds" / "notes.txt").write_text("not a sound")
    config = _config(tmp_path, corpora, audio_dataset=f"audiofolder:{tmp_path / 'sounds'}")
    _assert_fails_before_describing(config, r"holds no audio file; ignored: notes.txt \(not an audio file")


def test_missing_local_corpus(tmp_path, corpora):
    config = _config(tmp_path, corpora, image_dataset=str(tmp_path / "no_images"))
    _assert_fails_before_describing(config, "does not exist")


def test_corpus_without_the_configured_text_column(tmp_path, corpora):
    config = _config(tmp_path, corpora, audio_text_columns=["caption"])
    _assert_fails_before_describing(config, r"has no column\(s\) \['caption'\]")


def test_json_describer_without_its_column(tmp_path, corpora):
    config = _config(
        tmp_path,
        corpora,
        describer="diffusers_sonify.sonification.describe:JSONColumnDescriber",
        describer_kwargs={"column": "vlm_json"},
    )
    _assert_fails_before_describing(config, r"reads column\(s\) \['vlm_json'\]")


def test_bad_prompt_path(tmp_path, corpora):
    config = _config(
        tmp_path, corpora, describer="diffusers_sonify.sonification.describe:VLMDescriber", prompt_file="nope.txt"
    )
    _assert_fails_before_describing(config, "`prompt_file` 'nope.txt' not found")


def test_missing_model_offline(tmp_path, corpora, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    config = _config(
        tmp_path,
        corpora,
        describer="diffusers_sonify.sonification.describe:VLMDescriber",
        prompt_file=PROMPT,
        vlm_model="someone/not-downloaded-vlm",
    )
    _assert_fails_before_describing(config, "not in the local Hugging Face cache and HF_HUB_OFFLINE=1")
    config = _config(tmp_path, corpora, text_model=str(tmp_path / "no_model_here"))
    _assert_fails_before_describing(config, "is not a folder and not a Hub id")


def test_default_config_offline_fails_fast_in_one_line(tmp_path, corpora):
    """#10.6: the shipped default config needs a Hub VLM; offline that is one clear line, not minutes of retries."""
    image_path, audio_path = corpora
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, BUILD, str(REPO / "dataset_builder/configs/default.yaml")]
    cmd += ["--image_dataset", image_path, "--audio_dataset", audio_path, "--output_dir", str(tmp_path / "out")]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert lines[0].startswith("build.py: error: `vlm_model` 'HuggingFaceTB/SmolVLM-256M-Instruct'")
    assert "JSONColumnDescriber" not in lines[0] and "--help" in lines[0]
    assert elapsed < 30, elapsed


def test_stale_tmp_folders_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = [tmp_path / f"out.tmp-{dead.pid}", tmp_path / "cache" / "describe-1" / f"shard-00000.tmp-{dead.pid}"]
    live = tmp_path / "cache" / f"index-2.tmp-{os.getppid()}"  # a process that is running: another rank
    unrelated = tmp_path / f"notes.tmp-{dead.pid}"  # beside the output but not ours
    for path in [*stale, live, unrelated]:
        path.mkdir(parents=True)
    removed = remove_stale_tmp(tmp_path / "out", tmp_path / "cache")
    assert sorted(removed) == sorted(stale) and not any(p.exists() for p in stale)
    assert live.exists() and unrelated.exists()


def _sound_folder(root: Path) -> Path:
    """Real recorded .oga sounds, espeak-ng speech as wav and mp3, a 1-sample clip, and a text file."""
    sounds = root / "sounds"
    for label in ("bell", "alarm", "speech", "knock", "blip"):
        (sounds / label).mkdir(parents=True)
    if FREEDESKTOP.is_dir():
        shutil.copy(FREEDESKTOP / "bell.oga", sounds / "bell" / "bell.oga")
        shutil.copy(FREEDESKTOP / "alarm-clock-elapsed.oga", sounds / "alarm" / "alarm.oga")
    else:  # Ogg Vorbis written by soundfile stands in for the sound theme
        t = np.arange(SR) / SR
        sf.write(sounds / "bell" / "bell.oga", 0.3 * np.sin(2 * np.pi * 880 * t), SR, format="OGG")
        sf.write(sounds / "alarm" / "alarm.oga", 0.3 * np.sign(np.sin(2 * np.pi * 4 * t)), SR, format="OGG")
    wav = sounds / "speech" / "hello.wav"
    if shutil.which("espeak-ng") and shutil.which("ffmpeg"):
        subprocess.run(["espeak-ng", "-w", str(wav), "hello, somebody is talking"], check=True)
        subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(wav), str(sounds / "speech" / "talk.mp3")])
    else:
        sf.write(wav, 0.2 * np.random.default_rng(0).standard_normal(SR), SR)
    clicks = np.zeros(2 * SR, np.float32)  # impulsive: a -23 LUFS click train peaks far above -1 dBTP
    clicks[:: SR // 5] = 1.0
    sf.write(sounds / "knock" / "knock.wav", np.convolve(clicks, np.hanning(9), mode="same") / 4, SR)
    sf.write(sounds / "blip" / "blip.wav", np.array([0.5], np.float32), SR)  # one sample: too short
    (sounds / "notes.txt").write_text("recorded on my phone")
    return sounds


def test_audiofolder_keeps_every_decodable_format_and_names_what_it_ignored(tmp_path):
    sounds = _sound_folder(tmp_path)
    ds, ignored = load_audio_folder(sounds)
    names = sorted(Path(p).name for p in ds["file_name"])
    expected = ["alarm.oga", "bell.oga", "blip.wav", "hello.wav", "knock.wav"]
    if (sounds / "speech" / "talk.mp3").exists():
        expected = sorted([*expected, "talk.mp3"])
    assert names == expected
    labels = ds.features["label"].names
    assert sorted(labels) == ["alarm", "bell", "blip", "knock", "speech"]
    assert {ds.features["label"].int2str(lab) for lab in ds["label"]} == set(labels)
    assert [Path(i["file"]).name for i in ignored] == ["notes.txt"]
    assert ignored[0]["reason"].startswith("not an audio file")


def _image_folder(root: Path) -> Path:
    """scikit-learn's sample JPEGs (real photos) with a metadata.csv of JSON descriptions, plus a truncated JPEG."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    images = root / "images"
    images.mkdir()
    rows = [("file_name", "description")]
    scenes = {
        "china.jpg": [("bell", "a church bell ringing", 0.9, "mid"), ("voice", "people talking", 0.5, "near")],
        "flower.jpg": [("door", "knocking on a door", 0.9, "near"), ("alarm", "an alarm clock", 0.4, "far")],
    }
    for path in load_sample_images().filenames:
        name = Path(path).name
        Image.open(path).resize((64, 48)).save(images / name)
        sources = [{"name": n, "sound": s, "prominence": p, "distance": d} for n, s, p, d in scenes[name]]
        rows.append((name, json.dumps({"sound_sources": sources, "scene": {"setting": "indoor", "space": "large"}})))
    (images / "broken.jpg").write_bytes((images / "china.jpg").read_bytes()[:300])
    rows.append(("broken.jpg", rows[1][1]))
    import csv

    with open(images / "metadata.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return images


def _true_peak_fft(x: np.ndarray, factor: int = 4) -> float:
    """Independent true-peak measurement: ideal band-limited (FFT zero-padding) 4x oversampling, in dBTP."""
    x = np.concatenate([np.zeros(1024), x.astype(np.float64), np.zeros(1024)])
    spectrum = np.fft.rfft(x)
    padded = np.zeros(factor * len(x) // 2 + 1, complex)
    padded[: len(spectrum)] = spectrum
    return float(20 * np.log10(np.abs(np.fft.irfft(padded, factor * len(x)) * factor).max()))


@pytest.mark.slow
def test_offline_build_on_own_files_as_the_readme_says(tmp_path):
    """The README's offline example (imagefolder + audiofolder + JSONColumnDescriber) as a command, on real media;
    then the rules for the output: skip reasons name files, short clips are rejected, true peak <= -1 dBTP measured
    independently, loudness per pyloudnorm, the limiter's loudness change recorded, stale tmp folders removed,
    and plain `load_dataset(folder)` returns the current rows after a rebuild in place."""
    import pyloudnorm
    from datasets import Audio, load_dataset

    images, sounds = _image_folder(tmp_path), _sound_folder(tmp_path)
    out = tmp_path / "out" / "sonified"
    out.parent.mkdir()
    stale = tmp_path / "out" / "sonified.tmp-999999999"
    stale.mkdir()
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, BUILD, "--image_dataset", f"imagefolder:{images}", "--audio_dataset"]
    cmd += [f"audiofolder:{sounds}", "--describer", "diffusers_sonify.sonification.describe:JSONColumnDescriber"]
    cmd += ["--output_dir", str(out), "--sample_rate", str(SR), "--duration_s", "3", "--min_score", "0.2"]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "build finished" in proc.stderr and "ignored" in proc.stderr and "notes.txt" in proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "warn" in line.lower() or "Traceback" in line]
    assert len(warnings) == 1 and "notes.txt" in warnings[0], warnings  # our own report of the ignored file only
    assert not stale.exists()

    report = json.loads((out / "build_report.json").read_text())
    assert [Path(i["file"]).name for i in report["ignored_audio_files"]] == ["notes.txt"]
    (broken,) = [s for s in report["skipped"] if s["source"] == "broken.jpg"]
    assert broken["reason"].startswith("corrupt image (") and "broken.jpg" in broken["reason"]
    (blip,) = [c for c in report["invalid_clips"] if c["source"] == "blip.wav"]
    assert blip["reason"].startswith("too short (") and "min_clip_seconds" in blip["reason"]

    ds = load_dataset(str(out), split="train")
    assert len(ds) == report["num_rows"] == 2
    meter = pyloudnorm.Meter(SR)
    raw = ds.cast_column("audio", Audio(decode=False))
    for row, cell in zip(ds, raw["audio"]):
        wave, sr = sf.read(io.BytesIO(cell["bytes"]), dtype="float32")
        assert sr == SR
        assert _true_peak_fft(wave) <= -1.0 + 0.05
        assert meter.integrated_loudness(wave.astype(np.float64)) == pytest.approx(row["mix_lufs"], abs=0.2)
        assert row["limiter_lu"] <= 0.0 and row["mix_true_peak_dbtp"] <= -1.0 + 1e-3
    limited = [r for r in ds if r["limiter_lu"] < 0]
    assert limited and report["limited_rows"] == len(limited)  # the knock row hit the limiter, and says so

    # rebuild in place with one image: plain load_dataset must see 1 row, not the cached 2
    (images / "flower.jpg").unlink()
    (images / "broken.jpg").unlink()
    lines = (images / "metadata.csv").read_text().splitlines()
    (images / "metadata.csv").write_text("\n".join(line for line in lines if "china" in line or "file_name" in line))
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert len(load_dataset(str(out), split="train")) == 1
