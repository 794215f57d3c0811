"""Behaviour of AudioToImagePipeline on tiny real-class components."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from sounds import SR

from diffusers_sonify import AudioToImagePipeline
from diffusers_sonify.tiny import tiny_pipeline

STEPS = 2


def run(pipe, audio, seed=0, **kwargs):
    kwargs.setdefault("num_inference_steps", STEPS)
    kwargs.setdefault("output_type", "np")
    if isinstance(audio, torch.Tensor) and audio.ndim == 3:  # precomputed encode_audio output
        kwargs["audio_embeds"], audio = audio, None
    else:
        kwargs.setdefault("sampling_rate", SR)
    return pipe(audio, generator=torch.Generator().manual_seed(seed), **kwargs).images


@pytest.mark.parametrize("output_type", ["pil", "np", "pt", "latent"])
def test_output_types_shapes_and_dtypes(tiny_pipe, sounds, output_type):
    images = run(tiny_pipe, [sounds["low"], sounds["high"]], output_type=output_type, height=32, width=48)
    if output_type == "pil":
        assert len(images) == 2 and all(isinstance(im, PIL.Image.Image) for im in images)
        assert images[0].size == (48, 32) and images[0].mode == "RGB"
    elif output_type == "np":
        assert images.shape == (2, 32, 48, 3) and images.dtype == np.float32
        assert images.min() >= 0.0 and images.max() <= 1.0
    elif output_type == "pt":
        assert images.shape == (2, 3, 32, 48) and images.dtype == torch.float32
    else:
        assert images.shape == (2, 4, 16, 24)  # the VAE downsamples by 2 in the tiny config


def test_pixel_space_pipeline_without_vae(sounds):
    pipe = tiny_pipeline(latent=False)
    assert pipe.vae is None and pipe.vae_scale_factor == 1
    images = run(pipe, sounds["low"])
    assert images.shape == (1, 32, 32, 3)


def test_same_generator_same_image_and_different_seed_differs(tiny_pipe, sounds):
    a = run(tiny_pipe, sounds["sweep"], seed=3)
    b = run(tiny_pipe, sounds["sweep"], seed=3)
    c = run(tiny_pipe, sounds["sweep"], seed=4)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3


def test_different_sounds_give_different_images(tiny_pipe, sounds):
    a = run(tiny_pipe, sounds["low"])
    b = run(tiny_pipe, sounds["noise"])
    assert np.abs(a - b).max() > 1e-4


def test_batch_of_two_equals_two_single_calls(tiny_pipe, sounds):
    gens = [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)]
    batch = tiny_pipe(
        [sounds["low"], sounds["high"]], sampling_rate=SR, generator=gens, num_inference_steps=STEPS, output_type="np"
    ).images
    single_low = run(tiny_pipe, sounds["low"], seed=1)
    single_high = run(tiny_pipe, sounds["high"], seed=2)
    np.testing.assert_allclose(batch[0], single_low[0], atol=1e-4)
    np.testing.assert_allclose(batch[1], single_high[0], atol=1e-4)


def test_num_images_per_prompt(tiny_pipe, sounds):
    images = run(tiny_pipe, [sounds["low"], sounds["high"]], num_images_per_prompt=3)
    assert images.shape[0] == 6


def test_mixing_weights_one_zero_equal_first_sound(tiny_pipe, sounds):
    alone = run(tiny_pipe, sounds["low"])
    mixed = run(tiny_pipe, [sounds["low"], sounds["high"]], audio_weights=[1.0, 0.0])
    np.testing.assert_allclose(mixed, alone, atol=1e-5)
    half = run(tiny_pipe, [sounds["low"], sounds["high"]], audio_weights=[0.5, 0.5])
    assert half.shape == alone.shape and np.abs(half - alone).max() > 1e-4


def test_mix_is_the_normalised_weighted_mean_of_embeddings(tiny_pipe, sounds):
    embeds = tiny_pipe.encode_audio([sounds["low"], sounds["high"]], sampling_rate=SR)
    mixed = AudioToImagePipeline.mix_audio_embeds(embeds, [3.0, 1.0])
    torch.testing.assert_close(mixed[0], 0.75 * embeds[0] + 0.25 * embeds[1])


def test_interpolation_endpoints_equal_the_sounds(tiny_pipe, sounds):
    a = tiny_pipe.encode_audio(sounds["low"], sampling_rate=SR)
    b = tiny_pipe.encode_audio(sounds["high"], sampling_rate=SR)
    at0 = AudioToImagePipeline.interpolate_audio_embeds(a, b, 0.0)
    at1 = AudioToImagePipeline.interpolate_audio_embeds(a, b, 1.0)
    torch.testing.assert_close(at0, a)
    torch.testing.assert_close(at1, b)
    np.testing.assert_array_equal(run(tiny_pipe, at0), run(tiny_pipe, sounds["low"]))
    mid = AudioToImagePipeline.interpolate_audio_embeds(a, b, 0.5)
    torch.testing.assert_close(mid, (a + b) / 2)


def _unet_batch_sizes(pipe, **kwargs):
    sizes = []
    handle = pipe.unet.register_forward_hook(
        lambda mod, args, kwargs_, out: sizes.append(args[0].shape[0]), with_kwargs=True
    )
    try:
        pipe(**kwargs)
    finally:
        handle.remove()
    return sizes


def test_guidance_one_skips_the_unconditional_branch(tiny_pipe, sounds):
    common = dict(audio=sounds["low"], sampling_rate=SR, num_inference_steps=STEPS, output_type="np")
    assert _unet_batch_sizes(tiny_pipe, guidance_scale=1.0, **common) == [1] * STEPS
    assert _unet_batch_sizes(tiny_pipe, guidance_scale=4.0, **common) == [2] * STEPS


def test_guidance_changes_the_image_and_negative_audio_is_used(tiny_pipe, sounds):
    plain = run(tiny_pipe, sounds["low"], guidance_scale=1.0)
    guided = run(tiny_pipe, sounds["low"], guidance_scale=6.0)
    negative = run(tiny_pipe, sounds["low"], guidance_scale=6.0, negative_audio=sounds["noise"])
    assert np.abs(plain - guided).max() > 1e-4
    assert np.abs(guided - negative).max() > 1e-4


def test_guidance_rescale_acts_only_with_guidance(tiny_pipe, sounds):
    guided = run(tiny_pipe, sounds["low"], guidance_scale=6.0)
    np.testing.assert_array_equal(run(tiny_pipe, sounds["low"], guidance_scale=6.0, guidance_rescale=0.0), guided)
    assert np.abs(run(tiny_pipe, sounds["low"], guidance_scale=6.0, guidance_rescale=0.7) - guided).max() > 1e-4
    plain = run(tiny_pipe, sounds["low"], guidance_scale=1.0)
    np.testing.assert_array_equal(run(tiny_pipe, sounds["low"], guidance_scale=1.0, guidance_rescale=0.7), plain)


def test_null_tokens_come_from_the_adapter(tiny_pipe, sounds):
    """Guidance against the adapter's null tokens equals guidance against them passed explicitly."""
    null = tiny_pipe.audio_projection.get_null_audio_embeds(1).detach()
    default = run(tiny_pipe, sounds["low"], guidance_scale=3.0)
    explicit = run(tiny_pipe, sounds["low"], guidance_scale=3.0, negative_audio_embeds=null)
    np.testing.assert_array_equal(default, explicit)


