"""Checks a build runs before its first slow stage: inputs exist, models are reachable, leftovers are cleaned."""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
from pathlib import Path
from urllib.parse import urlparse

logger = logging.getLogger(__name__)

_TMP_SUFFIX = re.compile(r"\.tmp-(\d+)$")


class BuildInputError(ValueError):
    """A wrong input found before the build starts; its message is one line that says what to fix."""


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.count("/") > 1


def require_model(model_id: str, arg: str) -> None:
    """Fail fast, in one line, when `model_id` (field `arg`) is neither a local folder, nor in the Hugging Face
    cache, nor downloadable right now (offline, or the Hub unreachable), instead of minutes of download retries."""
    if os.path.isdir(os.path.expanduser(model_id)):
        return
    if _looks_like_path(model_id):
        raise BuildInputError(f"`{arg}` {model_id!r} is not a folder and not a Hub id `org/name`; fix the path.")
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(model_id, "config.json"), str):
        return
    fix = (
        f"download it once where the Hub is reachable (`hf download {model_id}`), set `{arg}` to a local folder, "
        "or use a describer that needs no model (see `build.py --help`)"
    )
    if constants.HF_HUB_OFFLINE:
        raise BuildInputError(
            f"`{arg}` {model_id!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1: {fix}."
        )
    endpoint = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=5).close()
    except OSError as err:
        raise BuildInputError(
            f"`{arg}` {model_id!r} is not in the local Hugging Face cache and {endpoint.hostname} cannot be reached "
            f"({err.strerror or err}): {fix}."
        ) from None


def require_folder_with_files(folder: str, arg: str, what: str) -> Path:
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise BuildInputError(f"`{arg}`: {str(path)!r} is not a folder; create it or fix the path.")
    if not any(p.is_file() for p in path.rglob("*")):
        raise BuildInputError(f"`{arg}`: folder {str(path)!r} is empty; put {what} in it.")
    return path


def remove_stale_tmp(output_dir: Path, cache_dir: Path) -> list[Path]:
    """Remove the `.tmp-<pid>` folders a killed build left: `<output_dir>.tmp-<pid>` beside the output, and stage
    or shard folders in `cache_dir` (one level deep). Folders of processes still running (another rank of this
    build) are kept, and nothing else beside the output is touched. Returns what was removed."""
    output_dir, cache_dir = Path(output_dir), Path(cache_dir)
    candidates = list(output_dir.parent.glob(f"{output_dir.name}.tmp-*")) if output_dir.parent.is_dir() else []
    if cache_dir.is_dir():
        candidates += [*cache_dir.glob("*.tmp-*"), *cache_dir.glob("*/*.tmp-*")]
    removed = []
    for path in candidates:
        match = _TMP_SUFFIX.search(path.name)
        if not match or not path.is_dir() or _alive(int(match.group(1))):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    if removed:
        logger.info("Removed %d unfinished folder(s) left by an interrupted build: %s", len(removed), removed[:5])
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # a leftover of an earlier process that had our pid; we are not writing it yet
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
