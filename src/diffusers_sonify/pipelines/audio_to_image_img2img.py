"""`AudioToImageImg2ImgPipeline`: sound edits a picture (SDEdit: noise it part-way, denoise with the sound), optionally
only inside a mask (inpainting)."""

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

    With `mask_image`, only the masked region is repainted ([`AudioToImageInpaintPipeline`] requires the mask).

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
        self.mask_processor = VaeImageProcessor(
            vae_scale_factor=self.spatial_multiple, do_normalize=False, do_binarize=True, do_convert_grayscale=True
        )

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
        """The picture(s) in the UNet's sample space, noised to `timestep` (returned clean when it is `None`)."""
        init = self._clean_latents(image, total, dtype, device, generator, is_latents)
        if timestep is None:  # strength 0: nothing to denoise
            return init
        noise = randn_tensor(init.shape, generator=generator, device=device, dtype=dtype)
        return self.scheduler.add_noise(init, noise, timestep.repeat(total))

    def _clean_latents(self, image, total, dtype, device, generator, is_latents):
        if isinstance(generator, list) and len(generator) != total:
            raise ValueError(f"Got {len(generator)} generators for a batch of {total}; pass one per image.")
        image = image.to(device).repeat_interleave(total // len(image), dim=0)
        if is_latents:
            init = image
        elif isinstance(generator, list):  # each image encoded with its own generator, so a batch equals singles
            init = torch.cat([self.encode_image(image[i : i + 1], generator[i]) for i in range(total)])
        else:
            init = self.encode_image(image, generator)
        return init.to(dtype)

    def _prepare_pictures(self, call: dict) -> dict:
        """Check `image` and `strength` and preprocess the picture(s); the batch is the larger of images and sounds."""
        image, strength = call["image"], call["strength"]
        if image is None:
            raise ValueError("`image` is required: the picture to edit (PIL image, numpy array, tensor or a list).")
        if not isinstance(strength, (int, float)) or not 0.0 <= strength <= 1.0:
            raise ValueError(f"`strength` must be in [0, 1] (0 keeps the image, 1 ignores it), got {strength!r}.")
        # as in diffusers' img2img pipelines, a tensor with the VAE's latent channels is taken as encoded latents
        is_latents = (
            isinstance(image, torch.Tensor)
            and image.ndim == 4
            and self.vae is not None
            and image.shape[1] == self.vae.config.latent_channels
        )
        if not is_latents:
            image = self.image_processor.preprocess(image, height=call["height"], width=call["width"])
            if image.shape[1] != 3:
                raise ValueError(f"`image` must have 3 colour channels (or be VAE latents), got {image.shape[1]}.")
        if call["audio_weights"] is not None:
            num_sounds = 1
        else:
            num_sounds = len(_as_list(call["audio"])) if call["audio"] is not None else len(call["audio_embeds"])
        if num_sounds not in (1, len(image)) and len(image) != 1:
            raise ValueError(f"Got {len(image)} images for {num_sounds} sounds; pass 1 image, 1 sound, or as many.")
        pictures = {"image": image, "is_latents": is_latents, "batch_size": max(len(image), num_sounds)}
        if call["mask_image"] is not None:
            pictures["mask"] = self._prepare_mask(call["mask_image"], image, is_latents)
        return pictures

    def _prepare_mask(self, mask_image, image: torch.Tensor, is_latents: bool) -> torch.Tensor:
        """The mask binarised (white = repaint) at the sample resolution, `(1 or batch, 1, h, w)`."""
        scale = self.vae_scale_factor if is_latents else 1
        height, width = image.shape[-2] * scale, image.shape[-1] * scale
        mask = self.mask_processor.preprocess(mask_image, height=height, width=width)
        if mask.shape[1] != 1:
            raise ValueError(f"`mask_image` must be one channel (white = repaint), got {mask.shape[1]} channels.")
        if len(mask) not in (1, len(image)):
            raise ValueError(f"Got {len(mask)} masks for {len(image)} images; pass 1 mask or one per image.")
        sample_size = (
            image.shape[-2:] if is_latents else (height // self.vae_scale_factor, width // self.vae_scale_factor)
        )
        return torch.nn.functional.interpolate(mask, size=tuple(sample_size))

    def _initial_sample(self, call: dict, pictures: dict, batch_size: int, total: int, device, dtype):
        """Only the last `strength` part of the schedule, starting from the picture noised to its first timestep.

        With a mask, after every step the region outside it is put back: the picture noised to the next timestep
        (with the same noise), the picture itself after the last step (diffusers' approach for UNets that take no
        mask channels)."""
        generator = call["generator"]
        timesteps = self.get_timesteps(call["num_inference_steps"], call["strength"], device)
        image = pictures["image"].repeat_interleave(batch_size // len(pictures["image"]), dim=0)
        init = self._clean_latents(image, total, dtype, device, generator, pictures["is_latents"])
        if not len(timesteps):  # strength 0: nothing to denoise
            return init, timesteps, None
        noise = randn_tensor(init.shape, generator=generator, device=device, dtype=dtype)
        latents = self.scheduler.add_noise(init, noise, timesteps[:1].repeat(total))
        if "mask" not in pictures:
            return latents, timesteps, None
        mask = pictures["mask"].to(device=device, dtype=dtype)
        mask = mask.repeat_interleave(total // len(mask), dim=0)

        def keep_outside_the_mask(i: int, latents: torch.Tensor) -> torch.Tensor:
            known = init
            if i + 1 < len(timesteps):
                known = self.scheduler.add_noise(init, noise, timesteps[i + 1 : i + 2].repeat(total))
            return mask * latents + (1 - mask) * known

        return latents, timesteps, keep_outside_the_mask

    @torch.no_grad()
    def __call__(
        self,
        audio=None,
        sampling_rate: int | None = None,
        audio_weights: list[float] | None = None,
        negative_audio=None,
        audio_embeds: torch.Tensor | None = None,
        negative_audio_embeds: torch.Tensor | None = None,
        image: PipelineImageInput = None,
        mask_image: PipelineImageInput = None,
        strength: float = 0.6,
        height: int | None = None,
        width: int | None = None,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 4.0,
        text_guidance_scale: float = 7.5,
        guidance_rescale: float = 0.0,
        num_images_per_prompt: int = 1,
        eta: float = 0.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
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
            mask_image (`PIL.Image.Image`, `np.ndarray`, `torch.Tensor` or a list of them, *optional*): inpainting:
                only the white part of the mask is repainted, the rest of the picture is kept (put back after every
                step). One mask for every image or one per image; binarised at 0.5, resized to the image.
            strength (`float`): in [0, 1]; how far the picture is noised before denoising with the sound: 0 returns
                it (through the VAE: decode(encode(image))), 1 ignores it (inside the mask, with `mask_image`).
                `int(num_inference_steps * strength)` steps run.
            Other arguments: as in [`AudioToImagePipeline.__call__`].

        Examples:
        """
        return self._generate(locals())


AudioToImageImg2ImgPipeline.__call__.__doc__ += IMG2IMG_EXAMPLE_DOC_STRING
