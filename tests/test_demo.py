"""`make demo`: the toy-world chain runs end to end (quick mode), and the recorded full run meets the bars."""

from __future__ import annotations

import dataclasses
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from diffusers_sonify import AudioToImagePipeline, demo
from diffusers_sonify.audio import torch_threads
from diffusers_sonify.machine import cpu_has_native_bf16
from diffusers_sonify.toyworld import make_eval_sounds
from diffusers_sonify.toyworld.components import ADAPTER_CONFIG, SCHEDULER_CONFIG, UNET_CONFIG

REPO = Path(__file__).resolve().parents[1]
REQUIRED_KEYS = {
    "pairing_accuracy",
    "class_accuracy",
    "mixing_both_present",
    "loudness_area_spearman",
    "reverb_background_accuracy",
    "interpolation_inversions",
    "shape_accuracy",
    "exactly_one_rate",
    "background_noise",
    "render_background_noise",
    "num_eval_images",
    "wall_seconds",
}


@pytest.mark.slow
def test_quick_demo_runs_every_stage_and_writes_the_report(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        metrics = demo.main(["--quick", "--describer", "metadata", "--output_dir", str(tmp_path)])
    # issue 10: a clean run prints progress and results, not warnings the project could avoid
    assert not [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    for log in ("build.log", "train.log"):
        text = (tmp_path / log).read_text()
        assert not re.search(r"warn", text, re.I), f"{log}: " + text[:3000]
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert REQUIRED_KEYS <= set(saved) and saved["quick"] is True
    # issue 12: the evaluation CLI ran on the demo's model with the toy world's scorers, and the floor beside it
    assert {"fid_toy", "fid_toy_floor", "kid_toy", "ais_toy", "iis_toy", "aic_toy"} <= set(saved)
    assert (tmp_path / "evaluation" / "report.md").exists() and "The field's metrics" in (
        tmp_path / "report.md"
    ).read_text()
    assert saved["num_eval_images"] == metrics["num_eval_images"] > 0
    # issue 15: the wall time is reported with the CPU it ran on
    # with the precision it trained and sampled in: bf16 autocast where the CPU does bf16 in hardware, fp32
    # elsewhere; the field's metrics (the evaluation CLI) sample in it too
    assert saved["training_precision"] == ("bf16" if cpu_has_native_bf16() else "no")
    precision = {"bf16": "bf16 autocast", "no": "fp32"}[saved["training_precision"]]
    report = (tmp_path / "report.md").read_text()
    assert saved["train_steps"] == 2  # quick's steps, read from the training log
    assert f"s on {saved['machine']}, 2 training steps, training and sampling in {precision} (stage" in report
    # and the sampler the held-out images were drawn with
    assert saved["sampling"]["eta"] == demo.QUICK.eta > 0
    assert f"2 DDIM steps, guidance {demo.QUICK.guidance_scale:g} (rescale 0.7) and eta {demo.QUICK.eta:g}." in report
    field_run = json.loads((tmp_path / "evaluation" / "metrics.json").read_text())
    assert field_run["mixed_precision"] == saved["training_precision"]
    assert f"| mixed_precision | {saved['training_precision']} |" in (tmp_path / "model" / "README.md").read_text()
    assert list(saved["stage_seconds"]) == [
        "corpora",
        "audio_encoder",
        "evaluation_inputs",
        "build",
        "train",
        "evaluate",
    ]
    assert "repa_cosine" not in (tmp_path / "model" / "train_log.jsonl").read_text()  # no VLM, no REPA
    # the real builder paired the unpaired corpora: MiniLM retrieval found the pictured class for every source
    assert saved["pairing_accuracy"] == 1.0 and saved["num_training_pairs"] == 48
    report = (tmp_path / "report.md").read_text()
    assert "(a describer reading the scene metadata -> MiniLM" in report
    assert "### The describer" not in report  # no VLM in this chain
    pictures = re.findall(r"\]\(([^)]+\.png)\)", report)
    assert {"grid_single.png", "grid_mixture.png", "grid_sweep.png", "loudness_vs_area.png"} <= set(pictures)
    assert "grid_edits.png" in pictures and EDIT_BARS.keys() <= saved["edit_bars_met"].keys()
    # issue 15: renders and generations of the same held-out scenes side by side (8 scenes: 4 rows of 2 pairs)
    assert "grid_renders_vs_generated.png" in pictures
    assert Image.open(tmp_path / "grid_renders_vs_generated.png").size == (8 * 32 * 3, 2 * 32 * 3)
    assert saved["render_background_noise"] < 0.005  # renders are flat; the generations are measured the same way
    for key in ("shape_accuracy", "exactly_one_rate", "background_noise"):
        assert f"| {key} | {saved[key]:.3f} |" in report
    for name in pictures:
        assert Image.open(tmp_path / name).size[0] > 0
    # the training program wrote a directly loadable pipeline
    pipe = AudioToImagePipeline.from_pretrained(tmp_path / "model")
    assert pipe.vae is None and pipe.unet.config.in_channels == 3
    # concurrent generation (2 worker threads of one torch thread each, pipeline copies) gives the images of one
    # worker on one torch thread, in order
    pipe.set_progress_bar_config(disable=True)
    sounds = make_eval_sounds(
        seed=0,
        singles_per_class=1,
        mixtures_per_pair=0,
        loudness_series_per_class=0,
        reverb_pairs_per_class=0,
        num_sweeps=0,
    )[:3]
    with torch_threads(1):
        serial = demo.generate(pipe, sounds, demo.QUICK, seed=0, batch_size=1, workers=1)
    concurrent = demo.generate(pipe, sounds, demo.QUICK, seed=0, batch_size=1, workers=2)
    # in order and the same pictures; a pixel may round to the next level (the 8-bit conversion of values that differ
    # in the last float bits between the serial and the threaded run)
    for a, b in zip(serial, concurrent, strict=True):
        diff = np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int))
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01, (diff.max(), (diff > 0).mean())
    assert np.asarray(serial[0]).tolist() != np.asarray(serial[1]).tolist()
    # DDIM's eta reaches the scheduler: without its per-step noise the same generators draw other pictures
    with torch_threads(1):
        deterministic = demo.generate(pipe, sounds, dataclasses.replace(demo.QUICK, eta=0.0), seed=0, batch_size=1)
    assert all(np.asarray(a).tolist() != np.asarray(b).tolist() for a, b in zip(serial, deterministic, strict=True))


