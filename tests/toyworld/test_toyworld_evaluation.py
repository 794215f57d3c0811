"""Held-out evaluation sounds (loudness, reverb, sweeps are what they claim) and the metric functions."""

from __future__ import annotations

import numpy as np
import pytest

from diffusers_sonify.toyworld import (
    ParsedScene,
    class_accuracy,
    evaluate_parsed,
    interpolation_inversions,
    loudness_area_spearman,
    make_eval_sounds,
    mixing_both_present,
    pairing_accuracy,
    reverb_background_accuracy,
)
from diffusers_sonify.toyworld.evaluation import (
    MIX_LUFS,
    SINGLE_LUFS,
    background_noise,
    exactly_one_rate,
    retrieved_in_picture,
    shape_accuracy,
)
from diffusers_sonify.toyworld.parser import ParsedObject
from diffusers_sonify.toyworld.render import SHAPE_NAMES
from diffusers_sonify.toyworld.scenes import MAX_RADIUS_BY_COUNT
from diffusers_sonify.toyworld.sonify import (
    PEAK_LIMIT,
    impulse_response,
    loudness,
    lufs_from_prominence,
    set_loudness,
    sonify_scene,
)
from diffusers_sonify.toyworld.world import CLASS_NAMES, MIN_RADIUS, SAMPLING_RATE, prominence_from_radius, synthesize


def _schroeder_rt60(ir: np.ndarray) -> float:
    energy = np.cumsum((ir.astype(np.float64) ** 2)[::-1])[::-1]
    edc = 10 * np.log10(energy / energy[0] + 1e-20)
    t = np.arange(len(ir)) / SAMPLING_RATE
    fit = (edc <= -5) & (edc >= -25)  # T20, extrapolated to 60 dB
    slope = np.polyfit(t[fit], edc[fit], 1)[0]
    return -60.0 / slope


@pytest.mark.parametrize("rt60", [0.9, 1.2])
def test_impulse_response_has_the_requested_rt60(rt60):
    measured = _schroeder_rt60(impulse_response(rt60, seed=0))
    assert abs(measured - rt60) / rt60 < 0.2


def test_loudness_and_peak_limits():
    clip = synthesize("engine", 1)
    for target in (-40.0, -30.0, -22.0):
        assert abs(loudness(set_loudness(clip, target)) - target) < 0.1
    scene = {"objects": [{"prominence": 1.0}, {"prominence": 1.0}], "space": "open"}
    loud = sonify_scene(scene, [synthesize("siren", 0) * 4, synthesize("drum", 0) * 4], seed=0)
    assert np.abs(loud).max() <= PEAK_LIMIT + 1e-6
    with pytest.raises(ValueError, match="one per object"):
        sonify_scene(scene, [clip], seed=0)


def test_eval_sounds_are_what_they_claim():
    sounds = make_eval_sounds(
        seed=5,
        singles_per_class=1,
        mixtures_per_pair=1,
        loudness_series_per_class=1,
        reverb_pairs_per_class=1,
        num_sweeps=2,
    )
    kinds = {s.kind for s in sounds}
    assert kinds == {"single", "mixture", "loudness", "reverb", "sweep"}
    for s in sounds:
        assert s.audio.dtype == np.float32 and s.audio.shape == (2 * SAMPLING_RATE,)
        assert np.abs(s.audio).max() <= PEAK_LIMIT + 1e-6
        if s.kind == "loudness":
            assert abs(loudness(s.audio) - s.lufs) < 0.2
        if s.kind == "mixture":
            assert len(set(s.classes)) == 2
    # reverb pairs: the same clip and level, dry vs convolved with a room's impulse response
    reverb = [s for s in sounds if s.kind == "reverb"]
    for dry, wet in zip(reverb[::2], reverb[1::2]):
        assert (dry.setting, wet.setting) == ("outdoor", "indoor") and dry.classes == wet.classes
        assert abs(loudness(wet.audio) - loudness(dry.audio)) < 0.1
        assert np.corrcoef(dry.audio, wet.audio)[0, 1] < 0.9
    sweep = [s for s in sounds if s.kind == "sweep" and s.group == sounds[-1].group]
    assert [s.weight for s in sweep] == sorted(s.weight for s in sweep)
    a, b = synthesize(sweep[0].classes[0], 0), sweep[-1].audio
    assert np.corrcoef(sweep[0].audio, sweep[-1].audio)[0, 1] < 0.5 and a.shape == b.shape


def test_eval_levels_are_the_worlds_icon_sizes():
    """The held-out singles and mixtures are as loud as the world's own scenes make their icons (RECIPE.md, d34):
    a single source as a large icon of a one-object scene, each source of a mixture as the largest icon of a
    two-object scene. Resizing the world's icons without moving these levels fails here."""

    def level(radius):
        return lufs_from_prominence(prominence_from_radius(radius))

    assert level(MIN_RADIUS) <= SINGLE_LUFS <= level(MAX_RADIUS_BY_COUNT[1])
    assert SINGLE_LUFS > level((MIN_RADIUS + MAX_RADIUS_BY_COUNT[1]) / 2)  # larger than a one-object scene's middle
    assert abs(MIX_LUFS - level(MAX_RADIUS_BY_COUNT[2])) < 0.5


