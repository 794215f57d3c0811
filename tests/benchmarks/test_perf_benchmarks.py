"""`--quick` runs of the performance benchmarks (issue 16): each runs end to end and reports its goal figures."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, env: dict | None = None) -> str:
    out = subprocess.run(
        list(args), capture_output=True, text=True, cwd=ROOT, timeout=600, env={**os.environ, **(env or {})}
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out.stdout


@pytest.mark.slow
def test_retrieval_benchmark_quick_reports_recall_and_wall_time():
    stdout = run(sys.executable, "benchmarks/retrieval.py", "--quick")
    recall = float(re.search(r"recall@5 vs exact on \d+ queries: ([\d.]+)", stdout).group(1))
    assert 0.0 < recall <= 1.0
    assert re.search(r"faiss-ivf wall [\d.]+ s .*goal <= 15 min", stdout)


def test_parser_benchmark_quick_times_both_shape_searches():
    stdout = run(sys.executable, "benchmarks/parser.py", "--quick")
    results = json.loads(stdout.strip().splitlines()[-1])
    assert set(results) == {"renders", "blurred and grained renders", "colour blobs"}
    for kind, r in results.items():
        assert r["objects"] > 0 and r["ms_per_object_slid"] > 0 and r["ms_per_object_redrawn"] > 0, kind
        # the two searches find the same shapes to the rasteriser's rounding (the test of the search is in
        # tests/toyworld; this is the benchmark's own report of it)
        assert r["same_shape"] >= 0.9 and r["max_overlap_difference"] < 0.02, kind


@pytest.mark.slow
def test_toy_vlm_benchmark_quick_times_the_loss_and_the_program_layouts():
    stdout = run(sys.executable, "benchmarks/toy_vlm.py", "--quick")
    for layout in ("1 process(es) x 1 thread(s)", "1 process(es) x 2 thread(s)", "2 process(es) x 1 thread(s)"):
        assert float(re.search(rf"program, {re.escape(layout)}: ([\d.]+) s/step", stdout).group(1)) > 0
    # a sanity band (the full run records the figure): outside it, the two loss loops are mis-timed
    assert 0.2 < float(re.search(r"kept logits: ([\d.]+)x faster", stdout).group(1)) < 10


@pytest.mark.slow
def test_train_step_benchmark_quick_reports_the_floor_ratio():
    stdout = run(sys.executable, "benchmarks/train_step.py", "--quick")
    ratio = float(re.search(r"ratio trainer \(train.py step\) / floor: ([\d.]+)", stdout).group(1))
    # A sanity band, not the goal (the full run records that): a tiny step takes ~20 ms, so one stalled step on a
    # busy CI box moves the quick ratio by 2x (2.09 was seen); a ratio outside 0.1-5 means the loops are mis-timed.
    assert 0.1 < ratio < 5.0
    assert "bf16 autocast" in stdout and "channels_last" in stdout and "Muon optimizer" in stdout
    assert "bf16 + AttnProcessor" in stdout


@pytest.mark.slow
def test_gpu_script_quick_writes_its_results(tmp_path):
    stdout = run("bash", "benchmarks/gpu.sh", "--quick", env={"RESULTS_DIR": str(tmp_path), "PYTHON": sys.executable})
    results = json.loads((tmp_path / "gpu_results.json").read_text())
    assert results["mode"].startswith("quick") and results["fp32"]["pipeline"]["latency_ratio"] > 0
    assert results["fp32"]["training"]["samples_per_s"] > 0
    assert results["fp32"]["training_adapter"]["samples_per_s"] > 0
    assert results["fp32"]["describe"]["batch_speedup"] > 0
    # every measurement is guarded (one failure keeps the others' numbers); in the check run none may fail
    assert not [k for k, v in results["fp32"].items() if "error" in v], results["fp32"]
    assert "pipeline latency ratio" in stdout and "FAILED" not in stdout
    assert (tmp_path / "gpu_results.log").is_file()


@pytest.mark.slow
def test_gpu_stages_quick_times_every_stage():
    stdout = run(sys.executable, "benchmarks/gpu_stages.py", "--quick", env={"PYTHONPATH": "src"})
    stages = next(line for line in stdout.splitlines() if line.startswith("fp32 feature_extractor_cpu"))
    for stage in ("encode_audio", "sonify_1_step", "sd_1_step", "sonify_from_audio_embeds", "ratio"):
        assert f" {stage} " in stages
    assert "profiled sonify call" in stdout and stdout.strip().splitlines()[-1].startswith("ratio: ")


@pytest.mark.slow
def test_builder_scale_benchmark_quick_reports_every_goal(tmp_path):
    stdout = run(sys.executable, "benchmarks/builder_scale.py", "--quick", "--json", str(tmp_path / "scale.json"))
    ratios = [line for line in stdout.splitlines() if line.startswith("ratio: ")]
    assert [r.split("=")[0].strip() for r in ratios] == [
        "ratio: peak RSS at 120 / at 40 images",
        "ratio: assembly real-time factor (one thread)",
        "ratio: non-VLM stages / describe at the tiny random VLM's speed",
        "ratio: describe 2 processes / 1 process",
    ]
    assert (tmp_path / "scale.json").is_file()
