"""AudioProjectionModel and the audio-encoder adapter layer, across the supported encoder classes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sounds import SR, tone
from transformers import (
    ASTConfig,
    ASTFeatureExtractor,
    ASTModel,
    ClapConfig,
    ClapModel,
)

from diffusers_sonify import AudioProjectionModel, AudioToImagePipeline
from diffusers_sonify.models import encode_audio_features
from diffusers_sonify.tiny import tiny_clap_audio, tiny_pipeline_components
from diffusers_sonify.training_config import ADAPTER_HIDDEN_POOLS, ADAPTER_INPUT_TYPES


@pytest.mark.parametrize("input_type,tokens", [("pooled", 3), ("hidden_states", 5), ("both", 8)])
def test_projection_token_counts(input_type, tokens):
    model = AudioProjectionModel(
        cross_attention_dim=24,
        pooled_dim=10,
        hidden_dim=12,
        input_type=input_type,
        num_pooled_tokens=3,
        num_hidden_tokens=5,
    )
    out = model(pooled=torch.randn(2, 10), hidden_states=torch.randn(2, 37, 12))
    assert out.shape == (2, tokens, 24) and model.num_tokens == tokens
    assert model.get_null_audio_embeds(4).shape == (4, tokens, 24)


def test_hidden_tokens_do_not_depend_on_clip_length():
    model = AudioProjectionModel(
        cross_attention_dim=16, pooled_dim=None, hidden_dim=8, input_type="hidden_states", num_hidden_tokens=4
    )
    assert model(hidden_states=torch.randn(1, 9, 8)).shape == model(hidden_states=torch.randn(1, 300, 8)).shape


def test_projection_config_errors():
    with pytest.raises(ValueError, match="input_type"):
        AudioProjectionModel(input_type="mean")
    with pytest.raises(ValueError, match="needs `pooled_dim`"):
        AudioProjectionModel(input_type="pooled", pooled_dim=None)
    with pytest.raises(ValueError, match="pass `hidden_states`"):
        AudioProjectionModel(cross_attention_dim=8, pooled_dim=4, hidden_dim=4)(pooled=torch.randn(1, 4))


def test_max_pooled_hidden_tokens_keep_a_short_event_at_its_strength():
    # One loud frame among quiet ones: a mean over its run dilutes it by the run's length, a max keeps it.
    quiet, event = torch.zeros(1, 40, 4), torch.zeros(1, 40, 4)
    event[0, 13] = 5.0
    kwargs = dict(cross_attention_dim=4, pooled_dim=None, hidden_dim=4, input_type="hidden_states")
    means = AudioProjectionModel(**kwargs, num_hidden_tokens=4)
    maxes = AudioProjectionModel(**kwargs, num_hidden_tokens=4, hidden_pool="max")
    for model in (means, maxes):  # the same projection, so only the pooling differs
        model.hidden_proj.weight.data.copy_(torch.eye(4))
        model.hidden_proj.bias.data.zero_()
        model.hidden_norm = torch.nn.Identity()
    torch.testing.assert_close(maxes(hidden_states=event)[0, 1], torch.full((4,), 5.0))  # frame 13: run 10-19
    torch.testing.assert_close(means(hidden_states=event)[0, 1], torch.full((4,), 0.5))
    for model in (means, maxes):
        assert model(hidden_states=quiet).abs().max() == 0
        assert model(hidden_states=event)[0, [0, 2, 3]].abs().max() == 0  # the event stays in its own run


def test_hidden_pool_is_validated_and_saved(tmp_path):
    with pytest.raises(ValueError, match=r"`hidden_pool` must be one of \('mean', 'max'\), got 'median'"):
        AudioProjectionModel(hidden_pool="median")
    model = AudioProjectionModel(cross_attention_dim=8, pooled_dim=4, hidden_dim=6, hidden_pool="max")
    model.save_pretrained(tmp_path)
    loaded = AudioProjectionModel.from_pretrained(tmp_path)
    assert loaded.config.hidden_pool == "max"
    x, h = torch.randn(2, 4), torch.randn(2, 30, 6)
    torch.testing.assert_close(loaded(pooled=x, hidden_states=h), model(pooled=x, hidden_states=h))
    # adapters saved before the option existed have no `hidden_pool` in their config: they pool by the mean
    config = json.loads((tmp_path / "config.json").read_text())
    del config["hidden_pool"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert AudioProjectionModel.from_pretrained(tmp_path).config.hidden_pool == "mean"


def test_every_adapter_choice_the_training_config_accepts_builds_an_adapter():
    # training_config.py keeps its own copies of the adapter's choices (it does not import torch): they must not drift
    for input_type in ADAPTER_INPUT_TYPES:
        for hidden_pool in ADAPTER_HIDDEN_POOLS:
            model = AudioProjectionModel(
                cross_attention_dim=8, pooled_dim=4, hidden_dim=6, input_type=input_type, hidden_pool=hidden_pool
            )
            assert model(pooled=torch.randn(1, 4), hidden_states=torch.randn(1, 10, 6)).shape[-1] == 8


def test_drop_condition_uses_the_null_tokens():
    model = AudioProjectionModel(cross_attention_dim=8, pooled_dim=4, hidden_dim=4)
    embeds = model(pooled=torch.randn(3, 4), hidden_states=torch.randn(3, 6, 4))
    dropped = model.drop_condition(embeds, torch.tensor([True, False, True]))
    torch.testing.assert_close(dropped[0], model.null_audio_embeds[0])
    torch.testing.assert_close(dropped[2], model.null_audio_embeds[0])
    torch.testing.assert_close(dropped[1], embeds[1])
    dropped.sum().backward()  # the null tokens are learned
    assert model.null_audio_embeds.grad is not None and model.null_audio_embeds.grad.abs().sum() > 0


def test_projection_save_load(tmp_path):
    model = AudioProjectionModel(cross_attention_dim=8, pooled_dim=4, hidden_dim=6, num_pooled_tokens=1)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    loaded = AudioProjectionModel.from_pretrained(tmp_path)
    x, h = torch.randn(2, 4), torch.randn(2, 5, 6)
    torch.testing.assert_close(loaded(pooled=x, hidden_states=h), model(pooled=x, hidden_states=h))
    torch.testing.assert_close(loaded.null_audio_embeds, model.null_audio_embeds)


def _tiny_ast():
    torch.manual_seed(0)
    config = ASTConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_length=100,
        num_mel_bins=32,
    )
    return ASTModel(config).eval(), ASTFeatureExtractor(num_mel_bins=32, max_length=100, sampling_rate=SR)


def _tiny_clap_full():
    torch.manual_seed(0)
    audio, fe = tiny_clap_audio()
    text = dict(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=40,
    )
    config = ClapConfig(text_config=text, audio_config=audio.config.to_dict(), projection_dim=16)
    return ClapModel(config).eval(), fe


@pytest.mark.parametrize(
    "build",
    [_tiny_ast, _tiny_clap_full, tiny_clap_audio],
    ids=["ASTModel", "ClapModel", "ClapAudioModelWithProjection"],
)
def test_pipeline_runs_with_each_encoder_class(build):
    encoder, fe = build()
    pooled_dim = (
        encoder.config.projection_dim if hasattr(encoder.config, "projection_dim") else encoder.config.hidden_size
    )
    hidden_dim = getattr(encoder.config, "audio_config", encoder.config).hidden_size
    components = tiny_pipeline_components()
    components.update(
        audio_encoder=encoder,
        feature_extractor=fe,
        audio_projection=AudioProjectionModel(
            cross_attention_dim=32,
            pooled_dim=pooled_dim,
            hidden_dim=hidden_dim,
            num_pooled_tokens=2,
            num_hidden_tokens=3,
        ),
    )
    pipe = AudioToImagePipeline(**components)
    pipe.set_progress_bar_config(disable=True)
    wave = tone(440.0, seconds=0.8)
    features = fe([wave], sampling_rate=SR, return_tensors="pt")
    encoded = encode_audio_features(encoder, next(v for k, v in features.items() if k.startswith("input_")))
    assert encoded.pooled.shape == (1, pooled_dim) and encoded.hidden_states.shape[-1] == hidden_dim
    images = pipe(wave, sampling_rate=SR, num_inference_steps=1, output_type="np").images
    assert images.shape == (1, 32, 32, 3) and np.isfinite(images).all()


def test_unsupported_encoder_is_a_type_error():
    components = tiny_pipeline_components()
    components["audio_encoder"] = torch.nn.Linear(3, 3)
    with pytest.raises(TypeError, match="neither `input_features` nor `input_values`"):
        AudioToImagePipeline(**components)
