"""`make demo`: the whole system, end to end, in the toy world, on a CPU.

1. generate the two unpaired toy corpora (images with scene metadata; single-source audio clips with labels);
2. pre-train the toy audio encoder on the audio corpus alone (the toy world's stand-in for a pretrained CLAP);
3. train the toy VLM (`toyworld/vlm.py`, a small Idefics3) on renders of its own to
   answer the builder's describe prompt, data-parallel over two processes (`accelerate launch`) started beside
   step 2, and score it beside the metadata describer on held-out renders (skipped with `--describer metadata`);
4. build the sonified dataset with the real builder program (`dataset_builder/build.py`); its describer is the toy
   VLM (`VLMDescriber`, loaded by path like a Hub VLM id), or with `--describer metadata` reads the scene metadata;
5. train with the real training program (`accelerate launch train_scripts/train.py`);
6. generate from held-out sounds, measure the images with the scene parser, and write
   `<output_dir>/report.md` (grids, a loudness-vs-area plot, a metrics table) and `<output_dir>/metrics.json`;
   the field's metrics (FID/KID vs held-out renders with their floor, AIS, IIS, AIC, probes) come from the
   evaluation CLI with the toy world's scorers (`<output_dir>/evaluation/report.md`).

`--quick` shrinks every stage so the whole chain runs in about a minute (for tests); its numbers mean nothing.
`--seeds 0 1 2` (a benchmark) runs the whole chain once per seed into `<output_dir>/seed_<s>` and writes
`<output_dir>/seeds.md` and `seeds.json` with the min / median / max of every metric.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import os
import queue
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from tqdm.auto import tqdm

from . import AudioToImageImg2ImgPipeline, AudioToImageInpaintPipeline, AudioToImagePipeline
from .audio import torch_threads
from .data import load_dataset_folder
from .evaluation.cli import sampling_autocast
from .evaluation.toy import prepare_toy_field_metrics, toy_field_metrics
from .machine import cpu_has_native_bf16, cpu_summary, free_port
from .programs import config_path
from .toyworld import (
    CLASS_NAMES,
    CLASSES,
    SAMPLING_RATE,
    make_audio_corpus,
    make_eval_sounds,
    make_image_corpus,
    parse_scenes,
)
from .toyworld.components import pretrain_audio_encoder, toy_audio_encoder
from .toyworld.evaluation import evaluate_parsed, retrieved_in_picture

logger = logging.getLogger("diffusers_sonify.demo")
# Seconds each stage took on a 2-core Intel Xeon box with AMX, nothing else running, printed as the ETA of each
# stage: d36's seed-1 run (RECIPE.md, d36: 556 s for the chain, in an hour when the box ran its training steps at 5.5
# per second; in slow hours, at 3.9-4.9, the chain took 614-755 s: d35, d37).
STAGE_ETA = {
    "corpora": 1,
    "audio_encoder": 70,
    "evaluation_inputs": 12,
    "vlm": 64,
    "build": 28,
    "train": 340,
    "evaluate": 43,
}
# the diffusion training steps of STAGE_ETA's "train" stage: the training config's max_train_steps (a test checks)
RECIPE_TRAIN_STEPS = 1800


def stage_eta(name: str, train_steps: int, done: dict[str, float]) -> tuple[float, float | None]:
    """The seconds stage `name` took on the measured box (`STAGE_ETA`, the training stage scaled to `train_steps`),
    and that times this box's pace so far: the seconds the stages in `done` took over what they took there (None
    until a stage of 10 s or more is done). A guide, not a promise: a 2-core AMD EPYC without bf16 arithmetic ran
    the stages before the training 2.2x and its fp32 training 3.0-3.3x slower than the Xeon (toyworld/RECIPE.md,
    d40)."""
    measured = STAGE_ETA[name] * (train_steps / RECIPE_TRAIN_STEPS if name == "train" else 1)
    timed = [stage for stage in done if STAGE_ETA.get(stage, 0) >= 10]
    if not timed:
        return measured, None
    return measured, measured * sum(done[s] for s in timed) / sum(STAGE_ETA[s] for s in timed)


# The acceptance bars of the toy world (issues 5 and 15); the demo reports each measured value against its bar.
BARS = {
    "pairing_accuracy": (">=", 0.95),
    "class_accuracy": (">=", 0.95),
    "mixing_both_present": (">=", 0.85),
    "loudness_area_spearman": (">=", 0.7),
    "reverb_background_accuracy": (">=", 0.95),
    "interpolation_inversions": ("<=", 1),
    "shape_accuracy": (">=", 0.85),  # single sources: the largest object's shape, colour ignored
    "exactly_one_rate": (">=", 0.85),  # single sources drawn as exactly one object
    "background_noise": ("<=", 0.02),  # std of background pixels, [0, 1] scale (renders: `render_background_noise`)
}
# The toy VLM's bars (issue 15), on held-out renders (`toyworld.vlm.evaluate_describer`); runs with `--describer vlm`
VLM_BARS = {
    "vlm_valid_json": (">=", 0.99),
    "vlm_source_f1": (">=", 0.95),
    "vlm_setting_accuracy": (">=", 0.98),
    "vlm_prominence_spearman": (">=", 0.8),
}
ALL_BARS = {**BARS, **VLM_BARS}


@dataclass
class DemoSize:
    """How big each stage is."""

    num_images: int = 2000
    clips_per_class: int = 40
    encoder_mixtures: int = 2000  # 8000 tried (RECIPE.md, d24): reverb up on two seeds, under issue 5's bar on seed 0
    encoder_steps: int = 800
    train_steps: int | None = None  # None: the training config's max_train_steps
    eval_scale: int = 1  # 1: the full held-out set (209 sounds); 0: a minimal set
    sampling_steps: int = 20
    # 2.5 with the recipe's 1,800 steps: the weakest seed's two-source mixing up (toyworld/RECIPE.md, d35; 2 from d22
    # to d34, 3 until d21, 5 until d15)
    guidance_scale: float = 2.5
    guidance_rescale: float = 0.7  # keeps strong guidance from over-saturating the flat toy colours
    # DDIM eta of the held-out generation: half of DDPM's fresh noise at each step; shape and exactly one on every
    # seed at the same model (toyworld/RECIPE.md, d32). The field's metrics and the edits sample with eta 0.
    eta: float = 0.5
    eval_workers: int = 2  # concurrent generation threads of one torch thread each
    field_scenes: int = 64  # held-out scenes for the field's metrics (FID/KID, AIS, IIS, AIC)
    field_classifier: dict | None = None  # train_toy_classifier arguments; None: its defaults
    # 600 VLM steps end its stage 21 s sooner but drew less two-source mixing; a 1,000-step VLM as REPA's target drew
    # no more (toyworld/RECIPE.md, d33)
    vlm_steps: int = 700  # toy VLM training (ToyVLMConfig.steps); its renders are its own (`vlm_image_seed`)
    vlm_train_images: int = 4000
    vlm_eval_images: int = 200  # held-out renders (corpus seed 12) the describers are scored on

    @property
    def held_out_sampling(self) -> dict:
        """The sampler arguments of the held-out generation ([`generate`]), as metrics.json records them."""
        return {
            "num_inference_steps": self.sampling_steps,
            "guidance_scale": self.guidance_scale,
            "guidance_rescale": self.guidance_rescale,
            "eta": self.eta,
        }


# enough steps for the quick chain's toy VLM to answer in valid JSON most of the time (its numbers mean nothing)
QUICK_VLM_STEPS = 150

QUICK = DemoSize(
    num_images=48,
    clips_per_class=4,
    encoder_mixtures=64,
    encoder_steps=4,
    train_steps=2,
    eval_scale=0,
    sampling_steps=2,
    field_scenes=8,
    field_classifier={"num_train": 300, "num_heldout": 100, "steps": 20},
    vlm_steps=QUICK_VLM_STEPS,
    vlm_train_images=400,
    vlm_eval_images=16,
)


def _start(cmd: list[str], log_path: Path) -> subprocess.Popen:
    """Start a stage program; its output goes to a log file."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(log_path, "w") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)


