"""The field's metrics instantiated in the toy world (what `make demo` runs).

Sound2Scene measured FID with an Inception tuned on its own domain; here a classifier trained on toy renders
(`toyworld.classifier`) provides the features for FID/KID and IIS, the classes for AIC and the class space for AIS,
and the probes read images with the scene parser. The evaluation set is held-out scenes: each row has the scene's
soundtrack (made as the builder makes it, from clips never heard in training), its label (the classes, largest
first, joined by `+`) and its render (the reference image). The first six rows are single-source scenes, one per
class, so the probes start from clean single sounds.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from ..toyworld import CLASS_NAMES, SAMPLING_RATE, prominence_from_radius, render_scene, sample_scene, synthesize
from ..toyworld.corpora import eval_clip_seed
from ..toyworld.sonify import sonify_scene

logger = logging.getLogger(__name__)

EVAL_CLIP_OFFSET = 200_000  # clip indices far above those of `make_eval_sounds` (a few hundred): disjoint clips
FIELD_METRICS = "fid,kid,ais,ais_mean_cosine,iis,aic,probes"


def make_eval_scene_dataset(num_scenes: int, seed: int = 0):
    """Held-out toy scenes as an evaluation dataset: columns `audio` (16 kHz), `label`, `image`, `setting`.

    Args:
        num_scenes: rows; at least 6 (the single-source rows, one per class).
        seed: the world seed (as the demo's); scenes and clips are drawn from streams training never uses.
    """
    from datasets import Audio, Dataset, Features, Image, Value

    if num_scenes < len(CLASS_NAMES):
        raise ValueError(f"`num_scenes` must be >= {len(CLASS_NAMES)} (one single-source scene per class).")
    rng = np.random.default_rng([seed, 12])
    rows = {"audio": [], "label": [], "image": [], "setting": []}
    clip_index = EVAL_CLIP_OFFSET
    for i in range(num_scenes):
        if i < len(CLASS_NAMES):
            radius = float(rng.uniform(6.0, 10.0))
            obj = {"class": CLASS_NAMES[i], "radius": radius, "prominence": prominence_from_radius(radius)}
            obj.update(x=float(rng.uniform(0.35, 0.65)), y=float(rng.uniform(0.35, 0.65)))
            scene = {"objects": [obj], "setting": "outdoor", "space": "open"}
        else:
            scene = sample_scene(rng)
        clips = []
        for obj in scene["objects"]:
            clips.append(synthesize(obj["class"], eval_clip_seed(seed, clip_index)))
            clip_index += 1
        audio = sonify_scene(scene, clips, seed=int(rng.integers(2**31)))
        by_size = sorted(scene["objects"], key=lambda o: -o["radius"])
        rows["audio"].append({"array": audio, "sampling_rate": SAMPLING_RATE})
        rows["label"].append("+".join(o["class"] for o in by_size))
        rows["image"].append(render_scene(scene["objects"], scene["setting"]))
        rows["setting"].append(scene["setting"])
    features = Features(
        {
            "audio": Audio(sampling_rate=SAMPLING_RATE),
            "label": Value("string"),
            "image": Image(),
            "setting": Value("string"),
        }
    )
    return Dataset.from_dict(rows, features=features)


def prepare_toy_field_metrics(
    out: Path,
    training_images: list,
    num_scenes: int = 64,
    seed: int = 0,
    classifier_kwargs: dict | None = None,
) -> dict:
    """What the toy evaluation needs before there is a model: train the toy classifier (`<out>/toy_classifier`),
    write the held-out scene set (`<out>/eval_scenes`) and compute the floor, FID/KID of the held-out renders against
    as many training renders (`training_images`), with the same features. `make demo` runs it while the toy VLM
    trains; [`toy_field_metrics`] takes the result.

    Returns:
        `dict` with `fid_floor`, `kid_floor`, the classifier report, `out`, `num_scenes`, `seed` and the wall time.
    """
    import torch

    from ..toyworld.classifier import train_toy_classifier
    from .metrics import extract_features, fid_from_features, kid_from_features

    if len(training_images) < num_scenes:
        raise ValueError(f"The floor needs {num_scenes} training renders, got {len(training_images)}.")
    t0 = time.time()
    classifier, classifier_report = train_toy_classifier(**(classifier_kwargs or {}))
    classifier.save_pretrained(out / "toy_classifier")
    scenes = make_eval_scene_dataset(num_scenes, seed)
    scenes.save_to_disk(str(out / "eval_scenes"))
    with torch.no_grad():
        held_out = extract_features(classifier.features, list(scenes["image"]), arg="held-out renders")
        train = extract_features(classifier.features, list(training_images[:num_scenes]), arg="training renders")
    return {
        "fid_floor": fid_from_features(held_out, train),
        "kid_floor": kid_from_features(held_out, train)[0],
        "classifier": classifier_report,
        "out": str(out),
        "num_scenes": num_scenes,
        "seed": seed,
        "seconds": round(time.time() - t0, 1),
    }


def toy_field_metrics(
    out: Path,
    pipeline_dir: Path,
    training_images: list | None = None,
    num_scenes: int = 64,
    seed: int = 0,
    classifier_kwargs: dict | None = None,
    num_inference_steps: int = 20,
    guidance_scale: float = 5.0,
    guidance_rescale: float = 0.0,
    mixed_precision: str = "no",
    prepared: dict | None = None,
) -> dict:
    """Run the evaluation CLI on `pipeline_dir` with the toy world's scorers and add the floor.

    `prepared` is [`prepare_toy_field_metrics`]'s result for the same `out`, `num_scenes` and `seed` (made earlier,
    while something else ran); without it, it is made here from `training_images` and `classifier_kwargs`. Writes
    the CLI's `<out>/evaluation/{metrics.json,report.md}`; `mixed_precision` is the CLI's sampling precision.

    Returns:
        `dict` with the CLI's metrics, `fid_floor`, `kid_floor`, the classifier report, the models and the wall time
        (the preparation's included).
    """
    from . import cli

    t0, earlier = time.time(), 0.0
    if prepared is None:
        if training_images is None:
            raise ValueError("Pass `training_images` (for the floor) or `prepared` (prepare_toy_field_metrics).")
        prepared = prepare_toy_field_metrics(out, training_images, num_scenes, seed, classifier_kwargs)
    elif (prepared["out"], prepared["num_scenes"], prepared["seed"]) == (str(out), num_scenes, seed):
        earlier = prepared["seconds"]
    else:
        raise ValueError(
            f"`prepared` holds {prepared['num_scenes']} scenes of seed {prepared['seed']} in {prepared['out']}, not "
            f"{num_scenes} of seed {seed} in {out}: prepare them with the same `out`, `num_scenes` and `seed`."
        )
    options = {
        "--pipeline": pipeline_dir,
        "--dataset": out / "eval_scenes",
        "--output_dir": out / "evaluation",
        "--metrics": FIELD_METRICS,
        "--num_images": num_scenes,
        "--scorer": "toyworld",
        "--toy_classifier": out / "toy_classifier",
        "--num_inference_steps": num_inference_steps,
        "--guidance_scale": guidance_scale,
        "--guidance_rescale": guidance_rescale,
        "--seed": seed,
        "--batch_size": 32,
        "--mixed_precision": mixed_precision,
    }
    result = cli.main([str(x) for option in options.items() for x in option])
    floor = {"fid_floor": prepared["fid_floor"], "kid_floor": prepared["kid_floor"]}
    logger.info("Toy-world field metrics: %s; floor %s", result["metrics"], floor)
    return {
        **result["metrics"],
        **floor,
        "classifier": prepared["classifier"],
        "models": result["models"],
        "seconds": round(earlier + time.time() - t0, 1),
    }