def test_eval_sounds_are_deterministic():
    a = make_eval_sounds(
        seed=1,
        singles_per_class=1,
        mixtures_per_pair=0,
        loudness_series_per_class=0,
        reverb_pairs_per_class=0,
        num_sweeps=0,
    )
    b = make_eval_sounds(
        seed=1,
        singles_per_class=1,
        mixtures_per_pair=0,
        loudness_series_per_class=0,
        reverb_pairs_per_class=0,
        num_sweeps=0,
    )
    assert all(np.array_equal(x.audio, y.audio) for x, y in zip(a, b))


def _parsed(areas: dict, background: str = "outdoor", noise: float = 0.0) -> ParsedScene:
    present = sorted((k for k, v in areas.items() if v >= 6), key=lambda k: -areas[k])
    objects = [ParsedObject(k, areas[k], 16.0, 16.0, SHAPE_NAMES[CLASS_NAMES.index(k)], 0.9) for k in present]
    return ParsedScene(areas, present, background, 0.5, objects, noise)


def test_metrics_on_known_parses():
    p = [_parsed({"bell": 50, "drum": 10}), _parsed({"drum": 40}), _parsed({})]
    assert class_accuracy(p, ["bell", "bell", "drum"]) == pytest.approx(1 / 3)
    assert mixing_both_present(p, [("bell", "drum"), ("bell", "drum"), ("bell", "drum")]) == pytest.approx(1 / 3)
    assert reverb_background_accuracy([_parsed({}, "indoor"), _parsed({})], ["indoor", "indoor"]) == 0.5
    rising = [_parsed({"bird": a}) for a in (10, 20, 30, 40)]
    assert loudness_area_spearman([-40, -35, -30, -25], rising, ["bird"] * 4) == pytest.approx(1.0)
    assert loudness_area_spearman([-25, -30, -35, -40], rising, ["bird"] * 4) == pytest.approx(-1.0)
    assert interpolation_inversions([0.0, 0.2, 0.1, 0.5, 1.0]) == 1
    assert interpolation_inversions([[0.0, 0.4, 1.0], [0.0, 0.2, 0.9]]) == 0
    assert pairing_accuracy([["bell", "drum"], ["bird"]], [["bell", "rain"], ["bird"]]) == pytest.approx(2 / 3)
    # a describer that named a siren in a picture of a bell and a drum: its clip is not pictured, in any order
    assert retrieved_in_picture([{"bell", "drum"}, {"bird"}], [["drum", "siren"], ["bird"]]) == pytest.approx(2 / 3)
    assert retrieved_in_picture([{"bell"}], [["bell", "bell"]]) == 1.0
    # shape ignores colour: a bell-coloured square counts as a drum's shape
    square_bell = ParsedScene({"bell": 50}, ["bell"], objects=[ParsedObject("bell", 50, 9.0, 9.0, "square", 0.8)])
    assert shape_accuracy([square_bell, _parsed({"bird": 30})], ["drum", "bird"]) == 1.0
    assert shape_accuracy([square_bell, _parsed({})], ["bell", "bird"]) == 0.0
    assert exactly_one_rate([_parsed({"bell": 50}), _parsed({"bell": 50, "drum": 10}), _parsed({})]) == pytest.approx(
        1 / 3
    )
    assert background_noise([_parsed({}, noise=0.01), _parsed({}, noise=0.03)]) == pytest.approx(0.02)
    with pytest.raises(ValueError, match="one per image"):
        class_accuracy(p, ["bell"])
    with pytest.raises(ValueError, match="at least one"):
        exactly_one_rate([])
    with pytest.raises(ValueError, match="Row 0"):
        pairing_accuracy([["bell"]], [["bell", "drum"]])


def test_evaluate_parsed_reports_every_metric():
    sounds = make_eval_sounds(
        seed=2,
        singles_per_class=1,
        mixtures_per_pair=1,
        loudness_series_per_class=1,
        reverb_pairs_per_class=1,
        num_sweeps=1,
    )
    # a perfect "generator": draw what each sound should show and parse it
    parsed = []
    for s in sounds:
        if s.kind == "sweep":
            parsed.append(_parsed({s.classes[0]: int(100 * (1 - s.weight)), s.classes[1]: int(100 * s.weight)}))
        elif s.kind == "loudness":
            parsed.append(_parsed({s.classes[0]: int(200 + 5 * s.lufs)}))
        else:
            parsed.append(_parsed({c: 60 for c in s.classes}, s.setting))
    m = evaluate_parsed(sounds, parsed)
    assert m["class_accuracy"] == 1.0 and m["mixing_both_present"] == 1.0
    assert m["loudness_area_spearman"] > 0.99 and m["reverb_background_accuracy"] == 1.0
    assert m["interpolation_inversions"] == 0 and m["num_eval_images"] == len(sounds)
    assert m["shape_accuracy"] == 1.0 and m["exactly_one_rate"] == 1.0 and m["background_noise"] == 0.0