def _wait(proc: subprocess.Popen, cmd: list[str], log_path: Path) -> None:
    """Wait for a stage program; the tail of its log goes into the error when it fails."""
    proc.wait()
    if proc.returncode != 0:
        tail = "\n".join(log_path.read_text().splitlines()[-30:])
        raise RuntimeError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}); last lines of {log_path}:\n{tail}")


def _run(cmd: list[str], log_path: Path) -> None:
    """Run a stage program to the end (see [`_start`], [`_wait`])."""
    _wait(_start(cmd, log_path), cmd, log_path)


def training_precision() -> str:
    """The diffusion training's `--mixed_precision`: bf16 autocast where the CPU does bf16 arithmetic in hardware
    (the training stage 1.15x faster on the measured AMD EPYC, pictures as good: RECIPE.md, d23), fp32 ("no")
    elsewhere, where bf16 is emulated and slower."""
    return "bf16" if cpu_has_native_bf16() else "no"


def vlm_image_seed(seed: int) -> int:
    """The corpus seed of the toy VLM's training renders for chain seed `seed`: odd, so never the held-out renders'
    (`toyworld.vlm.HELD_OUT_SEED`, 12), and 11 for seed 0 (the recorded runs)."""
    return 11 + 2 * seed


def vlm_command(out_dir: Path, size: DemoSize, seed: int, processes: int = 2) -> list[str]:
    """The toy VLM's training program, data-parallel over `processes` processes of one torch thread each
    (`accelerate launch --multi_gpu`, gloo on CPU; `toyworld.vlm.train_toy_vlm`), no evaluation."""
    launcher = ["--num_processes", str(processes), "--num_machines", "1", "--mixed_precision", "no"]
    launcher += ["--dynamo_backend", "no", "--num_cpu_threads_per_process", "1"]
    if processes > 1:
        launcher = ["--multi_gpu", *launcher, "--main_process_port", str(free_port())]
    else:
        launcher = ["--cpu", *launcher]
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        *launcher,
        "-m",
        "diffusers_sonify.toyworld.vlm",
        "--output_dir",
        str(out_dir),
        "--threads",
        "1",
        "--eval_images",
        "0",
        "--steps",
        str(size.vlm_steps),
        "--train_images",
        str(size.vlm_train_images),
        "--seed",
        str(seed),
        "--image_seed",
        str(vlm_image_seed(seed)),
    ]


def score_describers(vlm_dir: Path, num_images: int) -> dict:
    """The toy VLM and the metadata describer on the same held-out renders (`toyworld.vlm.evaluate_describer`),
    flat keys for metrics.json: `vlm_*` and `metadata_describer_*`."""
    from .sonification.config import default_prompt_file
    from .sonification.describe import VLMDescriber
    from .toyworld.describer import ToySceneDescriber
    from .toyworld.vlm import evaluate_describer, held_out_rows

    rows = held_out_rows(num_images)
    vlm = VLMDescriber(str(vlm_dir), default_prompt_file(), max_new_tokens=VLM_MAX_NEW_TOKENS, batch_size=16)
    flat = {"describer_eval_images": num_images}
    for prefix, describer in (("vlm", vlm), ("metadata_describer", ToySceneDescriber())):
        scores = evaluate_describer(describer, rows)
        flat.update({f"{prefix}_{DESCRIBER_KEYS.get(k, k)}": v for k, v in scores.items() if k != "rows"})
    return flat