def test_toyworld_training_config_is_the_recipe():
    config = yaml.safe_load((REPO / "train_scripts" / "configs" / "toyworld.yaml").read_text())
    as_lists = {k: list(v) if isinstance(v, tuple) else v for k, v in UNET_CONFIG.items()}
    assert config["unet_config"] == as_lists
    assert SCHEDULER_CONFIG.items() <= config["scheduler_config"].items()
    assert config["adapter_input_type"] == ADAPTER_CONFIG["input_type"]
    assert config["num_pooled_tokens"] == ADAPTER_CONFIG["num_pooled_tokens"]
    assert config["num_hidden_tokens"] == ADAPTER_CONFIG["num_hidden_tokens"]
    assert config["adapter_hidden_pool"] == ADAPTER_CONFIG["hidden_pool"]
    # the demo's stage ETA for training is scaled from the recipe's steps when `--train_steps` asks for others
    assert config["max_train_steps"] == demo.RECIPE_TRAIN_STEPS


# The acceptance bars of the toy world (issues 5 and 15), written out here on purpose: the demo's report of which
# bars a run met is checked against them, so lowering a bar in the demo's code cannot make a report claim more.
BARS = {
    "pairing_accuracy": (">=", 0.95),
    "class_accuracy": (">=", 0.95),
    "mixing_both_present": (">=", 0.85),
    "loudness_area_spearman": (">=", 0.7),
    "reverb_background_accuracy": (">=", 0.95),
    "interpolation_inversions": ("<=", 1),
    "shape_accuracy": (">=", 0.85),
    "exactly_one_rate": (">=", 0.85),
    "background_noise": ("<=", 0.02),
}


# The bars of issue 5 (the first toy world): the recorded run must meet these; BARS above raises them (issue 15).
ISSUE5_BARS = {
    "pairing_accuracy": (">=", 0.95),
    "class_accuracy": (">=", 0.90),
    "mixing_both_present": (">=", 0.75),
    "loudness_area_spearman": (">=", 0.6),
    "reverb_background_accuracy": (">=", 0.90),
    "interpolation_inversions": ("<=", 1),
}


# The toy VLM's bars (issue 15), written out for the same reason.
VLM_BARS = {
    "vlm_valid_json": (">=", 0.99),
    "vlm_source_f1": (">=", 0.95),
    "vlm_setting_accuracy": (">=", 0.98),
    "vlm_prominence_spearman": (">=", 0.8),
}


