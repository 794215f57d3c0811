"""The two unpaired corpora of the toy world, generated independently and deterministically from a seed.

* image corpus: scenes with 1-3 icons, with the metadata a VLM would describe (objects, setting, space);
* audio corpus: single-source clips with text labels worded differently from the image side.

Neither corpus knows the other: the builder pairs them by retrieval.
"""

from __future__ import annotations

import numpy as np
from datasets import Audio, Dataset, Features, Image, List, Value
from tqdm.auto import tqdm

from .render import render_scene
from .scenes import sample_scene
from .world import CLASS_BY_NAME, CLASS_NAMES, SAMPLING_RATE, synthesize

# Clip seeds: the audio corpus draws from [0, 500_000), held-out evaluation sounds from [500_000, 1_000_000),
# each offset by seed * 1_000_003, so corpus and evaluation clips never share a seed.
_SEED_STRIDE = 1_000_003
EVAL_SEED_OFFSET = 500_000

OBJECT_FEATURES = {
    "class": Value("string"),
    "name": Value("string"),
    "radius": Value("float32"),
    "prominence": Value("float32"),
    "x": Value("float32"),
    "y": Value("float32"),
}
IMAGE_FEATURES = Features(
    {
        "image_id": Value("string"),
        "image": Image(),
        "objects": List(OBJECT_FEATURES),
        "setting": Value("string"),
        "space": Value("string"),
        "caption": Value("string"),
    }
)
AUDIO_FEATURES = Features(
    {
        "clip_id": Value("string"),
        "audio": Audio(sampling_rate=SAMPLING_RATE),
        "label": Value("string"),
        "category": Value("string"),
    }
)


def corpus_clip_seed(seed: int, index: int) -> int:
    """Synthesiser seed of the `index`-th clip of the audio corpus made with `seed`."""
    if not 0 <= index < EVAL_SEED_OFFSET:
        raise ValueError(f"`index` must be in [0, {EVAL_SEED_OFFSET}), got {index}.")
    return seed * _SEED_STRIDE + index


def eval_clip_seed(seed: int, index: int) -> int:
    """Synthesiser seed of the `index`-th held-out evaluation clip: disjoint from every `corpus_clip_seed`."""
    if not 0 <= index < _SEED_STRIDE - EVAL_SEED_OFFSET:
        raise ValueError(f"`index` must be in [0, {_SEED_STRIDE - EVAL_SEED_OFFSET}), got {index}.")
    return seed * _SEED_STRIDE + EVAL_SEED_OFFSET + index


def _caption(objects: list[dict], setting: str) -> str:
    names = [o["name"] for o in objects]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return f"{listed} {'in a room' if setting == 'indoor' else 'outdoors'}"


def image_corpus_rows(num_images: int, seed: int = 0):
    """Yield the image corpus rows (dicts) one by one; see [`make_image_corpus`]."""
    rng = np.random.default_rng([seed, 1])
    for i in range(num_images):
        scene = sample_scene(rng)
        for obj in scene["objects"]:
            obj["name"] = str(rng.choice(CLASS_BY_NAME[obj["class"]].image_names))
        yield {
            "image_id": f"toy-img-{seed}-{i:06d}",
            "image": render_scene(scene["objects"], scene["setting"]),
            "objects": scene["objects"],
            "setting": scene["setting"],
            "space": scene["space"],
            "caption": _caption(scene["objects"], scene["setting"]),
        }


def make_image_corpus(num_images: int, seed: int = 0) -> Dataset:
    """The image corpus: `num_images` rendered scenes with their metadata.

    Columns: `image_id`, `image` (`Image`, 32x32 RGB), `objects` (list of `{"class", "name", "radius",
    "prominence", "x", "y"}`: `name` is the image-side wording, `radius` in pixels, `x`/`y` in [0, 1]),
    `setting` (`"indoor"`/`"outdoor"`), `space` (`"medium"`/`"large"` indoors, `"open"` outdoors), `caption`.
    """
    if num_images < 1:
        raise ValueError(f"`num_images` must be >= 1, got {num_images}.")
    rows = list(tqdm(image_corpus_rows(num_images, seed), total=num_images, desc="Rendering image corpus"))
    return Dataset.from_list(rows, features=IMAGE_FEATURES)


def write_image_corpus(folder, num_images: int, seed: int = 0, rows_per_shard: int = 10_000) -> str:
    """Stream the image corpus of [`make_image_corpus`] (same rows) into a `save_to_disk` folder, never holding it
    in RAM: rows are rendered one by one and written through Arrow in batches (`Dataset.from_generator`), so memory
    stays flat from 10^3 to 10^6 images. Returns the folder (load it with `datasets.load_from_disk`)."""
    import shutil
    import tempfile
    from pathlib import Path

    if num_images < 1:
        raise ValueError(f"`num_images` must be >= 1, got {num_images}.")
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{folder.name}-gen-") as cache:
        ds = Dataset.from_generator(
            image_corpus_rows,
            features=IMAGE_FEATURES,
            gen_kwargs={"num_images": num_images, "seed": seed},
            cache_dir=cache,
            writer_batch_size=1000,
        )
        if folder.exists():
            shutil.rmtree(folder)
        ds.save_to_disk(str(folder), max_shard_size=None, num_shards=max(1, -(-num_images // rows_per_shard)))
        del ds
    return str(folder)


def make_audio_corpus(clips_per_class: int, seed: int = 0) -> Dataset:
    """The audio corpus: `clips_per_class` single-source 2 s clips per class at 16 kHz.

    Columns: `clip_id`, `audio` (`Audio`, 16 kHz), `label` (one of the class's audio-side phrasings, e.g.
    "bell ringing"), `category` (the class name: the corpus's own class tag, used only to score pairing).
    """
    if clips_per_class < 1:
        raise ValueError(f"`clips_per_class` must be >= 1, got {clips_per_class}.")
    rng = np.random.default_rng([seed, 2])
    rows = []
    total = clips_per_class * len(CLASS_NAMES)
    for i in tqdm(range(total), desc="Synthesising audio corpus"):
        name = CLASS_NAMES[i % len(CLASS_NAMES)]
        rows.append(
            {
                "clip_id": f"toy-clip-{seed}-{i:06d}",
                "audio": {"array": synthesize(name, corpus_clip_seed(seed, i)), "sampling_rate": SAMPLING_RATE},
                "label": str(rng.choice(CLASS_BY_NAME[name].audio_labels)),
                "category": name,
            }
        )
    return Dataset.from_list(rows, features=AUDIO_FEATURES)