# evaluate_describer's keys -> the demo's metric names (`vlm_source_f1`, ...)
DESCRIBER_KEYS = {"precision": "source_precision", "recall": "source_recall", "f1": "source_f1"}
# an answer of the toy VLM is about 24 tokens per scene (3 sources at most: under 60); a stuck one stops here
VLM_MAX_NEW_TOKENS = 96


def describer_section(metrics: dict) -> str:
    """The describer table of the report: the toy VLM beside the metadata describer on the same held-out renders,
    and the pairing accuracy of the dataset the VLM described."""
    columns = [
        ("valid JSON", "valid_json"),
        ("source F1", "source_f1"),
        ("precision", "source_precision"),
        ("recall", "source_recall"),
        ("prominence Spearman vs area", "prominence_spearman"),
        ("setting", "setting_accuracy"),
        ("space", "space_accuracy"),
    ]
    head = "| describer | " + " | ".join(c for c, _ in columns) + " |\n|---|" + "---|" * len(columns) + "\n"
    rows = "".join(
        f"| {title} | " + " | ".join(f"{metrics[f'{prefix}_{key}']:.3f}" for _, key in columns) + " |\n"
        for title, prefix in (("toy VLM (trained here)", "vlm"), ("scene metadata (reference)", "metadata_describer"))
    )
    bars = "\n".join(
        f"| {k} | {metrics[k]:.3f} | {op} {bar} | {'met' if metrics['bars_met'][k] else 'NOT met'} |"
        for k, (op, bar) in VLM_BARS.items()
    )
    return (
        "### The describer: a VLM trained here, in the loop\n\n"
        f"The toy VLM (a {metrics['vlm_params'] / 1e6:.2f} M-parameter Idefics3, SmolVLM's family, trained for "
        f"{metrics['vlm_training_seconds']:.0f} s on renders of its own) described every image of the training "
        "corpus through the builder's `VLMDescriber`: the describe prompt, batched generation, JSON parsing. Scored "
        f"on {metrics['describer_eval_images']} held-out renders against their scene metadata, beside the metadata "
        "describer. The dataset it described paired "
        f"{metrics['pairing_accuracy']:.3f} of its sound sources with a clip of a pictured class.\n\n"
        + head
        + rows
        + f"\n| metric | value | bar | |\n|---|---|---|---|\n{bars}\n"
    )


def _decode_clips(audio_corpus) -> dict[str, list[np.ndarray]]:
    from datasets import Audio

    from .training_utils import load_training_audio

    by_category: dict[str, list[np.ndarray]] = {name: [] for name in CLASS_NAMES}
    raw = audio_corpus.cast_column("audio", Audio(decode=False))
    for row in tqdm(raw, desc="Decoding audio corpus"):
        by_category[row["category"]].append(load_training_audio(row["audio"], SAMPLING_RATE, max_seconds=None))
    return by_category


