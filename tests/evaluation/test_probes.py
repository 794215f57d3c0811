"""Controllability probes: the sounds each probe makes, the statistics it reports, and a probe on a real pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffusers_sonify.audio import estimate_rt60, measure_loudness
from diffusers_sonify.evaluation import probes as P
from diffusers_sonify.toyworld import synthesize

SR = 16_000


@pytest.fixture(scope="module")
def clips():
    return synthesize("bell", 11), synthesize("engine", 12)


def test_loudness_sweep_sets_each_level(clips):
    sounds = P.loudness_sweep_sounds(clips[0], SR, (-40.0, -30.0, -20.0))
    levels = [measure_loudness(torch.from_numpy(s), SR) for s in sounds]
    assert levels == pytest.approx([-40.0, -30.0, -20.0], abs=0.1)


def test_reverb_sweep_is_dry_first_then_longer_tails_at_equal_loudness(clips):
    sounds = P.reverb_sweep_sounds(clips[0], SR, (0.0, 0.5, 2.0), lufs=-25.0)
    assert [measure_loudness(torch.from_numpy(s), SR) for s in sounds] == pytest.approx([-25.0] * 3, abs=0.1)
    dry = P.loudness_sweep_sounds(clips[0], SR, (-25.0,))[0]
    np.testing.assert_allclose(sounds[0], dry, atol=1e-6)
    # the room of each step has the requested reverberation time
    assert estimate_rt60(P.synthetic_impulse_response(2.0, SR), SR) == pytest.approx(2.0, rel=0.1)
    # later steps keep more energy in the clip's last 200 ms (the bell has decayed; the hall has not)
    tails = [float(np.sqrt(np.mean(s[-3200:] ** 2))) for s in sounds]
    assert tails[0] < tails[1] < tails[2]


def test_interpolation_endpoints_are_the_sources_and_mixing_is_limited(clips):
    a, b = clips
    sounds = P.interpolation_sounds(a, b, SR, (0.0, 0.5, 1.0))
    level_a = P.loudness_sweep_sounds(a, SR, (-25.0,))[0]
    level_b = P.loudness_sweep_sounds(b, SR, (-25.0,))[0]
    np.testing.assert_allclose(sounds[0], level_a, atol=1e-6)
    np.testing.assert_allclose(sounds[-1], level_b, atol=1e-6)
    mixed = P.mixing_sound(a, b, SR)
    assert np.abs(mixed).max() <= 10 ** (-1 / 20) + 1e-6
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        P.interpolation_sounds(a, b, SR, (0.0, 1.5))


def test_sweep_statistics_by_hand():
    r = P.sweep_statistics("loudness", [-20, -40, -30], [5.0, 1.0, 3.0])
    assert r.values == [-40.0, -30.0, -20.0] and r.readings == [1.0, 3.0, 5.0]
    assert r.spearman == pytest.approx(1.0) and r.monotonicity == 1.0 and r.inversions == 0
    r = P.sweep_statistics("reverb", [0, 1, 2, 3], [1.0, 3.0, 2.0, 4.0])
    assert r.inversions == 1 and r.monotonicity == pytest.approx(2 / 3) and r.spearman == pytest.approx(0.8)
    assert P.both_present_rate([(True, True), (True, False), (False, False), (True, True)]) == 0.5
    with pytest.raises(ValueError, match="one reading each"):
        P.sweep_statistics("x", [1, 2], [1.0])
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        P.both_present_rate([True, False])


def test_a_probe_runs_any_pipeline_with_one_seed_for_every_step(tiny_pipe, clips):
    generate = P.pipeline_generator(tiny_pipe, SR, seed=3, num_inference_steps=2)
    sounds = P.loudness_sweep_sounds(clips[0], SR, (-40.0, -30.0))

    def brightness(images):
        return [float(np.asarray(im).mean()) for im in images]

    result, images = P.run_sweep("loudness", generate, sounds, (-40.0, -30.0), brightness)
    assert len(images) == 2 and result.values == [-40.0, -30.0] and len(result.readings) == 2
    # the same sound twice gives the same image: every step shares the seed, only the sound differs
    same = generate([sounds[0], sounds[0]])
    assert np.asarray(same[0]).tolist() == np.asarray(same[1]).tolist()
