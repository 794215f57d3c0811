"""The build program end to end: two describe processes, kill + rerun equality, decodable output, card, report."""

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from sonify_helpers import REPO, make_corpora

BUILD = str(REPO / "dataset_builder" / "build.py")
pytestmark = pytest.mark.slow  # two torchrun processes and a killed-and-resumed build: ~90 s


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _args(image_path, audio_path, out, delay=0.0):
    return [
        "--image_dataset",
        image_path,
        "--audio_dataset",
        audio_path,
        "--output_dir",
        str(out),
        "--image_id_column",
        "photo_id",
        "--audio_id_column",
        "clip_name",
        "--metadata_columns",
        "metadata",
        "--describer",
        "sonify_helpers:ScriptedDescriber",
        "--describer_kwargs",
        json.dumps({"delay_s": delay}),
        "--sample_rate",
        "16000",
        "--duration_s",
        "2",
        "--shard_size",
        "2",
        "--describe_batch_size",
        "2",
        "--min_score",
        "0.4",
        "--max_clip_uses",
        "3",
    ]


def _env():
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), str(REPO / "src"), env.get("PYTHONPATH", "")])
    return env


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One reference build on two processes (torchrun), and one killed mid-describe then rerun (one process)."""
    root = tmp_path_factory.mktemp("sonify_build")
    image_path, audio_path = make_corpora(root)
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(_free_port()),
    ]
    ref = subprocess.run(
        torchrun
        + [BUILD, str(REPO / "dataset_builder/configs/default.yaml"), *_args(image_path, audio_path, root / "ref")],
        env=_env(),
        cwd=root,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert ref.returncode == 0, ref.stderr[-4000:]

    out = root / "resumed"
    cmd = [sys.executable, BUILD, *_args(image_path, audio_path, out, delay=0.4)]
    proc = subprocess.Popen(cmd, env=_env(), cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    cache = Path(str(out) + ".cache")
    deadline = time.time() + 120
    while time.time() < deadline and len(list(cache.glob("describe-*/shard-?????"))) < 2:
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before_rerun = len(list(cache.glob("describe-*/shard-?????")))
    assert 2 <= done_before_rerun < 6 and not out.exists()  # really interrupted mid-describe
    rerun = subprocess.run(cmd, env=_env(), cwd=root, capture_output=True, text=True, timeout=240)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    return {"ref": root / "ref", "resumed": out, "done_before_rerun": done_before_rerun}


def test_two_processes_described(built):
    report = json.loads((built["ref"] / "build_report.json").read_text())
    workers = report["describe_workers"]
    assert set(workers) == {"0", "1"}  # both ranks wrote shards
    assert workers["0"]["pid"] != workers["1"]["pid"]
    assert sorted(workers["0"]["shards"] + workers["1"]["shards"]) == list(range(6))


def test_output_loads_decodes_and_has_provenance(built):
    from datasets import Audio, Image, load_dataset

    ds = load_dataset(str(built["ref"]), split="train")
    assert isinstance(ds.features["image"], Image) and isinstance(ds.features["audio"], Audio)
    assert ds.features["audio"].sampling_rate == 16000
    report = json.loads((built["ref"] / "build_report.json").read_text())
    assert report["num_images"] == 12 and len(ds) == report["num_rows"] == 12 - report["num_skipped"]
    reasons = {s["image_id"]: s["reason"] for s in report["skipped"]}
    assert reasons["img003"].startswith("corrupt image") and reasons["img005"].startswith("unparsable")
    assert reasons["img007"].startswith("empty retrieval")
    assert {c["clip_id"] for c in report["invalid_clips"]} == {"clip04", "clip09"}  # corrupt, silent
    used = [s["clip_id"] for row in ds["sources"] for s in row]
    assert "clip04" not in used and "clip09" not in used
    assert max(used.count(c) for c in set(used)) <= 3  # reuse cap
    row = ds[0]
    assert row["image"].size == (32, 32)
    samples = row["audio"].get_all_samples()
    assert samples.sample_rate == 16000 and samples.data.shape[-1] == 32000
    for r in ds:
        assert r["prompt_version"] == "scripted-v1" and r["builder_version"] and r["index_model"]
        assert r["scene"]["setting"] in ("indoor", "outdoor") and r["rt60"] >= 0
        assert r["description_raw"] == r["metadata"]
        for s in r["sources"]:
            assert s["score"] >= 0.4 and s["clip_text"]
            assert abs(s["measured_lufs"] - s["target_lufs"]) <= 1.0
        assert r["mix_peak_dbfs"] <= -1.0 + 1e-3 and r["mix_true_peak_dbtp"] <= -1.0 + 1e-3
        assert r["limiter_lu"] <= 0.0
    card = (built["ref"] / "README.md").read_text()
    for needle in (
        "configs:",
        "data/train-",
        "scripted-v1",
        "sentence-transformers/all-MiniLM-L6-v2",
        "corrupt image",
        "empty retrieval",
        "EBU R128",
        "| indoor/large | 1.8 |",
    ):
        assert needle in card, needle


def test_mix_is_loud_sources_in_the_audio_match_their_targets(built):
    """Decode a row's FLAC, re-render its sources alone, and check the mix equals their limited sum."""
    from datasets import Audio, load_dataset

    from diffusers_sonify.audio import measure_loudness

    ds = load_dataset(str(built["ref"]), split="train").cast_column("audio", Audio(decode=False))
    for r in ds:
        wav, sr = sf.read(io.BytesIO(r["audio"]["bytes"]), dtype="float32")
        assert sr == 16000 and np.abs(wav).max() <= 10 ** (-1 / 20) + 1e-4
        assert measure_loudness(torch.from_numpy(wav), sr) == pytest.approx(r["mix_lufs"], abs=0.01)
        # the mix is at least as loud as its loudest source (minus limiting, a fraction of a LU)
        assert r["mix_lufs"] >= max(s["target_lufs"] for s in r["sources"]) - 1.0


def test_killed_and_rerun_build_equals_uninterrupted(built):
    from datasets import Audio, Image, load_dataset

    def rows(path):
        ds = load_dataset(str(path), split="train").cast_column("audio", Audio(decode=False))
        return ds.cast_column("image", Image(decode=False)).to_list()

    ref, resumed = rows(built["ref"]), rows(built["resumed"])
    assert len(ref) == len(resumed) > 0
    assert [r["image_id"] for r in ref] == [r["image_id"] for r in resumed]
    for a, b in zip(ref, resumed):
        assert a["audio"]["bytes"] == b["audio"]["bytes"] and a["image"]["bytes"] == b["image"]["bytes"]
        assert a["sources"] == b["sources"] and a["scene"] == b["scene"]
    report = json.loads((built["resumed"] / "build_report.json").read_text())
    assert report["describe_workers"]["0"]["shards"] == list(range(6))


def test_push_folder_and_repo_id_check(built):
    from diffusers_sonify.sonification.write import check_repo_id

    folder = built["ref"]
    pushed = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert pushed[:2] == ["README.md", "build_report.json"] and len(pushed) == 3
    assert re.fullmatch(r"data/train-[0-9a-f]{16}-00000-of-00001\.parquet", pushed[2])
    assert check_repo_id("org/sonified-images") == "org/sonified-images"
    with pytest.raises(ValueError, match="org/name"):
        check_repo_id("no-namespace")
