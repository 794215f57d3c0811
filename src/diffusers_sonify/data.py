"""Loading `datasets` sources the way the builder, the trainer and the demo all need them."""

from __future__ import annotations

import os


def load_dataset_folder(folder: str | os.PathLike, split: str | None = None):
    """`load_dataset` on a local folder in Hub layout (data files plus a README whose YAML lists `configs`).

    datasets 5.2 keys the Arrow cache of such a folder on the folder's name and the README's `configs` patterns
    only, not on the files the patterns match: a rebuilt folder, or another folder with the same name and card
    (every `outputs/*/sonified`), silently loads the rows cached the first time. Here the data files are resolved
    first and loaded with their packaged builder (`parquet`, `audiofolder`, ...), which puts each file's path and
    modification time into the cache key.

    Args:
        folder: the folder (what `load_dataset(folder)` would take).
        split: one split, or None for a `DatasetDict`.
    """
    from datasets import load_dataset, load_dataset_builder

    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder!r} is not a folder; pass a dataset folder in Hub layout.")
    builder = load_dataset_builder(folder)
    data_files = {name: list(files) for name, files in (builder.config.data_files or {}).items()}
    if not data_files:
        raise ValueError(f"{folder!r} holds no data files that `datasets` recognises (e.g. data/train-*.parquet).")
    if split is not None and split not in data_files:
        raise ValueError(f"{folder!r} has splits {sorted(data_files)}, not {split!r}; pass one of them.")
    packaged_module = type(builder).__module__.rsplit(".", 1)[-1]
    # (not `builder.info.features`: that can come from the stale cache; Parquet files carry their features)
    return load_dataset(packaged_module, data_files=data_files, split=split)


def load_split(source: str, split: str, arg: str = "dataset"):
    """One split of a `save_to_disk` folder, a local folder in Hub layout ([`load_dataset_folder`]) or a Hub id.

    Args:
        source: the folder or Hub id.
        split: the split to return.
        arg: the argument name `source` came from, for error messages.
    """
    from datasets import DatasetDict, load_dataset, load_from_disk

    saved_to_disk = any(os.path.isfile(os.path.join(source, f)) for f in ("state.json", "dataset_dict.json"))
    if saved_to_disk:
        ds = load_from_disk(source)
        if isinstance(ds, DatasetDict):
            if split not in ds:
                raise ValueError(f"`{arg}` {source!r} has splits {list(ds)}, not {split!r}; set the split.")
            ds = ds[split]
        return ds
    if os.path.isdir(source):
        return load_dataset_folder(source, split=split)
    return load_dataset(source, split=split)
