"""Loading `datasets` sources the way the builder, the trainer and the demo all need them."""

from __future__ import annotations

import os
from pathlib import Path


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


# Extensions read as audio without probing: what `datasets`' audiofolder lists, plus Ogg/Matroska/MPEG-4 audio
# names it misses (`.oga` is the freedesktop sound theme's; FFmpeg reads them all through torchcodec).
AUDIO_EXTENSIONS = frozenset(
    ".aac .ac3 .aif .aifc .aiff .amr .ape .au .avr .caf .dts .flac .htk .ircam .m4a .m4b .mat4 .mat5 .mka .mp2 .mp3 "
    ".mpc2k .nist .oga .ogg .opus .paf .pvf .rf64 .sd2 .sds .snd .spx .svx .voc .w64 .wav .wave .weba .webm .wma .wv "
    ".xi".split()
)
# Files of `datasets`' folder layout that are not data.
_FOLDER_METADATA = {"metadata.csv", "metadata.jsonl", "metadata.parquet", "README.md"}


def scan_audio_folder(folder: str | os.PathLike) -> tuple[list[str], list[dict]]:
    """Every audio file under `folder` (recursively, sorted) and every other file with the reason it was ignored.

    A file is audio when its extension is a known audio extension ([`AUDIO_EXTENSIONS`]) or, for other extensions,
    when FFmpeg (torchcodec) finds an audio stream in it, so any format the decoder reads is accepted. Hidden files
    and the folder's `metadata.csv/jsonl` are skipped silently.

    Returns:
        `(audio_files, ignored)`: paths, and `{"file", "reason"}` for each ignored file.
    """
    files, ignored = [], []
    for path in sorted(Path(folder).rglob("*")):
        if not path.is_file() or path.name.startswith(".") or path.name in _FOLDER_METADATA:
            continue
        if path.suffix.lower() in AUDIO_EXTENSIONS:
            files.append(str(path))
            continue
        reason = _probe_audio(path)
        if reason is None:
            files.append(str(path))
        else:
            ignored.append({"file": str(path), "reason": reason})
    return files, ignored


def _probe_audio(path: Path) -> str | None:
    """None when the project's decoder reads `path` (its first 50 ms), else why not."""
    from .audio import decode_audio

    try:
        decode_audio(path, max_seconds=0.05, arg="file")
        return None
    except ValueError as err:
        detail = str(err).split(" is not a readable audio file ", 1)[-1].strip().rstrip(".")
        return f"not an audio file the decoder reads {detail}"


def load_audio_folder(folder: str | os.PathLike):
    """`audiofolder:<dir>` for the builder: a `Dataset` with `audio` (`{"bytes": None, "path"}` cells, undecoded),
    `file_name` (path relative to `folder`) and, when the files sit in sub-folders, `label` (a `ClassLabel` named
    after each file's folder, as `datasets`' audiofolder does). Columns of a `metadata.csv` / `metadata.jsonl`
    with a `file_name` column are joined in.

    Unlike `load_dataset("audiofolder", ...)`, every format the decoder reads is kept (`.oga`, `.opus`, `.m4a`, ...);
    files that are not audio are listed in `ignored` (returned second) with the reason.

    Returns:
        `(dataset, ignored)`.
    """
    from datasets import Audio, ClassLabel, Dataset, Features, Value

    root = Path(folder).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"`audiofolder:` {str(root)!r} is not a folder; create it or fix the path.")
    files, ignored = scan_audio_folder(root)
    if not files:
        listed = ", ".join(f"{Path(i['file']).name} ({i['reason']})" for i in ignored[:3])
        raise ValueError(
            f"`audiofolder:` {str(root)!r} holds no audio file" + (f"; ignored: {listed}" if listed else " (empty)")
        )
    relative = [Path(f).relative_to(root).as_posix() for f in files]
    columns = {"audio": [{"bytes": None, "path": f} for f in files], "file_name": relative}
    features = {"audio": Audio(decode=False), "file_name": Value("string")}
    folders = [str(Path(r).parent) for r in relative]
    if all(f != "." for f in folders):
        names = sorted(set(Path(f).name for f in folders))
        columns["label"] = [names.index(Path(f).name) for f in folders]
        features["label"] = ClassLabel(names=names)
    ds = Dataset.from_dict(columns, features=Features(features))
    metadata = _read_folder_metadata(root)
    if metadata is not None:
        by_name = {str(name): i for i, name in enumerate(metadata["file_name"])}
        extra = [c for c in metadata.column_names if c not in ("file_name", "audio")]
        rows = [by_name.get(r) for r in relative]
        missing = [r for r, i in zip(relative, rows) if i is None]
        if missing:
            raise ValueError(f"{str(root)!r}: metadata has no row for {missing[:3]}; add them or remove the files.")
        for column in extra:
            values = metadata[column]
            ds = ds.add_column(column, [values[i] for i in rows])
    return ds, ignored


def _read_folder_metadata(root: Path):
    from datasets import load_dataset

    for name, builder in (("metadata.csv", "csv"), ("metadata.jsonl", "json")):
        if (root / name).is_file():
            meta = load_dataset(builder, data_files=str(root / name), split="train")
            if "file_name" not in meta.column_names:
                raise ValueError(f"{str(root / name)!r} needs a `file_name` column naming each audio file.")
            return meta
    return None
