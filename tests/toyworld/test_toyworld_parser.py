"""The scene parser recovers rendered ground truth, also through blur and noise like a diffusion model's."""

from __future__ import annotations

import numpy as np
import PIL.Image
import PIL.ImageFilter
import pytest

from diffusers_sonify.toyworld import CLASS_NAMES, parse_scene, render_scene, sample_scene
from diffusers_sonify.toyworld.parser import DEFAULT_MIN_AREA


@pytest.fixture(scope="module")
def rendered():
    rng = np.random.default_rng(11)
    out = []
    for _ in range(200):
        scene = sample_scene(rng)
        image, labels = render_scene(scene["objects"], scene["setting"], return_labels=True)
        out.append((scene, image, labels))
    return out


def _truth(labels: np.ndarray) -> set[str]:
    return {CLASS_NAMES[k] for k in range(len(CLASS_NAMES)) if (labels == k).sum() >= DEFAULT_MIN_AREA}


def test_parser_recovers_rendered_scenes(rendered):
    class_hits, bg_hits, area_errors = [], [], []
    for scene, image, labels in rendered:
        parsed = parse_scene(image)
        class_hits.append(set(parsed.present) == {o["class"] for o in scene["objects"]})
        bg_hits.append(parsed.background == scene["setting"])
        for name in parsed.present:
            true_area = (labels == CLASS_NAMES.index(name)).sum()
            area_errors.append(abs(parsed.areas[name] - true_area) / true_area)
    assert np.mean(class_hits) >= 0.95
    assert np.mean(bg_hits) == 1.0
    assert np.median(area_errors) < 0.15


def test_area_tracks_icon_size():
    areas = [
        parse_scene(render_scene([{"class": "drum", "radius": r, "x": 0.5, "y": 0.5}], "outdoor")).areas["drum"]
        for r in (3, 5, 7, 9, 11)
    ]
    assert all(b > a for a, b in zip(areas, areas[1:]))
    assert areas[-1] / areas[0] > 8  # (11 / 3)^2 ~ 13: size is a strong visual signal


def _degrade(image: PIL.Image.Image, rng: np.random.Generator) -> np.ndarray:
    blurred = image.filter(PIL.ImageFilter.GaussianBlur(radius=0.8))
    arr = np.asarray(blurred, dtype=np.float32) / 255 + rng.normal(0, 0.06, (32, 32, 3))
    return np.clip(arr, 0, 1)


def test_parser_is_robust_to_blur_and_noise(rendered):
    rng = np.random.default_rng(0)
    class_hits, bg_hits, dominant_hits = [], [], []
    for scene, image, labels in rendered:
        parsed = parse_scene(_degrade(image, rng))
        class_hits.append(set(parsed.present) == _truth(labels))
        bg_hits.append(parsed.background == scene["setting"])
        largest = max(scene["objects"], key=lambda o: o["radius"])["class"]
        dominant_hits.append(parsed.dominant == largest)
    assert np.mean(class_hits) >= 0.9
    assert np.mean(bg_hits) >= 0.98
    assert np.mean(dominant_hits) >= 0.9


def test_parser_sees_nothing_in_a_bare_background():
    for setting in ("indoor", "outdoor"):
        parsed = parse_scene(render_scene([], setting))
        assert parsed.present == [] and parsed.dominant is None and parsed.background == setting


def test_parser_rejects_bad_input():
    with pytest.raises(ValueError, match="0-255"):
        parse_scene(np.full((32, 32, 3), 200.0))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        parse_scene(np.zeros((32, 32)))
    with pytest.raises(ValueError, match="min_area"):
        parse_scene(np.zeros((32, 32, 3)), min_area=0)