def _grid(images: list[PIL.Image.Image], cols: int, scale: int = 3) -> PIL.Image.Image:
    w, h = images[0].size
    rows = -(-len(images) // cols)
    grid = PIL.Image.new("RGB", (cols * w, rows * h), "white")
    for i, image in enumerate(images):
        grid.paste(image, ((i % cols) * w, (i // cols) * h))
    return grid.resize((grid.width * scale, grid.height * scale), PIL.Image.NEAREST)


def _pictured_and_retrieved(sonified, audio_corpus) -> tuple[list[set[str]], list[list[str]]]:
    """Per built row: the classes its image shows (scene metadata, carried by the builder) and the class of each
    retrieved clip (the audio corpus's own tag, used only here)."""
    category = dict(zip(audio_corpus["clip_id"], audio_corpus["category"]))
    pictured = [{o["class"] for o in objects} for objects in sonified["objects"]]
    retrieved = [[category[s["clip_id"]] for s in sources] for sources in sonified["sources"]]
    return pictured, retrieved


def generate(
    pipe: AudioToImagePipeline,
    sounds,
    size: DemoSize,
    seed: int,
    batch_size: int = 32,
    workers: int = 1,
    precision: str = "no",
):
    """One image per evaluation sound, each with its own seeded generator (`seed` + its index; with `size.eta` > 0
    DDIM's per-step noise comes from it too), sampled with `size`'s steps, guidance and eta in `precision` (see
    [`sampling_autocast`]).

    `workers` > 1 generates batches concurrently, each worker thread with its own copy of the pipeline and torch on
    one thread per worker: on 2 cores that is faster than one call spreading each op over two threads.
    """
    starts = list(range(0, len(sounds), batch_size))
    pipes: queue.SimpleQueue = queue.SimpleQueue()
    pipes.put(pipe)
    for _ in range(workers - 1):
        pipes.put(copy.deepcopy(pipe))

    def run(start: int) -> list[PIL.Image.Image]:
        chunk, worker_pipe = sounds[start : start + batch_size], pipes.get()
        try:
            generators = [torch.Generator().manual_seed(seed + start + i) for i in range(len(chunk))]
            with sampling_autocast("cpu", precision):
                return worker_pipe(
                    [s.audio for s in chunk],
                    sampling_rate=SAMPLING_RATE,
                    generator=generators,
                    **size.held_out_sampling,
                ).images
        finally:
            pipes.put(worker_pipe)

    images = []
    threads = torch_threads(1) if workers > 1 else contextlib.nullcontext()
    with (
        threads,
        ThreadPoolExecutor(workers) as pool,
        tqdm(total=len(sounds), desc="Generating from held-out sounds") as bar,
    ):
        for future in [pool.submit(run, start) for start in starts]:  # collected in submission order
            chunk = future.result()
            images += chunk
            bar.update(len(chunk))
    return images


def _loudness_plot(sounds, parsed, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idx = [i for i, s in enumerate(sounds) if s.kind == "loudness"]
    levels = sorted({sounds[i].lufs for i in idx})
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name in CLASS_NAMES:
        means = [
            np.mean([parsed[i].areas[name] for i in idx if sounds[i].lufs == lv and sounds[i].classes[0] == name])
            for lv in levels
        ]
        ax.plot(levels, means, marker="o", label=name, color=np.array(CLASSES[CLASS_NAMES.index(name)].colour) / 255)
    ax.set_xlabel("input loudness (LUFS)")
    ax.set_ylabel("generated area of the sound's class (px)")
    ax.set_title("Louder sound -> bigger object")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _bar_verdicts(metrics: dict) -> dict[str, bool]:
    return {k: (metrics[k] >= v if op == ">=" else metrics[k] <= v) for k, (op, v) in ALL_BARS.items() if k in metrics}


def _field_section(metrics: dict) -> str:
    """The field's metrics (issue 12) measured with the toy world's scorers, beside their floor."""
    rows = [
        ("FID, generated vs held-out renders", "fid_toy", "fid_toy_floor"),
        ("KID, generated vs held-out renders", "kid_toy", "kid_toy_floor"),
        ("AIS (win rate, class space)", "ais_toy", None),
        ("IIS (win rate vs the scene's render)", "iis_toy", None),
        ("AIC (classifier class accuracy)", "aic_toy", None),
    ]
    table = "\n".join(
        f"| {title} | {metrics[key]:.3f} | {'' if floor is None else f'{metrics[floor]:.3f}'} |"
        for title, key, floor in rows
    )
    return (
        "### The field's metrics, measured in the toy world\n\n"
        "FID/KID use the features of a classifier trained on toy renders "
        f"({metrics['toy_classifier_accuracy']:.3f} held-out presence accuracy); the floor is a held-out render set "
        "against as many training renders. Full report, probes and grids: "
        "[evaluation/report.md](evaluation/report.md).\n\n"
        f"| metric | generated | floor |\n|---|---|---|\n{table}\n"
    )


def write_report(
    out: Path,
    metrics: dict,
    sounds,
    images,
    parsed,
    quick: bool,
    extra_sections: tuple[str, ...] = (),
    describer: str = "metadata",
) -> None:
    """report.md with grids, the loudness plot and the metrics table; `describer` ("metadata" or "vlm") is who
    described the images for the builder."""
    sections = []
    for kind, cols, title in [
        ("single", 8, "Single sources (one row per class: " + ", ".join(CLASS_NAMES) + ")"),
        ("mixture", 9, "Two-source mixtures"),
        ("loudness", 5, "The same clip at rising loudness (left to right)"),
        ("reverb", 8, "Dry (outdoor expected) / reverberant (indoor expected), in pairs"),
        ("sweep", 8, "A -> B sweeps (mixing gain of B rising left to right)"),
    ]:
        chosen = [im for s, im in zip(sounds, images) if s.kind == kind]
        if chosen:
            _grid(chosen, cols).save(out / f"grid_{kind}.png")
            sections.append(f"### {title}\n\n![{kind}](grid_{kind}.png)\n")
    if any(s.kind == "loudness" for s in sounds):
        _loudness_plot(sounds, parsed, out / "loudness_vs_area.png")
        sections.append("### Loudness vs generated area\n\n![loudness](loudness_vs_area.png)\n")
    verdicts = _bar_verdicts(metrics)
    sampling = metrics["sampling"]
    rows = "\n".join(
        f"| {k} | {metrics[k]:.3f} | {BARS[k][0]} {BARS[k][1]} | {'met' if verdicts[k] else 'NOT met'} |"
        for k in BARS
        if k in metrics
    )
    sections.extend(extra_sections)
    if "fid_toy" in metrics:
        sections.append(_field_section(metrics))
    precision = {"bf16": "bf16 autocast", "no": "fp32"}.get(metrics.get("training_precision"), "unrecorded precision")
    steps = metrics.get("train_steps", "unrecorded")
    note = f"\n**Quick mode: tiny data and {steps} training steps; these numbers mean nothing.**\n" if quick else ""
    (out / "report.md").write_text(
        "# diffusers-sonify toy-world demo\n" + note + "\n"
        "Two unpaired corpora were generated, paired by the sonification builder ("
        + (
            "a toy VLM trained here describes each image"
            if describer == "vlm"
            else "a describer reading the scene metadata"
        )
        + " -> MiniLM "
        "retrieval -> LUFS from prominence, reverb from the scene, mixing), and an `AudioToImagePipeline` was "
        "trained on the result. Every image below was generated from a held-out sound the model never heard and "
        "measured by the scene parser.\n\n"
        f"| metric | value | bar | |\n|---|---|---|---|\n{rows}\n\n"
        f"{metrics['num_eval_images']} evaluation images; whole demo {metrics['wall_seconds']:.0f} s on "
        f"{metrics.get('machine', 'an unrecorded machine')}, {steps} training steps, training and sampling in "
        f"{precision} (stage times in metrics.json); the held-out sounds were sampled with "
        f"{sampling['num_inference_steps']} DDIM steps, guidance {sampling['guidance_scale']:g} (rescale "
        f"{sampling['guidance_rescale']:g}) and eta {sampling['eta']:g}.\n\n" + "\n".join(sections)
    )


def _field_metrics(out: Path, model_dir: Path, inputs: dict, size: DemoSize, seed: int, precision: str) -> dict:
    """Issue 12: the evaluation CLI on the demo's model with the toy world's scorers (`inputs`: their classifier,
    scenes and floor, from `prepare_toy_field_metrics`), sampling in `precision` (the training's); flat keys for
    metrics.json."""
    field = toy_field_metrics(
        out,
        model_dir,
        num_scenes=size.field_scenes,
        seed=seed,
        prepared=inputs,
        num_inference_steps=size.sampling_steps,
        guidance_scale=size.guidance_scale,
        guidance_rescale=size.guidance_rescale,
        mixed_precision=precision,
    )
    keys = {"fid": "fid_toy", "fid_floor": "fid_toy_floor", "kid_mean": "kid_toy", "kid_floor": "kid_toy_floor"}
    keys.update(ais="ais_toy", ais_mean_cosine="ais_mean_cosine_toy", iis="iis_toy", aic="aic_toy")
    flat = {new: field[old] for old, new in keys.items()}
    flat["toy_classifier_accuracy"] = field["classifier"]["presence_exact"]
    flat["field_metrics"] = field
    return flat


def renders_vs_generations(out: Path, num_pairs: int = 16) -> tuple[dict, str]:
    """The held-out scenes of the field's metrics (`<out>/eval_scenes`) beside the images the evaluation CLI
    generated from their soundtracks (`<out>/evaluation/images`): writes `grid_renders_vs_generated.png` and returns
    the renders' own parser measures (what a perfect generator would score) and the report lines."""
    from datasets import load_from_disk

    renders = list(load_from_disk(str(out / "eval_scenes"))["image"])
    folder = out / "evaluation" / "images"
    generated = [PIL.Image.open(path).convert("RGB") for path in sorted(folder.glob("*.png"))]
    if len(generated) != len(renders):
        raise RuntimeError(f"{len(generated)} generated images in {folder} for {len(renders)} held-out scenes.")
    parsed = parse_scenes(renders)
    metrics = {
        "render_background_noise": float(np.mean([p.background_noise for p in parsed])),
        "generated_scene_background_noise": float(np.mean([p.background_noise for p in parse_scenes(generated)])),
    }
    n = min(num_pairs, len(renders))
    _grid([im for i in range(n) for im in (renders[i], generated[i])], 8).save(out / "grid_renders_vs_generated.png")
    lines = (
        "### Renders and generations of the same held-out scenes\n\n"
        f"Pairs of render | image generated from that scene's soundtrack (the first {n} held-out scenes of the "
        "field's metrics; the first six are single sources, one per class). "
        "Background noise (std of background pixels): "
        f"renders {metrics['render_background_noise']:.4f}, these generations "
        f"{metrics['generated_scene_background_noise']:.4f}.\n\n"
        "![renders vs generated](grid_renders_vs_generated.png)\n"
    )
    return metrics, lines


def edit_section(model_dir: Path, out: Path, size: DemoSize, seed: int, precision: str = "no") -> tuple[dict, str]:
    """Sound edits a picture: held-out renders edited by held-out sounds (`toyworld/editing.py`), measured by the
    parser. The documented edit is inpainting with the parser's mask of the input (`AudioToImageInpaintPipeline`,
    checked against the bars); unmasked SDEdit (`AudioToImageImg2ImgPipeline`) is reported beside it. Writes
    `grid_edits.png` (input render | sound | inpainted | SDEdit) and returns the metrics and report lines."""
    from .toyworld.editing import (
        EDIT_BARS,
        EDIT_KINDS,
        EDIT_STRENGTH,
        INPAINT_STRENGTH,
        edit_metrics,
        make_edit_cases,
        repaint_mask,
        run_edits,
        sound_picture,
    )

    sdedit = AudioToImageImg2ImgPipeline.from_pretrained(model_dir)
    sdedit.set_progress_bar_config(disable=True)
    inpaint = AudioToImageInpaintPipeline.from_pipe(sdedit)
    inpaint.set_progress_bar_config(disable=True)
    cases = make_edit_cases(seed=seed, per_kind=12 if size.eval_scale else 1)
    sampling = {
        "num_inference_steps": size.sampling_steps,
        "guidance_scale": size.guidance_scale,
        "guidance_rescale": size.guidance_rescale,
        "seed": seed,
    }
    masks = [repaint_mask(c.render) for c in cases]
    with sampling_autocast("cpu", precision):
        inpainted = run_edits(inpaint, cases, strength=INPAINT_STRENGTH, masks=masks, **sampling)
        unmasked = run_edits(sdedit, cases, strength=EDIT_STRENGTH, **sampling)
    metrics = edit_metrics(cases, parse_scenes(inpainted))
    sdedit_metrics = edit_metrics(cases, parse_scenes(unmasked))
    metrics.update({f"sdedit_{k}": v for k, v in sdedit_metrics.items()})
    metrics["edit_strength"] = INPAINT_STRENGTH
    metrics["sdedit_strength"] = EDIT_STRENGTH
    metrics["edit_bars_met"] = {k: metrics[k] >= bar for k, bar in EDIT_BARS.items() if k in metrics}
    rows = [i for kind in EDIT_KINDS for i in [j for j, c in enumerate(cases) if c.kind == kind][:4]]
    columns = [(cases[i].render, sound_picture(cases[i].audio), inpainted[i], unmasked[i]) for i in rows]
    _grid([im for case in columns for im in case], 8).save(out / "grid_edits.png")
    table = "\n".join(
        f"| {k} | {metrics[k]:.3f} | {sdedit_metrics[k]:.3f} | >= {bar} | "
        f"{'met' if metrics['edit_bars_met'][k] else 'NOT met'} |"
        for k, bar in EDIT_BARS.items()
        if k in metrics
    )
    lines = (
        f"\n## Sound edits a picture\n\n{len(cases)} held-out renders, each edited by a held-out sound. The "
        f"documented edit is `AudioToImageInpaintPipeline` at strength {INPAINT_STRENGTH} with `mask_image` = the "
        "scene parser's background mask of the input (white = repaint; the objects are kept); unmasked SDEdit "
        f"(`AudioToImageImg2ImgPipeline`, strength {EDIT_STRENGTH}) is the comparison column. In the grid (rows of "
        "two cases: to indoor, to outdoor, add a class, two rows each) every case is input render | sound "
        "(spectrogram) | inpainted | SDEdit.\n\n"
        "![edits](grid_edits.png)\n\n"
        f"| metric | inpainting | SDEdit | bar | inpainting |\n|---|---|---|---|---|\n{table}\n"
    )
    return metrics, lines


def _quiet_library_progress() -> None:
    """The demo's own stages show progress; per-file save and per-model load bars inside them are noise."""
    import datasets
    import diffusers
    import transformers

    datasets.disable_progress_bars()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def write_example_sounds(folder: Path, seed: int) -> list[Path]:
    """Held-out example sounds for the README quickstart: one clip per class (`bell.wav`, ...) and a reverberant
    one (`rain_indoors.wav`), 16 kHz WAV, made like the training soundtracks."""
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    sounds = make_eval_sounds(
        seed=seed + 7, singles_per_class=1, mixtures_per_pair=0, loudness_series_per_class=0, num_sweeps=0
    )
    written = []
    for s in sounds:
        if s.kind == "single" or (s.kind == "reverb" and s.classes[0] == "rain" and s.setting == "indoor"):
            name = s.classes[0] + ("_indoors" if s.kind == "reverb" else "")
            path = folder / f"{name}.wav"
            if path not in written:
                sf.write(path, s.audio, SAMPLING_RATE)
                written.append(path)
    return written


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="outputs/demo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny everything, for tests")
    parser.add_argument(
        "--describer",
        choices=["metadata", "vlm"],
        default="vlm",
        help="who describes the images for the builder: the toy VLM trained in the chain (the default, recorded in "
        "docs/demo), or the scene metadata (the reference describer, no VLM stage)",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        help="benchmark: run the whole chain once per seed (into <output_dir>/seed_<s>) and summarise every metric",
    )
    parser.add_argument(
        "--train_steps",
        type=_positive_int,
        default=None,
        help=f"diffusion training steps (default: the training config's max_train_steps, {RECIPE_TRAIN_STEPS}, which "
        "took the chain 9-13 minutes on the measured 2-core boxes with bf16 arithmetic, 26-28 on one without, and met "
        "every picture bar on the Xeon's three seeds, two of three on the EPYCs'); 3000 draws the outlines better "
        "still (d30's recipe: shape 0.96-0.98) and takes about 6 minutes more on a bf16 box (toyworld/RECIPE.md, "
        "'d30', 'd35', 'd38', 'd40')",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    _quiet_library_progress()
    if args.seeds is not None:
        return run_seeds(args.seeds, Path(args.output_dir), args.quick, args.describer, args.train_steps)
    return run_demo(args)


def _positive_int(value: str) -> int:
    """argparse type: an integer >= 1."""
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {value}")
    return number


def _numeric_metrics(metrics: dict) -> dict[str, float]:
    """The scalar metrics of one run (nested field metrics and lists left out)."""
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("edit_strength", "seed")
    }


def summarize_seeds(per_seed: dict[int, dict]) -> dict:
    """min / median / max of every scalar metric over seeds, and on how many seeds each bar was met."""
    numeric = {seed: _numeric_metrics(m) for seed, m in per_seed.items()}
    keys = sorted(set.intersection(*(set(m) for m in numeric.values())))
    summary = {}
    for key in keys:
        values = [numeric[seed][key] for seed in per_seed]
        summary[key] = {
            "min": float(np.min(values)),
            "median": float(np.median(values)),
            "max": float(np.max(values)),
            "per_seed": dict(zip(map(str, per_seed), values)),
        }
    bars = [k for k in ALL_BARS if k in BARS or k in summary]
    bars_met = {k: sum(bool(m.get("bars_met", {}).get(k)) for m in per_seed.values()) for k in bars}
    return {"seeds": list(per_seed), "metrics": summary, "bars_met_on_seeds": bars_met}


def _finished_run(folder: Path, seed: int, quick: bool, describer: str, train_steps: int | None = None) -> dict | None:
    """The metrics of a finished chain in `folder` if it ran with this seed, size, describer and training steps
    (None: the size's default; its metrics.json is written last but for the report), else None."""
    path = folder / "metrics.json"
    if not (path.is_file() and (folder / "report.md").is_file()):
        return None
    metrics = json.loads(path.read_text())
    ran_vlm = "vlm_params" in metrics  # runs before the `describer` key was recorded
    # runs before `train_steps` was recorded trained the size's default, as `run_demo` derives it
    default_steps = (QUICK if quick else DemoSize()).train_steps or RECIPE_TRAIN_STEPS
    same = (
        metrics.get("quick") == quick
        and metrics.get("seed", seed) == seed
        and metrics.get("describer", "vlm" if ran_vlm else "metadata") == describer
        and ran_vlm == (describer == "vlm")
        and metrics.get("train_steps", default_steps) == (train_steps or default_steps)
    )
    return metrics if same else None


def run_seeds(
    seeds: list[int], output_dir: Path, quick: bool, describer: str = "vlm", train_steps: int | None = None
) -> dict:
    """`--seeds`: the whole chain once per seed (separate folders), then `seeds.json` / `seeds.md` in `output_dir`."""
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"`--seeds` has repeated values {seeds}; pass distinct seeds.")
    output_dir.mkdir(parents=True, exist_ok=True)
    per_seed = {}
    for seed in seeds:
        folder = output_dir / f"seed_{seed}"
        done = _finished_run(folder, seed, quick, describer, train_steps)
        if done is not None:  # a seed's chain takes ~10 minutes: a rerun after an interruption keeps finished seeds
            logger.info("[demo] seed %d of %s: reusing the finished run in %s", seed, seeds, folder)
            per_seed[seed] = done
            continue
        logger.info("[demo] seed %d of %s", seed, seeds)
        argv = ["--output_dir", str(folder), "--seed", str(seed), "--describer", describer]
        argv += ["--quick"] if quick else []
        argv += ["--train_steps", str(train_steps)] if train_steps is not None else []
        per_seed[seed] = main(argv)
    summary = summarize_seeds(per_seed)
    (output_dir / "seeds.json").write_text(json.dumps(summary, indent=2))
    rows = []
    for key, stats in summary["metrics"].items():
        op_bar = ALL_BARS.get(key)
        bar = f"{op_bar[0]} {op_bar[1]}" if op_bar else ""
        met = f"{summary['bars_met_on_seeds'][key]}/{len(seeds)}" if op_bar else ""
        rows.append(f"| {key} | {stats['min']:.3f} | {stats['median']:.3f} | {stats['max']:.3f} | {bar} | {met} |")
    note = "\n**Quick mode: these numbers mean nothing.**\n" if quick else ""
    steps_flag = f" --train_steps {train_steps}" if train_steps is not None else ""
    (output_dir / "seeds.md").write_text(
        f"# diffusers-sonify toy-world demo over seeds {', '.join(map(str, seeds))}\n{note}\n"
        "Each seed trains the whole chain (corpora, encoder, "
        + ("toy VLM, builder with the VLM describer" if describer == "vlm" else "builder with the metadata describer")
        + ", training, evaluation) in its own folder (`seed_<s>/report.md`); `python -m diffusers_sonify.demo "
        f"--seeds {' '.join(map(str, seeds))} --describer {describer}{steps_flag}`.\n\n"
        "| metric | min | median | max | bar | seeds meeting it |\n|---|---|---|---|---|---|\n"
        + "\n".join(rows)
        + "\n"
    )
    logger.info("[demo] summary over seeds %s: %s", seeds, output_dir / "seeds.md")
    return summary


def run_demo(args: argparse.Namespace) -> dict:
    """The whole chain for one seed (`main` without `--seeds`)."""
    size = QUICK if args.quick else DemoSize()
    if args.train_steps is not None:
        size = replace(size, train_steps=args.train_steps)
    train_steps = size.train_steps or RECIPE_TRAIN_STEPS
    out = Path(args.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    stages: dict[str, float] = {}

    def begin(name: str) -> float:
        if not args.quick:
            measured, here = stage_eta(name, train_steps, stages)
            total = len(STAGE_ETA) - (args.describer != "vlm")
            pace = "" if here is None else f"; at this box's pace so far, about {here:.0f} s"
            logger.info(
                "[demo] %d/%d %s: about %d s on the measured 2-core box%s",
                len(stages) + 1,
                total,
                name,
                measured,
                pace,
            )
        return time.time()

    def stage(name: str, t0: float) -> None:
        stages[name] = round(time.time() - t0, 1)
        logger.info("[demo] %s done in %.1f s", name, stages[name])

    # 1. Corpora (unpaired; different seeds)
    t0 = begin("corpora")
    corpora = out / "corpora"
    images_ds = make_image_corpus(size.num_images, seed=args.seed)
    audio_ds = make_audio_corpus(size.clips_per_class, seed=args.seed + 1)
    for name, ds in (("images", images_ds), ("audio", audio_ds)):
        shutil.rmtree(corpora / name, ignore_errors=True)
        ds.save_to_disk(str(corpora / name))
    stage("corpora", t0)

    # 2. Audio encoder, pre-trained on the audio corpus alone, then frozen, on one thread; the toy VLM's two
    # processes train meanwhile (3.) and have both cores once the encoder is done
    use_vlm = args.describer == "vlm"
    vlm_dir, vlm_cmd = out / "toy_vlm", vlm_command(out / "toy_vlm", size, args.seed)
    vlm_started = time.time()
    vlm_proc = _start(vlm_cmd, out / "vlm.log") if use_vlm else None
    t0 = begin("audio_encoder")
    encoder, feature_extractor = toy_audio_encoder(args.seed)
    with torch_threads(1) if use_vlm else contextlib.nullcontext():
        losses = pretrain_audio_encoder(
            encoder,
            feature_extractor,
            _decode_clips(audio_ds),
            num_mixtures=size.encoder_mixtures,
            steps=size.encoder_steps,
            seed=args.seed,
        )
    encoder.save_pretrained(out / "audio_encoder")
    feature_extractor.save_pretrained(out / "audio_encoder")
    stage("audio_encoder", t0)

    # 3. What the evaluation needs before there is a model (toy classifier, held-out scenes, FID floor), on one
    # thread while the toy VLM's processes train: it delays the VLM by about half its own time (RECIPE.md, d28)
    t0 = begin("evaluation_inputs")
    with torch_threads(1) if use_vlm else contextlib.nullcontext():
        field_inputs = prepare_toy_field_metrics(
            out,
            list(images_ds.select(range(size.field_scenes))["image"]),
            num_scenes=size.field_scenes,
            seed=args.seed,
            classifier_kwargs=size.field_classifier,
        )
    stage("evaluation_inputs", t0)

    # 4. The toy VLM: wait for its training, then score it and the metadata describer on held-out renders
    describer_metrics, describer_args = {}, []
    if use_vlm:
        t0 = begin("vlm")
        _wait(vlm_proc, vlm_cmd, out / "vlm.log")
        record = json.loads((vlm_dir / "toy_vlm_training.json").read_text())
        describer_metrics = {"vlm_params": record["params"], "vlm_training_seconds": record["train_seconds"]}
        describer_metrics["vlm_seconds_from_start"] = round(time.time() - vlm_started, 1)
        describer_metrics.update(score_describers(vlm_dir, size.vlm_eval_images))
        stage("vlm", t0)
        describer_args = ["--describer", "diffusers_sonify.sonification.describe:VLMDescriber"]
        describer_args += ["--vlm_model", str(vlm_dir), "--max_new_tokens", str(VLM_MAX_NEW_TOKENS)]
        describer_args += ["--describe_batch_size", "16", "--torch_dtype", "float32"]

    # 5. Sonified dataset, with the builder program (and the toy VLM as its describer)
    t0 = begin("build")
    sonified_dir = out / "sonified"
    _run(
        [
            sys.executable,
            "-m",
            "diffusers_sonify.build",  # dataset_builder/build.py, shipped with the package
            str(config_path("dataset_builder", "toyworld.yaml")),
            "--image_dataset",
            str(corpora / "images"),
            "--audio_dataset",
            str(corpora / "audio"),
            "--output_dir",
            str(sonified_dir),
            *describer_args,
        ],
        out / "build.log",
    )
    stage("build", t0)

    # 6. Training, with the training program
    t0 = begin("train")
    model_dir, precision = out / "model", training_precision()
    train_cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--cpu",
        "--num_processes",
        "1",
        "--num_machines",
        "1",
        "--mixed_precision",
        precision,
        "--dynamo_backend",
        "no",
        "--num_cpu_threads_per_process",
        "2",  # accelerate's CPU default, given so that it does not warn about choosing it
        "-m",
        "diffusers_sonify.train",  # train_scripts/train.py, shipped with the package
        str(config_path("train_scripts", "toyworld.yaml")),
        "--dataset_name",
        str(sonified_dir),
        "--audio_encoder_name_or_path",
        str(out / "audio_encoder"),
        "--output_dir",
        str(model_dir),
        "--cache_dir",
        str(out / "cache"),
    ]
    if use_vlm:  # REPA: the UNet's mid block learns to predict what the chain's own toy VLM sees in the picture
        train_cmd += ["--repa_encoder_name_or_path", str(vlm_dir)]
    if size.train_steps is not None:
        train_cmd += ["--max_train_steps", str(size.train_steps)]
    _run(train_cmd, out / "train.log")
    stage("train", t0)

    # 7. Evaluation on held-out sounds
    t0 = begin("evaluate")
    pipe = AudioToImagePipeline.from_pretrained(model_dir)
    pipe.set_progress_bar_config(disable=True)
    if size.eval_scale:
        # 8 sweeps (not the default 4): the sweep metric reads the mean curve, so more sweeps measure it better
        sounds = make_eval_sounds(seed=args.seed, num_sweeps=8)
    else:
        sounds = make_eval_sounds(
            seed=args.seed,
            singles_per_class=1,
            mixtures_per_pair=1,
            loudness_series_per_class=1,
            reverb_pairs_per_class=1,
            num_sweeps=1,
        )
    images = generate(pipe, sounds, size, seed=args.seed, workers=size.eval_workers, precision=precision)
    parsed = parse_scenes(images)
    metrics = evaluate_parsed(sounds, parsed)
    sonified = load_dataset_folder(sonified_dir, split="train")
    built_rows = json.loads((sonified_dir / "build_report.json").read_text())["num_rows"]
    if len(sonified) != built_rows:
        raise RuntimeError(f"{sonified_dir} loaded {len(sonified)} rows but the builder wrote {built_rows}.")
    metrics["pairing_accuracy"] = retrieved_in_picture(*_pictured_and_retrieved(sonified, audio_ds))
    metrics["num_training_pairs"] = len(sonified)
    metrics.update(describer_metrics)
    metrics["encoder_pretraining_losses"] = losses
    metrics.update(_field_metrics(out, model_dir, field_inputs, size, args.seed, precision))
    side_metrics, side_lines = renders_vs_generations(out)
    metrics.update(side_metrics)
    edit_metrics, edit_lines = edit_section(model_dir, out, size, args.seed, precision)
    metrics.update(edit_metrics)
    stage("evaluate", t0)
    metrics["stage_seconds"] = stages
    metrics["wall_seconds"] = round(time.time() - start, 1)
    metrics["quick"] = args.quick
    metrics["train_steps"] = json.loads((model_dir / "train_log.jsonl").read_text().splitlines()[-1])["step"]
    metrics["seed"], metrics["describer"] = args.seed, args.describer
    metrics["machine"], metrics["training_precision"] = cpu_summary(), precision
    metrics["sampling"] = size.held_out_sampling
    metrics["bars_met"] = _bar_verdicts(metrics)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    sections = ((describer_section(metrics),) if use_vlm else ()) + (side_lines,)
    write_report(out, metrics, sounds, images, parsed, args.quick, sections, args.describer)
    examples = write_example_sounds(out / "examples", seed=args.seed)
    with open(out / "report.md", "a") as report:
        report.write(edit_lines)
    for key, (op, bar) in BARS.items():
        logger.info(
            "[demo] %-28s %8.3f  (bar %s %s: %s)",
            key,
            metrics[key],
            op,
            bar,
            "met" if metrics["bars_met"][key] else "NOT met",
        )
    logger.info("[demo] report: %s (%.0f s in all)", out / "report.md", metrics["wall_seconds"])
    logger.info(
        "[demo] the trained pipeline (32x32 images) is in %s; try it with %s: see README, Quickstart",
        model_dir,
        ", ".join(sorted(p.name for p in examples)),
    )
    return metrics


if __name__ == "__main__":
    main()
