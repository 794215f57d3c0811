"""One loader for the programs' configs: `[config.yaml] [--field value ...]` -> dataclass instances.

`dataset_builder/build.py` and `train_scripts/train.py` both call [`parse_config_args`]: the YAML file's values become
the parser's defaults, command-line flags override them, and the dataclasses' `__post_init__` checks every field
and every cross-field rule, so a wrong combination fails here, before any model is loaded. This module imports
only `yaml` and transformers' `HfArgumentParser` (about one second), so `--help` and config errors answer fast.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

YAML_SUFFIXES = (".yaml", ".yml")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Each option's default after its help; the description's own line breaks kept."""


def make_parser(dataclass_types: tuple[type, ...], description: str | None = None, usage: str | None = None):
    """`HfArgumentParser` over `dataclass_types`, with the optional config file as its first positional argument
    (so `--help`'s usage line shows it)."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(
        dataclass_types,
        description=description,
        usage=usage or "%(prog)s [-h] [CONFIG.yaml] [--FIELD VALUE ...]",
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "config",
        nargs="?",
        metavar="CONFIG.yaml",
        help="YAML file of the fields below; flags given after it override its values.",
    )
    return parser


def read_yaml_config(path: str | os.PathLike, dataclass_types: tuple[type, ...]) -> dict[str, Any]:
    """The mapping in `path`, checked against the dataclasses' field names.

    Relative paths in the fields a dataclass lists in its `PATH_FIELDS` class attribute are resolved against the
    YAML file's folder, so a config names its companion files the same way from any working directory.
    """
    path = Path(path)
    if path.suffix not in YAML_SUFFIXES:
        raise ValueError(f"The config file must be a .yaml/.yml file, got {str(path)!r}.")
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} not found (relative paths start at {os.getcwd()}).")
    values = yaml.safe_load(path.read_text()) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{str(path)!r} must hold a YAML mapping of field names to values.")
    known = {f.name for cls in dataclass_types for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        hints = {k: difflib.get_close_matches(k, known, n=1) for k in unknown}
        hint = "; ".join(f"{k!r}: did you mean {m[0]!r}?" for k, m in hints.items() if m)
        raise ValueError(
            f"{str(path)!r} has unknown fields {unknown}" + (f" ({hint})" if hint else "") + "; see --help."
        )
    path_fields = {name for cls in dataclass_types for name in getattr(cls, "PATH_FIELDS", ())}
    for name in path_fields & set(values):
        values[name] = _resolve_relative(values[name], path.parent)
    return values


def _resolve_relative(value, base: Path):
    if isinstance(value, list):
        return [_resolve_relative(v, base) for v in value]
    if not isinstance(value, str) or value.lstrip().startswith("{") or os.path.isabs(os.path.expanduser(value)):
        return value
    return str(base / value)


def parse_config_args(
    dataclass_types: tuple[type, ...],
    argv: list[str] | None,
    description: str | None = None,
    usage: str | None = None,
):
    """`[config.yaml] [--field value ...]` -> one instance per dataclass type, in order.

    Raises `FileNotFoundError`/`ValueError` naming the config file or the field(s) at fault; `--help` prints every
    field with its help text and exits.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = make_parser(dataclass_types, description, usage)
    if argv and not argv[0].startswith("-"):
        parser.set_defaults(**read_yaml_config(argv[0], dataclass_types))
    namespace = vars(parser.parse_args(argv))
    namespace.pop("config", None)
    return tuple(cls(**{f.name: namespace[f.name] for f in fields(cls) if f.init}) for cls in dataclass_types)


def require_positive(config, names: tuple[str, ...]) -> None:
    """Raise `ValueError` naming the first field of `names` on `config` that is not > 0."""
    for name in names:
        if getattr(config, name) <= 0:
            raise ValueError(f"`{name}` must be positive, got {getattr(config, name)}.")


def load_mapping(value, arg: str) -> dict | None:
    """An inline mapping, a JSON object string, or a path to a JSON/YAML file -> dict (None stays None)."""
    if value is None or isinstance(value, dict):
        return value
    if isinstance(value, str) and os.path.isfile(value):
        with open(value) as f:
            loaded = yaml.safe_load(f)  # YAML is a superset of JSON
    else:
        try:
            loaded = json.loads(value)
        except (TypeError, json.JSONDecodeError):
            loaded = None
    if not isinstance(loaded, dict):
        raise ValueError(
            f"`{arg}` must be a mapping, a JSON object or the path of a JSON/YAML file, got {value!r}"
            + ("" if isinstance(value, str) and value.lstrip().startswith("{") else " (no such file)")
            + "."
        )
    return loaded
