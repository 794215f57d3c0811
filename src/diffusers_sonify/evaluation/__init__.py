"""Evaluation of audio-to-image pipelines: the field's metrics (FID/KID, CLIP score, AIS/IIS/AIC), controllability
probes, pluggable scorers and the `python -m diffusers_sonify.evaluation` CLI.

The metric functions take already-loaded models and tensors, so training validation and the CLI share them; the
same metrics load as `evaluate` modules from `evaluate_modules/<name>` ([`evaluate_module_path`]).
"""

from pathlib import Path

from .metrics import (
    audio_image_content,
    audio_image_similarity,
    audio_image_similarity_mean_cosine,
    clip_score,
    extract_features,
    fid_from_features,
    fid_score,
    frechet_distance,
    image_image_similarity,
    images_to_tensor,
    kid_from_features,
    kid_score,
    win_rates,
    zero_shot_logits,
)

EVALUATE_MODULES = ("fid", "kid", "ais", "ais_mean_cosine", "iis", "aic", "clip_score")


def evaluate_module_path(name: str) -> str:
    """Folder of the `evaluate` module `name`, for `evaluate.load(evaluate_module_path("fid"))`."""
    if name not in EVALUATE_MODULES:
        raise ValueError(f"Unknown evaluate module {name!r}; choose from {EVALUATE_MODULES}.")
    return str(Path(__file__).parent / "evaluate_modules" / name)


__all__ = [
    "EVALUATE_MODULES",
    "audio_image_content",
    "audio_image_similarity",
    "audio_image_similarity_mean_cosine",
    "clip_score",
    "evaluate_module_path",
    "extract_features",
    "fid_from_features",
    "fid_score",
    "frechet_distance",
    "image_image_similarity",
    "images_to_tensor",
    "kid_from_features",
    "kid_score",
    "win_rates",
    "zero_shot_logits",
]
