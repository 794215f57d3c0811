"""The toy world's classes, synthesisers, scenes, corpora and describer."""

from __future__ import annotations

import colorsys
import json

import numpy as np
import pytest

from diffusers_sonify.toyworld import (
    CLASS_NAMES,
    CLASSES,
    SAMPLING_RATE,
    ToySceneDescriber,
    corpus_clip_seed,
    eval_clip_seed,
    make_audio_corpus,
    make_image_corpus,
    prominence_from_radius,
    sample_scene,
    synthesize,
)


def _spectral_centroid(clip: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(clip))
    freqs = np.fft.rfftfreq(len(clip), 1 / SAMPLING_RATE)
    return float((spectrum * freqs).sum() / spectrum.sum())


def test_at_least_six_classes_with_distinct_shapes_and_hues():
    assert len(CLASSES) >= 6
    assert len({c.shape for c in CLASSES}) == len(CLASSES)
    hues = sorted(colorsys.rgb_to_hsv(*(np.array(c.colour) / 255))[0] * 360 for c in CLASSES)
    gaps = np.diff(hues + [hues[0] + 360])
    assert gaps.min() >= 45  # the parser tells classes apart by hue alone
    for c in CLASSES:
        assert colorsys.rgb_to_hsv(*(np.array(c.colour) / 255))[1] > 0.8


def test_synthesis_is_deterministic_and_varied():
    for name in CLASS_NAMES:
        a, b, c = synthesize(name, 7), synthesize(name, 7), synthesize(name, 8)
        assert a.dtype == np.float32 and a.shape == (2 * SAMPLING_RATE,)
        np.testing.assert_array_equal(a, b)
        assert not np.allclose(a, c)
        assert np.isfinite(a).all() and 0.4 < np.abs(a).max() <= 0.5


def test_classes_are_acoustically_recognisable():
    # engines buzz low, birds chirp high; a nearest-centroid classifier on log-spectra separates held-out clips
    centroid = {n: np.mean([_spectral_centroid(synthesize(n, s)) for s in range(4)]) for n in CLASS_NAMES}
    assert min(centroid, key=centroid.get) == "engine"
    assert centroid["bird"] > max(centroid[n] for n in ("bell", "drum", "engine", "siren"))

    def logspec(clip):
        spec = np.abs(np.fft.rfft(clip))[:16000].reshape(64, 250).mean(axis=1)
        return np.log(spec + 1e-6)

    train = {n: np.mean([logspec(synthesize(n, s)) for s in range(6)], axis=0) for n in CLASS_NAMES}
    hits = [
        min(CLASS_NAMES, key=lambda k: np.linalg.norm(logspec(synthesize(n, 100 + s)) - train[k])) == n
        for n in CLASS_NAMES
        for s in range(5)
    ]
    assert np.mean(hits) >= 0.9


def test_bad_class_and_duration_raise():
    with pytest.raises(ValueError, match="Unknown toy-world class"):
        synthesize("trumpet", 0)
    with pytest.raises(ValueError, match="seconds"):
        synthesize("bell", 0, seconds=0)


def test_scenes_have_distinct_classes_and_prominence_follows_size():
    rng = np.random.default_rng(0)
    scenes = [sample_scene(rng) for _ in range(300)]
    counts = {len(s["objects"]) for s in scenes}
    assert counts == {1, 2, 3}
    radii, proms = [], []
    for s in scenes:
        names = [o["class"] for o in s["objects"]]
        assert len(set(names)) == len(names)
        assert (s["setting"] == "outdoor") == (s["space"] == "open")
        for o in s["objects"]:
            radii.append(o["radius"])
            proms.append(o["prominence"])
    order = np.argsort(radii)
    assert np.all(np.diff(np.asarray(proms)[order]) >= 0)
    assert prominence_from_radius(1.0) == 0.0 and prominence_from_radius(100.0) == 1.0


@pytest.fixture(scope="module")
def corpora():
    return make_image_corpus(24, seed=3), make_audio_corpus(2, seed=3)


def test_corpora_columns_and_determinism(corpora):
    images, audio = corpora
    assert set(images.column_names) >= {"image", "objects", "setting", "space", "image_id"}
    assert images[0]["image"].size == (32, 32) and images[0]["image"].mode == "RGB"
    assert set(audio.column_names) >= {"audio", "label", "clip_id", "category"}
    first = audio[0]["audio"]
    assert first["sampling_rate"] == SAMPLING_RATE
    np.testing.assert_allclose(first["array"], synthesize(audio[0]["category"], corpus_clip_seed(3, 0)), atol=1e-4)
    again = make_image_corpus(24, seed=3)
    assert again["objects"] == images["objects"]
    assert np.array_equal(np.asarray(again[5]["image"]), np.asarray(images[5]["image"]))
    assert make_image_corpus(24, seed=4)["objects"] != images["objects"]
    assert sorted(set(audio["category"])) == sorted(CLASS_NAMES)


def test_audio_labels_are_worded_differently_from_the_image_side():
    for c in CLASSES:
        image_side = set(c.image_names) | set(c.sound_queries)
        assert len(c.audio_labels) >= 3 and not image_side & set(c.audio_labels)


def test_eval_seeds_never_meet_corpus_seeds():
    corpus = {corpus_clip_seed(s, i) for s in range(3) for i in range(0, 500_000, 997)}
    held_out = {eval_clip_seed(s, i) for s in range(3) for i in range(0, 500_000, 991)}
    assert not corpus & held_out
    with pytest.raises(ValueError, match="index"):
        corpus_clip_seed(0, 500_000)


def test_describer_returns_the_vlm_schema(corpora):
    images, _ = corpora
    batch = images[:24]
    out = ToySceneDescriber().describe(batch)
    assert set(out) == {"sound_sources", "scene", "description_raw", "skip_reason"}
    assert len(out["sound_sources"]) == 24 and out["skip_reason"] == [None] * 24
    for objects, sources, scene, raw, setting in zip(
        batch["objects"], out["sound_sources"], out["scene"], out["description_raw"], batch["setting"]
    ):
        assert len(sources) == len(objects)
        assert scene["setting"] == setting and scene["space"] in {"medium", "large", "open"}
        assert json.loads(raw) == {"sound_sources": sources, "scene": scene}
        for obj, src in zip(objects, sources):
            assert src["sound"] in next(c for c in CLASSES if c.name == obj["class"]).sound_queries
            assert 0 <= src["prominence"] <= 1 and src["distance"] in {"near", "mid", "far"}
    flat = [
        (o["radius"], s["prominence"])
        for os_, ss in zip(batch["objects"], out["sound_sources"])
        for o, s in zip(os_, ss)
    ]
    flat.sort()
    assert all(b[1] >= a[1] for a, b in zip(flat, flat[1:]))


def test_describer_names_missing_columns():
    with pytest.raises(ValueError, match="lacks \\['objects'"):
        ToySceneDescriber().describe({"image": [None], "setting": ["indoor"], "space": ["large"]})


def test_describer_runs_through_the_builders_describe_stage(corpora):
    from diffusers_sonify.sonification.describe import SoundDescriber, describe_sounds

    images, _ = corpora
    describer = ToySceneDescriber()
    assert isinstance(describer, SoundDescriber)
    batch = images.with_format(None)[:6]
    out = describe_sounds(batch, describer=describer)
    assert out["skip_reason"] == [None] * 6
    assert [len(s) for s in out["sound_sources"]] == [len(o) for o in batch["objects"]]