def test_demo_bars_are_the_issue_bars():
    assert demo.BARS == BARS and demo.VLM_BARS == VLM_BARS


@pytest.mark.slow
def test_quick_demo_with_the_toy_vlm_trains_it_and_builds_with_it(tmp_path):
    """Issue 15: `--describer vlm` trains the toy VLM in the chain and the builder describes every image with it
    through `VLMDescriber`; the report gains the describer table (the quick VLM's numbers mean nothing)."""
    metrics = demo.main(["--quick", "--describer", "vlm", "--output_dir", str(tmp_path)])
    assert list(metrics["stage_seconds"]) == [
        "corpora",
        "audio_encoder",
        "evaluation_inputs",
        "vlm",
        "build",
        "train",
        "evaluate",
    ]
    card = (tmp_path / "sonified" / "README.md").read_text()
    assert f"| Describer | `diffusers_sonify.sonification.describe:VLMDescriber ({tmp_path / 'toy_vlm'})` |" in card
    assert (tmp_path / "toy_vlm" / "model.safetensors").is_file() and metrics["num_training_pairs"] > 0
    # REPA: the training aligned the UNet with the toy VLM's vision tower; the projector is not in the pipeline
    log = [json.loads(line) for line in (tmp_path / "model" / "train_log.jsonl").read_text().splitlines()]
    assert log and all(-1 < e["repa_cosine"] < 1 for e in log)
    assert "repa_weight" in (tmp_path / "model" / "README.md").read_text()
    assert not any("repa" in key for key in json.loads((tmp_path / "model" / "model_index.json").read_text()))
    # the metadata describer is the reference: exact on the same held-out renders the VLM is scored on
    for key in ("valid_json", "source_f1", "setting_accuracy", "space_accuracy", "prominence_spearman"):
        assert metrics[f"metadata_describer_{key}"] == 1.0, key
        assert 0.0 <= metrics[f"vlm_{key}"] <= 1.0 or key == "prominence_spearman", key
    report = (tmp_path / "report.md").read_text()
    assert "### The describer: a VLM trained here, in the loop" in report
    assert "(a toy VLM trained here describes each image -> MiniLM" in report
    for key, (op, bar) in VLM_BARS.items():
        met = metrics[key] >= bar if op == ">=" else metrics[key] <= bar
        assert metrics["bars_met"][key] == met
        assert f"| {key} | {metrics[key]:.3f} | {op} {bar} | {'met' if met else 'NOT met'} |" in report


def test_train_steps_must_be_a_positive_whole_number(capsys):
    for bad in ("0", "-5", "1.5"):
        with pytest.raises(SystemExit):
            demo.main(["--train_steps", bad])
        assert "--train_steps" in capsys.readouterr().err


def test_stage_estimates_follow_the_boxs_pace_once_a_timed_stage_is_done():
    eta = demo.STAGE_ETA
    # nothing timed yet (the corpora stage is too short to say anything about the box): the measured box's seconds
    assert demo.stage_eta("train", demo.RECIPE_TRAIN_STEPS, {}) == (eta["train"], None)
    assert demo.stage_eta("train", demo.RECIPE_TRAIN_STEPS, {"corpora": 40.0})[1] is None
    assert demo.stage_eta("train", 2 * demo.RECIPE_TRAIN_STEPS, {})[0] == 2 * eta["train"]
    # a box that took twice the measured time for the encoder and three times for the build is 2.x slower overall
    done = {"corpora": 5.0, "audio_encoder": 2 * eta["audio_encoder"], "build": 3 * eta["build"]}
    pace = (2 * eta["audio_encoder"] + 3 * eta["build"]) / (eta["audio_encoder"] + eta["build"])
    measured, here = demo.stage_eta("evaluate", demo.RECIPE_TRAIN_STEPS, done)
    assert measured == eta["evaluate"] and here == pytest.approx(pace * eta["evaluate"])
    assert 2 < pace < 3


