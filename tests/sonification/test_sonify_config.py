"""Builder config: every field declares the cached stages it changes, stage keys follow the declarations, YAML
paths resolve relative to the YAML file, hub ids are checked at parse time, and `build.py --help` is fast."""

import dataclasses
import os
import subprocess
import sys
import time

import pytest
from sonify_helpers import PROMPT, REPO

from diffusers_sonify.sonification.builder import stage_key
from diffusers_sonify.sonification.config import STAGES, BuilderConfig, parse_build_config


def _changed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value - 1 if value > 1 else value + 0.5
    if isinstance(value, list):
        return [*value, "extra"]
    if isinstance(value, dict):
        return {**value, "extra": 1}
    return f"{value}-changed"


def test_every_field_belongs_to_a_stage_or_is_declared_cache_neutral():
    for f in dataclasses.fields(BuilderConfig):
        stages, neutral = f.metadata["stages"], f.metadata["cache_neutral"]
        assert bool(stages) != bool(neutral), f.name
        assert set(stages) <= set(STAGES), f.name
        assert f.metadata["help"], f.name
    assert set().union(*(f.metadata["stages"] for f in dataclasses.fields(BuilderConfig))) == set(STAGES)


def test_stage_keys_change_with_exactly_the_fields_they_declare():
    base = BuilderConfig(prompt_file=PROMPT, describer_kwargs={"a": 1})
    special = {
        "push_to_hub": {"push_to_hub": True, "hub_model_id": "org/x"},
        "hub_model_id": {"hub_model_id": "org/other"},
        "describer": {"describer": "other.module:Describer"},
        "index_backend": {"index_backend": "clap"},
        "distance_near_lu": {"distance_near_lu": 1.0},
        "distance_mid_lu": {"distance_mid_lu": -5.0},
        "distance_far_lu": {"distance_far_lu": -13.0},
        "retrieval_backend": {"retrieval_backend": "exact"},
    }
    for f in dataclasses.fields(BuilderConfig):
        if f.name == "prompt_file":
            continue  # keyed on the prompt's content: the next test
        other = dataclasses.replace(base, **special.get(f.name, {f.name: _changed(getattr(base, f.name))}))
        for stage in STAGES:
            differs = stage_key(stage, base) != stage_key(stage, other)
            assert differs == (stage in f.metadata["stages"]), (f.name, stage)


def test_describe_key_follows_the_prompt_text_not_its_path(tmp_path):
    copy = tmp_path / "describe_v1.txt"
    copy.write_text(open(PROMPT).read())
    a, b = BuilderConfig(prompt_file=PROMPT), BuilderConfig(prompt_file=str(copy))
    assert stage_key("describe", a) == stage_key("describe", b)
    copy.write_text(open(PROMPT).read() + "\nBe brief.")
    assert stage_key("describe", a) != stage_key("describe", b)


def test_prompt_path_in_yaml_resolves_relative_to_the_yaml_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the repository: a cwd-relative lookup would fail
    config = parse_build_config([str(REPO / "dataset_builder/configs/default.yaml")])
    assert os.path.samefile(config.prompt_file, PROMPT)
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "my.yaml").write_text("prompt_file: prompts/mine.txt\n")
    config = parse_build_config([str(tmp_path / "cfg" / "my.yaml")])
    assert config.prompt_file == str(tmp_path / "cfg" / "prompts" / "mine.txt")


@pytest.mark.parametrize("bad", ["no-namespace", "org/-x", "org//x", "a b/c", "https://huggingface.co/org/x"])
def test_malformed_hub_id_is_rejected_at_parse_time(bad):
    with pytest.raises(ValueError, match="`hub_model_id` must be a Hub repo id"):
        parse_build_config(["--push_to_hub", "--hub_model_id", bad])


def test_push_to_hub_is_a_flag_with_hub_model_id():
    config = parse_build_config(["--push_to_hub", "--hub_model_id", "org/sonified"])
    assert config.push_to_hub is True and config.hub_model_id == "org/sonified"
    with pytest.raises(ValueError, match="`push_to_hub` needs `hub_model_id`"):
        parse_build_config(["--push_to_hub"])


def test_help_is_fast_shows_the_config_argument_and_every_describer():
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, str(REPO / "dataset_builder" / "build.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    elapsed = time.perf_counter() - start
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: build.py [config.yaml] [--field value ...]")
    for needle in ("VLMDescriber", "JSONColumnDescriber", "ToySceneDescriber", "--hub_model_id", "audiofolder:"):
        assert needle in out.stdout, needle
    assert "torch" not in out.stderr and not out.stderr.strip(), out.stderr  # no warnings, nothing imported
    assert elapsed < 8.0, elapsed  # parse before heavy imports (torch + datasets + transformers take ~10 s)
