"""The toy VLM: a small `Idefics3ForConditionalGeneration` (SmolVLM's family, the builder's default VLM) trained here
on the toy image corpus to answer the builder's describe prompt with its JSON schema.

It is saved with `save_pretrained` (model, processor, tokenizer, chat template), so the builder loads it by path
through exactly the code a Hub VLM id takes ([`~diffusers_sonify.sonification.describe.VLMDescriber`]: batched
generation, JSON parsing and repair). [`evaluate_describer`] scores any describer on held-out renders against the
scene metadata, so the trained VLM and the metadata describer (`ToySceneDescriber`) are compared on the same rows.

    python -m diffusers_sonify.toyworld.vlm --output_dir outputs/toy-vlm   # trains, saves, prints the metrics
    # data-parallel over two processes of one thread each (gloo on CPU), as the demo runs it:
    accelerate launch --multi_gpu --num_processes 2 --num_cpu_threads_per_process 1 \\
        -m diffusers_sonify.toyworld.vlm --output_dir outputs/toy-vlm --threads 1
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .corpora import image_corpus_rows
from .world import CLASS_BY_NAME, distance_from_prominence


def vlm_answer(objects: list[dict], setting: str, space: str) -> str:
    """The answer the toy VLM learns for a scene: its objects, most prominent first, named by class with the class's
    first sound wording, prominence to one decimal, distance from prominence; then the acoustic space. One answer
    per scene, so the model learns what it sees rather than a random choice among wordings."""
    sources = []
    for obj in sorted(objects, key=lambda o: -float(o["prominence"])):
        prominence = round(float(obj["prominence"]), 1)
        sources.append(
            {
                "name": obj["class"],
                "sound": CLASS_BY_NAME[obj["class"]].sound_queries[0],
                "prominence": prominence,
                "distance": distance_from_prominence(prominence),
            }
        )
    return json.dumps({"sound_sources": sources, "scene": {"setting": setting, "space": space}})


@dataclass
class ToyVLMConfig:
    """Size and schedule of the toy VLM (defaults: the recorded run in `toyworld/RECIPE.md`)."""

    hidden_size: int = 128
    num_hidden_layers: int = 3
    vocab_size: int = 1024
    # tokens may span words up to this many characters; 0: merges within words. 16 made the prompt (16-token image)
    # 128 tokens instead of 313 and an answer about 24 instead of 69; 32 makes the prompt (64-token image) 137
    # tokens instead of 176 and an answer 14 instead of 25, with answers as good; 64 and 128 shorten them further
    # but learn worse answers in the same steps (toyworld/RECIPE.md, "Toy VLM v4")
    max_token_length: int = 32
    # image tokens per render: (32 / 4 / scale_factor) ** 2 after Idefics3's pixel-shuffle connector; 64 tokens
    # (scale factor 1) read sizes much better than 16 (prominence Spearman 0.68 vs 0.43, RECIPE.md run B)
    scale_factor: int = 1
    # pixels per vision patch side (32 / patch_size) ** 2 patches per render
    patch_size: int = 4
    train_images: int = 4000
    # 700 with Muon: 600 met every describer bar (F1 0.993, Spearman 0.961), 400 missed F1 (0.947); with AdamW it
    # took 1,000 (RECIPE.md d15). Muon's step costs what the fewer steps save at one thread per process (160 s for
    # 700 against AdamW's 157 s for 1,000), for a lower loss (RECIPE.md, "Muon")
    steps: int = 700
    batch_size: int = 16
    # 1e-3: F1 1.000 and prominence Spearman 0.947 at 1,200 steps; 3e-3 plateaued at a loss twice as high (F1 0.933,
    # Spearman 0.684 at 2,400 steps; toyworld/RECIPE.md runs B, E-H)
    learning_rate: float = 1e-3
    warmup_steps: int = 50
    # "muon": Muon on the Linear weight matrices, AdamW on embeddings, norms, the patch embedding and the LM head
    # (diffusers_sonify.optimization); "adamw": AdamW on everything (d12-d16)
    optimizer: str = "muon"
    seed: int = 0
    image_seed: int = 11


def build_toy_vlm(config: ToyVLMConfig, prompt: str, answers: list[str]):
    """`(processor, model)`: a random Idefics3 at `config`'s width for 32x32 renders (`(32 / patch_size /
    scale_factor) ** 2` image tokens each), with a BPE tokenizer learned on the prompt and `answers`
    ([`~diffusers_sonify.tiny.tiny_idefics3`]); the prompt counts as a tenth of the answers in the tokenizer's
    training text, enough for its words to merge into long tokens."""
    from ..tiny import tiny_idefics3

    return tiny_idefics3(
        None,
        seed=config.seed,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        image_size=32,
        patch_size=config.patch_size,
        tokenizer_texts=[prompt] * max(1, len(answers) // 10) + list(answers),
        vocab_size=config.vocab_size,
        max_token_length=config.max_token_length or None,
        scale_factor=config.scale_factor,
    )


def answer_tokens(processor, prompt: str, image, answers: list[str]) -> tuple[torch.Tensor, list[list[int]]]:
    """`(prefix, targets)` for teacher forcing: the ids of the image tokens and the describe prompt through the chat
    template (the same for every render; `image` sets the image-token count), and each answer's ids followed by the
    end-of-utterance token."""
    from ..sonification.describe import image_prompt

    prefix = processor(images=[[image]], text=[image_prompt(processor, prompt)], return_tensors="pt")["input_ids"][0]
    eos = processor.tokenizer.convert_tokens_to_ids("<end_of_utterance>")
    return prefix, [processor.tokenizer(a, add_special_tokens=False)["input_ids"] + [eos] for a in answers]


def answer_loss(
    model,
    processor,
    prefix: torch.Tensor,
    targets: list[list[int]],
    images: list,
    num_items: float | None = None,
    all_logits: bool = False,
) -> torch.Tensor:
    """Teacher-forced loss of one batch: each row is `prefix` (image tokens and the describe prompt, the same for
    every render) followed by its target ids, right-padded; the loss is the mean over target tokens, or their sum
    divided by `num_items` (a data-parallel rank's share of a global batch's mean).

    Logits are computed only where a target token is predicted (from the prefix's last position on): the language
    model head over the whole prompt was a tenth of a step, and the loss is the same. `all_logits=True` computes them
    at every position (the model's plain causal-LM loss; `benchmarks/toy_vlm.py` times the two)."""
    length = len(prefix) + max(map(len, targets))
    input_ids = torch.full((len(targets), length), processor.tokenizer.pad_token_id)
    labels = torch.full_like(input_ids, -100)
    attention_mask = torch.zeros_like(input_ids)
    for b, target in enumerate(targets):
        end = len(prefix) + len(target)
        input_ids[b, : len(prefix)] = prefix
        input_ids[b, len(prefix) : end] = torch.tensor(target)
        labels[b, len(prefix) : end] = torch.tensor(target)
        attention_mask[b, :end] = 1
    pixels = processor.image_processor([[image] for image in images], return_tensors="pt")
    keep = 0 if all_logits else length - len(prefix) + 1  # 0: every position
    return model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        pixel_values=pixels["pixel_values"],
        pixel_attention_mask=pixels["pixel_attention_mask"],
        labels=labels[:, -keep:],  # the model's causal-LM loss shifts them by one against the kept logits (-0: all)
        logits_to_keep=keep,
        num_items_in_batch=num_items,
    ).loss


def train_toy_vlm(config: ToyVLMConfig, output_dir: str, prompt_file: str | None = None, log=print) -> dict:
    """Train the toy VLM on `config.train_images` renders to answer the describe prompt, save it to `output_dir`
    (loadable by `AutoProcessor` / `AutoModelForImageTextToText`), and return the training record.

    Teacher forcing: the prompt (image tokens + the builder's describe prompt through the chat template) is the
    prefix, the loss covers the answer tokens and the end-of-utterance token only.

    Data-parallel under `accelerate launch --multi_gpu --num_processes N` (on CPU: N processes, gloo): every rank
    draws the same global batch of `config.batch_size` renders and trains on its share, each rank's loss is its
    answer tokens' sum over the global batch's token count (times N, which DDP's gradient mean divides out), so the
    objective, the batches and the schedule are one process's; the main process saves and returns the record, the
    others return `{}`.
    """
    from accelerate import Accelerator

    from ..optimization import make_optimizer
    from ..sonification.config import default_prompt_file
    from ..sonification.describe import read_prompt

    accelerator = Accelerator(cpu=True)
    rank, world = accelerator.process_index, accelerator.num_processes
    if config.batch_size % world:
        raise ValueError(f"batch_size {config.batch_size} does not split over {world} processes; use a multiple.")
    prompt, prompt_version = read_prompt(prompt_file or default_prompt_file())
    rows = list(image_corpus_rows(config.train_images, seed=config.image_seed))
    answers = [vlm_answer(r["objects"], r["setting"], r["space"]) for r in rows]
    processor, model = build_toy_vlm(config, prompt, answers[:500])
    prefix, targets = answer_tokens(processor, prompt, rows[0]["image"], answers)

    torch.manual_seed(config.seed)
    params = list(model.parameters())
    optimizer = make_optimizer(config.optimizer, {"vlm": model}, params, lr=config.learning_rate, weight_decay=0.0)

    def lr_factor(step: int) -> float:  # linear warm-up, cosine decay to 0
        return min(1.0, (step + 1) / config.warmup_steps) * 0.5 * (1 + math.cos(math.pi * step / config.steps))

    # the scheduler is not prepared: accelerate's wrapper would step it once per process
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    model, optimizer = accelerator.prepare(model, optimizer)
    rng = np.random.default_rng(config.seed)
    model.train()
    losses, start = [], time.perf_counter()
    for step in range(config.steps):
        batch = rng.choice(len(rows), config.batch_size, replace=False)
        num_items = sum(len(targets[i]) for i in batch) / world
        mine = batch[rank::world]
        loss = answer_loss(
            model, processor, prefix, [targets[i] for i in mine], [rows[i]["image"] for i in mine], num_items
        )
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(accelerator.reduce(loss.detach(), "mean").item())
        if log and accelerator.is_main_process and (step % 100 == 0 or step == config.steps - 1):
            log(f"toy VLM step {step}: loss {losses[-1]:.4f} ({time.perf_counter() - start:.0f} s)")
    model = accelerator.unwrap_model(model)
    model.eval()
    train_seconds = time.perf_counter() - start
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return {}
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    processor.save_pretrained(output_dir)
    model.save_pretrained(output_dir)
    record = {
        "config": asdict(config),
        "prompt_version": prompt_version,
        "prompt_tokens": len(prefix),
        "params": sum(p.numel() for p in model.parameters()),
        "processes": world,
        "train_seconds": train_seconds,
        "final_loss": float(np.mean(losses[-20:])),
    }
    (Path(output_dir) / "toy_vlm_training.json").write_text(json.dumps(record, indent=1))
    return record


def _class_of(name: str) -> str | None:
    """The toy class a source name refers to: the class name, or one of its image-side wordings."""
    name = name.strip().lower()
    for cls in CLASS_BY_NAME.values():
        if name == cls.name or name in cls.image_names or cls.name in name.split():
            return cls.name
    return None


def evaluate_describer(describer, rows: list[dict]) -> dict:
    """Score a describer on rendered scenes against their metadata.

    Returns `valid_json` (rows not skipped), source-set `precision` / `recall` / `f1` of the named classes (mean
    over rows; a skipped row counts as an empty answer), `prominence_spearman` (the described prominence of each
    correctly named object against its true area, pooled over rows), `setting_accuracy` and `space_accuracy`.
    """
    from scipy.stats import spearmanr

    batch = {key: [r[key] for r in rows] for key in ("image", "objects", "setting", "space")}
    out = describer.describe(batch)
    precision, recall, f1, setting, space, said, area = [], [], [], [], [], [], []
    for row, sources, scene, skip in zip(rows, out["sound_sources"], out["scene"], out["skip_reason"]):
        true = {o["class"] for o in row["objects"]}
        named = [(_class_of(s["name"]), float(s["prominence"])) for s in (sources or [])] if skip is None else []
        predicted = {c for c, _ in named if c is not None}
        hits = len(true & predicted)
        precision.append(hits / len(predicted) if predicted else 0.0)
        recall.append(hits / len(true))
        f1.append(2 * hits / (len(true) + len(predicted)))
        scene = scene or {}
        setting.append(skip is None and scene.get("setting") == row["setting"])
        space.append(skip is None and scene.get("space") == row["space"])
        seen = set()
        for cls, prominence in named:  # the first mention of each class, against its largest object
            if cls in true and cls not in seen:
                seen.add(cls)
                said.append(prominence)
                area.append(max(float(o["radius"]) ** 2 for o in row["objects"] if o["class"] == cls))
    spearman = float(spearmanr(said, area).statistic) if len(set(said)) > 1 and len(set(area)) > 1 else float("nan")
    return {
        "rows": len(rows),
        "valid_json": float(np.mean([s is None for s in out["skip_reason"]])),
        "precision": float(np.mean(precision)),
        "recall": float(np.mean(recall)),
        "f1": float(np.mean(f1)),
        "prominence_spearman": spearman,
        "setting_accuracy": float(np.mean(setting)),
        "space_accuracy": float(np.mean(space)),
    }


# corpus seed of the held-out renders the toy VLM is scored on; its training renders must use another
HELD_OUT_SEED = 12


def held_out_rows(num_images: int, seed: int = HELD_OUT_SEED) -> list[dict]:
    """Renders the toy VLM never trained on (another corpus seed than `ToyVLMConfig.image_seed`)."""
    return list(image_corpus_rows(num_images, seed=seed))


def builder_pairing(vlm_dir: str | None, work_dir: str, num_images: int = 200, clips_per_class: int = 40) -> dict:
    """The toy VLM in the loop: build a sonified dataset of `num_images` held-out renders with the real builder
    (`dataset_builder/configs/toyworld.yaml` with `describer: VLMDescriber` and `vlm_model: vlm_dir`; with
    `vlm_dir=None`, the config's metadata describer) and the toy audio corpus, then score `pairing_accuracy`: the
    fraction of built sound sources whose retrieved clip's class is pictured in the image (the clip's `category` is
    the corpus's own tag, used only here)."""
    from datasets import load_dataset

    from ..config_loading import parse_config_args
    from ..programs import config_path
    from ..sonification.builder import build_sonified_dataset
    from ..sonification.config import BuilderConfig
    from .corpora import make_audio_corpus, make_image_corpus
    from .evaluation import retrieved_in_picture

    work = Path(work_dir)
    images = make_image_corpus(num_images, seed=HELD_OUT_SEED)  # the renders of `held_out_rows`
    images.save_to_disk(str(work / "images"))
    audio = make_audio_corpus(clips_per_class, seed=1)
    audio.save_to_disk(str(work / "audio"))
    argv = [str(config_path("dataset_builder", "toyworld.yaml"))]
    argv += ["--image_dataset", str(work / "images"), "--audio_dataset", str(work / "audio")]
    argv += ["--output_dir", str(work / "sonified"), "--num_proc", "1"]
    if vlm_dir is not None:
        argv += ["--describer", "diffusers_sonify.sonification.describe:VLMDescriber", "--vlm_model", str(vlm_dir)]
        argv += ["--max_new_tokens", "160", "--describe_batch_size", "16", "--torch_dtype", "float32"]
    report = build_sonified_dataset(parse_config_args((BuilderConfig,), argv)[0])
    built = load_dataset("parquet", data_files=str(work / "sonified" / "data" / "*.parquet"), split="train")
    pictured = {
        r["image_id"]: {o["class"] for o in r["objects"]} for r in images.select_columns(["image_id", "objects"])
    }
    category = dict(zip(audio["clip_id"], audio["category"]))
    retrieved = [[category[s["clip_id"]] for s in sources] for sources in built["sources"]]
    total = sum(map(len, retrieved))
    return {
        "images": num_images,
        "rows": report.num_rows,
        "skipped": report.num_skipped,
        "sources": total,
        "pairing_accuracy": retrieved_in_picture([pictured[i] for i in built["image_id"]], retrieved)
        if total
        else float("nan"),
    }


def main(argv=None) -> dict:
    from ..sonification.config import default_prompt_file
    from ..sonification.describe import VLMDescriber, load_vlm
    from .describer import ToySceneDescriber

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output_dir", required=True)
    for name, value in asdict(ToyVLMConfig()).items():
        p.add_argument(f"--{name}", type=type(value), default=value)
    p.add_argument("--eval_images", type=int, default=200, help="held-out renders to score it on; 0: train only")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = vars(p.parse_args(argv))
    output_dir, eval_images, threads = args.pop("output_dir"), args.pop("eval_images"), args.pop("threads")
    if threads:
        torch.set_num_threads(threads)
    if args["image_seed"] == HELD_OUT_SEED:
        p.error(f"--image_seed {HELD_OUT_SEED} is the held-out renders' seed; train on renders of another seed.")
    record = train_toy_vlm(ToyVLMConfig(**args), output_dir)
    if not record or not eval_images:  # not the main process, or train only
        return record
    load_vlm.cache_clear()
    rows = held_out_rows(eval_images)
    vlm = VLMDescriber(output_dir, default_prompt_file(), max_new_tokens=160, batch_size=16)
    record["eval"] = {
        "toy_vlm": evaluate_describer(vlm, rows),
        "metadata": evaluate_describer(ToySceneDescriber(), rows),
        "builder_with_toy_vlm": builder_pairing(output_dir, str(Path(output_dir) / "pairing"), eval_images),
        "builder_with_metadata": builder_pairing(None, str(Path(output_dir) / "pairing-metadata"), eval_images),
    }
    (Path(output_dir) / "toy_vlm_training.json").write_text(json.dumps(record, indent=1))
    print(json.dumps(record["eval"], indent=1))
    return record


if __name__ == "__main__":
    main()
