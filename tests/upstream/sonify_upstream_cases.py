"""diffusers' own pipeline test mixins, as they are upstream, applied to this project's pipelines.

Not collected by this repository's pytest (its name does not start with `test_`, and it imports diffusers' test
package, which is not part of this repository). `run_diffusers_mixins.py` copies it next to an extracted checkout of
diffusers' `tests/` and runs it there; see README.md in this folder.

Only the test-case classes are written here: the components and inputs each mixin asks for
(`get_dummy_components`, `get_dummy_inputs`, the parameter sets) and, where one of our pipelines differs from the
premise of a mixin test, an override with the reason written next to it, as diffusers' own pipeline test classes do
(56 of them override `test_save_load_optional_components`).
"""

import tempfile
import unittest

import numpy as np
import PIL.Image
import torch
from tests.pipelines.pipeline_params import IMAGE_TO_IMAGE_IMAGE_PARAMS
from tests.pipelines.test_pipelines_common import (
    PipelineFromPipeTesterMixin,
    PipelineKarrasSchedulerTesterMixin,
    PipelineLatentTesterMixin,
    PipelineTesterMixin,
    to_np,
)

from diffusers_sonify import AudioToImageImg2ImgPipeline, AudioToImageInpaintPipeline, AudioToImagePipeline
from diffusers_sonify.tiny import tiny_pipeline_components

SR = 16_000
SOUND_AND_TEXT_PARAMS = frozenset(
    [
        "audio",
        "prompt",
        "height",
        "width",
        "guidance_scale",
        "negative_prompt",
        "prompt_embeds",
        "negative_prompt_embeds",
        "audio_embeds",
        "negative_audio_embeds",
    ]
)


def tone(hz: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(SR * seconds)) / SR
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


class _SoundAndText(
    PipelineLatentTesterMixin, PipelineKarrasSchedulerTesterMixin, PipelineFromPipeTesterMixin, PipelineTesterMixin
):
    """Latent diffusion conditioned on a sound and a prompt (tiny VAE, CLIP text encoder, CLAP audio tower)."""

    params = SOUND_AND_TEXT_PARAMS
    batch_params = frozenset(["audio", "prompt", "negative_prompt"])
    callback_cfg_params = frozenset(["prompt_embeds"])
    image_params = frozenset()
    image_latents_params = frozenset()
    test_layerwise_casting = True
    test_group_offloading = True

    def get_dummy_components(self):
        return tiny_pipeline_components(with_text=True)

    def get_dummy_inputs(self, device, seed=0):
        return {
            "audio": tone(440.0),
            "sampling_rate": SR,
            "prompt": "rain on a roof",
            "generator": torch.Generator(device="cpu").manual_seed(seed),
            "num_inference_steps": 2,
            "guidance_scale": 3.0,
            "text_guidance_scale": 2.0,
            "output_type": "np",
        }

    def test_save_load_optional_components(self, expected_max_difference=1e-4):
        """Overridden: the optional components depend on the inputs and on each other. The text encoder and
        tokenizer are optional together with the prompt (without them a prompt is an error, not silently ignored),
        and the VAE is optional only with a pixel-space UNet (a 4-channel UNet without a VAE is rejected at
        construction). Here: the text components set to None, the prompt left out, the rest as upstream's test.
        `AudioOnlyPixelSpaceUpstreamTests` runs the upstream test itself with every optional component None."""
        pipe = self.pipeline_class(**self.get_dummy_components()).to("cpu")
        pipe.set_progress_bar_config(disable=True)
        pipe.text_encoder, pipe.tokenizer = None, None
        inputs = self.get_dummy_inputs("cpu")
        inputs.pop("prompt", None), inputs.pop("text_guidance_scale", None)
        torch.manual_seed(0)
        output = pipe(**inputs)[0]
        with tempfile.TemporaryDirectory() as tmpdir:
            pipe.save_pretrained(tmpdir)
            loaded = self.pipeline_class.from_pretrained(tmpdir)
        loaded.set_progress_bar_config(disable=True)
        self.assertIsNone(loaded.text_encoder)
        self.assertIsNone(loaded.tokenizer)
        inputs = self.get_dummy_inputs("cpu")
        inputs.pop("prompt", None), inputs.pop("text_guidance_scale", None)
        torch.manual_seed(0)
        self.assertLess(np.abs(to_np(output) - to_np(loaded(**inputs)[0])).max(), expected_max_difference)


