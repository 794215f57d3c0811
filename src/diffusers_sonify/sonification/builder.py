"""The whole build: describe -> index -> retrieve -> assemble -> write, each stage cached under `cache_dir`.

Every stage writes its output with `save_to_disk` into a temporary folder renamed into place when complete, so a
killed build leaves only finished stages/shards and a rerun of the same command resumes from them. Stage keys
hash the inputs and the config fields each stage declares it depends on (`BuilderConfig` field metadata `stages`),
so changing a setting recomputes that stage and what follows. Every stage carries `image_id`, and every join of
stage outputs checks the ids row by row. Inputs, models and prompt are checked before the first slow stage.

Memory does not grow with the corpus: stage outputs are memory-mapped Arrow shards, retrieval runs in chunks of
[`RETRIEVE_CHUNK_ROWS`] rows, and the write stage joins, copies and writes one assemble shard at a time
(`benchmarks/builder_scale.py` measures peak RSS from 10^3 to 10^5 images).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from functools import lru_cache
from pathlib import Path

import torch

from ..audio import torch_threads
from ..data import load_audio_folder, load_split
from .assemble import DryClipCache, assemble_soundscapes
from .checks import BuildInputError, remove_stale_tmp, require_folder_with_files, require_model
from .config import BUILDER_VERSION, DEFAULT_DESCRIBER, BuilderConfig
from .describe import (
    VLMDescriber,
    decode_image,
    describe_features,
    describe_sounds,
    import_object,
    load_describer,
    read_prompt,
)
from .index import embed_audio_corpus, load_embedder, resolve_text_model
from .report import BuildReport
from .retrieve import TopKSearch, VLMReranker, assign_clips, rerank
from .write import (
    check_repo_id,
    data_files_pattern,
    no_progress_bars,
    render_card,
    replace_folder,
    write_parquet_shards,
)

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------------------------


def load_corpus(source: str, split: str = "train", arg: str = "image_dataset", ignored: list | None = None):
    """Any `datasets` source -> a `Dataset`.

    `source` is a `save_to_disk` folder, a Parquet file or glob (`*.parquet`), `imagefolder:<dir>` /
    `audiofolder:<dir>`, or anything `load_dataset` accepts (Hub id, a folder in Hub layout). `audiofolder:` keeps
    every format the audio decoder reads ([`~diffusers_sonify.data.load_audio_folder`]); the files it ignored are
    appended to `ignored` (`{"file", "reason"}`).
    """
    from datasets import Dataset, load_dataset

    if not source:
        raise BuildInputError(f"`{arg}` is empty; pass a dataset id, folder or Parquet path.")
    builder, _, data_dir = source.partition(":")
    if builder == "audiofolder" and data_dir:
        require_folder_with_files(data_dir, arg, "audio files (any format FFmpeg reads)")
        try:
            ds, skipped_files = load_audio_folder(data_dir)
        except ValueError as err:
            raise BuildInputError(f"`{arg}`: {err}") from None
        if ignored is not None:
            ignored.extend(skipped_files)
        for item in skipped_files:
            logger.warning("%s: ignored %s: %s", arg, item["file"], item["reason"])
    elif builder == "imagefolder" and data_dir:
        require_folder_with_files(data_dir, arg, "image files")
        ds = load_dataset(builder, data_dir=data_dir, split=split)
    elif source.endswith(".parquet"):
        ds = load_dataset("parquet", data_files={split: source}, split=split)
    else:
        if _is_local(source) and not os.path.exists(source):
            raise BuildInputError(f"`{arg}`: {source!r} does not exist; fix the path (or pass a Hub id `org/name`).")
        ds = load_split(source, split, arg)
    if not isinstance(ds, Dataset):
        raise BuildInputError(f"`{arg}` {source!r} did not load as one Dataset split.")
    if len(ds) == 0:
        raise BuildInputError(f"`{arg}` {source!r} has no rows in split {split!r}.")
    return ds


def _is_local(source: str) -> bool:
    return source.startswith((".", "/", "~")) or source.count("/") > 1 or os.path.exists(source)


def _require_columns(ds, columns: list[str], arg: str, source: str) -> None:
    missing = [c for c in columns if c and c not in ds.column_names]
    if missing:
        raise BuildInputError(f"`{arg}` {source!r} has no column(s) {missing}; its columns are {ds.column_names}.")


def prepare_images(config: BuilderConfig):
    """The image corpus with `image` undecoded (`{"bytes", "path"}`) and a string `image_id` column."""
    from datasets import Image

    ds = load_corpus(config.image_dataset, config.image_split, "image_dataset")
    _require_columns(
        ds,
        [config.image_column, config.image_id_column, *config.metadata_columns],
        "image_dataset",
        config.image_dataset,
    )
    if config.max_images is not None:
        ds = ds.select(range(min(config.max_images, len(ds))))
    ds = ds.cast_column(config.image_column, Image(decode=False))
    if config.image_column != "image":
        if "image" in ds.column_names:
            ds = ds.remove_columns("image")
        ds = ds.rename_column(config.image_column, "image")
    if config.image_id_column:
        ids = [str(v) for v in ds[config.image_id_column]]
        if len(set(ids)) != len(ids):
            raise BuildInputError(
                f"`image_id_column` {config.image_id_column!r} has duplicate ids; ids must be unique."
            )
    else:
        ids = [str(i) for i in range(len(ds))]
    if "image_id" in ds.column_names:
        ds = ds.remove_columns("image_id")
    return ds.add_column("image_id", ids)


def prepare_audio(config: BuilderConfig, ignored: list | None = None):
    """The audio corpus with the audio column undecoded (`{"bytes", "path"}`); `ignored` collects skipped files."""
    from datasets import Audio

    ds = load_corpus(config.audio_dataset, config.audio_split, "audio_dataset", ignored=ignored)
    _require_columns(
        ds,
        [config.audio_column, config.audio_id_column, *config.audio_text_columns],
        "audio_dataset",
        config.audio_dataset,
    )
    return ds.cast_column(config.audio_column, Audio(decode=False))


# ---------------------------------------------------------------------------------------------------------------------
# Cache helpers
# ---------------------------------------------------------------------------------------------------------------------


def stage_key(name: str, config: BuilderConfig, *inputs) -> str:
    """`<name>-<hash>` of the builder version, the upstream inputs (fingerprints, keys of earlier stages) and the
    config fields that declare `name` in their `stages` metadata ([`BuilderConfig.stage_settings`])."""
    settings = config.stage_settings(name)
    if name == "describe" and config.describer == DEFAULT_DESCRIBER:  # the prompt's content, not where it lives
        settings["prompt_file"] = read_prompt(config.prompt_file)[1]
    blob = json.dumps([BUILDER_VERSION, name, settings, *inputs], sort_keys=True, default=str)
    return f"{name}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


def join_on_image_id(parts: list, stage: str):
    """Concatenate stage outputs column-wise after checking that every part holds the same `image_id`s in the same
    order (one `image_id` column is kept). The ids are compared as Arrow arrays, not Python lists."""
    import pyarrow.compute as pc
    from datasets import concatenate_datasets

    ids = _ids(parts[0])
    for part in parts[1:]:
        other = _ids(part)
        if not other.equals(ids):
            m = min(len(ids), len(other))  # the first differing row, else where the shorter one ends
            first = pc.index(pc.not_equal(ids[:m], other[:m]).fill_null(True), True).as_py() if m else -1
            bad = first if first >= 0 else m
            raise RuntimeError(
                f"{stage}: stage outputs disagree on image ids at row {bad} ({len(ids)} vs {len(other)} rows); "
                "the stage cache is inconsistent: delete `cache_dir` and rebuild."
            )
    return concatenate_datasets([parts[0]] + [p.remove_columns("image_id") for p in parts[1:]], axis=1)


def _ids(dataset):
    """The `image_id` column as one Arrow array (selections applied), cast to string."""
    import pyarrow as pa

    return dataset.with_format("arrow")["image_id"].combine_chunks().cast(pa.string())


def save_atomic(dataset, path: Path, meta: dict | None = None) -> None:
    """`save_to_disk` into `<path>.tmp-<pid>`, then rename: `path` exists only when complete."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    with no_progress_bars():
        dataset.save_to_disk(str(tmp))
    if meta is not None:
        (tmp / "stage_meta.json").write_text(json.dumps(meta))
    if path.exists():  # a concurrent writer finished the same shard first: identical content
        shutil.rmtree(tmp)
        return
    tmp.rename(path)