def test_seed_summary_gives_min_median_max_and_bars_met():
    runs = {
        0: {"class_accuracy": 1.0, "background_noise": 0.03, "quick": False, "bars_met": {"class_accuracy": True}},
        1: {"class_accuracy": 0.9, "background_noise": 0.01, "quick": False, "bars_met": {"class_accuracy": False}},
        2: {"class_accuracy": 0.96, "background_noise": 0.02, "quick": False, "bars_met": {"class_accuracy": True}},
    }
    summary = demo.summarize_seeds(runs)
    assert summary["metrics"]["class_accuracy"] == {
        "min": 0.9,
        "median": 0.96,
        "max": 1.0,
        "per_seed": {"0": 1.0, "1": 0.9, "2": 0.96},
    }
    assert summary["metrics"]["background_noise"]["median"] == 0.02 and "quick" not in summary["metrics"]
    assert summary["bars_met_on_seeds"]["class_accuracy"] == 2


@pytest.mark.slow
def test_seeds_runs_the_chain_per_seed_and_summarises(tmp_path):
    # the metadata describer keeps this test to the seeds logic (the quick VLM chain is tested above)
    # `--train_steps` reaches every seed's training (quick's default is 2 steps)
    argv = ["--quick", "--seeds", "0", "1", "--describer", "metadata", "--train_steps", "3"]
    summary = demo.main([*argv, "--output_dir", str(tmp_path)])
    assert summary["seeds"] == [0, 1]
    for seed in (0, 1):
        saved = json.loads((tmp_path / f"seed_{seed}" / "metrics.json").read_text())
        assert saved["quick"] is True and saved["train_steps"] == 3
        log = (tmp_path / f"seed_{seed}" / "model" / "train_log.jsonl").read_text().splitlines()
        assert [json.loads(line)["step"] for line in log] == [1, 2, 3]
        assert "3 training steps" in (tmp_path / f"seed_{seed}" / "report.md").read_text()
    # the two chains differ (different corpora and training seeds), and the summary spans both
    stats = summary["metrics"]["fid_toy"]
    assert stats["min"] < stats["max"] and set(stats["per_seed"]) == {"0", "1"}
    assert json.loads((tmp_path / "seeds.json").read_text()) == summary
    assert "| class_accuracy |" in (tmp_path / "seeds.md").read_text()
    assert "--seeds 0 1 --describer metadata --train_steps 3`" in (tmp_path / "seeds.md").read_text()
    # a rerun keeps the finished seeds (a full seed takes ~14 minutes) and gives the same summary
    written = (tmp_path / "seed_1" / "metrics.json").stat().st_mtime_ns
    assert demo.main([*argv, "--output_dir", str(tmp_path)]) == summary
    assert (tmp_path / "seed_1" / "metrics.json").stat().st_mtime_ns == written
    assert demo._finished_run(tmp_path / "seed_1", 1, True, "metadata", 3) is not None
    # another seed, size, describer or number of training steps (None: quick's 2)
    for other in (
        (0, True, "metadata", 3),
        (1, False, "metadata", 3),
        (1, True, "vlm", 3),
        (1, True, "metadata", None),
    ):
        assert demo._finished_run(tmp_path / "seed_1", *other) is None, other
    with pytest.raises(ValueError, match="repeated"):
        demo.main(["--quick", "--seeds", "0", "0", "--output_dir", str(tmp_path)])


# The editing bars (issue 14), written out here for the same reason.
EDIT_BARS = {
    "edit_to_indoor_accuracy": 0.9,
    "edit_to_outdoor_accuracy": 0.9,
    "edit_add_class_accuracy": 0.8,
    "edit_keep_class_accuracy": 0.8,
}


def test_editing_bars_are_the_issue_bars():
    from diffusers_sonify.toyworld.editing import EDIT_BARS as CODE_EDIT_BARS

    assert CODE_EDIT_BARS == EDIT_BARS


_RECORDED = json.loads((REPO / "docs" / "demo" / "metrics.json").read_text())


def test_recorded_demo_run_reports_the_editing_section_honestly():
    report = (REPO / "docs" / "demo" / "report.md").read_text()
    assert "![edits](grid_edits.png)" in report
    for key, bar in EDIT_BARS.items():
        met = _RECORDED[key] >= bar
        assert _RECORDED["edit_bars_met"][key] == met, key
        sdedit = _RECORDED[f"sdedit_{key}"]
        assert f"| {key} | {_RECORDED[key]:.3f} | {sdedit:.3f} | >= {bar} | {'met' if met else 'NOT met'} |" in report
    assert "AudioToImageInpaintPipeline" in report and _RECORDED["edit_strength"] == 1.0


def test_recorded_demo_run_meets_the_editing_bars():
    missed = {k: _RECORDED[k] for k, bar in EDIT_BARS.items() if _RECORDED[k] < bar}
    assert not missed, f"the recorded run misses editing bars: {missed}"


