"""The repository's programs and their configs, shipped inside the package.

`dataset_builder/` (build.py, configs, prompts) and `train_scripts/` (train.py, configs) stay at the top of the
repository, where a reader finds them; `programs/dataset_builder` and `programs/train_scripts` link to them, so an
installed wheel carries the same files as package data. Run them from anywhere:

    python -m diffusers_sonify.build CONFIG.yaml [--field value ...]        # = dataset_builder/build.py
    accelerate launch -m diffusers_sonify.train CONFIG.yaml [--field ...]    # = train_scripts/train.py

and find a shipped config with `config_path("train_scripts", "toyworld.yaml")`.
"""

from __future__ import annotations

import runpy
import sys
from importlib.resources import files
from pathlib import Path

PROGRAMS = {"build": ("dataset_builder", "build.py"), "train": ("train_scripts", "train.py")}


def program_path(name: str) -> Path:
    """Path of the shipped program `name` (`"build"` or `"train"`)."""
    if name not in PROGRAMS:
        raise ValueError(f"Unknown program {name!r}; choose one of {sorted(PROGRAMS)}.")
    return Path(str(files(__name__).joinpath(*PROGRAMS[name])))


def config_path(folder: str, name: str) -> Path:
    """Path of a shipped config, e.g. `config_path("dataset_builder", "toyworld.yaml")`."""
    if folder not in {f for f, _ in PROGRAMS.values()}:
        raise ValueError(f"Configs live under 'dataset_builder' or 'train_scripts', got {folder!r}.")
    path = Path(str(files(__name__).joinpath(folder, "configs", name)))
    if not path.is_file():
        available = sorted(p.name for p in path.parent.glob("*.yaml"))
        raise FileNotFoundError(f"No shipped config {folder}/configs/{name}; available: {available}.")
    return path


def run_program(name: str, argv: list[str] | None = None) -> None:
    """Run a shipped program as `__main__` with `argv` (default: this process's arguments)."""
    path = program_path(name)
    sys.argv = [str(path), *(sys.argv[1:] if argv is None else argv)]
    runpy.run_path(str(path), run_name="__main__")


def build_main() -> None:
    """Console entry point `sonify-build`."""
    run_program("build")


def train_main() -> None:
    """Console entry point `sonify-train` (one process; use `accelerate launch -m diffusers_sonify.train` for more)."""
    run_program("train")
