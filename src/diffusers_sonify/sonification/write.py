"""Write stage: the dataset folder in Hub layout (Parquet shards + dataset card), and publishing it."""

from __future__ import annotations

import logging
import math
import re
import shutil
from pathlib import Path

from ..data import load_dataset_folder
from .config import BUILDER_VERSION
from .report import BuildReport

logger = logging.getLogger(__name__)

DATA_GLOB = "data/train-*.parquet"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _embed_image_bytes(batch: dict) -> dict:
    cells = []
    for cell in batch["image"]:
        if not cell.get("bytes") and cell.get("path"):
            cell = {"bytes": Path(cell["path"]).read_bytes(), "path": Path(cell["path"]).name}
        cells.append(cell)
    return {"image": cells}


def write_parquet_shards(dataset, folder: Path, rows_per_shard: int, sample_rate: int) -> list[Path]:
    """`dataset` (image/audio as `{"bytes", "path"}` cells) -> `folder/data/train-XXXXX-of-YYYYY.parquet`.

    Image and audio bytes are embedded, and the `Image()` / `Audio(sampling_rate)` features are stored in the
    Parquet schema, so `load_dataset(folder)` decodes them.
    """
    from datasets import Audio, Image

    dataset = (
        dataset.map(_embed_image_bytes, batched=True, input_columns=None, desc="Embedding image bytes")
        if len(dataset)
        else dataset
    )
    dataset = dataset.cast_column("image", Image()).cast_column("audio", Audio(sampling_rate=sample_rate))
    (folder / "data").mkdir(parents=True, exist_ok=True)
    num_shards = max(1, math.ceil(len(dataset) / rows_per_shard))
    paths = []
    for index in range(num_shards):
        path = folder / "data" / f"train-{index:05d}-of-{num_shards:05d}.parquet"
        dataset.shard(num_shards, index, contiguous=True).to_parquet(str(path))
        paths.append(path)
    return paths


def render_card(config, report: BuildReport, provenance: dict, columns: list[str]):
    """The dataset card (huggingface_hub `DatasetCard`) from `model_cards/dataset_card.md.j2`."""
    from huggingface_hub import DatasetCardData

    from ..hub import render_dataset_card

    card_data = DatasetCardData(
        license=config.license,
        pretty_name=config.dataset_name,
        tags=["audio", "image", "sonification", "synthetic", "diffusers-sonify"],
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": DATA_GLOB}]}],
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
    if not isinstance(repo_id, str) or not _REPO_ID.match(repo_id):
        raise ValueError(f"`push_to_hub` must be a repo id `org/name`, got {repo_id!r}.")
    return repo_id


def push_dataset_folder(folder: str | Path, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Publish a built folder: `Dataset.push_to_hub` (Parquet with embedded media) then the card and report.

    Returns the repo URL.
    """
    from huggingface_hub import DatasetCard, HfApi

    check_repo_id(repo_id)
    folder = Path(folder)
    dataset = load_dataset_folder(folder, split="train")
    dataset.push_to_hub(repo_id, split="train", private=private, token=token)
    DatasetCard.load(folder / "README.md").push_to_hub(repo_id, repo_type="dataset", token=token)
    api = HfApi(token=token)
    api.upload_file(
        path_or_fileobj=str(folder / "build_report.json"),
        path_in_repo="build_report.json",
        repo_id=repo_id,
        repo_type="dataset",
    )
    return f"{api.endpoint}/datasets/{repo_id}"


def replace_folder(tmp: Path, final: Path) -> None:
    """Move a finished folder into place (the old one, if any, removed first)."""
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
