"""The toy-world editing measurement: held-out edit cases, the parser on them, and the pipeline's strength rule."""

from __future__ import annotations

import numpy as np

from diffusers_sonify import AudioToImageImg2ImgPipeline
from diffusers_sonify.tiny import tiny_pipeline_components
from diffusers_sonify.toyworld.editing import EDIT_KINDS, edit_metrics, make_edit_cases, run_edits
from diffusers_sonify.toyworld.parser import parse_scenes


def test_edit_cases_ask_for_a_change_the_render_does_not_show():
    cases = make_edit_cases(seed=0, per_kind=6)
    assert [c.kind for c in cases] == [k for k in EDIT_KINDS for _ in range(6)]
    parsed = parse_scenes([c.render for c in cases])
    for case, scene in zip(cases, parsed):
        assert case.render_classes[0] in scene.present  # the parser sees the render's object
        if case.kind == "add_class":
            assert case.sound_class not in case.render_classes
        else:
            assert case.sound_class == case.render_classes[0] and scene.background != case.expected_setting
    # the unedited renders fail every edit bar and keep every object: the metric measures the edit
    metrics = edit_metrics(cases, parsed)
    assert metrics == {
        "edit_to_indoor_accuracy": 0.0,
        "edit_to_outdoor_accuracy": 0.0,
        "edit_add_class_accuracy": 0.0,
        "edit_keep_class_accuracy": 1.0,
    }
    assert all(np.isfinite(c.audio).all() and c.audio.ndim == 1 for c in cases)


def test_strength_zero_edit_of_a_pixel_space_pipeline_returns_the_render():
    pipe = AudioToImageImg2ImgPipeline(**tiny_pipeline_components(latent=False))  # 32x32, 16 kHz like the toy world
    pipe.set_progress_bar_config(disable=True)
    cases = make_edit_cases(seed=1, per_kind=1)
    edited = run_edits(pipe, cases, strength=0.0, num_inference_steps=2)
    for case, image in zip(cases, edited):
        diff = np.abs(np.asarray(image, dtype=int) - np.asarray(case.render, dtype=int))
        assert diff.max() <= 1  # only [0, 255] -> [-1, 1] -> [0, 255] rounding
    assert run_edits(pipe, cases, strength=0.5, num_inference_steps=2)[0].size == (32, 32)
