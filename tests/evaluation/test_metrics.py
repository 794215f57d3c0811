"""The metric functions: FID/KID, CLIP score, AIS (both forms), IIS, AIC, and their input checks."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import noisy, tiny_clip, tiny_feature_net, toy_renders

from diffusers_sonify.evaluation import metrics as M

NOISE_LEVELS = (0.0, 0.1, 0.2, 0.4, 0.8)


def check_fid_kid_against_noise(feature_fn) -> tuple[list[float], list[float]]:
    """FID of a set against itself is 0 and grows with Gaussian noise added to one copy. KID's unbiased estimator
    compares two *samples*: against the very same samples it is biased by -2/m times the kernel's diagonal excess,
    so its ~0 is checked against an independent render set of the same world, then with noise added to that set."""
    first, second = toy_renders(64, seed=1), toy_renders(64, seed=2)
    real = M.extract_features(feature_fn, first)
    fids = [M.fid_from_features(real, M.extract_features(feature_fn, noisy(first, s))) for s in NOISE_LEVELS]
    kids = [M.kid_from_features(real, M.extract_features(feature_fn, noisy(second, s)))[0] for s in NOISE_LEVELS]
    assert M.fid_from_features(real, real) == fids[0] == pytest.approx(0.0, abs=1e-6)
    assert all(b > a for a, b in zip(fids, fids[1:])), fids
    assert abs(kids[0]) < 0.15 * kids[-1], kids  # ~0: within sampling noise of the estimator
    assert all(b > a for a, b in zip(kids, kids[1:])), kids
    return fids, kids


def test_fid_and_kid_of_a_set_against_itself_are_zero_and_grow_with_noise():
    net = tiny_feature_net()
    fids, kids = check_fid_kid_against_noise(net)
    # the image-level entry points give the same numbers
    images = toy_renders(64, seed=1)
    assert M.fid_score(images, noisy(images, 0.2), feature_fn=net) == pytest.approx(fids[2], rel=1e-9)
    kid = M.kid_score(images, noisy(toy_renders(64, seed=2), 0.2), feature_fn=net)[0]
    assert kid == pytest.approx(kids[2], rel=1e-9)


@pytest.mark.slow
def test_fid_equals_the_frechet_distance_of_the_inception_features_computed_by_hand():
    from diffusers_sonify.evaluation.scorers import InceptionFeatures

    inception = InceptionFeatures()
    real, fake = toy_renders(8, seed=1), noisy(toy_renders(8, seed=2), 0.1)
    fr = M.extract_features(inception, real)
    ff = M.extract_features(inception, fake)
    assert fr.shape == (8, 2048)
    a, b = fr.numpy(), ff.numpy()
    hand = M.frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert M.fid_from_features(fr, ff) == pytest.approx(hand, rel=1e-4)
    assert hand > 1.0
    # 32x32 images are resized to 299x299 inside: the same features as resizing first
    resized = torch.nn.functional.interpolate(real[:2], size=(299, 299), mode="bilinear", align_corners=False)
    torch.testing.assert_close(inception(resized).double(), fr[:2])


def test_ais_iis_win_rates_are_one_when_aligned_and_one_half_when_shuffled(rng):
    n = 400
    embeds = torch.from_numpy(rng.standard_normal((n, 32)))
    assert M.audio_image_similarity(embeds, embeds) == 1.0
    assert M.image_image_similarity(embeds + 0.01 * torch.randn(n, 32), embeds) == 1.0
    shuffled = embeds[torch.from_numpy(rng.permutation(n))]
    assert M.audio_image_similarity(embeds, shuffled) == pytest.approx(0.5, abs=0.05)
    assert M.image_image_similarity(embeds, shuffled) == pytest.approx(0.5, abs=0.05)
    # the win rate of one query by hand: 2 of 3 distractors are less similar than the true match
    q = torch.tensor([[1.0, 0.0]] * 4)
    t = torch.tensor([[1.0, 0.2], [1.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    assert M.win_rates(q, t)[0].item() == pytest.approx(2 / 3)


def test_ais_mean_cosine_is_the_mean_true_pair_cosine_and_its_zscore(rng):
    a = torch.from_numpy(rng.standard_normal((50, 8)))
    b = torch.from_numpy(rng.standard_normal((50, 8)))
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1)
    assert M.audio_image_similarity_mean_cosine(a, b) == pytest.approx(float(cos.mean()))
    assert M.audio_image_similarity_mean_cosine(a, a) == pytest.approx(1.0)
    assert M.audio_image_similarity_mean_cosine(a, a, zscore=True) > 2.0
    assert abs(M.audio_image_similarity_mean_cosine(a, b, zscore=True)) < 0.5


def test_aic_equals_a_hand_computed_accuracy():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.1, 0.2, 0.3], [5.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    labels = [0, 1, 1, 2, 2]  # right, right, wrong, wrong, right
    assert M.audio_image_content(logits, labels) == pytest.approx(3 / 5)
    class_embeds = torch.eye(3)
    assert M.audio_image_content(M.zero_shot_logits(logits, class_embeds), labels) == pytest.approx(3 / 5)


def test_clip_score_with_a_tiny_clip_matches_the_definition():
    from diffusers_sonify.evaluation.scorers import ClipScorer

    model, processor = tiny_clip()
    scorer = ClipScorer(model, processor, processor, name="tiny")
    images = [PIL.Image.fromarray(np.full((32, 32, 3), c, np.uint8)) for c in (0, 90, 180, 255)]
    texts = ["a bell", "a drum", "a bird", "rain"]
    img, txt = scorer.image_embeds(images), scorer.text_embeds(texts)
    assert img.shape == txt.shape == (4, 16)
    cos = torch.nn.functional.cosine_similarity(img.double(), txt.double(), dim=-1)
    assert M.clip_score(img, txt) == pytest.approx(float((100 * cos.clamp(min=0)).mean()))
    assert M.clip_score(img, img) == pytest.approx(100.0)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: M.images_to_tensor([]), "empty"),
        (
            lambda: M.images_to_tensor([PIL.Image.new("RGB", (32, 32)), PIL.Image.new("RGB", (16, 16))]),
            "different sizes",
        ),
        (lambda: M.images_to_tensor([PIL.Image.new("RGB", (8, 8)), PIL.Image.new("L", (8, 8))]), "different modes"),
        (lambda: M.images_to_tensor([PIL.Image.new("CMYK", (8, 8))]), "CMYK"),
        (lambda: M.images_to_tensor(torch.full((2, 3, 8, 8), 3.0)), r"\[0, 1\]"),
        (lambda: M.fid_from_features(torch.zeros(1, 4), torch.zeros(5, 4)), "at least 2"),
        (lambda: M.fid_from_features(torch.zeros(3, 4), torch.zeros(3, 5)), "width"),
        (lambda: M.audio_image_similarity(torch.zeros(4, 3), torch.zeros(5, 3)), "4 rows.*5"),
        (lambda: M.audio_image_similarity(torch.zeros(4, 3), torch.zeros(4, 2)), "one space"),
        (lambda: M.image_image_similarity(torch.zeros(1, 3), torch.zeros(1, 3)), "at least 2"),
        (lambda: M.audio_image_content(torch.zeros(3, 2), [0, 1]), "one per image"),
        (lambda: M.audio_image_content(torch.zeros(2, 2), [0, 2]), "class indices"),
        (lambda: M.kid_from_features(torch.zeros(3, 2), torch.zeros(3, 2), subset_size=5), "subset_size"),
    ],
)
def test_bad_inputs_raise_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
