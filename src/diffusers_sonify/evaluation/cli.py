"""`python -m diffusers_sonify.evaluation`: generate from a dataset's sounds and measure the field's metrics.

    python -m diffusers_sonify.evaluation --pipeline <id|dir> --dataset <id|dir> \
        --metrics fid,kid,clip,ais,iis,aic,probes --num_images 64 --output_dir outputs/eval \
        --scorer clip --clip_model openai/clip-vit-base-patch32

Writes `<output_dir>/metrics.json` (numbers, and which model produced each) and `<output_dir>/report.md` (a table,
a grid of generated vs reference images, probe plots). Every input is checked before any image is generated.

Scorers (`--scorer`): `clip` (a CLIP model: CLIP score, IIS features, zero-shot AIC; FID/KID with the standard FID
InceptionV3) or `toyworld` (a trained toy-world classifier: FID/KID and IIS features, AIC classes, the class space
for AIS; the probes read images with the scene parser).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from tqdm.auto import tqdm

from . import metrics as M
from . import probes as P

logger = logging.getLogger("diffusers_sonify.evaluation")

METRICS = ("fid", "kid", "clip", "ais", "ais_mean_cosine", "iis", "aic", "probes")
SCORERS = ("clip", "toyworld")
MIXED_PRECISIONS = ("no", "bf16")
# what each metric reads from the dataset beyond the audio
NEEDS_LABEL = {"clip", "ais", "ais_mean_cosine", "aic", "probes"}
NEEDS_REFERENCE_IMAGE = {"iis"}


@dataclass
class EvalConfig:
    """Everything the evaluation needs; [`parse_args`] fills it from the command line."""

    pipeline: str
    dataset: str
    output_dir: str
    metrics: list[str] = field(default_factory=lambda: ["fid", "kid", "clip", "aic"])
    split: str = "train"
    audio_column: str = "audio"
    label_column: str = "label"
    image_column: str = "image"
    reference_dataset: str | None = None
    reference_split: str = "train"
    num_images: int = 64
    scorer: str = "clip"
    clip_model: str | None = None
    toy_classifier: str | None = None
    num_inference_steps: int = 25
    guidance_scale: float = 4.0
    guidance_rescale: float = 0.0
    batch_size: int = 16
    seed: int = 0
    mixed_precision: str = "no"


def parse_args(argv: list[str] | None = None) -> EvalConfig:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pipeline", required=True, help="AudioToImagePipeline folder or Hub id")
    p.add_argument("--dataset", required=True, help="dataset folder (save_to_disk or Hub layout) or Hub id")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--metrics", default="fid,kid,clip,aic", help=f"comma-separated, from {', '.join(METRICS)}")
    p.add_argument("--split", default="train")
    p.add_argument("--audio_column", default="audio")
    p.add_argument("--label_column", default="label", help="class name or caption of each sound")
    p.add_argument("--image_column", default="image", help="reference image of each sound (IIS; FID/KID reals)")
    p.add_argument("--reference_dataset", default=None, help="real images for FID/KID (default: --image_column)")
    p.add_argument("--reference_split", default="train")
    p.add_argument("--num_images", type=int, default=64, help="generate from the first N rows")
    p.add_argument("--scorer", default="clip", choices=SCORERS)
    p.add_argument("--clip_model", default=None, help="CLIP folder or Hub id (--scorer clip)")
    p.add_argument("--toy_classifier", default=None, help="ToyImageClassifier folder (--scorer toyworld)")
    p.add_argument("--num_inference_steps", type=int, default=25)
    p.add_argument("--guidance_scale", type=float, default=4.0)
    p.add_argument("--guidance_rescale", type=float, default=0.0)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--mixed_precision",
        default="no",
        choices=MIXED_PRECISIONS,
        help="sample under torch.autocast in this dtype (bf16: faster on CPUs with bf16 arithmetic; the scorers "
        "stay in float32)",
    )
    a = p.parse_args(argv)
    names = [m.strip() for m in a.metrics.split(",") if m.strip()]
    return EvalConfig(**{**vars(a), "metrics": names})


# ----------------------------------------------------------------------------------------------- validation
def _load_rows(source: str, split: str, arg: str):
    from ..data import load_split

    try:
        return load_split(source, split, arg=arg)
    except FileNotFoundError as err:
        raise ValueError(f"`--{arg}` {source!r} could not be loaded: {err}") from err
    except ValueError as err:
        if "corresponds to no data" in str(err):  # datasets' message for a split with no rows
            raise ValueError(f"`--{arg}` {source!r} split {split!r} is empty; it has no rows to evaluate.") from err
        raise


def _check_images(images: list, arg: str) -> None:
    if not all(isinstance(im, PIL.Image.Image) for im in images):
        raise ValueError(f"`{arg}` must hold images (an `Image` column); found {type(images[0]).__name__}.")
    M.images_to_tensor(images, arg)  # same size, same mode, RGB/L


def validate(cfg: EvalConfig):
    """Check the configuration and the data; returns `(rows, reference_images)`. Raises before any generation."""
    unknown = [m for m in cfg.metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"Unknown metric(s) {unknown}; choose from {', '.join(METRICS)}.")
    if not cfg.metrics:
        raise ValueError(f"`--metrics` is empty; choose from {', '.join(METRICS)}.")
    if cfg.scorer not in SCORERS:
        raise ValueError(f"Unknown scorer {cfg.scorer!r}; choose from {SCORERS}.")
    if cfg.mixed_precision not in MIXED_PRECISIONS:
        raise ValueError(f"Unknown `--mixed_precision` {cfg.mixed_precision!r}; choose from {MIXED_PRECISIONS}.")
    if cfg.num_images < 2:
        raise ValueError(f"`--num_images` is {cfg.num_images}; the metrics compare sets, pass at least 2.")
    if cfg.scorer == "toyworld" and not cfg.toy_classifier:
        raise ValueError("`--scorer toyworld` needs `--toy_classifier <folder of a saved ToyImageClassifier>`.")
    if cfg.scorer == "clip" and {"clip", "iis", "aic", "probes"} & set(cfg.metrics) and not cfg.clip_model:
        raise ValueError("`--scorer clip` with clip/iis/aic/probes needs `--clip_model <CLIP folder or Hub id>`.")
    if cfg.scorer == "clip" and {"ais", "ais_mean_cosine"} & set(cfg.metrics):
        raise ValueError(
            "AIS needs a joint audio-image space, which CLIP is not: use `--scorer toyworld`, or call "
            "`metrics.audio_image_similarity` with embeddings from a joint model (e.g. ImageBind, Wav2CLIP)."
        )
    if "clip" in cfg.metrics and cfg.scorer != "clip":
        raise ValueError("The `clip` metric needs `--scorer clip` and `--clip_model`.")

    rows = _load_rows(cfg.dataset, cfg.split, "dataset")
    if len(rows) == 0:
        raise ValueError(f"`--dataset` {cfg.dataset!r} split {cfg.split!r} is empty.")
    if cfg.audio_column not in rows.column_names:
        raise ValueError(
            f"`--dataset` has no audio column {cfg.audio_column!r} (columns: {rows.column_names}); "
            "set `--audio_column`."
        )
    if cfg.num_images > len(rows):
        raise ValueError(f"`--num_images` {cfg.num_images} exceeds the dataset's {len(rows)} rows; lower it.")
    rows = rows.select(range(cfg.num_images))
    needs_label = NEEDS_LABEL & set(cfg.metrics)
    if needs_label and cfg.label_column not in rows.column_names:
        raise ValueError(
            f"{sorted(needs_label)} need the label column {cfg.label_column!r}, which the dataset lacks "
            f"(columns: {rows.column_names}); set `--label_column`."
        )
    wants_ref = NEEDS_REFERENCE_IMAGE & set(cfg.metrics) or (
        {"fid", "kid"} & set(cfg.metrics) and cfg.reference_dataset is None
    )
    if wants_ref and cfg.image_column not in rows.column_names:
        raise ValueError(
            f"IIS and FID/KID (without `--reference_dataset`) need the image column {cfg.image_column!r}, which "
            f"the dataset lacks (columns: {rows.column_names}); set `--image_column` or `--reference_dataset`."
        )
    references = None
    if {"fid", "kid"} & set(cfg.metrics):
        if cfg.reference_dataset:
            ref_rows = _load_rows(cfg.reference_dataset, cfg.reference_split, "reference_dataset")
            if cfg.image_column not in ref_rows.column_names:
                raise ValueError(f"`--reference_dataset` has no image column {cfg.image_column!r}.")
            references = list(ref_rows[cfg.image_column])
        else:
            references = list(rows[cfg.image_column])
        if len(references) < 2:
            raise ValueError(f"FID/KID need at least 2 reference images, got {len(references)}.")
        _check_images(references, "reference images")
    if "iis" in cfg.metrics:
        _check_images(list(rows[cfg.image_column]), f"dataset column {cfg.image_column!r}")
    if needs_label:
        labels = [str(v) for v in rows[cfg.label_column]]
        if any(not label.strip() for label in labels):
            raise ValueError(f"Column {cfg.label_column!r} has empty labels; every sound needs one.")
        if "probes" in cfg.metrics and len(set(labels)) < 2:
            raise ValueError("The probes mix two sounds of different labels; the selected rows have only one label.")
    return rows, references


# ----------------------------------------------------------------------------------------------- scoring
class _Scorers:
    def __init__(self, cfg: EvalConfig):
        self.cfg = cfg
        self.clip = self.toy = None
        if cfg.scorer == "toyworld":
            from .scorers import ToyWorldScorer

            self.toy = ToyWorldScorer.from_pretrained(cfg.toy_classifier)
        elif cfg.clip_model:
            from .scorers import ClipScorer

            self.clip = ClipScorer.from_pretrained(cfg.clip_model)
        self.inception = None
        if cfg.scorer == "clip" and {"fid", "kid"} & set(cfg.metrics):
            from .scorers import InceptionFeatures

            self.inception = InceptionFeatures()

    @property
    def image_model(self):
        return self.toy or self.clip

    @property
    def fid_features(self):
        return (
            (self.inception, self.inception.name) if self.inception is not None else (self.toy.features, self.toy.name)
        )


def _decode_audio(rows, column: str, sampling_rate: int) -> list[np.ndarray]:
    from datasets import Audio

    from ..training_utils import load_training_audio

    raw = rows.cast_column(column, Audio(decode=False))
    return [load_training_audio(r[column], sampling_rate, max_seconds=None, arg=column) for r in raw]


def sampling_autocast(device_type: str, precision: str) -> torch.autocast:
    """Sampling in `precision` (`MIXED_PRECISIONS`): "bf16" puts the pipeline's call under bf16 autocast on
    `device_type` (its UNet's convolutions and attention in bf16; the pipeline keeps its float32 weights and guides in
    float32; generation 1.57x faster on the measured AMD EPYC: RECIPE.md, d25); "no" gives a disabled autocast.
    Autocast is per thread: enter it in the thread that calls the pipeline."""
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16")


def generate_images(pipe, sounds: list[np.ndarray], cfg: EvalConfig, sampling_rate: int) -> list[PIL.Image.Image]:
    """One image per sound, sound `i` with its own generator seeded `seed + i`."""
    images = []
    with tqdm(total=len(sounds), desc="Generating") as bar, sampling_autocast(pipe.device.type, cfg.mixed_precision):
        for start in range(0, len(sounds), cfg.batch_size):
            chunk = sounds[start : start + cfg.batch_size]
            images += pipe(
                chunk,
                sampling_rate=sampling_rate,
                num_inference_steps=cfg.num_inference_steps,
                guidance_scale=cfg.guidance_scale,
                guidance_rescale=cfg.guidance_rescale,
                generator=[torch.Generator().manual_seed(cfg.seed + start + i) for i in range(len(chunk))],
            ).images
            bar.update(len(chunk))
    return images


def _class_names(labels: list[str]) -> list[str]:
    return sorted(set(labels))


def _aic(scorers: _Scorers, images, labels: list[str]) -> tuple[float, str]:
    """AIC with the toy classifier (a hit: the top class is one of the sound's classes, `+`-joined for mixtures) or
    zero-shot CLIP over the set's distinct labels (a hit: the top label is the sound's own)."""
    if scorers.toy is not None:
        logits = scorers.toy.class_logits(images)
        hits = [bool(scorers.toy.label_vector(label)[int(k)]) for label, k in zip(labels, logits.argmax(1))]
        return float(np.mean(hits)), scorers.toy.name
    names = _class_names(labels)
    logits = M.zero_shot_logits(scorers.clip.image_embeds(images), scorers.clip.text_embeds(names))
    return M.audio_image_content(logits, [names.index(label) for label in labels]), scorers.clip.name


def _probe_readers(scorers: _Scorers):
    """Readers `loudness(images, label)`, `reverb(images)`, `interpolation(images, a, b)`, `present(images, a, b)`,
    the reader's name and the three sweeps' y-axis labels."""
    if scorers.toy is not None:
        from ..toyworld import parse_scenes
        from ..toyworld.evaluation import class_b_fraction

        def names(label):
            return [scorers.toy.class_names[i] for i in scorers.toy.label_vector(label).nonzero().flatten().tolist()]

        def area(images, label):
            return [sum(p.areas[n] for n in names(label)) for p in parse_scenes(images)]

        def indoor(images):
            return [1.0 - p.background_value for p in parse_scenes(images)]  # rooms are dark

        def frac(images, a, b):
            return [class_b_fraction(p, names(a)[0], names(b)[0]) for p in parse_scenes(images)]

        def present(images, a, b):
            return [(names(a)[0] in p.present, names(b)[0] in p.present) for p in parse_scenes(images)]

        axes = ("area of the sound's classes (px)", "darkness: 1 - background brightness", "B / (A + B) area")
        return area, indoor, frac, present, "toyworld scene parser (toyworld/parser.py)", axes

    clip = scorers.clip

    def sims(images, texts):
        return M.zero_shot_logits(clip.image_embeds(images), clip.text_embeds(texts))

    def area(images, label):
        return sims(images, [label])[:, 0].tolist()

    def indoor(images):
        s = sims(images, ["a photo taken indoors in a large reverberant hall", "a photo taken outdoors"])
        return (s[:, 0] - s[:, 1]).tolist()

    def frac(images, a, b):
        s = sims(images, [a, b])
        return (s[:, 1] - s[:, 0]).tolist()

    def present(images, a, b):
        s = sims(images, [a, b, "an empty scene"])
        return [(bool(r[0] > r[2]), bool(r[1] > r[2])) for r in s]

    axes = ("cosine to the label", "cosine: indoor hall - outdoors", "cosine: B label - A label")
    return area, indoor, frac, present, f"CLIP text similarity ({clip.name})", axes


def run_probes(pipe, sounds, labels, cfg: EvalConfig, scorers: _Scorers, sampling_rate: int, out: Path) -> dict:
    """The four probes on the first sound and the first sound of another label; plots and grids under `out`."""
    area, indoor, frac, present, reader, axes = _probe_readers(scorers)
    sample = P.pipeline_generator(
        pipe,
        sampling_rate,
        seed=cfg.seed,
        num_inference_steps=cfg.num_inference_steps,
        guidance_scale=cfg.guidance_scale,
        guidance_rescale=cfg.guidance_rescale,
    )

    def generate(probe_sounds: list[np.ndarray]) -> list[PIL.Image.Image]:
        with sampling_autocast(pipe.device.type, cfg.mixed_precision):  # the readers below score in float32
            return sample(probe_sounds)

    a = 0
    b = next(i for i, label in enumerate(labels) if label != labels[0])
    results, grids = {}, {}
    steps = tqdm(total=4, desc="Probes")
    res, grids["loudness"] = P.run_sweep(
        "loudness",
        generate,
        P.loudness_sweep_sounds(sounds[a], sampling_rate),
        P.DEFAULT_LUFS_STEPS,
        lambda ims: area(ims, labels[a]),
        label=labels[a],
    )
    results["loudness"] = res
    steps.update()
    res, grids["reverb"] = P.run_sweep(
        "reverb", generate, P.reverb_sweep_sounds(sounds[a], sampling_rate), P.DEFAULT_RT60_STEPS, indoor
    )
    results["reverb"] = res
    steps.update()
    res, grids["interpolation"] = P.run_sweep(
        "interpolation",
        generate,
        P.interpolation_sounds(sounds[a], sounds[b], sampling_rate),
        P.DEFAULT_WEIGHTS,
        lambda ims: frac(ims, labels[a], labels[b]),
        a=labels[a],
        b=labels[b],
    )
    results["interpolation"] = res
    steps.update()
    pairs = [(i, j) for i in range(len(labels)) for j in range(i + 1, len(labels)) if labels[i] != labels[j]][:4]
    mixed = generate([P.mixing_sound(sounds[i], sounds[j], sampling_rate) for i, j in pairs])
    flags = [present([im], labels[i], labels[j])[0] for im, (i, j) in zip(mixed, pairs)]
    grids["mixing"] = mixed
    steps.update()
    steps.close()
    summary = {name: r.to_dict() for name, r in results.items()}
    summary["mixing"] = {
        "both_present_rate": P.both_present_rate(flags),
        "pairs": [[labels[i], labels[j]] for i, j in pairs],
        "presence": [list(f) for f in flags],
    }
    summary["reader"] = reader
    summary["axes"] = dict(zip(("loudness", "reverb", "interpolation"), axes))
    _probe_plots(summary, grids, out)
    return summary


# ----------------------------------------------------------------------------------------------- report
def _grid(images: list[PIL.Image.Image], cols: int, cell: int = 96) -> PIL.Image.Image:
    rows = -(-len(images) // cols)
    grid = PIL.Image.new("RGB", (cols * cell, rows * cell), "white")
    for i, im in enumerate(images):
        grid.paste(im.convert("RGB").resize((cell, cell), PIL.Image.NEAREST), ((i % cols) * cell, (i // cols) * cell))
    return grid


def _probe_plots(summary: dict, grids: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    units = {"loudness": "input loudness (LUFS)", "reverb": "RT60 (s)", "interpolation": "weight of B"}
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for ax, (name, xlabel) in zip(axes, units.items()):
        r = summary[name]
        ax.plot(r["values"], r["readings"], marker="o")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(summary["axes"][name], fontsize=8)
        ax.set_title(f"{name}: Spearman {r['spearman']:.2f}, monotone {r['monotonicity']:.2f}", fontsize=9)
    fig.suptitle(f"Probes read by {summary['reader']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "probes.png", dpi=110)
    plt.close(fig)
    for name, images in grids.items():
        _grid(images, len(images)).save(out / f"probe_{name}.png")


def write_report(out: Path, result: dict, images, references) -> None:
    """report.md: the metric table with the model behind each number, a generated/reference grid, probe plots."""
    cols = min(8, len(images))
    _grid(images[: 2 * cols], cols).save(out / "generated.png")
    parts = [
        "# Audio-to-image evaluation\n",
        f"Pipeline `{result['pipeline']}`, dataset `{result['dataset']}`, {result['num_images']} generated images "
        f"({result['generation_seconds']:.0f} s).\n",
        "| metric | value | measured with |\n|---|---|---|",
    ]
    for key, value in result["metrics"].items():
        parts.append(f"| {key} | {value:.4f} | {result['models'].get(key, '')} |")
    parts.append("\n## Generated images\n\n![generated](generated.png)\n")
    if references:
        _grid(references[: 2 * cols], cols).save(out / "references.png")
        parts.append("## Reference images (same rows)\n\n![references](references.png)\n")
    if "probes" in result:
        parts.append("## Controllability probes\n\n![probes](probes.png)\n")
        for name in ("loudness", "reverb", "interpolation", "mixing"):
            parts.append(f"**{name}**\n\n![{name}](probe_{name}.png)\n")
    (out / "report.md").write_text("\n".join(parts) + "\n")


# ----------------------------------------------------------------------------------------------- main
def evaluate(cfg: EvalConfig) -> dict:
    """Validate, load, generate, score and write `metrics.json` + `report.md`; returns the result dict."""
    rows, references = validate(cfg)
    scorers = _Scorers(cfg)
    from .. import AudioToImagePipeline

    pipe = AudioToImagePipeline.from_pretrained(cfg.pipeline)
    pipe.set_progress_bar_config(disable=True)
    sampling_rate = pipe.feature_extractor.sampling_rate
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    sounds = _decode_audio(rows, cfg.audio_column, sampling_rate)
    labels = [str(v) for v in rows[cfg.label_column]] if cfg.label_column in rows.column_names else []
    t0 = time.time()
    images = generate_images(pipe, sounds, cfg, sampling_rate)
    result: dict = {
        "pipeline": cfg.pipeline,
        "dataset": cfg.dataset,
        "num_images": len(images),
        "generation_seconds": round(time.time() - t0, 1),
        "mixed_precision": cfg.mixed_precision,
        "metrics": {},
        "models": {},
    }
    m, models = result["metrics"], result["models"]
    if {"fid", "kid"} & set(cfg.metrics):
        feature_fn, name = scorers.fid_features
        real = M.extract_features(feature_fn, references, arg="reference images")
        fake = M.extract_features(feature_fn, images, arg="generated images")
        result["num_reference_images"] = len(references)
        if "fid" in cfg.metrics:
            m["fid"], models["fid"] = M.fid_from_features(real, fake), name
        if "kid" in cfg.metrics:
            m["kid_mean"], m["kid_std"] = M.kid_from_features(real, fake, seed=cfg.seed)
            models["kid_mean"] = models["kid_std"] = name
    if "clip" in cfg.metrics:
        clip = scorers.clip
        m["clip_score"] = M.clip_score(clip.image_embeds(images), clip.text_embeds(labels))
        models["clip_score"] = clip.name
    if {"ais", "ais_mean_cosine"} & set(cfg.metrics):
        toy = scorers.toy
        img, aud = toy.image_embeds(images), toy.audio_embeds(labels=labels)
        if "ais" in cfg.metrics:
            m["ais"], models["ais"] = M.audio_image_similarity(img, aud), f"win-rate AIS; {toy.name} class space"
        if "ais_mean_cosine" in cfg.metrics:
            m["ais_mean_cosine"] = M.audio_image_similarity_mean_cosine(img, aud)
            models["ais_mean_cosine"] = f"MACS mean-cosine AIS; {toy.name} class space"
    if "iis" in cfg.metrics:
        model = scorers.image_model
        refs = list(rows[cfg.image_column])
        m["iis"] = M.image_image_similarity(model.features(images), model.features(refs))
        models["iis"] = model.name
    if "aic" in cfg.metrics:
        m["aic"], models["aic"] = _aic(scorers, images, labels)
    if "probes" in cfg.metrics:
        result["probes"] = run_probes(pipe, sounds, labels, cfg, scorers, sampling_rate, out)
        result["models"]["probes"] = result["probes"]["reader"]
        for name in ("loudness", "reverb", "interpolation"):
            m[f"probe_{name}_spearman"] = result["probes"][name]["spearman"]
            m[f"probe_{name}_monotonicity"] = result["probes"][name]["monotonicity"]
            models[f"probe_{name}_spearman"] = models[f"probe_{name}_monotonicity"] = result["probes"]["reader"]
        m["probe_mixing_both_present"] = result["probes"]["mixing"]["both_present_rate"]
        models["probe_mixing_both_present"] = result["probes"]["reader"]
    os.makedirs(out / "images", exist_ok=True)
    for i, im in enumerate(images):
        im.save(out / "images" / f"{i:05d}.png")
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    write_report(out, result, images, list(rows[cfg.image_column]) if cfg.image_column in rows.column_names else [])
    logger.info("Evaluation: %s", json.dumps(m))
    return result


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return evaluate(parse_args(argv))