def test_text_prompt_with_separate_guidance(sounds):
    pipe = tiny_pipeline(with_text=True)
    common = dict(audio=sounds["low"], sampling_rate=SR, num_inference_steps=STEPS, output_type="np")
    # audio + text guidance: three branches (null/null, text/null, text/audio)
    assert (
        _unet_batch_sizes(pipe, prompt="a bell", guidance_scale=3.0, text_guidance_scale=5.0, **common) == [3] * STEPS
    )
    assert (
        _unet_batch_sizes(pipe, prompt="a bell", guidance_scale=1.0, text_guidance_scale=5.0, **common) == [2] * STEPS
    )
    a = run(pipe, sounds["low"], prompt="a bell", text_guidance_scale=5.0)
    b = run(pipe, sounds["low"], prompt="a drum", text_guidance_scale=5.0)
    c = run(pipe, sounds["low"], prompt="a bell", text_guidance_scale=2.0)
    assert np.abs(a - b).max() > 1e-4 and np.abs(a - c).max() > 1e-4


def test_callback_on_step_end_sees_and_replaces_latents(tiny_pipe, sounds):
    seen = []

    def callback(pipe, step, timestep, tensors):
        seen.append((step, tuple(tensors["latents"].shape)))
        return {"latents": torch.zeros_like(tensors["latents"])}

    images = run(tiny_pipe, sounds["low"], callback_on_step_end=callback, output_type="latent")
    assert seen == [(0, (1, 4, 16, 16)), (1, (1, 4, 16, 16))]
    assert torch.count_nonzero(images) == 0


