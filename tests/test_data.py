"""Loading local dataset folders in Hub layout."""

from __future__ import annotations

import pytest
from datasets import Dataset

from diffusers_sonify.data import load_dataset_folder

CARD = "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/train-*.parquet\n---\n"


def _hub_folder(path, values):
    (path / "data").mkdir(parents=True)
    Dataset.from_dict({"value": values}).to_parquet(str(path / "data" / "train-00000-of-00001.parquet"))
    (path / "README.md").write_text(CARD)
    return path


def test_same_name_and_card_but_other_rows_loads_the_new_rows(tmp_path):
    """datasets keys such a folder's cache on its name and card only: `load_dataset` returns the first folder's
    rows for the second; `load_dataset_folder` must not."""
    first = _hub_folder(tmp_path / "a" / "sonified", [1, 2])
    second = _hub_folder(tmp_path / "b" / "sonified", [3, 4, 5])
    assert load_dataset_folder(first, split="train")["value"] == [1, 2]
    assert load_dataset_folder(second, split="train")["value"] == [3, 4, 5]
    assert list(load_dataset_folder(second)) == ["train"]  # no split: the DatasetDict


def test_folder_errors_say_what_to_pass(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_dataset_folder(tmp_path / "missing")
    folder = _hub_folder(tmp_path / "ds", [1])
    with pytest.raises(ValueError, match=r"splits \['train'\], not 'test'"):
        load_dataset_folder(folder, split="test")