class AudioToImageUpstreamTests(_SoundAndText, unittest.TestCase):
    pipeline_class = AudioToImagePipeline


class AudioToImageImg2ImgUpstreamTests(_SoundAndText, unittest.TestCase):
    pipeline_class = AudioToImageImg2ImgPipeline
    required_optional_params = PipelineTesterMixin.required_optional_params - {"latents"}  # as SD img2img's tests
    params = SOUND_AND_TEXT_PARAMS | {"image", "strength"}
    batch_params = _SoundAndText.batch_params | {"image"}
    image_params = IMAGE_TO_IMAGE_IMAGE_PARAMS
    image_latents_params = IMAGE_TO_IMAGE_IMAGE_PARAMS

    def get_dummy_inputs(self, device, seed=0):
        inputs = super().get_dummy_inputs(device, seed)
        rng = np.random.default_rng(seed)
        inputs["image"] = PIL.Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
        inputs["strength"] = 0.75
        return inputs


class AudioToImageInpaintUpstreamTests(AudioToImageImg2ImgUpstreamTests):
    pipeline_class = AudioToImageInpaintPipeline
    params = AudioToImageImg2ImgUpstreamTests.params | {"mask_image"}
    batch_params = AudioToImageImg2ImgUpstreamTests.batch_params | {"mask_image"}

    def get_dummy_inputs(self, device, seed=0):
        inputs = super().get_dummy_inputs(device, seed)
        mask = np.zeros((32, 32), dtype=np.uint8)
        mask[:, 16:] = 255  # repaint the right half
        inputs["mask_image"] = PIL.Image.fromarray(mask)
        return inputs


class _SoundOnly:
    """No text encoder, no prompt."""

    batch_params = frozenset(["audio"])

    def get_dummy_inputs(self, device, seed=0):
        inputs = _SoundAndText.get_dummy_inputs(self, device, seed)
        inputs.pop("prompt"), inputs.pop("text_guidance_scale")
        return inputs

    @unittest.skip(
        "sound only: no prompt and no text encoder, so no `encode_prompt` input; `encode_audio` in isolation"
    )
    def test_encode_prompt_works_in_isolation(self):
        pass  # the audio counterpart: tests/pipelines/test_pipeline_conformance.py (encode_audio, embeds passed back)


class AudioOnlyUpstreamTests(_SoundOnly, _SoundAndText, unittest.TestCase):
    """Sound only, latent diffusion."""

    pipeline_class = AudioToImagePipeline

    def get_dummy_components(self):
        return tiny_pipeline_components(with_text=False)

    @unittest.skip(
        "StableDiffusionPipeline cannot run on these components: they have no text encoder or tokenizer (it fails in "
        "its own encode_prompt). from_pipe both ways with a forward pass runs in the sound + text classes."
    )
    def test_from_pipe_consistent_forward_pass(self):
        pass


class AudioOnlyPixelSpaceUpstreamTests(
    _SoundOnly, PipelineKarrasSchedulerTesterMixin, PipelineTesterMixin, unittest.TestCase
):
    """Sound only, pixel-space diffusion (the toy world's layout: no VAE, a 3-channel UNet). Every optional component
    is None, so upstream's `test_save_load_optional_components` runs as it is. No latent or `from_pipe` mixins:
    both need a VAE."""

    pipeline_class = AudioToImagePipeline
    params = SOUND_AND_TEXT_PARAMS
    callback_cfg_params = frozenset(["prompt_embeds"])
    test_layerwise_casting = True
    test_group_offloading = True

    def get_dummy_components(self):
        return tiny_pipeline_components(with_text=False, latent=False)
