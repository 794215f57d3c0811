"""What diffusers checks of img2img pipelines, for AudioToImageImg2ImgPipeline: strength and every image input type."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch
from sounds import SR, tone

from diffusers_sonify import AudioToImageImg2ImgPipeline
from diffusers_sonify.tiny import tiny_pipeline_components


@pytest.fixture(params=[True, False], ids=["latent", "pixel"])
def pipe(request):
    p = AudioToImageImg2ImgPipeline(**tiny_pipeline_components(latent=request.param))
    p.set_progress_bar_config(disable=True)
    return p


def picture(seed=0) -> PIL.Image.Image:
    return PIL.Image.fromarray(np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8))


def edit(pipe, image, **kwargs):
    kwargs = {"num_inference_steps": 4, "output_type": "np", "generator": torch.Generator().manual_seed(0), **kwargs}
    return pipe(tone(440.0), image=image, sampling_rate=SR, **kwargs).images


def test_strength_zero_returns_the_input_through_the_vae(pipe):
    image = picture()
    calls = []
    handle = pipe.unet.register_forward_pre_hook(lambda mod, args: calls.append(1))
    out = edit(pipe, image, strength=0.0, guidance_scale=5.0)
    handle.remove()
    assert pipe.num_timesteps == 0 and calls == []  # the exact rule: no denoising step runs
    x = pipe.image_processor.preprocess(image)
    if pipe.vae is None:
        expected = x
    else:  # the pipeline's encoding draws from the generator first, as diffusers' img2img pipelines do
        latents = pipe.encode_image(x, torch.Generator().manual_seed(0))
        expected = pipe.vae.decode(latents / pipe.vae.config.scaling_factor)[0]
    expected = pipe.image_processor.postprocess(expected.detach(), output_type="np")
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=0)  # only x * scaling_factor / scaling_factor rounds
    if pipe.vae is None:
        np.testing.assert_allclose(out[0], np.asarray(image) / 255.0, atol=1e-6)


def test_strength_selects_the_steps_and_moves_away_from_the_input(pipe):
    image = picture()
    calls = []
    handle = pipe.unet.register_forward_pre_hook(lambda mod, args: calls.append(1))
    keep = edit(pipe, image, strength=0.0)
    light = edit(pipe, image, strength=0.5, guidance_scale=1.0)
    assert len(calls) == 2 and pipe.num_timesteps == 2  # int(4 * 0.5) steps, one UNet call each without guidance
    heavy = edit(pipe, image, strength=1.0, guidance_scale=1.0)
    handle.remove()
    assert np.abs(light - keep).mean() < np.abs(heavy - keep).mean()


@pytest.mark.parametrize("bad", [-0.1, 1.5, "0.5"])
def test_bad_strength_and_missing_image(pipe, bad):
    with pytest.raises(ValueError, match="`strength` must be in"):
        edit(pipe, picture(), strength=bad)
    with pytest.raises(ValueError, match="`image` is required"):
        pipe(tone(440.0), sampling_rate=SR)


def test_every_image_input_type_gives_the_same_edit(pipe):
    image = picture()
    as_np = np.asarray(image).astype(np.float32) / 255.0
    reference = edit(pipe, image, strength=0.6)
    for other in (
        [image],
        as_np,
        as_np[None],
        torch.from_numpy(as_np).permute(2, 0, 1)[None],
        [torch.from_numpy(as_np).permute(2, 0, 1)],
    ):
        np.testing.assert_allclose(edit(pipe, other, strength=0.6), reference, atol=1e-4, rtol=0)


def test_image_batches_and_sound_broadcast(pipe):
    images = [picture(0), picture(1)]
    gens = [torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)]
    both = pipe(
        tone(440.0),
        image=images,
        sampling_rate=SR,
        strength=0.5,
        num_inference_steps=4,
        generator=gens,
        output_type="np",
    ).images
    assert both.shape[0] == 2
    np.testing.assert_allclose(both[1], edit(pipe, images[1], strength=0.5)[0], atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="3 images for 2 sounds"):
        pipe([tone(440.0), tone(880.0)], image=[picture()] * 3, sampling_rate=SR, num_inference_steps=2)


def test_latents_from_encode_image_are_accepted_as_the_image(pipe):
    if pipe.vae is None:
        pytest.skip("pixel space: the image is the sample, there are no latents")
    image = picture()
    generator = torch.Generator().manual_seed(0)
    latents = pipe.encode_image(pipe.image_processor.preprocess(image), generator)  # draws as the pipeline would
    from_latents = edit(pipe, latents, strength=0.6, generator=generator)
    np.testing.assert_allclose(from_latents, edit(pipe, image, strength=0.6), atol=1e-4, rtol=0)


def test_example_docstring_runs(tiny_pipe_dir, tmp_path, monkeypatch):
    import soundfile as sf

    from diffusers_sonify.pipelines.audio_to_image_img2img import IMG2IMG_EXAMPLE_DOC_STRING

    monkeypatch.chdir(tmp_path)
    sf.write("rain_on_a_window.wav", tone(300.0), SR)
    picture().save("street.png")
    lines = [line.strip()[4:] for line in IMG2IMG_EXAMPLE_DOC_STRING.splitlines() if line.strip().startswith(">>>")]
    code = (
        "\n".join(lines)
        .replace('"org/sonify"', repr(tiny_pipe_dir))
        .replace("strength=0.6)", "strength=0.6, num_inference_steps=2)")
    )
    namespace: dict = {}
    exec(compile(code, "img2img example", "exec"), namespace)
    assert isinstance(namespace["edited"], PIL.Image.Image) and namespace["edited"].size == (32, 32)
