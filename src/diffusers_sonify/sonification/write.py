"""Write stage: the dataset folder in Hub layout (Parquet shards + dataset card), and publishing it."""

from __future__ import annotations

import hashlib
import logging
import shutil
from contextlib import contextmanager
from pathlib import Path

from .config import BUILDER_VERSION, REPO_ID_PATTERN
from .report import BuildReport

logger = logging.getLogger(__name__)


@contextmanager
def no_progress_bars():
    """Silence `datasets`' bars for bookkeeping steps (saving a stage, writing Parquet): a build shows one bar per
    stage, not a bar per save nested inside it."""
    from datasets.utils.tqdm import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            enable_progress_bars()


def _embed_image_bytes(batch: dict) -> dict:
    cells = []
    for cell in batch["image"]:
        if not cell.get("bytes") and cell.get("path"):
            cell = {"bytes": Path(cell["path"]).read_bytes(), "path": Path(cell["path"]).name}
        cells.append(cell)
    return {"image": cells}


def write_parquet_shards(rows, folder: Path, rows_per_shard: int, sample_rate: int) -> tuple[list[Path], str, list]:
    """`rows` -> `folder/data/train-<content>-XXXXX-of-YYYYY.parquet`, `rows_per_shard` rows per file.

    `rows` is a `Dataset` or an iterable of `Dataset` chunks with the same columns (image/audio as
    `{"bytes", "path"}` cells); chunks are buffered only until a shard is full, so a build of any size is written
    in the memory of one shard. Image and audio bytes are embedded, and the `Image()` / `Audio(sampling_rate)`
    features are stored in the Parquet schema, so `load_dataset(folder)` decodes them.

    `<content>` is a hash of the shards' bytes, and the card's `data_files` pattern names it
    ([`data_files_pattern`]). datasets 5.2 keys its cache of a local folder on the folder's name and the card's
    `configs` only, so without it `load_dataset(folder)` returns the rows of an earlier build in the same folder,
    or of another build in a folder with the same name. Returns the shard paths, the content hash and the columns.
    """
    from datasets import Audio, Dataset, Image, concatenate_datasets

    if isinstance(rows, Dataset):
        dataset, n = rows, len(rows)
        rows = (dataset.select(range(a, min(n, a + rows_per_shard))) for a in range(0, max(n, 1), rows_per_shard))
    (folder / "data").mkdir(parents=True, exist_ok=True)
    staged, digest = [], hashlib.sha256()

    def flush(part) -> None:
        with no_progress_bars():
            if len(part):
                part = part.map(_embed_image_bytes, batched=True, keep_in_memory=True)
            part = part.cast_column("image", Image()).cast_column("audio", Audio(sampling_rate=sample_rate))
            path = folder / "data" / f"shard-{len(staged):05d}.parquet.partial"
            part.to_parquet(str(path))
        digest.update(path.read_bytes())
        staged.append(path)

    buffer, last = None, None
    for chunk in rows:
        last = chunk
        if len(chunk):
            buffer = chunk if buffer is None else concatenate_datasets([buffer, chunk])
        while buffer is not None and len(buffer) >= rows_per_shard:
            flush(buffer.select(range(rows_per_shard)))
            rest = range(rows_per_shard, len(buffer))
            with no_progress_bars():
                buffer = buffer.select(rest).flatten_indices(keep_in_memory=True) if len(rest) else None
    if buffer is not None or not staged:
        flush(buffer if buffer is not None else last)  # the last rows, or an empty shard that holds the schema
    content = digest.hexdigest()[:16]
    paths = []
    for index, path in enumerate(staged):
        final = folder / "data" / f"train-{content}-{index:05d}-of-{len(staged):05d}.parquet"
        path.rename(final)
        paths.append(final)
    return paths, content, list(last.column_names)


def data_files_pattern(content: str) -> str:
    """The card's `data_files` pattern for the shards of one build (see [`write_parquet_shards`])."""
    return f"data/train-{content}-*.parquet"


def render_card(config, report: BuildReport, provenance: dict, columns: list[str], data_files: str):
    """The dataset card (huggingface_hub `DatasetCard`) from `model_cards/dataset_card.md.j2`."""
    from huggingface_hub import DatasetCardData

    from ..hub import render_dataset_card

    card_data = DatasetCardData(
        license=config.license,
        pretty_name=config.dataset_name,
        tags=["audio", "image", "sonification", "synthetic", "diffusers-sonify"],
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": data_files}]}],
    )
    mapping = {
        "lufs": {p: {d: round(config.target_lufs(p, d), 1) for d in ("near", "mid", "far")} for p in (1.0, 0.5, 0.0)},
        "rt60": {
            f"{setting}/{space}": round(config.rt60(setting, space), 3)
            for setting in ("indoor", "outdoor")
            for space in ("small", "medium", "large", "open")
        },
    }
    return render_dataset_card(
        card_data,
        dataset_name=config.dataset_name,
        config=config.to_dict(),
        report=report.to_dict(),
        provenance=provenance,
        mapping=mapping,
        columns=columns,
        builder_version=BUILDER_VERSION,
    )


def check_repo_id(repo_id: str) -> str:
    if not isinstance(repo_id, str) or not REPO_ID_PATTERN.match(repo_id):
        raise ValueError(f"`hub_model_id` must be a Hub repo id `org/name`, got {repo_id!r}.")
    return repo_id


def push_dataset_folder(folder: str | Path, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Publish a built folder as it is: it is already in Hub layout (Parquet shards with embedded media, the card
    whose `configs` name them, `build_report.json`), so the repo loads exactly like the folder.

    Returns the repo URL.
    """
    from huggingface_hub import HfApi

    check_repo_id(repo_id)
    folder = Path(folder)
    if not (folder / "README.md").is_file():
        raise FileNotFoundError(f"{str(folder)!r} is not a built dataset folder (no README.md); build it first.")
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    api.upload_folder(
        folder_path=str(folder),
        repo_id=repo_id,
        repo_type="dataset",
        commit_message=f"Upload sonified dataset (diffusers-sonify builder {BUILDER_VERSION})",
        delete_patterns=["data/*.parquet"],  # shards of an earlier build
    )
    return f"{api.endpoint}/datasets/{repo_id}"


def replace_folder(tmp: Path, final: Path) -> None:
    """Move a finished folder into place (the old one, if any, removed first)."""
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