def test_recorded_full_demo_run_is_complete_and_honest():
    """docs/demo/ holds the outputs of a full `make demo` run (the chain with the toy VLM), shown in the README: its
    verdicts follow the bars, and it meets issue 5's bars and every describer bar."""
    folder, metrics = REPO / "docs" / "demo", _RECORDED
    assert REQUIRED_KEYS <= set(metrics) and metrics["quick"] is False
    assert metrics["num_eval_images"] >= 200 and metrics["wall_seconds"] <= 15 * 60
    assert metrics["num_training_pairs"] == demo.DemoSize().num_images  # the whole built dataset, no stale cache
    assert "vlm" in metrics["stage_seconds"] and metrics["describer_eval_images"] >= 200
    report = (folder / "report.md").read_text()
    assert "### The describer: a VLM trained here, in the loop" in report
    for key, (op, bar) in {**BARS, **VLM_BARS}.items():
        met = metrics[key] >= bar if op == ">=" else metrics[key] <= bar
        assert metrics["bars_met"][key] == met, key
        assert f"| {key} | {metrics[key]:.3f} |" in report
    for key, (op, bar) in ISSUE5_BARS.items():
        met = metrics[key] >= bar if op == ">=" else metrics[key] <= bar
        assert met, f"the recorded run misses the {key} bar: {metrics[key]} (bar {op} {bar})"
    # what the trained VLM already meets (RECIPE.md d15, d16): every describer bar, and pairing with its descriptions
    missed = {k: metrics[k] for k in [*VLM_BARS, "pairing_accuracy"] if not metrics["bars_met"][k]}
    assert not missed, f"the recorded run misses describer bars: {missed}"
    for name in re.findall(r"\]\(([^)]+\.png)\)", report):
        assert (folder / name).is_file(), name


def test_recorded_full_demo_run_meets_the_issue15_bars():
    missed = {k: _RECORDED[k] for k, (op, bar) in BARS.items() if not _RECORDED["bars_met"][k]}
    assert not missed, f"the recorded run misses bars: {missed}"


def test_recorded_seed_runs_meet_every_bar_on_every_seed():
    """Issue 15 asks for the picture bars on every seed: the recorded chain over seeds 0-2 meets each of them, and
    every describer and editing bar, on all three (the per-seed values themselves, against the bars written out
    above)."""
    summary = json.loads((REPO / "docs" / "demo" / "seeds.json").read_text())
    missed = {}
    for key, (op, bar) in {**BARS, **VLM_BARS, **{k: (">=", v) for k, v in EDIT_BARS.items()}}.items():
        for seed, value in summary["metrics"][key]["per_seed"].items():
            if not (value >= bar if op == ">=" else value <= bar):
                missed[f"{key}, seed {seed}"] = value
    assert sorted(summary["metrics"]["class_accuracy"]["per_seed"]) == ["0", "1", "2"]
    assert not missed, f"the recorded seeds miss bars: {missed}"


def test_recorded_seed_runs_show_every_seed_and_count_bars_honestly():
    """docs/demo/seeds.*: the chain over seeds 0-2 (issue 15, deliverable 4; seed 0 is the recorded run itself):
    min/median/max of every metric and on how many seeds each bar holds, as the per-seed values say."""
    seeds = [0, 1, 2]
    summary = json.loads((REPO / "docs" / "demo" / "seeds.json").read_text())
    table = (REPO / "docs" / "demo" / "seeds.md").read_text()
    assert summary["seeds"] == seeds and "--describer vlm`" in table
    for key, (op, bar) in {**BARS, **VLM_BARS}.items():
        values = [summary["metrics"][key]["per_seed"][str(s)] for s in seeds]
        met = sum(v >= bar if op == ">=" else v <= bar for v in values)
        assert summary["bars_met_on_seeds"][key] == met, key
        stats = summary["metrics"][key]
        assert (stats["min"], stats["median"], stats["max"]) == (min(values), float(np.median(values)), max(values))
        row = f"| {key} | {stats['min']:.3f} | {stats['median']:.3f} | {stats['max']:.3f} | {op} {bar} |"
        assert f"{row} {met}/{len(seeds)} |" in table, key
    # the seed-0 run is the recorded one
    assert summary["metrics"]["mixing_both_present"]["per_seed"]["0"] == _RECORDED["mixing_both_present"]
