"""The scene parser recovers rendered ground truth, also through blur and noise like a diffusion model's."""

from __future__ import annotations

import numpy as np
import PIL.Image
import PIL.ImageFilter
import pytest
from scipy import ndimage

from diffusers_sonify.toyworld import CLASS_NAMES, parse_scene, render_scene, sample_scene
from diffusers_sonify.toyworld.parser import DEFAULT_MIN_AREA, match_shape, overlaps_by_redrawing
from diffusers_sonify.toyworld.render import SHAPE_NAMES, icon_coverage
from diffusers_sonify.toyworld.world import CLASS_BY_NAME


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


@pytest.fixture(scope="module")
def singles():
    """Single-object renders over the whole radius range (2.5-12 px), both settings."""
    rng = np.random.default_rng(5)
    out = []
    for _ in range(150):
        scene = sample_scene(rng, num_objects=1)
        out.append((scene, render_scene(scene["objects"], scene["setting"])))
    return out


def test_shape_is_recognised_on_renders_also_through_blur_and_noise(singles):
    rng = np.random.default_rng(0)
    clean, degraded = [], []
    for scene, image in singles:
        want = CLASS_BY_NAME[scene["objects"][0]["class"]].shape
        clean.append(parse_scene(image).shape == want)
        degraded.append(parse_scene(_degrade(image, rng)).shape == want)
    assert np.mean(clean) >= 0.98
    assert np.mean(degraded) >= 0.95


def test_shape_ignores_colour():
    # every class's icon, drawn in every other class's colour (channels permuted, hue moved), keeps its shape
    for name in CLASS_NAMES:
        image = np.asarray(
            render_scene([{"class": name, "radius": 8.0, "x": 0.45, "y": 0.55}], "outdoor"), dtype=np.float32
        )
        for order in ([1, 2, 0], [2, 0, 1]):
            parsed = parse_scene(image[..., order] / 255)
            assert parsed.shape == CLASS_BY_NAME[name].shape and parsed.count == 1


def test_match_shape_prefers_the_drawn_outline():
    for shape in SHAPE_NAMES:
        coverage = icon_coverage(shape, 15.3, 16.6, 7.0, (32, 32))
        found, iou = match_shape(coverage, 15.3, 16.6, float(coverage.sum()))
        assert found == shape and iou > 0.9
    with pytest.raises(ValueError, match="empty"):
        match_shape(np.zeros((32, 32)), 16, 16, 0.0)
    with pytest.raises(ValueError, match="Unknown icon shape"):
        icon_coverage("star", 16, 16, 5, (32, 32))


def test_match_shape_equals_the_search_over_redrawn_outlines():
    """`match_shape` draws each outline once and slides it; it finds what redrawing every shifted outline finds, to
    the rasteriser's rounding: icons (large ones, ones clipped by the border, blurred ones) and shapeless blobs."""
    rng = np.random.default_rng(3)
    regions = []
    for shape in SHAPE_NAMES:
        for x, y, r in ((16.2, 15.7, 9.5), (1.3, 30.4, 6.0), (rng.uniform(5, 27), rng.uniform(5, 27), 3.0)):
            coverage = icon_coverage(shape, x, y, r, (32, 32))
            drawn = shape if r < 9 and x > 2 else None  # the big one and the cornered one are clipped
            regions.append((drawn, coverage))
            regions.append((drawn, ndimage.gaussian_filter(coverage, 0.7) * (coverage > 0)))
    bar = np.zeros((32, 32), np.float32)
    bar[20, 6:18] = 1.0  # a thin bar: every outline of its area reaches far above and below it
    regions.append((None, bar))
    for _ in range(6):
        blob = ndimage.gaussian_filter(rng.random((32, 32)), 1.5) > 0.53
        blob = ndimage.label(blob)[0] == 1
        regions.append((None, blob.astype(np.float32) * rng.uniform(0.5, 1.0, (32, 32))))
    for drawn, coverage in regions:
        ys, xs = np.nonzero(coverage)
        x, y, area = xs.mean() + 0.5, ys.mean() + 0.5, float(len(xs))
        found, iou = match_shape(coverage, x, y, area)
        reference = overlaps_by_redrawing(coverage, x, y, area)
        assert abs(iou - reference[found]) < 0.02 and reference[found] > max(reference.values()) - 0.02
        if drawn is not None:
            assert found == drawn


def test_object_count_on_renders(rendered):
    rng = np.random.default_rng(1)
    clean, degraded = [], []
    for _, image, labels in rendered:
        truth = len(_truth(labels))
        clean.append(parse_scene(image).count == truth)
        degraded.append(parse_scene(_degrade(image, rng)).count == truth)
    assert np.mean(clean) >= 0.95
    assert np.mean(degraded) >= 0.9
    # two separate icons of one class are two objects
    two = [{"class": "bird", "radius": 4.0, "x": x, "y": 0.5} for x in (0.25, 0.75)]
    assert parse_scene(render_scene(two, "indoor")).count == 2


def test_background_noise_measures_grain(rendered):
    rng = np.random.default_rng(2)
    flat = [parse_scene(image).background_noise for _, image, _ in rendered]
    assert max(flat) < 0.005  # two-tone backgrounds are flat row by row
    for sigma in (0.02, 0.06):
        noisy = []
        for _, image, _ in rendered[:40]:
            arr = np.asarray(image, dtype=np.float32) / 255 + rng.normal(0, sigma, (32, 32, 3))
            noisy.append(parse_scene(np.clip(arr, 0, 1)).background_noise)
        assert np.median(noisy) == pytest.approx(sigma, rel=0.2)
