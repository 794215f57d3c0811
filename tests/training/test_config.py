"""The training config: every YAML parses, flags override, every cross-field rule fails at parse time naming both
fields, `--help` is fast and complete, and model assembly follows the config."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from train_helpers import REPO, TRAIN

from diffusers_sonify.config_loading import load_mapping, make_parser
from diffusers_sonify.training_config import LR_SCHEDULERS, TrainingConfig, parse_training_config

CONFIGS = sorted((REPO / "train_scripts" / "configs").glob("*.yaml"))
TINY_YAML = REPO / "train_scripts" / "configs" / "tiny.yaml"
PIXEL_UNET = '{"in_channels": 3, "out_channels": 3, "block_out_channels": [32, 64, 64]}'


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_yaml_parses_from_any_directory(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths in a YAML file resolve against its folder, not the cwd
    config = parse_training_config([str(path)])
    assert config.max_train_steps is None or config.max_train_steps > 0
    assert 0 <= config.audio_drop_prob <= 1 and config.mixed_precision is None
    assert config == parse_training_config([str(path)])


def test_sd15_recipe_is_the_documented_one():
    config = parse_training_config([str(REPO / "train_scripts/configs/sd15_clap.yaml")])
    assert config.pretrained_model_name_or_path == "runwayml/stable-diffusion-v1-5"
    assert config.audio_encoder_name_or_path == "laion/clap-htsat-unfused"
    assert config.lora_rank > 0 and config.cache_latents and config.cache_audio_features and config.snr_gamma == 5.0
    assert config.validation_audio == []  # it named four files that are not in the repository


def test_cli_overrides_yaml_and_unknown_keys_fail(tmp_path):
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    a.write_bytes(b""), b.write_bytes(b"")
    config = parse_training_config([str(TINY_YAML), "--learning_rate", "0.5", "--validation_audio", str(a), str(b)])
    assert config.learning_rate == 0.5 and config.validation_audio == [str(a), str(b)] and config.resolution == 32
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rat: 0.1\n")
    with pytest.raises(ValueError, match=r"unknown fields \['learning_rat'\].*did you mean 'learning_rate'"):
        parse_training_config([str(bad)])
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        parse_training_config([str(tmp_path / "nope.yaml")])
    assert load_mapping('{"a": 1}', "unet_config") == {"a": 1}
    with pytest.raises(ValueError, match="`unet_config` must be a mapping.*no such file"):
        load_mapping("not-a-file.json", "unet_config")


def test_yaml_relative_paths_resolve_against_the_yaml_folder(tmp_path, monkeypatch):
    (tmp_path / "sounds").mkdir()
    (tmp_path / "sounds" / "rain.wav").write_bytes(b"")
    (tmp_path / "unet.yaml").write_text(yaml.safe_dump({"in_channels": 3, "block_out_channels": [8, 16]}))
    cfg = tmp_path / "run.yaml"
    cfg.write_text("validation_audio: [sounds/rain.wav]\nunet_config: unet.yaml\nresolution: 32\n")
    monkeypatch.chdir(REPO)
    config = parse_training_config([str(cfg)])
    assert config.validation_audio == [str(tmp_path / "sounds" / "rain.wav")]
    assert config.unet_config == {"in_channels": 3, "block_out_channels": [8, 16]} and config.pixel_space


# each wrong combination -> the two fields its message must name
BAD_COMBINATIONS = {
    "lora_and_full_unet": (["--lora_rank", "4", "--train_unet"], ("lora_rank", "train_unet")),
    "flip_with_cached_latents": (
        ["--pretrained_model_name_or_path", "org/base", "--random_flip", "--cache_latents"],
        ("random_flip", "cache_latents"),
    ),
    "repa_with_cached_latents": (
        ["--pretrained_model_name_or_path", "org/base", "--repa_encoder_name_or_path", "org/dino", "--cache_latents"],
        ("repa_encoder_name_or_path", "cache_latents"),
    ),
    "rms_max_timestep_without_rms": (["--rms_max_timestep", "800"], ("rms_max_timestep", "loss_type")),
    "captions_without_text_encoder": (
        ["--pretrained_model_name_or_path", "org/base", "--caption_column", "caption"],
        ("caption_column", "use_text_encoder"),
    ),
    "text_encoder_without_base_model": (
        ["--use_text_encoder", "--unet_config", PIXEL_UNET],
        ("use_text_encoder", "pretrained_model_name_or_path"),
    ),
    "push_with_malformed_hub_id": (["--push_to_hub", "--hub_model_id", "org/a/b"], ("push_to_hub", "hub_model_id")),
    "push_with_output_dir_not_a_repo_name": (
        ["--push_to_hub", "--output_dir", "runs/my model!"],
        ("push_to_hub", "hub_model_id"),
    ),
    "resolution_vs_unet_multiple": (
        ["--unet_config", PIXEL_UNET, "--resolution", "30"],
        ("resolution", "unet_config"),
    ),
    "train_clap_text_tower": (
        ["--train_audio_encoder", "--audio_encoder_class", "ClapModel"],
        ("train_audio_encoder", "audio_encoder_class"),
    ),
}


@pytest.mark.parametrize("flags,fields", BAD_COMBINATIONS.values(), ids=list(BAD_COMBINATIONS))
def test_wrong_combinations_fail_at_parse_time_naming_both_fields(flags, fields):
    with pytest.raises(ValueError) as err:
        parse_training_config([str(TINY_YAML), *flags])
    for name in fields:
        assert f"`{name}" in str(err.value), (name, str(err.value))


@pytest.mark.parametrize(
    "flags,match",
    [
        (["--learning_rate", "1e4"], r"`learning_rate`=10000.0 is outside \(0, 1\]"),
        (["--learning_rate", "0"], "learning_rate"),
        (["--learning_rate", "nan"], "learning_rate"),
        (["--lr_scheduler", "cosine_annealing"], "lr_scheduler"),
        (["--mixed_precision", "fp8"], "mixed_precision"),
        (["--audio_drop_prob", "1.5"], "audio_drop_prob"),
        (["--timestep_sampling", "lognormal"], "`timestep_sampling` must be one of .*logit_normal.*'lognormal'"),
        (["--timestep_logit_std", "0"], "timestep_logit_std"),
        (
            ["--attention_processor", "flash"],
            r"`attention_processor` must be one of \('AttnProcessor', 'AttnProcessor2_0'\) or unset, got 'flash'",
        ),
        (["--loss_type", "l2"], r"`loss_type` must be one of \('mse', 'rms', 'l1', 'huber'\), got 'l2'"),
        (["--adapter_hidden_pool", "median"], r"`adapter_hidden_pool` must be one of \('mean', 'max'\), got 'median'"),
        (["--loss_type", "huber", "--huber_c", "0"], "`huber_c` must be positive, got 0.0"),
        (["--loss_type", "rms", "--rms_max_timestep", "0"], "`rms_max_timestep` must be a positive integer"),
        (
            ["--repa_weight", "0"],
            "`repa_weight` must be a positive number.*got 0.0.*leave `repa_encoder_name_or_path`",
        ),
        (["--repa_weight", "nan"], "`repa_weight` must be a positive number"),
        (["--repa_block", "mid"], r"`repa_block`='mid' is not a UNet block name: use mid_block, down_blocks.<i>"),
        (["--repa_projector_dim", "0"], "`repa_projector_dim` must be positive"),
        (
            ["--unet_config", PIXEL_UNET, "--repa_encoder_name_or_path", "./no/dino"],
            "`repa_encoder_name_or_path`='./no/dino' is not an existing",
        ),
        (["--timestep_logit_mean", "nan"], "`timestep_logit_mean` and `timestep_logit_std` must be finite.*got nan"),
        (["--timestep_logit_std", "inf"], "must be finite.*got 0.0 and inf"),
        (["--validation_audio", "missing/rain.wav"], "validation_audio.*missing/rain.wav"),
        (["--dataset_name", "./no/such/folder"], "`dataset_name`='./no/such/folder' is not an existing local path"),
        (["--audio_encoder_name_or_path", "not a valid id"], "audio_encoder_name_or_path"),
        (["--resume_from_checkpoint", "nowhere/checkpoint-4"], "resume_from_checkpoint"),
        (["--hub_model_id", "a//b"], "hub_model_id"),
    ],
)
def test_bad_values_and_paths_fail_at_parse_time(flags, match):
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        parse_training_config([str(TINY_YAML), *flags])


def test_required_fields_and_valid_hub_ids(tmp_path):
    with pytest.raises(ValueError, match="dataset_name"):
        parse_training_config([str(TINY_YAML)]).validate_for_training()
    with pytest.raises(ValueError, match="audio_encoder_name_or_path"):
        parse_training_config([str(TINY_YAML), "--dataset_name", "org/data"]).validate_for_training()
    config = parse_training_config([str(TINY_YAML), "--push_to_hub", "--output_dir", str(tmp_path / "my-model")])
    assert config.hub_repo_id == "my-model"  # diffusers' convention: the output folder's name
    assert parse_training_config([str(TINY_YAML), "--dataset_name", "org/data.v2"]).dataset_name == "org/data.v2"


def test_lr_scheduler_names_match_diffusers():
    from diffusers.optimization import SchedulerType

    assert set(LR_SCHEDULERS) == {s.value for s in SchedulerType}


def test_every_option_has_help_and_mixed_precision_is_unset_by_default():
    parser = make_parser((TrainingConfig,))
    options = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    assert len(options) > 50
    assert not [a.dest for a in options if not (a.help or "").strip()]
    assert TrainingConfig().mixed_precision is None


def run_script(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(TRAIN), *args], capture_output=True, text=True, env=env, cwd=REPO)
    return proc, time.perf_counter() - start


def test_help_is_fast_and_shows_the_config_argument():
    proc, seconds = run_script("--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: train.py [-h] [CONFIG.yaml] [--FIELD VALUE ...]")
    assert "--adam_beta1" in proc.stdout and "AdamW beta1" in proc.stdout
    assert seconds < 5, f"--help took {seconds:.1f} s"


def test_wrong_combination_fails_in_under_5_s_from_the_command_line():
    proc, seconds = run_script(str(TINY_YAML), "--lora_rank", "4", "--train_unet", "--dataset_name", "org/data")
    assert proc.returncode != 0
    assert proc.stderr.strip() == (
        "train.py: error: `lora_rank`=4 and `train_unet` are exclusive: LoRA trains a low-rank update of a frozen "
        "UNet. Set `lora_rank: 0` to train the whole UNet, or drop `train_unet`."
    )
    assert seconds < 5, f"failed after {seconds:.1f} s"


def test_undecodable_validation_audio_fails_before_any_model_loads(tmp_path):
    """A wrong `--validation_audio` was found only after training; now it stops the run at startup."""
    not_audio = tmp_path / "rain.wav"
    not_audio.write_text("this is not audio")
    pipeline_dir = tmp_path / "no-pipeline-here"  # never opened: the sound is checked first
    pipeline_dir.mkdir()
    args = ["--dataset_name", "org/data", "--pretrained_pipeline", str(pipeline_dir)]
    proc, seconds = run_script(str(TINY_YAML), *args, "--validation_audio", str(not_audio))
    assert proc.returncode != 0
    assert proc.stderr.strip().startswith("train.py: error: `validation_audio[0]`:"), proc.stderr[-2000:]
    assert "is not a readable audio file" in proc.stderr and seconds < 15


def test_build_components_from_base_model_and_audio_encoder(tiny_base_dirs, tiny_dataset_dir):
    from diffusers_sonify import training_utils as tu

    base, audio = tiny_base_dirs
    config = TrainingConfig(
        pretrained_model_name_or_path=base,
        audio_encoder_name_or_path=audio,
        use_text_encoder=True,
        num_pooled_tokens=3,
        num_hidden_tokens=5,
        dataset_name=tiny_dataset_dir,
    )
    c = tu.build_training_components(config)
    assert c["vae"] is not None and c["text_encoder"] is not None and c["tokenizer"] is not None
    proj = c["audio_projection"]
    assert proj.config.cross_attention_dim == c["unet"].config.cross_attention_dim == 32
    assert proj.config.pooled_dim == c["audio_encoder"].config.projection_dim
    assert proj.config.hidden_dim == c["audio_encoder"].config.hidden_size and proj.num_tokens == 8
    tu.check_model_resolution(32, c["unet"], c["vae"])  # tiny VAE (2 blocks) x tiny UNet (2 blocks): multiple 4
    with pytest.raises(ValueError, match="`resolution`=30 is not a multiple of 4, the spatial multiple of the VAE"):
        tu.check_model_resolution(30, c["unet"], c["vae"])
    with pytest.raises(ValueError, match="audio_encoder_class"):
        tu.build_training_components(
            TrainingConfig(
                pretrained_model_name_or_path=base, audio_encoder_name_or_path=audio, audio_encoder_class="NoSuchModel"
            )
        )


def test_builder_uses_the_same_loader(tmp_path):
    from diffusers_sonify.sonification.config import parse_build_config

    path = sorted((REPO / "dataset_builder" / "configs").glob("*.yaml"))[0]
    config = parse_build_config([str(path), "--output_dir", str(tmp_path / "o")])
    assert config.output_dir == str(tmp_path / "o")
    bad = tmp_path / "bad.yaml"
    bad.write_text("sample_rte: 16000\n")
    with pytest.raises(ValueError, match="did you mean 'sample_rate'"):
        parse_build_config([str(bad)])
    assert Path(sys.modules["diffusers_sonify.config_loading"].__file__).name == "config_loading.py"
