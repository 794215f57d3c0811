"""`python -m diffusers_sonify.evaluation`: end to end on a tiny saved pipeline and a tiny dataset; bad inputs fail
before anything is loaded or generated."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest

from diffusers_sonify.evaluation import cli
from diffusers_sonify.toyworld import CLASS_NAMES, render_scene, synthesize

MISSING_PIPELINE = "/nonexistent/pipeline"  # loading it would fail: errors below must come from validation first


def _dataset(path, n: int = 6, image_size=None, image_mode=None, drop=()):
    from datasets import Audio, Dataset, Features, Image, Value

    rows = {"audio": [], "label": [], "image": []}
    for i in range(n):
        name = CLASS_NAMES[i % len(CLASS_NAMES)]
        rows["audio"].append({"array": synthesize(name, 900 + i, seconds=1.0), "sampling_rate": 16_000})
        rows["label"].append(name)
        image = render_scene([{"class": name, "radius": 8.0, "x": 0.5, "y": 0.5}], "outdoor")
        if image_size and i == n - 1:
            image = image.resize(image_size)
        if image_mode and i == n - 1:
            image = image.convert(image_mode)
        rows["image"].append(image)
    features = Features({"audio": Audio(sampling_rate=16_000), "label": Value("string"), "image": Image()})
    ds = Dataset.from_dict(rows, features=features).remove_columns(list(drop))
    ds.save_to_disk(str(path))
    return str(path)


@pytest.fixture(scope="module")
def toy_dataset(tmp_path_factory):
    return _dataset(tmp_path_factory.mktemp("eval_ds") / "ds")


@pytest.fixture(scope="module")
def toy_classifier_dir(tmp_path_factory):
    import torch

    from diffusers_sonify.toyworld.classifier import ToyImageClassifier

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("toy_classifier")
    ToyImageClassifier().save_pretrained(path)
    return str(path)


def _check_outputs(out, metrics):
    saved = json.loads((out / "metrics.json").read_text())
    assert set(metrics) <= set(saved["metrics"]), saved["metrics"]
    for key in metrics:
        assert saved["models"][key], key  # every number names the model that produced it
        assert np.isfinite(saved["metrics"][key])
    report = (out / "report.md").read_text()
    for picture in re.findall(r"\]\(([^)]+\.png)\)", report):
        assert PIL.Image.open(out / picture).size[0] > 0
    return saved


def test_cli_end_to_end_with_the_toy_world_scorers(tiny_pipe_dir, toy_dataset, toy_classifier_dir, tmp_path):
    args = [
        "--pipeline",
        tiny_pipe_dir,
        "--dataset",
        toy_dataset,
        "--output_dir",
        str(tmp_path),
        "--metrics",
        "fid,kid,ais,ais_mean_cosine,iis,aic,probes",
        "--num_images",
        "6",
        "--scorer",
        "toyworld",
        "--toy_classifier",
        toy_classifier_dir,
        "--num_inference_steps",
        "2",
        "--batch_size",
        "4",
    ]
    result = cli.main(args)
    saved = _check_outputs(
        tmp_path,
        [
            "fid",
            "kid_mean",
            "ais",
            "ais_mean_cosine",
            "iis",
            "aic",
            "probe_loudness_spearman",
            "probe_mixing_both_present",
        ],
    )
    assert saved["metrics"] == pytest.approx(result["metrics"])
    assert saved["num_images"] == 6 and len(list((tmp_path / "images").glob("*.png"))) == 6
    assert 0 <= saved["metrics"]["ais"] <= 1 and 0 <= saved["metrics"]["aic"] <= 1
    assert "win-rate" in saved["models"]["ais"] and "MACS" in saved["models"]["ais_mean_cosine"]
    probes = saved["probes"]
    assert probes["loudness"]["values"] == [-40.0, -35.0, -30.0, -25.0, -20.0]
    assert len(probes["reverb"]["readings"]) == 6 and probes["mixing"]["pairs"][0] == ["bell", "drum"]
    assert (tmp_path / "probes.png").exists()


@pytest.mark.slow
def test_cli_runs_as_a_module_with_a_clip_scorer(tiny_pipe_dir, toy_dataset, tiny_clip_dir, tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "diffusers_sonify.evaluation",
        "--pipeline",
        tiny_pipe_dir,
        "--dataset",
        toy_dataset,
        "--output_dir",
        str(tmp_path),
        "--metrics",
        "clip,iis,aic",
        "--num_images",
        "4",
        "--scorer",
        "clip",
        "--clip_model",
        tiny_clip_dir,
        "--num_inference_steps",
        "2",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Generating" in proc.stderr  # progress bar
    saved = _check_outputs(tmp_path, ["clip_score", "iis", "aic"])
    assert saved["models"]["clip_score"] == tiny_clip_dir
    assert 0 <= saved["metrics"]["clip_score"] <= 100


def test_cli_takes_fid_reals_from_a_reference_dataset(tiny_pipe_dir, toy_dataset, toy_classifier_dir, tmp_path):
    reference = _dataset(tmp_path / "reference", n=5)
    args = [
        "--pipeline",
        tiny_pipe_dir,
        "--dataset",
        toy_dataset,
        "--output_dir",
        str(tmp_path / "out"),
        "--metrics",
        "fid",
        "--num_images",
        "3",
        "--scorer",
        "toyworld",
        "--toy_classifier",
        toy_classifier_dir,
        "--num_inference_steps",
        "1",
        "--reference_dataset",
        reference,
    ]
    result = cli.main(args)
    assert result["num_reference_images"] == 5 and set(result["metrics"]) == {"fid"}


@pytest.mark.parametrize(
    ("dataset_kwargs", "extra", "match"),
    [
        ({}, ["--metrics", "fid,inception_score"], r"Unknown metric.*inception_score"),
        ({}, ["--num_images", "7"], "exceeds the dataset's 6 rows"),
        ({}, ["--num_images", "1"], "at least 2"),
        ({"n": 0}, [], "is empty"),
        ({"drop": ["audio"]}, [], "no audio column 'audio'"),
        ({"drop": ["label"]}, ["--metrics", "aic"], "label column 'label'"),
        ({"image_size": (16, 16)}, ["--metrics", "fid"], "different sizes"),
        ({"image_mode": "L"}, ["--metrics", "iis"], "different modes"),
        ({}, ["--metrics", "ais", "--scorer", "clip"], "joint audio-image space"),
        ({}, ["--scorer", "toyworld", "--toy_classifier", ""], "needs `--toy_classifier"),
    ],
)
def test_bad_inputs_fail_before_loading_or_generating(tmp_path, dataset_kwargs, extra, match):
    if dataset_kwargs.get("n") == 0:  # a Hub-layout folder whose only Parquet file has no rows
        from datasets import Audio, Dataset, Features, Value

        path = str(tmp_path / "ds")
        (tmp_path / "ds" / "data").mkdir(parents=True)
        empty = Dataset.from_dict(
            {"audio": [], "label": []}, features=Features({"audio": Audio(), "label": Value("string")})
        )
        empty.to_parquet(str(tmp_path / "ds" / "data" / "train-00000-of-00001.parquet"))
    else:
        path = _dataset(tmp_path / "ds", **dataset_kwargs)
    args = [
        "--pipeline",
        MISSING_PIPELINE,
        "--dataset",
        path,
        "--output_dir",
        str(tmp_path / "out"),
        "--metrics",
        "fid,aic",
        "--scorer",
        "toyworld",
        "--toy_classifier",
        "/nonexistent/clf",
        "--num_images",
        "6",
    ]
    with pytest.raises(ValueError, match=match):
        cli.main(args + extra)
    assert not (tmp_path / "out").exists()


def test_cli_samples_under_bf16_autocast_when_asked(tiny_pipe_dir, toy_dataset, toy_classifier_dir, tmp_path):
    """`--mixed_precision bf16` changes the sampling arithmetic (the pictures are not fp32's to the bit) and nothing
    else: the same pictures within bf16 rounding, the scores computed, the setting recorded; a config that names
    another dtype is refused before loading anything."""
    options = {"--pipeline": tiny_pipe_dir, "--dataset": toy_dataset, "--metrics": "fid,probes", "--num_images": 4}
    options.update({"--scorer": "toyworld", "--toy_classifier": toy_classifier_dir, "--num_inference_steps": 2})
    base = [str(x) for option in options.items() for x in option]
    results, pictures = {}, {}
    for precision in ("no", "bf16"):
        out = tmp_path / precision
        results[precision] = cli.main([*base, "--output_dir", str(out), "--mixed_precision", precision])
        files = sorted((out / "images").glob("*.png"))
        pictures[precision] = np.stack([np.asarray(PIL.Image.open(f), dtype=np.float32) / 255 for f in files])
    assert results["bf16"]["mixed_precision"] == "bf16" and results["no"]["mixed_precision"] == "no"
    assert set(results["bf16"]["metrics"]) == set(results["no"]["metrics"])
    difference = np.abs(pictures["bf16"] - pictures["no"])
    assert difference.max() > 0, "bf16 autocast did not change the sampling: was it applied?"
    assert difference.mean() < 0.02, difference.mean()
    cfg = cli.parse_args([*base, "--output_dir", str(tmp_path / "bad")])
    cfg.mixed_precision, cfg.pipeline = "fp16", MISSING_PIPELINE
    with pytest.raises(ValueError, match="Unknown `--mixed_precision` 'fp16'"):
        cli.evaluate(cfg)
