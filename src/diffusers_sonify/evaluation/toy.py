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


def toy_field_metrics(
    out: Path,
    pipeline_dir: Path,
    training_images: list,
    num_scenes: int = 64,
    seed: int = 0,
    classifier_kwargs: dict | None = None,
    num_inference_steps: int = 20,
    guidance_scale: float = 5.0,
    guidance_rescale: float = 0.0,
) -> dict:
    """Train the toy classifier, build the held-out scene set, run the evaluation CLI on `pipeline_dir`, and add the
    floor: FID/KID of the held-out renders against as many training renders, with the same features.

    Writes `<out>/toy_classifier`, `<out>/eval_scenes` and the CLI's `<out>/evaluation/{metrics.json,report.md}`.

    Returns:
        `dict` with the CLI's metrics, `fid_floor`, `kid_floor`, the classifier report and the wall time.
    """
    import torch

    from ..toyworld.classifier import train_toy_classifier
    from . import cli
    from .metrics import extract_features, fid_from_features, kid_from_features

    t0 = time.time()
    classifier, classifier_report = train_toy_classifier(**(classifier_kwargs or {}))
    classifier.save_pretrained(out / "toy_classifier")
    scenes = make_eval_scene_dataset(num_scenes, seed)
    scenes.save_to_disk(str(out / "eval_scenes"))
    if len(training_images) < num_scenes:
        raise ValueError(f"The floor needs {num_scenes} training renders, got {len(training_images)}.")
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
    }
    result = cli.main([str(x) for option in options.items() for x in option])
    with torch.no_grad():
        held_out = extract_features(classifier.features, list(scenes["image"]), arg="held-out renders")
        train = extract_features(classifier.features, list(training_images[:num_scenes]), arg="training renders")
    floor = {"fid_floor": fid_from_features(held_out, train), "kid_floor": kid_from_features(held_out, train)[0]}
    logger.info("Toy-world field metrics: %s; floor %s", result["metrics"], floor)
    return {
        **result["metrics"],
        **floor,
        "classifier": classifier_report,
        "models": result["models"],
        "seconds": round(time.time() - t0, 1),
    }
