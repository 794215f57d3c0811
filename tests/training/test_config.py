"""Every training YAML parses with the real HfArgumentParser; YAML + CLI overrides; model assembly from a base id."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "train_scripts" / "configs").glob("*.yaml"))
SCRIPTS = Path(__file__).resolve().parents[2] / "train_scripts"


def load_script(name: str):
    sys.path.insert(0, str(SCRIPTS))
    spec = importlib.util.spec_from_file_location(f"train_scripts_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_yaml_parses_with_hf_argument_parser(path):
    config = load_script("config")
    model, data, train = config.make_parser().parse_yaml_file(str(path))
    assert train.max_train_steps is None or train.max_train_steps > 0
    assert data.resolution % 8 == 0 and 0 <= train.audio_drop_prob <= 1
    assert (model, data, train) == config.parse_config([str(path)])


def test_sd15_recipe_is_the_documented_one():
    config = load_script("config")
    model, data, train = config.parse_config([str(SCRIPTS / "configs" / "sd15_clap.yaml")])
    assert model.pretrained_model_name_or_path == "runwayml/stable-diffusion-v1-5"
    assert model.audio_encoder_name_or_path == "laion/clap-htsat-unfused"
    assert train.lora_rank > 0 and train.cache_latents and train.cache_audio_features and train.snr_gamma == 5.0


def test_cli_overrides_yaml_and_unknown_keys_fail(tmp_path):
    config = load_script("config")
    yaml_path = SCRIPTS / "configs" / "tiny.yaml"
    _, data, train = config.parse_config(
        [str(yaml_path), "--learning_rate", "0.5", "--validation_audio", "a.wav", "b.wav"]
    )
    assert train.learning_rate == 0.5 and train.validation_audio == ["a.wav", "b.wav"] and data.resolution == 32
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rat: 0.1\n")
    with pytest.raises(ValueError, match="Unknown config keys \\['learning_rat'\\]"):
        config.parse_config([str(bad)])
    assert config.load_mapping('{"a": 1}', "unet_config") == {"a": 1}
    with pytest.raises(ValueError, match="`unet_config` must be a mapping"):
        config.load_mapping("not-a-file.json", "unet_config")


def test_build_components_from_base_model_and_audio_encoder(tiny_base_dirs):
    base, audio = tiny_base_dirs
    train = load_script("train")
    config = load_script("config")
    model_cfg = config.ModelConfig(
        pretrained_model_name_or_path=base,
        audio_encoder_name_or_path=audio,
        use_text_encoder=True,
        num_pooled_tokens=3,
        num_hidden_tokens=5,
    )
    c = train.build_components(model_cfg)
    assert c["vae"] is not None and c["text_encoder"] is not None and c["tokenizer"] is not None
    proj = c["audio_projection"]
    assert proj.config.cross_attention_dim == c["unet"].config.cross_attention_dim == 32
    assert proj.config.pooled_dim == c["audio_encoder"].config.projection_dim
    assert proj.config.hidden_dim == c["audio_encoder"].config.hidden_size and proj.num_tokens == 8
    with pytest.raises(ValueError, match="audio_encoder_name_or_path"):
        train.build_components(config.ModelConfig(pretrained_model_name_or_path=base))
    with pytest.raises(ValueError, match="audio_encoder_class"):
        train.build_components(
            config.ModelConfig(
                pretrained_model_name_or_path=base, audio_encoder_name_or_path=audio, audio_encoder_class="NoSuchModel"
            )
        )
