"""AudioToImageInpaintPipeline (and img2img's `mask_image`): the sound repaints inside the mask only."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch
from sounds import SR, tone

from diffusers_sonify import AudioToImageImg2ImgPipeline, AudioToImageInpaintPipeline
from diffusers_sonify.tiny import tiny_pipeline_components


@pytest.fixture(params=[True, False], ids=["latent", "pixel"])
def pipe(request):
    p = AudioToImageInpaintPipeline(**tiny_pipeline_components(latent=request.param))
    p.set_progress_bar_config(disable=True)
    return p


def picture(seed=0) -> PIL.Image.Image:
    return PIL.Image.fromarray(np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8))


def left_half() -> PIL.Image.Image:
    """White (repaint) on the left 16 columns, black (keep) on the right."""
    return PIL.Image.fromarray(np.tile(np.repeat([255, 0], 16).astype(np.uint8), (32, 1)))


def inpaint(pipe, mask, **kwargs):
    kwargs = {"num_inference_steps": 4, "generator": torch.Generator().manual_seed(0), "output_type": "np", **kwargs}
    return pipe(tone(440.0), image=picture(), mask_image=mask, sampling_rate=SR, **kwargs).images


def round_trip(pipe) -> np.ndarray:
    x = pipe.image_processor.preprocess(picture())
    if pipe.vae is not None:  # the pipeline's encoding draws from the generator first
        latents = pipe.encode_image(x, torch.Generator().manual_seed(0))
        x = pipe.vae.decode(latents / pipe.vae.config.scaling_factor)[0]
    return pipe.image_processor.postprocess(x.detach(), output_type="np")


def test_strength_zero_returns_the_input_through_the_vae(pipe):
    calls = []
    handle = pipe.unet.register_forward_pre_hook(lambda mod, args: calls.append(1))
    out = inpaint(pipe, left_half(), strength=0.0, guidance_scale=5.0)
    handle.remove()
    assert pipe.num_timesteps == 0 and calls == []
    np.testing.assert_allclose(out, round_trip(pipe), atol=1e-5, rtol=0)


def test_outside_the_mask_is_kept_and_inside_is_repainted(pipe):
    """The known region is put back after every step, the last time clean: in pixel space the right half is the
    input exactly; in latent space the right half of the sample is the encoded input exactly."""
    if pipe.vae is None:
        out = inpaint(pipe, left_half(), strength=1.0)[0]
        expected = np.asarray(picture()) / 255.0
        np.testing.assert_allclose(out[:, 16:], expected[:, 16:], atol=1e-6, rtol=0)
        assert np.abs(out[:, :16] - expected[:, :16]).mean() > 0.05
    else:
        latents = inpaint(pipe, left_half(), strength=1.0, output_type="latent")
        x = pipe.image_processor.preprocess(picture())
        init = pipe.encode_image(x, torch.Generator().manual_seed(0))
        half = latents.shape[-1] // 2
        torch.testing.assert_close(latents[..., half:], init[..., half:], atol=1e-6, rtol=0)
        assert (latents[..., :half] - init[..., :half]).abs().mean() > 0.05


def test_black_mask_keeps_everything_and_white_mask_is_img2img(pipe):
    black = PIL.Image.new("L", (32, 32), 0)
    np.testing.assert_allclose(inpaint(pipe, black, strength=1.0), round_trip(pipe), atol=1e-5, rtol=0)
    white = PIL.Image.new("L", (32, 32), 255)
    img2img = AudioToImageImg2ImgPipeline.from_pipe(pipe)
    unmasked = img2img(
        tone(440.0),
        image=picture(),
        sampling_rate=SR,
        strength=0.75,
        num_inference_steps=4,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images
    np.testing.assert_allclose(inpaint(pipe, white, strength=0.75), unmasked, atol=1e-5, rtol=0)


def test_mask_input_types_and_checks(pipe):
    reference = inpaint(pipe, left_half(), strength=0.75)
    as_np = np.asarray(left_half()).astype(np.float32) / 255.0
    for other in ([left_half()], as_np[None, :, :, None], torch.from_numpy(as_np)[None, None]):
        np.testing.assert_allclose(inpaint(pipe, other, strength=0.75), reference, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="`mask_image` is required"):
        pipe(tone(440.0), image=picture(), sampling_rate=SR, num_inference_steps=2)
    with pytest.raises(ValueError, match="3 masks for 1 images"):
        inpaint(pipe, [left_half()] * 3)
    with pytest.raises(ValueError, match="`strength` must be in"):
        inpaint(pipe, left_half(), strength=1.5)
