"""The toy world's instantiation: the classifier (>= 98 % held-out), its FID/KID behaviour, the held-out scene set
and the whole toy evaluation flow that `make demo` runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_metrics import check_fid_kid_against_noise

from diffusers_sonify.evaluation.toy import make_eval_scene_dataset, toy_field_metrics
from diffusers_sonify.toyworld import CLASS_NAMES, parse_scenes


@pytest.mark.slow
def test_toy_classifier_is_accurate_and_its_fid_kid_grow_with_noise():
    from diffusers_sonify.toyworld.classifier import train_toy_classifier

    classifier, report = train_toy_classifier()
    assert report["presence_exact"] >= 0.98 and report["indoor_accuracy"] >= 0.98, report
    check_fid_kid_against_noise(classifier.features)


def test_eval_scene_dataset_has_single_sources_first_and_matching_renders():
    ds = make_eval_scene_dataset(10, seed=0)
    assert ds.column_names == ["audio", "label", "image", "setting"]
    assert ds["label"][:6] == list(CLASS_NAMES)
    parsed = parse_scenes(list(ds["image"]))
    for label, p in zip(ds["label"], parsed):  # every labelled class is drawn in the reference render
        assert set(label.split("+")) <= set(p.present) or len(label.split("+")) > 1
        assert p.dominant in label.split("+")
    audio = ds[0]["audio"]
    assert audio["sampling_rate"] == 16_000 and np.abs(np.asarray(audio["array"])).max() > 0
    assert make_eval_scene_dataset(10, seed=0)["label"] == ds["label"]  # deterministic
    with pytest.raises(ValueError, match=">= 6"):
        make_eval_scene_dataset(5)


def test_toy_field_metrics_run_the_cli_and_add_the_floor(tiny_pipe_dir, tmp_path):
    renders = list(make_eval_scene_dataset(8, seed=5)["image"])
    field = toy_field_metrics(
        tmp_path,
        tiny_pipe_dir,
        renders,
        num_scenes=8,
        classifier_kwargs={"num_train": 200, "num_heldout": 50, "steps": 10},
        num_inference_steps=2,
    )
    for key in ("fid", "kid_mean", "ais", "iis", "aic", "fid_floor", "kid_floor", "probe_loudness_spearman"):
        assert np.isfinite(field[key]), key
    assert field["fid_floor"] > 0 and field["classifier"]["num_train"] == 200
    saved = json.loads((tmp_path / "evaluation" / "metrics.json").read_text())
    assert saved["metrics"]["fid"] == field["fid"] and "toyworld" in saved["models"]["fid"]


def test_toy_field_metrics_take_inputs_prepared_earlier(tiny_pipe_dir, tmp_path):
    """The demo prepares the classifier, the scenes and the floor while its VLM trains; the metrics then use exactly
    those (not new ones), and inputs prepared for other scenes are refused before the CLI runs."""
    from diffusers_sonify.evaluation.toy import prepare_toy_field_metrics

    renders = list(make_eval_scene_dataset(8, seed=5)["image"])
    prepared = prepare_toy_field_metrics(
        tmp_path, renders, num_scenes=8, seed=1, classifier_kwargs={"num_train": 200, "num_heldout": 50, "steps": 10}
    )
    assert (tmp_path / "toy_classifier").is_dir() and (tmp_path / "eval_scenes").is_dir()
    classifier_file = next((tmp_path / "toy_classifier").glob("*.safetensors"))
    before = classifier_file.read_bytes()
    field = toy_field_metrics(tmp_path, tiny_pipe_dir, num_scenes=8, seed=1, prepared=prepared, num_inference_steps=2)
    assert classifier_file.read_bytes() == before  # scored with the prepared classifier, not a retrained one
    assert (field["fid_floor"], field["kid_floor"]) == (prepared["fid_floor"], prepared["kid_floor"])
    assert field["classifier"] == prepared["classifier"] and np.isfinite(field["fid"])
    assert field["seconds"] >= prepared["seconds"]
    for kwargs in ({"seed": 2, "num_scenes": 8}, {"seed": 1, "num_scenes": 6}):
        with pytest.raises(ValueError, match="prepare them with the same"):
            toy_field_metrics(tmp_path, "/nonexistent/pipeline", prepared=prepared, **kwargs)
    with pytest.raises(ValueError, match="or `prepared`"):
        toy_field_metrics(tmp_path / "other", tiny_pipe_dir)
