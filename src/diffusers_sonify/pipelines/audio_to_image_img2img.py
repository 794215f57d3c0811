"""`AudioToImageImg2ImgPipeline`: sound edits a picture (SDEdit: noise it part-way, denoise with the sound)."""

from __future__ import annotations

from typing import Any, Callable

import torch
from diffusers.callbacks import PipelineCallback
from diffusers.image_processor import PipelineImageInput, VaeImageProcessor
from diffusers.models import AutoencoderKL, UNet2DConditionModel
from diffusers.schedulers import KarrasDiffusionSchedulers
from diffusers.utils.torch_utils import randn_tensor
from transformers import CLIPTextModel, CLIPTokenizer, PreTrainedModel, SequenceFeatureExtractor

from ..models.audio_projection import AudioProjectionModel
from .audio_to_image import AudioToImagePipeline, _as_list

IMG2IMG_EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> from diffusers_sonify import AudioToImageImg2ImgPipeline
        >>> from PIL import Image

        >>> pipe = AudioToImageImg2ImgPipeline.from_pretrained("org/sonify")  # the same folder as AudioToImagePipeline
        >>> edited = pipe("rain_on_a_window.wav", image=Image.open("street.png"), strength=0.6).images[0]
        ```
"""


class AudioToImageImg2ImgPipeline(AudioToImagePipeline):
    r"""Edit an image with a sound (SDEdit, Meng et al. 2022): the image is encoded, noised to the timestep that
    `strength` selects, and denoised conditioned on the sound (and optional text), with the same audio, mixing,
    text and guidance arguments as [`AudioToImagePipeline`].

    It has the same components and loads the same saved folders as [`AudioToImagePipeline`]; convert between them
    with `from_pipe` (no copies of the weights are made).

    Args: see [`AudioToImagePipeline`].
    """

    def __init__(
        self,
        unet: UNet2DConditionModel,
        scheduler: KarrasDiffusionSchedulers,
        audio_encoder: PreTrainedModel,
        feature_extractor: SequenceFeatureExtractor,
        audio_projection: AudioProjectionModel,
        vae: AutoencoderKL | None = None,
        text_encoder: CLIPTextModel | None = None,
        tokenizer: CLIPTokenizer | None = None,
    ):
        super().__init__(
            unet=unet,
            scheduler=scheduler,
            audio_encoder=audio_encoder,
            feature_extractor=feature_extractor,
            audio_projection=audio_projection,
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
        )
        # input images are resized to the UNet's full spatial multiple, not only the VAE's
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.spatial_multiple)

    def get_timesteps(self, num_inference_steps: int, strength: float, device) -> torch.Tensor:
        """The last `int(num_inference_steps * strength)` of the scheduler's timesteps (none for strength 0)."""
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        init_timestep = min(int(num_inference_steps * strength), num_inference_steps)
        t_start = max(num_inference_steps - init_timestep, 0)
        timesteps = self.scheduler.timesteps[t_start * self.scheduler.order :]
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(t_start * self.scheduler.order)
        return timesteps

    def encode_image(self, image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Image in [-1, 1] `(batch, 3, h, w)` -> the UNet's sample space: a sample of the VAE posterior (drawn with
        `generator`, as diffusers' img2img pipelines do; an `AutoencoderTiny`'s latents) times the scaling factor;
        the image itself for a pixel-space pipeline."""
        if self.vae is None:
            return image
        with self._eval_mode():
            encoded = self.vae.encode(image.to(self.vae.dtype))
        latents = encoded.latent_dist.sample(generator) if hasattr(encoded, "latent_dist") else encoded.latents
        return latents * self.vae.config.scaling_factor

    def prepare_image_latents(self, image, timestep, total, dtype, device, generator, is_latents=False):
        if isinstance(generator, list) and len(generator) != total:
            raise ValueError(f"Got {len(generator)} generators for a batch of {total}; pass one per image.")
        image = image.to(device).repeat_interleave(total // len(image), dim=0)
        if is_latents:
            init = image
        elif isinstance(generator, list):  # each image encoded with its own generator, so a batch equals singles
            init = torch.cat([self.encode_image(image[i : i + 1], generator[i]) for i in range(total)])
        else:
            init = self.encode_image(image, generator)
        init = init.to(dtype)
        if timestep is None:  # strength 0: nothing to denoise
            return init
        noise = randn_tensor(init.shape, generator=generator, device=device, dtype=dtype)
        return self.scheduler.add_noise(init, noise, timestep.repeat(total))

    @torch.no_grad()
    def __call__(
        self,
        audio=None,
        image: PipelineImageInput = None,
        strength: float = 0.6,
        sampling_rate: int | None = None,
        audio_weights: list[float] | None = None,
        prompt: str | list[str] | None = None,
        negative_audio=None,
        negative_prompt: str | list[str] | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 4.0,
        text_guidance_scale: float = 7.5,
        guidance_rescale: float = 0.0,
        num_images_per_prompt: int = 1,
        eta: float = 0.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        audio_embeds: torch.Tensor | None = None,
        negative_audio_embeds: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[[Any, int, int, dict], dict] | PipelineCallback | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
    ):
        r"""Edit images with sounds.

        Args:
            audio: the sound(s); see [`AudioToImagePipeline.__call__`]. One sound edits every image; otherwise one
                sound per image.
            image (`PIL.Image.Image`, `np.ndarray`, `torch.Tensor` or a list of them): the picture(s) to edit; numpy
                `(h, w, 3)` / `(batch, h, w, 3)` in [0, 1], tensors `(batch, 3, h, w)` in [0, 1] (or [-1, 1]), or
                latents `(batch, latent_channels, h / vae_scale_factor, w / vae_scale_factor)` from `encode_image`.
                Resized to `height` x `width` (default: its own size rounded down to `spatial_multiple`).
            strength (`float`): in [0, 1]; how far the picture is noised before denoising with the sound: 0 returns
                it (through the VAE: decode(encode(image))), 1 ignores it. `int(num_inference_steps * strength)`
                steps run.
            Other arguments: as in [`AudioToImagePipeline.__call__`].

        Examples:
        """
        callback_on_step_end_tensor_inputs = self._start_call(
            guidance_scale,
            text_guidance_scale,
            guidance_rescale,
            callback_on_step_end,
            callback_on_step_end_tensor_inputs,
        )
        # 1. Check inputs
        if image is None:
            raise ValueError("`image` is required: the picture to edit (PIL image, numpy array, tensor or a list).")
        if not isinstance(strength, (int, float)) or not 0.0 <= strength <= 1.0:
            raise ValueError(f"`strength` must be in [0, 1] (0 keeps the image, 1 ignores it), got {strength!r}.")
        self.check_inputs(
            audio,
            audio_embeds,
            audio_weights,
            prompt,
            negative_prompt,
            negative_audio,
            negative_audio_embeds,
            height,
            width,
            guidance_scale,
            text_guidance_scale,
            num_inference_steps,
            num_images_per_prompt,
            callback_on_step_end_tensor_inputs,
            guidance_rescale,
            prompt_embeds,
            negative_prompt_embeds,
        )
        # as in diffusers' img2img pipelines, a tensor with the VAE's latent channels is taken as encoded latents
        is_latents = (
            isinstance(image, torch.Tensor)
            and image.ndim == 4
            and self.vae is not None
            and image.shape[1] == self.vae.config.latent_channels
        )
        if not is_latents:
            image = self.image_processor.preprocess(image, height=height, width=width)
            if image.shape[1] != 3:
                raise ValueError(f"`image` must have 3 colour channels (or be VAE latents), got {image.shape[1]}.")
        device = self._execution_device
        dtype = self.unet.dtype
        if audio_weights is not None:
            num_sounds = 1
        else:
            num_sounds = len(_as_list(audio)) if audio is not None else len(audio_embeds)
        if num_sounds not in (1, len(image)) and len(image) != 1:
            raise ValueError(f"Got {len(image)} images for {num_sounds} sounds; pass 1 image, 1 sound, or as many.")
        batch_size = max(len(image), num_sounds)

        # 2. Encode the sounds (and the optional text)
        encoder_hidden_states, branch_names, batch_size = self._prepare_conditioning(
            audio=audio,
            sampling_rate=sampling_rate,
            audio_weights=audio_weights,
            prompt=prompt,
            negative_audio=negative_audio,
            negative_prompt=negative_prompt,
            audio_embeds=audio_embeds,
            negative_audio_embeds=negative_audio_embeds,
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds,
            guidance_scale=guidance_scale,
            text_guidance_scale=text_guidance_scale,
            num_images_per_prompt=num_images_per_prompt,
            device=device,
            dtype=dtype,
            batch_size=batch_size,
        )

        # 3. Timesteps: only the last `strength` part of the schedule
        timesteps = self.get_timesteps(num_inference_steps, strength, device)

        # 4. The picture, noised to the first of those timesteps
        total = batch_size * num_images_per_prompt
        image = image.repeat_interleave(batch_size // len(image), dim=0)
        latents = self.prepare_image_latents(
            image, timesteps[:1] if len(timesteps) else None, total, dtype, device, generator, is_latents
        )

        # 5. Denoising loop
        latents = self._denoise(
            latents,
            timesteps,
            encoder_hidden_states,
            branch_names,
            generator,
            eta,
            callback_on_step_end,
            callback_on_step_end_tensor_inputs,
        )

        # 6. Decode and post-process
        return self._finish(latents, output_type, return_dict)


AudioToImageImg2ImgPipeline.__call__.__doc__ += IMG2IMG_EXAMPLE_DOC_STRING
