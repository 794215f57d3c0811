"""Describe stage: JSON parsing/repair, the stage function, the VLM describer on a tiny random Llava, configs."""

import json

import pytest
from sonify_helpers import PROMPT, ScriptedDescriber, png_bytes, scene_description, tiny_llava

from diffusers_sonify.sonification import (
    BuilderConfig,
    VLMDescriber,
    describe_sounds,
    load_describer,
    parse_description,
)
from diffusers_sonify.sonification.config import parse_build_config

GOOD = {
    "sound_sources": [
        {"name": "dog", "sound": "a dog barking", "prominence": 0.8, "distance": "near"},
        {"name": "car", "sound": "traffic hum", "prominence": 0.3, "distance": "far"},
    ],
    "scene": {"setting": "outdoor", "space": "open"},
}


def test_parse_valid_and_repaired_outputs():
    sources, scene, reason = parse_description(json.dumps(GOOD))
    assert reason is None and scene == GOOD["scene"] and sources == GOOD["sound_sources"]
    repaired = [
        "Sure! Here it is:\n```json\n" + json.dumps(GOOD) + "\n```",  # chatter + fence
        json.dumps(GOOD).replace("}]", "},]"),  # trailing comma
        str(GOOD),  # Python repr: single quotes
        json.dumps(GOOD)[:-1],  # missing final brace
    ]
    for text in repaired:
        assert parse_description(text) == (sources, scene, None), text
    # truncated inside the second source: the complete first source survives when the scene came first
    truncated = json.dumps({"scene": GOOD["scene"], "sound_sources": GOOD["sound_sources"]})[:-40]
    s, sc, r = parse_description(truncated)
    assert r is None and [x["name"] for x in s] == ["dog"] and sc == GOOD["scene"]
    # synonyms and scales are normalised, order is by prominence, max_sources keeps the loudest
    odd = {
        "sound_sources": [
            {"name": "a", "sound": "hum", "prominence": "low", "distance": "distant"},
            {"name": "b", "sound": "bang", "prominence": 9, "distance": "close"},
        ],
        "scene": {"setting": "Indoors", "space": "big"},
    }
    s, sc, r = parse_description(json.dumps(odd), max_sources=1)
    assert r is None and s == [{"name": "b", "sound": "bang", "prominence": 0.9, "distance": "near"}]
    assert sc == {"setting": "indoor", "space": "large"}


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", "unparsable"),
        ("no json here", "unparsable"),
        ("{not: json at all", "unparsable"),
        (json.dumps({"sound_sources": "dog", "scene": GOOD["scene"]}), "not a list"),
        (json.dumps({"sound_sources": GOOD["sound_sources"]}), "scene"),
        (json.dumps({"sound_sources": [{"name": "x"}], "scene": GOOD["scene"]}), "no sound source"),
    ],
)
def test_parse_failures_give_reasons(text, reason):
    sources, scene, skip = parse_description(text)
    assert sources == [] and scene is None and reason in skip


def test_describe_stage_success_and_corrupt_image():
    batch = {
        "image": [
            {"bytes": png_bytes(0), "path": None},
            {"bytes": b"garbage", "path": None},
            {"bytes": png_bytes(2), "path": None},
        ],
        "metadata": [scene_description(0), "unused", "not json"],
    }
    out = describe_sounds(batch, describer=ScriptedDescriber())
    assert out["skip_reason"][0] is None and out["skip_reason"][1].startswith("corrupt image")
    assert out["skip_reason"][2].startswith("unparsable")
    expected = json.loads(scene_description(0))
    assert [s["sound"] for s in out["sound_sources"][0]] == [s["sound"] for s in expected["sound_sources"]]
    assert out["scene"][0] == expected["scene"] and out["sound_sources"][1] == []


