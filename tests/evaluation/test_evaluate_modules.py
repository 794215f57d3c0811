"""Each `evaluate` module shipped in the package loads from its folder and returns the library function's number."""

from __future__ import annotations

import pytest
import torch

from diffusers_sonify.evaluation import EVALUATE_MODULES, evaluate_module_path
from diffusers_sonify.evaluation import metrics as M


def _load(name):
    import evaluate

    return evaluate.load(evaluate_module_path(name))


def _embeds(seed: int, n: int = 12, d: int = 6) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_every_module_returns_the_functions_number():
    a, b = _embeds(0), _embeds(1)
    shuffled = a[torch.randperm(12, generator=torch.Generator().manual_seed(2))] + 0.5 * b
    labels = [i % 6 for i in range(12)]
    expected = {
        "fid": ({"fid": M.fid_from_features(b, a)}, {}),
        "kid": (dict(zip(("kid_mean", "kid_std"), M.kid_from_features(b, a, subset_size=6, seed=3))), {}),
        "ais": ({"ais": M.audio_image_similarity(a, shuffled)}, {}),
        "ais_mean_cosine": ({"ais_mean_cosine": M.audio_image_similarity_mean_cosine(a, shuffled, zscore=True)}, {}),
        "iis": ({"iis": M.image_image_similarity(a, shuffled)}, {}),
        "aic": ({"aic": M.audio_image_content(a, labels)}, {}),
        "clip_score": ({"clip_score": M.clip_score(a, shuffled)}, {}),
    }
    assert set(expected) == set(EVALUATE_MODULES)
    for name, (want, _) in expected.items():
        refs = labels if name == "aic" else (b if name in ("fid", "kid") else shuffled).tolist()
        kwargs = (
            {"subset_size": 6, "seed": 3} if name == "kid" else {"zscore": True} if name == "ais_mean_cosine" else {}
        )
        got = _load(name).compute(predictions=a.tolist(), references=refs, **kwargs)
        assert got.keys() == want.keys(), name
        for key in want:
            assert got[key] == pytest.approx(want[key], rel=1e-9, abs=1e-12), (name, key)
    # the win-rate AIS of aligned embeddings is 1.0 through the module too
    assert _load("ais").compute(predictions=a.tolist(), references=a.tolist())["ais"] == 1.0


def test_unknown_module_name_is_refused():
    with pytest.raises(ValueError, match="Unknown evaluate module"):
        evaluate_module_path("inception_score")
