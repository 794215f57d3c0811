"""The toy world's sound constants and the builder's toy config describe the same world.

Evaluation sounds are made by `toyworld.sonify` and training soundtracks by the builder reading
`dataset_builder/configs/toyworld.yaml`; if the two drift apart, held-out sounds stop resembling the training data
and every demo bar measures the wrong thing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from diffusers_sonify.sonification.config import BuilderConfig
from diffusers_sonify.toyworld import sonify, world

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def builder_config() -> BuilderConfig:
    values = yaml.safe_load((REPO / "dataset_builder" / "configs" / "toyworld.yaml").read_text())
    # the corpora are passed on the command line by the demo; any value makes the config complete
    values.update(image_dataset="images", audio_dataset="audio")
    return BuilderConfig(**values)


def test_rate_and_length_match_the_toy_world(builder_config):
    assert builder_config.sample_rate == world.SAMPLING_RATE
    assert builder_config.duration_s == world.CLIP_SECONDS


def test_loudness_rule_matches(builder_config):
    low, high = sonify.LUFS_RANGE
    assert builder_config.reference_lufs == high
    assert builder_config.prominence_range_lu == high - low
    # distance never changes loudness in the toy world: prominence alone sets it
    assert builder_config.distance_near_lu == builder_config.distance_mid_lu == builder_config.distance_far_lu == 0


def test_reverb_rule_matches(builder_config):
    for space in world.INDOOR_SPACES + ("open",):
        assert getattr(builder_config, f"rt60_{space}") == sonify.RT60_BY_SPACE[space], space
    for distance in ("near", "mid", "far"):
        assert getattr(builder_config, f"{distance}_direct_to_reverb_db") == sonify.DIRECT_TO_REVERB_DB, distance
    assert builder_config.peak_ceiling_dbfs == sonify.PEAK_CEILING_DBFS


def test_training_config_matches_the_image_size():
    train = yaml.safe_load((REPO / "train_scripts" / "configs" / "toyworld.yaml").read_text())
    assert train["resolution"] == world.IMAGE_SIZE == train["unet_config"]["sample_size"]