def test_describer_errors_become_skips_and_bad_output_is_rejected():
    class Broken:
        def describe(self, batch):
            raise RuntimeError("CUDA out of memory")

    class Invalid:
        def describe(self, batch):
            n = len(batch["image"])
            return {
                "sound_sources": [[{"name": "a", "sound": "b", "prominence": 2.0, "distance": "near"}]] * n,
                "scene": [None] * n,
                "description_raw": [""] * n,
                "skip_reason": [None] * n,
            }

    batch = {"image": [{"bytes": png_bytes(0), "path": None}]}
    assert describe_sounds(batch, describer=Broken())["skip_reason"][0].startswith("describer error: RuntimeError")
    with pytest.raises(ValueError, match="invalid source"):
        describe_sounds(batch, describer=Invalid())


def test_vlm_describer_on_tiny_random_llava_takes_skip_path(tmp_path):
    path = tiny_llava(tmp_path / "llava")
    config = BuilderConfig(vlm_model=path, max_new_tokens=12, describe_batch_size=2, prompt_file=PROMPT)
    describer = load_describer(config)  # the default describer is the VLM one
    assert isinstance(describer, VLMDescriber) and describer.prompt_version.startswith("describe_v1@")
    batch = {"image": [{"bytes": png_bytes(i), "path": None} for i in range(3)]}
    out = describe_sounds(batch, describer=describer)
    assert all(r is not None and r.startswith(("unparsable", "invalid")) for r in out["skip_reason"])
    assert all(isinstance(t, str) and t for t in out["description_raw"])  # the garbage is kept for the report
    again = describe_sounds(batch, describer=describer)
    assert again["description_raw"] == out["description_raw"]  # greedy: reruns reproduce


def test_load_describer_by_import_path_and_errors():
    config = BuilderConfig(describer="sonify_helpers:ScriptedDescriber", describer_kwargs='{"delay_s": 0.01}')
    describer = load_describer(config)
    assert isinstance(describer, ScriptedDescriber) and describer.delay_s == 0.01
    with pytest.raises(ValueError, match="no attribute"):
        load_describer(BuilderConfig(describer="sonify_helpers:Nope"))
    with pytest.raises(ValueError, match="module:Class"):
        BuilderConfig(describer="sonify_helpers.ScriptedDescriber")
    with pytest.raises(ValueError, match="describer_kwargs"):
        BuilderConfig(describer_kwargs="{bad json")


def test_loudness_and_rt60_mappings_are_monotonic():
    c = BuilderConfig()
    prominences = [0.0, 0.25, 0.5, 0.75, 1.0]
    for d in ("near", "mid", "far"):
        values = [c.target_lufs(p, d) for p in prominences]
        assert values == sorted(values) and len(set(values)) == len(values)
    for p in prominences:
        assert c.target_lufs(p, "near") > c.target_lufs(p, "mid") > c.target_lufs(p, "far")
    assert c.target_lufs(1.0, "near") == -23.0  # EBU R128 reference
    assert c.rt60("indoor", "small") < c.rt60("indoor", "medium") < c.rt60("indoor", "large")
    assert c.rt60("outdoor", "large") < c.rt60("indoor", "large") and c.rt60("outdoor", "open") == 0.0
    with pytest.raises(ValueError, match="distance"):
        c.target_lufs(0.5, "behind")
    with pytest.raises(ValueError, match="distance_near_lu"):
        BuilderConfig(distance_mid_lu=3.0)


def test_every_yaml_config_parses_and_flags_override(tmp_path):
    from pathlib import Path

    configs = sorted((Path(__file__).resolve().parents[2] / "dataset_builder" / "configs").glob("*.yaml"))
    assert configs
    for path in configs:
        config = parse_build_config([str(path), "--output_dir", str(tmp_path / "o"), "--duration_s", "3"])
        assert config.duration_s == 3.0 and config.output_dir == str(tmp_path / "o")
    bad = tmp_path / "bad.yaml"
    bad.write_text("sample_rte: 16000\n")
    with pytest.raises(ValueError, match="unknown fields.*sample_rte"):
        parse_build_config([str(bad)])
    with pytest.raises(ValueError, match="image_dataset"):
        parse_build_config([str(configs[0])]).validate_for_build()