def _load(path: Path):
    from datasets import load_from_disk

    return load_from_disk(str(path))


def _load_shards(folder: Path):
    """The `shard-XXXXX` datasets of a stage folder, concatenated in order (memory-mapped, not read)."""
    from datasets import concatenate_datasets

    return concatenate_datasets([_load(p) for p in sorted(folder.glob("shard-*"))])


@lru_cache(maxsize=2)
def _cached_describer(config_json: str, device: str):
    return load_describer(BuilderConfig(**json.loads(config_json)), device=device)


@lru_cache(maxsize=2)
def _cached_embedder(config_json: str, device: str):
    return load_embedder(BuilderConfig(**json.loads(config_json)), device=device)


def _config_json(config: BuilderConfig) -> str:
    data = config.to_dict()
    data["describer_kwargs"] = json.dumps(data["describer_kwargs"], sort_keys=True)
    return json.dumps(data, sort_keys=True)


# ---------------------------------------------------------------------------------------------------------------------
# Stages
# ---------------------------------------------------------------------------------------------------------------------


def describe_key(config: BuilderConfig, images) -> str:
    return stage_key("describe", config, images._fingerprint, len(images))


def run_describe(config: BuilderConfig, images, rank: int = 0, world_size: int = 1, device: str = "cpu") -> Path:
    """Describe this rank's shards (shard `s` goes to rank `s % world_size`); return the stage folder."""
    from tqdm.auto import tqdm

    folder = config.resolved_cache_dir() / describe_key(config, images)
    folder.mkdir(parents=True, exist_ok=True)
    num_shards = max(1, -(-len(images) // config.shard_size))
    mine = [s for s in range(rank, num_shards, world_size) if not (folder / f"shard-{s:05d}").exists()]
    features = describe_features()
    features["image_id"] = images.features["image_id"]
    for s in tqdm(mine, desc=f"Describing (rank {rank})", disable=not mine):
        describer = _cached_describer(_config_json(config), device)
        part = images.select(range(s * config.shard_size, min(len(images), (s + 1) * config.shard_size)))
        out = part.map(
            describe_sounds,
            batched=True,
            batch_size=config.describe_batch_size,
            with_rank=True,
            fn_kwargs={"describer": describer, "max_sources": config.max_sources},
            remove_columns=[c for c in part.column_names if c != "image_id"],  # carried, checked at the join
            features=features,
            keep_in_memory=True,
            new_fingerprint=f"{folder.name}-{s}",
            desc=f"Describing shard {s}",
        )
        meta = {
            "rank": rank,
            "world_size": world_size,
            "pid": os.getpid(),
            "model_id": getattr(describer, "model_id", type(describer).__name__),
            "prompt_version": getattr(describer, "prompt_version", None),
        }
        save_atomic(out, folder / f"shard-{s:05d}", meta=meta)
    return folder


def merge_describe(folder: Path, num_rows: int, shard_size: int):
    from datasets import concatenate_datasets

    num_shards = max(1, -(-num_rows // shard_size))
    missing = [s for s in range(num_shards) if not (folder / f"shard-{s:05d}").exists()]
    if missing:
        raise RuntimeError(
            f"describe shards {missing} are missing in {folder}; a rank failed. Rerun the build to resume."
        )
    parts = [_load(folder / f"shard-{s:05d}") for s in range(num_shards)]
    metas = [json.loads((folder / f"shard-{s:05d}" / "stage_meta.json").read_text()) for s in range(num_shards)]
    return concatenate_datasets(parts), metas


def run_index(config: BuilderConfig, audio, device: str = "cpu"):
    key = stage_key("index", config, audio._fingerprint, len(audio))
    folder = config.resolved_cache_dir() / key
    if folder.exists():
        return _load(folder), key, True
    label_names = {
        c: audio.features[c].names for c in config.audio_text_columns if hasattr(audio.features[c], "names")
    }
    embedder = _cached_embedder(_config_json(config), device)
    out = audio.map(
        embed_audio_corpus,
        batched=True,
        batch_size=64,
        with_rank=True,
        remove_columns=audio.column_names,
        fn_kwargs={
            "embedder": embedder,
            "audio_column": config.audio_column,
            "text_columns": config.audio_text_columns,
            "label_names": label_names,
            "max_seconds": config.duration_s,
            "min_seconds": config.min_clip_seconds,
        },
        keep_in_memory=True,
        new_fingerprint=key,
        desc="Indexing audio corpus",
    )
    save_atomic(out, folder)
    return _load(folder), key, False


def retrieval_bank(index) -> tuple[list[int], torch.Tensor]:
    """The valid clips of the index stage: their corpus rows and their embeddings as one `(clips, dim)` tensor."""
    import numpy as np

    valid = [i for i, ok in enumerate(index["valid"]) if ok]
    if not valid:
        raise ValueError(
            "No clip of `audio_dataset` is usable (all corrupt, silent or without text); see the index stage."
        )
    column = index.select(valid).with_format("arrow")["embedding"].combine_chunks()
    flat = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return valid, torch.from_numpy(flat.reshape(len(valid), -1).copy())


def _searcher(config: BuilderConfig, bank: torch.Tensor, num_queries: int) -> TopKSearch:
    return TopKSearch(
        bank,
        min(config.top_k, bank.shape[0]),
        backend=config.retrieval_backend,
        num_queries=num_queries,
        chunk_size=config.retrieval_chunk_size,
        nlist=config.faiss_nlist or None,
        nprobe=config.faiss_nprobe,
    )


def _count_queries(described) -> int:
    """Sound sources of the unskipped rows: the number of retrieval queries."""
    import pyarrow.compute as pc

    table = described.select_columns(["sound_sources", "skip_reason"]).with_format("arrow")[:]
    lengths = pc.list_value_length(table["sound_sources"]).fill_null(0)
    return int(pc.sum(pc.if_else(pc.is_null(table["skip_reason"]), lengths, 0)).as_py() or 0)


def retrieve_candidates(
    config: BuilderConfig,
    described,
    index,
    device: str = "cpu",
    images=None,
    search=None,
    valid=None,
    reranker=None,
    clip_text=None,
):
    """Top-k candidates for every source of every unskipped row of `described`; optional VLM re-ranking.

    `search` ([`TopKSearch`]) and `valid` (its bank's corpus rows) are built from `index` when not given, and with
    `config.rerank` so are `reranker` and `clip_text` (the index's texts); the retrieve stage passes all four to
    search the dataset in chunks with one index, one reranker and one read of the texts.
    """
    from tqdm.auto import tqdm

    if search is None:
        valid, bank = retrieval_bank(index)
    rows = [
        (r, src)
        for r, (src, skip) in enumerate(zip(described["sound_sources"], described["skip_reason"]))
        if skip is None
    ]
    queries = [s["sound"] for _, srcs in rows for s in srcs]
    candidates = [[] for _ in range(len(described))]
    if not queries:
        return candidates
    if search is None:
        search = _searcher(config, bank, len(queries))
    embedder = _cached_embedder(_config_json(config), device)
    # sound descriptions repeat ("a dog barking" in thousands of rows): embed and search each distinct one once
    distinct = list(dict.fromkeys(queries))
    idx, scores = search(embedder.embed_texts(distinct))
    found = {
        q: [(valid[int(i)], float(sc)) for i, sc in zip(ids, scs)]
        for q, ids, scs in zip(distinct, idx.tolist(), scores.tolist())
    }
    if config.rerank and reranker is None:
        reranker = VLMReranker.from_config(config, device=device)
    if reranker is not None and clip_text is None:
        clip_text = index["clip_text"]
    for r, srcs in tqdm(rows, desc="Retrieving", disable=reranker is None):
        per_source = []
        for s in srcs:
            cands = list(found[s["sound"]])
            if reranker is not None:
                choice = reranker.choose(decode_image(images[r]["image"]), s["name"], [clip_text[c] for c, _ in cands])
                cands = rerank(cands, choice)
            per_source.append(cands)
        candidates[r] = per_source
    return candidates


# rows of `described` searched, assigned and saved at a time by the retrieve stage: its memory does not grow with
# the corpus (candidates are Python tuples, top_k per source)
RETRIEVE_CHUNK_ROWS = 4096


def run_retrieve(
    config: BuilderConfig, described, index, d_key: str, i_key: str, audio, device: str = "cpu", images=None
):
    """Retrieve in chunks of [`RETRIEVE_CHUNK_ROWS`] rows with one search index; the reuse cap's counts carry
    from chunk to chunk, so the choices are those of one pass over the dataset."""
    from tqdm.auto import tqdm

    key = stage_key("retrieve", config, d_key, i_key)
    folder = config.resolved_cache_dir() / key
    if folder.exists():
        return _load_shards(folder), key, True
    valid, bank = retrieval_bank(index)
    search = _searcher(config, bank, _count_queries(described))
    clip_ids = [str(c) for c in audio[config.audio_id_column]] if config.audio_id_column else None
    clip_text = index["clip_text"]
    reranker = VLMReranker.from_config(config, device=device) if config.rerank else None
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    uses: dict[int, int] = {}
    starts = range(0, len(described), RETRIEVE_CHUNK_ROWS)
    for part, start in enumerate(tqdm(starts, desc="Retrieving", disable=len(starts) < 4)):
        rows = range(start, min(len(described), start + RETRIEVE_CHUNK_ROWS))
        chunk = described.select(rows).select_columns(["image_id", "sound_sources", "skip_reason"])
        chunk_images = images.select(rows) if images is not None and config.rerank else None
        candidates = retrieve_candidates(
            config, chunk, index, device, chunk_images, search, valid, reranker=reranker, clip_text=clip_text
        )
        choices, _ = assign_clips(candidates, config.min_score, config.max_clip_uses, uses=uses)
        out = _retrieved_rows(config, chunk, candidates, choices, clip_ids, clip_text)
        save_atomic(out, tmp / f"shard-{part:05d}")
    tmp.rename(folder)
    return _load_shards(folder), key, False


def _retrieved_rows(config: BuilderConfig, chunk, candidates, choices, clip_ids, clip_text):
    """The retrieve stage's rows for one chunk of `described`: chosen clips per source, unmatched sources, and
    the skip reason (an empty retrieval skips the row)."""
    from datasets import Dataset, Features, List, Value

    sources_col, unmatched_col, skip_col = [], [], []
    for r, (srcs, skip) in enumerate(zip(chunk["sound_sources"], chunk["skip_reason"])):
        sources, unmatched = [], []
        if skip is None:
            for s, choice, cands in zip(srcs, choices[r], candidates[r]):
                if choice is None:
                    unmatched.append(s["name"])
                    continue
                clip, score = choice
                sources.append(
                    {
                        **s,
                        "clip_index": clip,
                        "clip_id": clip_ids[clip] if clip_ids else str(clip),
                        "clip_text": clip_text[clip],
                        "score": score,
                        "cosine_rank": [c for c, _ in sorted(cands, key=lambda c: -c[1])].index(clip),
                    }
                )
            if not sources:
                skip = f"empty retrieval: no clip scored >= min_score {config.min_score} (or all at the reuse cap)"
        sources_col.append(sources)
        unmatched_col.append(unmatched)
        skip_col.append(skip)
    source = {
        "name": Value("string"),
        "sound": Value("string"),
        "prominence": Value("float32"),
        "distance": Value("string"),
        "clip_index": Value("int64"),
        "clip_id": Value("string"),
        "clip_text": Value("string"),
        "score": Value("float32"),
        "cosine_rank": Value("int32"),
    }
    features = Features(
        {
            "image_id": Value("string"),
            "sources": List(source),
            "unmatched_sources": List(Value("string")),
            "skip_reason": Value("string"),
        }
    )
    columns = {"sources": sources_col, "unmatched_sources": unmatched_col, "skip_reason": skip_col}
    return Dataset.from_dict({"image_id": chunk["image_id"], **columns}, features=features)


def run_assemble(config: BuilderConfig, table, audio, r_key: str) -> tuple[Path, int, bool]:
    """Assemble in cached shards of `shard_size` rows (`num_proc` workers, a shard each); returns the stage
    folder, its number of shards and whether all of them were cached. The write stage reads the shards one by one.
    """
    key = stage_key("assemble", config, r_key, audio._fingerprint)
    folder = config.resolved_cache_dir() / key
    folder.mkdir(parents=True, exist_ok=True)
    audio_only = (
        audio.select_columns([config.audio_column]).rename_column(config.audio_column, "audio")
        if config.audio_column != "audio"
        else audio.select_columns(["audio"])
    )
    num_shards = max(1, -(-len(table) // config.shard_size))
    pending = [s for s in range(num_shards) if not (folder / f"shard-{s:05d}").exists()]
    jobs = [(table, audio_only, _config_json(config), key, s, str(folder)) for s in pending]
    if config.num_proc > 1 and len(jobs) > 1:
        # spawn, not fork: a forked child of a process that already ran torch/OpenMP code can deadlock
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context

        with ProcessPoolExecutor(min(config.num_proc, len(jobs)), mp_context=get_context("spawn")) as pool:
            list(pool.map(_assemble_shard, jobs))
    else:
        for job in jobs:
            _assemble_shard(job)
    return folder, num_shards, not pending


def _assemble_shard(job) -> None:
    table, audio_only, config_json, key, s, folder = job
    config = BuilderConfig(**json.loads(config_json))
    part = table.select(range(s * config.shard_size, min(len(table), (s + 1) * config.shard_size)))
    with torch_threads(1):  # one thread per assemble process: `num_proc` processes share the cores
        out = part.map(
            _assemble_batch,
            batched=True,
            batch_size=8,
            remove_columns=part.column_names,
            fn_kwargs={"audio_corpus": audio_only, "config_json": config_json, "clips": DryClipCache()},
            new_fingerprint=f"{key}-{s}",
            keep_in_memory=True,
            desc=f"Assembling shard {s}",
        )
    save_atomic(out, Path(folder) / f"shard-{s:05d}")


def _assemble_batch(batch: dict, *, audio_corpus, config_json: str, clips: DryClipCache) -> dict:
    config = BuilderConfig(**json.loads(config_json))
    audio_rows = _AudioRows(audio_corpus)
    return assemble_soundscapes(batch, audio_corpus=audio_rows, config=config, clips=clips)


class _AudioRows:
    """`rows[i]` -> the undecoded audio cell of corpus row `i`."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __getitem__(self, i: int):
        return self.dataset[int(i)]["audio"]


# ---------------------------------------------------------------------------------------------------------------------
# The whole build
# ---------------------------------------------------------------------------------------------------------------------


def check_build(config: BuilderConfig) -> None:
    """What a build can check without loading data or models, on every rank: required fields, the hub id, the
    prompt, the describer's import path, and that every model it will load is local, cached or downloadable now.
    Raises [`BuildInputError`] with one line saying what to fix."""
    try:
        config.validate_for_build()
    except ValueError as err:
        raise BuildInputError(str(err)) from None
    if config.push_to_hub:
        check_repo_id(config.hub_model_id)
    try:
        describer_cls = import_object(config.describer)
    except ValueError as err:
        raise BuildInputError(str(err)) from None
    uses_vlm = issubclass(describer_cls, VLMDescriber) if isinstance(describer_cls, type) else False
    if uses_vlm and not Path(config.prompt_file).is_file():
        raise BuildInputError(
            f"`prompt_file` {config.prompt_file!r} not found (a relative path in a YAML config is relative to the "
            "YAML file; on the command line, to the working directory)."
        )
    models = {"text_model": resolve_text_model(config.text_model)}
    if config.index_backend == "clap":
        models = {"clap_model": config.clap_model}
    if uses_vlm:
        models["vlm_model"] = config.vlm_model
    if config.rerank:
        models["rerank_model" if config.rerank_model else "vlm_model"] = config.rerank_model or config.vlm_model
    for arg, model_id in models.items():
        require_model(model_id, arg)


def _check_describer_columns(config: BuilderConfig, images) -> None:
    describer_cls = import_object(config.describer)
    required = getattr(describer_cls, "required_columns", None)
    missing = [c for c in (required(**config.describer_kwargs) if required else []) if c not in images.column_names]
    if missing:
        raise BuildInputError(
            f"`describer` {config.describer!r} reads column(s) {missing}, which `image_dataset` "
            f"{config.image_dataset!r} does not have (columns: {images.column_names}); set `describer_kwargs`."
        )


def _source_file(cell) -> str | None:
    path = cell.get("path") if isinstance(cell, dict) else None
    return os.path.basename(path) if path else None


def build_sonified_dataset(
    config: BuilderConfig, rank: int = 0, world_size: int = 1, barrier=None, device: str | torch.device = "cpu"
) -> BuildReport | None:
    """Run every stage and write `config.output_dir`; resumes from `cache_dir`.

    Before the first slow stage it checks the config, the models ([`check_build`]), both corpora and their columns,
    and removes unfinished `.tmp-<pid>` folders of killed builds. Under a multi-process launcher, pass `rank`,
    `world_size` and a `barrier` callable (e.g. `accelerator.wait_for_everyone`): every rank describes its shards,
    then rank 0 merges and runs the remaining (CPU) stages while the others return `None`.

    Returns:
        [`BuildReport`] on rank 0.
    """
    check_build(config)
    device = str(device)
    timings: dict[str, float] = {}
    if rank == 0:
        remove_stale_tmp(Path(config.output_dir), config.resolved_cache_dir())
    t0 = time.perf_counter()
    ignored_audio: list[dict] = []
    images = prepare_images(config)
    audio = prepare_audio(config, ignored=ignored_audio)
    _check_describer_columns(config, images)
    timings["load"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    d_folder = run_describe(config, images, rank=rank, world_size=world_size, device=device)
    if barrier is not None:
        barrier()
    if rank != 0:
        return None
    described, metas = merge_describe(d_folder, len(images), config.shard_size)
    described = join_on_image_id([images.select_columns(["image_id"]), described], "describe")
    timings["describe"] = time.perf_counter() - t0
    report = BuildReport(num_images=len(images), ignored_audio_files=ignored_audio)
    for s, meta in enumerate(metas):
        worker = report.describe_workers.setdefault(str(meta["rank"]), {"pid": meta["pid"], "shards": []})
        worker["shards"].append(s)

    t0 = time.perf_counter()
    index, i_key, cached = run_index(config, audio, device=device)
    timings["index"] = time.perf_counter() - t0
    report.num_clips = len(audio)
    clip_ids = audio[config.audio_id_column] if config.audio_id_column else [str(i) for i in range(len(audio))]
    audio_cells = audio.select_columns([config.audio_column])
    report.invalid_clips = [
        {"clip_id": str(clip_ids[i]), "source": _source_file(audio_cells[i][config.audio_column]), "reason": r}
        for i, (ok, r) in enumerate(zip(index["valid"], index["invalid_reason"]))
        if not ok
    ]
    if cached:
        report.cached_stages.append("index")

    t0 = time.perf_counter()
    retrieved, r_key, cached = run_retrieve(
        config, described, index, d_folder.name, i_key, audio, device=device, images=images
    )
    timings["retrieve"] = time.perf_counter() - t0
    if cached:
        report.cached_stages.append("retrieve")

    t0 = time.perf_counter()
    table = join_on_image_id([described.select_columns(["image_id", "scene"]), retrieved], "retrieve")
    a_folder, num_shards, cached = run_assemble(config, table, audio, r_key)
    timings["assemble"] = time.perf_counter() - t0
    if cached:
        report.cached_stages.append("assemble")

    report.unmatched_sources = _sum_list_lengths(retrieved, "unmatched_sources")
    meta0 = metas[0] if metas else {}
    provenance = {
        "prompt_version": meta0.get("prompt_version") or "none",
        "describer": f"{config.describer} ({meta0.get('model_id', '')})",
        "index_model": config.clap_model if config.index_backend == "clap" else config.text_model,
        "builder_version": BUILDER_VERSION,
        "image_dataset": config.image_dataset,
        "audio_dataset": config.audio_dataset,
    }
    report.stage_seconds = {k: round(v, 2) for k, v in timings.items()}
    chunks = output_rows(config, images, described, a_folder, num_shards, provenance, report)
    write_output(config, chunks, report, provenance)
    logger.info("Built %d rows (%d skipped) into %s", report.num_rows, report.num_skipped, config.output_dir)
    return report


def _sum_list_lengths(dataset, column: str) -> int:
    import pyarrow.compute as pc

    lengths = pc.list_value_length(dataset.select_columns([column]).with_format("arrow")[:][column])
    return int(pc.sum(lengths.fill_null(0)).as_py() or 0)


def output_rows(config: BuilderConfig, images, described, a_folder: Path, num_shards: int, provenance, report):
    """The output rows, one in-memory `Dataset` per assemble shard: the image and its metadata, the scene and the
    VLM's raw answer, the soundtrack and its sources, and the provenance columns; skipped rows are left out and
    recorded in `report` with their reason, which also gets the row and clip-use counts once all are read.

    Each assemble shard is loaded, joined on `image_id`, copied and released before the next one, so the memory
    of the write stage does not grow with the corpus.
    """
    keep_meta = [c for c in config.metadata_columns if c not in ("image", "image_id")]
    uses: dict[str, int] = {}
    limiter: list[float] = []
    for s in range(num_shards):
        rows = range(s * config.shard_size, min(len(images), (s + 1) * config.shard_size))
        part = join_on_image_id(
            [
                images.select(rows).select_columns(["image_id", "image", *keep_meta]),
                described.select(rows).select_columns(["image_id", "scene", "description_raw"]),
                _load(a_folder / f"shard-{s:05d}"),
            ],
            "assemble",
        )
        small = part.select_columns(["image_id", "skip_reason", "dropped_sources", "sources", "limiter_lu"])[:]
        kept = []
        for r, (image_id, reason) in enumerate(zip(small["image_id"], small["skip_reason"])):
            if reason is None:
                kept.append(r)
            else:
                source = _source_file(part.select_columns(["image"])[r]["image"])
                report.skipped.append({"image_id": image_id, "source": source, "reason": reason})
        report.dropped_sources += sum(len(d) for d in small["dropped_sources"])
        for r in kept:
            for src in small["sources"][r]:
                uses[src["clip_id"]] = uses.get(src["clip_id"], 0) + 1
            if small["limiter_lu"][r]:
                limiter.append(small["limiter_lu"][r])
        out = part.select(kept).remove_columns(["skip_reason", "dropped_sources"])
        with no_progress_bars():  # a copy: the shard's memory map is released with `part`
            out = out.flatten_indices(keep_in_memory=True)
        for name in ("prompt_version", "describer", "index_model", "builder_version"):
            out = out.add_column(name, [provenance[name]] * len(out))
        report.num_rows += len(out)
        del part
        yield out
    report.distinct_clips_used, report.max_clip_uses = len(uses), max(uses.values(), default=0)
    report.limited_rows = len(limiter)
    report.max_limiter_lu = round(min(limiter, default=0.0), 3)


def write_output(config: BuilderConfig, rows, report: BuildReport, provenance: dict) -> None:
    """Write `rows` (a `Dataset`, or `Dataset` chunks as [`output_rows`] yields them) as Parquet shards with the
    dataset card and the build report into `config.output_dir`, replacing it only once everything is written."""
    final = Path(config.output_dir)
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    _, content, columns = write_parquet_shards(rows, tmp, config.rows_per_parquet, config.sample_rate)
    card = render_card(config, report, provenance, columns=columns, data_files=data_files_pattern(content))
    card.save(str(tmp / "README.md"))
    report.save(tmp / "build_report.json")
    replace_folder(tmp, final)


def publish(config: BuilderConfig, token: str | None = None) -> str:
    """Push the built `output_dir` to the dataset repo `config.hub_model_id` (see [`push_dataset_folder`])."""
    from .write import push_dataset_folder

    check_repo_id(config.hub_model_id)
    return push_dataset_folder(config.output_dir, config.hub_model_id, private=config.hub_private, token=token)