# Save -> load compares with a tolerance, as diffusers' own save/load tests do: the weights are identical, but on some
# CPUs (AMD EPYC) kernels differ in the last bits between module instances (~1e-6 on images in [0, 1]).
SAVE_LOAD_ATOL = 1e-4


def test_save_load_round_trip(tiny_pipe, sounds, tmp_path):
    before = run(tiny_pipe, sounds["sweep"], guidance_scale=3.0)
    tiny_pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["_class_name"] == "AudioToImagePipeline"
    assert index["audio_projection"] == ["diffusers_sonify.models.audio_projection", "AudioProjectionModel"]
    assert index["vae"] == ["diffusers", "AutoencoderKL"]
    assert not list(Path(tmp_path).rglob("*.bin")), "weights must be saved as safetensors"
    reloaded = AudioToImagePipeline.from_pretrained(tmp_path)
    reloaded.set_progress_bar_config(disable=True)
    np.testing.assert_allclose(run(reloaded, sounds["sweep"], guidance_scale=3.0), before, atol=SAVE_LOAD_ATOL, rtol=0)


def test_text_components_round_trip(tmp_path, sounds):
    pipe = tiny_pipeline(with_text=True)
    before = run(pipe, sounds["low"], prompt="rain")
    pipe.save_pretrained(tmp_path)
    reloaded = AudioToImagePipeline.from_pretrained(tmp_path)
    reloaded.set_progress_bar_config(disable=True)
    np.testing.assert_allclose(run(reloaded, sounds["low"], prompt="rain"), before, atol=SAVE_LOAD_ATOL, rtol=0)


def test_encode_audio_needs_only_the_audio_components(tiny_pipe_dir, tiny_pipe, sounds):
    audio_only = AudioToImagePipeline.from_pretrained(tiny_pipe_dir, unet=None, vae=None)
    assert audio_only.unet is None and audio_only.vae is None
    embeds = audio_only.encode_audio([sounds["low"], sounds["high"]], sampling_rate=SR, num_images_per_prompt=2)
    adapter = tiny_pipe.audio_projection
    assert embeds.shape == (4, adapter.num_tokens, adapter.config.cross_attention_dim)
    torch.testing.assert_close(embeds[::2], tiny_pipe.encode_audio([sounds["low"], sounds["high"]], sampling_rate=SR))


def test_precomputed_audio_embeds_equal_raw_audio(tiny_pipe, sounds):
    embeds = tiny_pipe.encode_audio(sounds["high"], sampling_rate=SR)
    np.testing.assert_array_equal(run(tiny_pipe, embeds), run(tiny_pipe, sounds["high"]))


class _LogMessages(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.seen: list[str] = []

    def emit(self, record):
        self.seen.append(record.getMessage())


def test_lora_load_changes_output_and_unload_restores(tiny_pipe, sounds, tmp_path):
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    base = run(tiny_pipe, sounds["low"])
    trained = tiny_pipeline(seed=0)
    trained.unet.add_adapter(
        LoraConfig(
            r=4, lora_alpha=4, init_lora_weights="gaussian", target_modules=["to_k", "to_q", "to_v", "to_out.0"]
        )
    )
    with torch.no_grad():  # stand-in for training: make the LoRA update non-zero
        for name, param in trained.unet.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5, generator=torch.Generator().manual_seed(7))
    AudioToImagePipeline.save_lora_weights(
        tmp_path, unet_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(trained.unet))
    )
    assert (tmp_path / "pytorch_lora_weights.safetensors").is_file()
    messages = _LogMessages()
    lora_logger = logging.getLogger("diffusers.loaders.lora_base")
    lora_logger.addHandler(messages)
    try:
        tiny_pipe.load_lora_weights(tmp_path)
    finally:
        lora_logger.removeHandler(messages)
    assert not [m for m in messages.seen if "No LoRA keys" in m]  # a UNet-only file is this project's normal case
    with_lora = run(tiny_pipe, sounds["low"])
    assert np.abs(with_lora - base).max() > 1e-3
    tiny_pipe.unload_lora_weights()
    np.testing.assert_allclose(run(tiny_pipe, sounds["low"]), base, atol=1e-6)
