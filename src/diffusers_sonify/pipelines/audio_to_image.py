"""`AudioToImagePipeline`: sound in, image out, with a Stable-Diffusion-style UNet."""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import PIL.Image
import torch
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.image_processor import VaeImageProcessor
from diffusers.loaders import StableDiffusionLoraLoaderMixin
from diffusers.models import AutoencoderKL, UNet2DConditionModel
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg
from diffusers.schedulers import KarrasDiffusionSchedulers
from diffusers.utils import BaseOutput, logging
from diffusers.utils.torch_utils import randn_tensor
from transformers import CLIPTextModel, CLIPTokenizer, PreTrainedModel, SequenceFeatureExtractor

from ..audio import prepare_waveform
from ..models.audio_encoders import (
    audio_encoder_inputs,
    audio_input_name,
    encode_audio_features,
    feature_extractor_seconds,
)
from ..models.audio_projection import AudioProjectionModel

logger = logging.get_logger(__name__)

EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> from diffusers_sonify import AudioToImagePipeline

        >>> # written by `make demo` (32x32 images); a Hub model loads by its repo id, e.g. "<org>/sonify"
        >>> pipe = AudioToImagePipeline.from_pretrained("outputs/demo/model")
        >>> image = pipe("outputs/demo/examples/rain.wav", num_inference_steps=20, guidance_scale=3.0).images[0]
        >>> # several sounds, one picture: semantic mixing
        >>> bell, bird = "outputs/demo/examples/bell.wav", "outputs/demo/examples/bird.wav"
        >>> image = pipe([bell, bird], audio_weights=[0.5, 0.5], num_inference_steps=20, guidance_scale=3.0).images[0]
        >>> image.save("heard.png")
        ```
"""

MIN_AUDIO_SECONDS = 0.1  # shorter clips give the feature extractors only a handful of STFT frames


@dataclass
class AudioToImagePipelineOutput(BaseOutput):
    """
    Args:
        images (`list[PIL.Image.Image]`, `np.ndarray` of shape `(batch, height, width, 3)` or `torch.Tensor` of
            shape `(batch, 3, height, width)`): the generated images, as chosen by `output_type`.
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor


class _DropLogRecords:
    """A logging filter that drops records whose message contains every one of `fragments`."""

    def __init__(self, *fragments: str):
        self.fragments = fragments

    def filter(self, record) -> bool:
        message = record.getMessage()
        return not all(f in message for f in self.fragments)


def _as_list(audio) -> list:
    if isinstance(audio, (list, tuple)):
        return list(audio)
    return [audio]


class AudioToImagePipeline(DiffusionPipeline, StableDiffusionLoraLoaderMixin):
    r"""Generate images from sounds.

    An audio encoder (a transformers model such as `ClapModel`, `ClapAudioModelWithProjection` or `ASTModel`)
    encodes the sound; an [`AudioProjectionModel`] turns its outputs into cross-attention tokens for a
    `UNet2DConditionModel`. With a text encoder present (or `prompt_embeds` given), text tokens are placed before the
    audio tokens and audio and text guidance have separate scales.

    Every model runs in eval mode during a call, whatever mode it was in, and is left in that mode afterwards: the
    same seed gives the same image for freshly built (training-mode) components, and no module state (dropout,
    BatchNorm running statistics) changes.

    Args:
        unet ([`UNet2DConditionModel`]): the denoiser; its `cross_attention_dim` is the adapter's token width.
        scheduler ([`SchedulerMixin`]): a diffusers scheduler, e.g. `DDIMScheduler`.
        audio_encoder ([`~transformers.PreTrainedModel`]): the audio model.
        feature_extractor ([`~transformers.SequenceFeatureExtractor`]): its feature extractor; its `sampling_rate`
            is the rate every input is resampled to.
        audio_projection ([`AudioProjectionModel`]): the adapter.
        vae ([`AutoencoderKL`], *optional*): latent diffusion when given; pixel-space diffusion (a 3-channel UNet)
            when `None`.
        text_encoder ([`~transformers.CLIPTextModel`], *optional*) and tokenizer
            ([`~transformers.CLIPTokenizer`], *optional*): enable the `prompt` argument.
    """

    _in_eval_mode = False  # inside `_eval_mode` (a class default: instances made without __init__ have it)
    model_cpu_offload_seq = "text_encoder->audio_encoder->audio_projection->unet->vae"
    _optional_components = ["vae", "text_encoder", "tokenizer"]
    # `prompt_embeds` in a callback is the UNet's stacked conditioning, one block per guidance branch with the fully
    # conditional block last (as in StableDiffusionPipeline): diffusers' `SDCFGCutoffCallback` works for one image,
    # `diffusers_sonify.CFGCutoffCallback` for any batch.
    _callback_tensor_inputs = ["latents", "prompt_embeds"]

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
        super().__init__()
        if audio_encoder is not None:
            audio_input_name(audio_encoder)  # fail at construction for an encoder this pipeline cannot drive
        if vae is None and unet is not None and (unet.config.in_channels, unet.config.out_channels) != (3, 3):
            raise ValueError(
                f"Without a `vae` the pipeline diffuses in pixel space and needs a UNet with 3 input and output "
                f"channels; this UNet has in_channels={unet.config.in_channels}, "
                f"out_channels={unet.config.out_channels} (a latent-space UNet). Pass the `vae` it was trained with."
            )
        self.register_modules(
            unet=unet,
            scheduler=scheduler,
            audio_encoder=audio_encoder,
            feature_extractor=feature_extractor,
            audio_projection=audio_projection,
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
        )
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1) if vae is not None else 1
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """`DiffusionPipeline.from_pretrained` for a local folder or a Hub repo id.

        diffusers 0.42's Hub download step rejects a component whose library is a module path (our adapter is saved
        as `diffusers_sonify.models.audio_projection`), so a repo id is fetched with `snapshot_download` and then
        loaded as a local folder.
        """
        import os

        from huggingface_hub import snapshot_download

        if not os.path.isdir(str(pretrained_model_name_or_path)):
            download = ("cache_dir", "revision", "token", "local_files_only", "force_download", "proxies")
            pretrained_model_name_or_path = snapshot_download(
                str(pretrained_model_name_or_path), **{k: kwargs[k] for k in download if k in kwargs}
            )
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    def load_lora_weights(self, pretrained_model_name_or_path_or_dict, adapter_name=None, hotswap=False, **kwargs):
        """diffusers' [`~loaders.StableDiffusionLoraLoaderMixin.load_lora_weights`] (LoRA into the UNet and, when the
        file has text-encoder layers, into the text encoder).

        This project's LoRA files adapt the UNet only, so diffusers' note that the file has no text-encoder keys
        would be printed on every load; it is dropped. Every other message, and every error, comes through.
        """
        lora_logger = logging.get_logger("diffusers.loaders.lora_base")
        note = _DropLogRecords("No LoRA keys associated to", "prefix='text_encoder'")
        lora_logger.addFilter(note)
        try:
            super().load_lora_weights(
                pretrained_model_name_or_path_or_dict, adapter_name=adapter_name, hotswap=hotswap, **kwargs
            )
        finally:
            lora_logger.removeFilter(note)

    # ------------------------------------------------------------------ state read by callbacks
    @property
    def guidance_scale(self) -> float:
        """The audio guidance scale of the running (or last) call; a callback may change `_guidance_scale`."""
        return self._guidance_scale

    @property
    def text_guidance_scale(self) -> float:
        return self._text_guidance_scale

    @property
    def guidance_rescale(self) -> float:
        return self._guidance_rescale

    @property
    def do_classifier_free_guidance(self) -> bool:
        return self._guidance_scale > 1.0

    @property
    def num_timesteps(self) -> int:
        """Denoising steps of the running (or last) call."""
        return self._num_timesteps

    @property
    def interrupt(self) -> bool:
        """Set `pipe._interrupt = True` from a callback to skip the remaining steps."""
        return getattr(self, "_interrupt", False)

    # ------------------------------------------------------------------ checks
    @property
    def spatial_multiple(self) -> int:
        """Height and width must be multiples of this: VAE downsampling times UNet downsampling."""
        unet_factor = 2 ** (len(self.unet.config.block_out_channels) - 1) if self.unet is not None else 1
        return self.vae_scale_factor * unet_factor

    @property
    def max_audio_seconds(self) -> float | None:
        """Longer clips are cropped to their first `max_audio_seconds`: all the feature extractor would keep."""
        return feature_extractor_seconds(self.feature_extractor)

    def check_inputs(
        self,
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
        guidance_rescale=0.0,
        prompt_embeds=None,
        negative_prompt_embeds=None,
    ):
        if (audio is None) == (audio_embeds is None):
            raise ValueError("Pass exactly one of `audio` (sounds) or `audio_embeds` (from `encode_audio`).")
        if negative_audio is not None and negative_audio_embeds is not None:
            raise ValueError("Pass at most one of `negative_audio` and `negative_audio_embeds`.")
        if audio_embeds is not None and (not isinstance(audio_embeds, torch.Tensor) or audio_embeds.ndim != 3):
            raise ValueError(
                "`audio_embeds` must be a 3-D tensor `(batch, tokens, dim)` as returned by `encode_audio`."
            )
        if audio_weights is not None:
            if audio is None:
                raise ValueError(
                    "`audio_weights` mixes a list of sounds; with precomputed embeddings use `mix_audio_embeds`."
                )
            weights = np.asarray(audio_weights, dtype=np.float64)
            n = len(_as_list(audio))
            if weights.ndim != 1 or len(weights) != n:
                raise ValueError(
                    f"`audio_weights` has {weights.size} weights for {n} sounds; pass one weight per sound."
                )
            if not np.isfinite(weights).all() or (weights < 0).any():
                raise ValueError(f"`audio_weights` must be finite and non-negative, got {list(audio_weights)}.")
            if weights.sum() == 0:
                raise ValueError("`audio_weights` are all zero; give at least one sound a positive weight.")
        if prompt is not None and prompt_embeds is not None:
            raise ValueError("Pass at most one of `prompt` and `prompt_embeds` (from `encode_prompt`).")
        if negative_prompt is not None and negative_prompt_embeds is not None:
            raise ValueError("Pass at most one of `negative_prompt` and `negative_prompt_embeds`.")
        for name, value in (("prompt_embeds", prompt_embeds), ("negative_prompt_embeds", negative_prompt_embeds)):
            if value is not None and (not isinstance(value, torch.Tensor) or value.ndim != 3):
                raise ValueError(f"`{name}` must be a 3-D tensor `(batch, seq, dim)` as returned by `encode_prompt`.")
        if self.text_encoder is None:
            if prompt is not None or negative_prompt is not None:
                raise ValueError(
                    "`prompt` needs a pipeline with `text_encoder` and `tokenizer`; this one has none "
                    "(pass `prompt_embeds` from `encode_prompt` instead)."
                )
            if prompt_embeds is not None and text_guidance_scale > 1.0 and negative_prompt_embeds is None:
                raise ValueError(
                    "Text guidance (`text_guidance_scale` > 1) with `prompt_embeds` and no text encoder needs "
                    "`negative_prompt_embeds` too (both come from `encode_prompt`), or set `text_guidance_scale=1`."
                )
        if prompt is not None and not isinstance(prompt, (str, list)):
            raise TypeError(f"`prompt` must be a string or a list of strings, got {type(prompt).__name__}.")
        for name, value in (("height", height), ("width", width)):
            if value is not None and (not isinstance(value, int) or value <= 0 or value % self.spatial_multiple):
                raise ValueError(
                    f"`{name}`={value!r} must be a positive multiple of {self.spatial_multiple} (VAE scale factor "
                    f"{self.vae_scale_factor} x UNet downsampling); e.g. {self.spatial_multiple * 8}."
                )
        for name, value in (("guidance_scale", guidance_scale), ("text_guidance_scale", text_guidance_scale)):
            if value < 0:
                raise ValueError(f"`{name}` must be >= 0 (1.0 disables guidance), got {value}.")
        if not 0.0 <= guidance_rescale <= 1.0:
            raise ValueError(f"`guidance_rescale` must be in [0, 1] (0 disables it), got {guidance_rescale}.")
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"`num_inference_steps` must be a positive integer, got {num_inference_steps!r}.")
        if not isinstance(num_images_per_prompt, int) or num_images_per_prompt < 1:
            raise ValueError(f"`num_images_per_prompt` must be a positive integer, got {num_images_per_prompt!r}.")
        bad = [k for k in callback_on_step_end_tensor_inputs or [] if k not in self._callback_tensor_inputs]
        if bad:
            raise ValueError(
                f"`callback_on_step_end_tensor_inputs` may only name {self._callback_tensor_inputs}, got {bad}."
            )

    # ------------------------------------------------------------------ module state
    @contextmanager
    def _eval_mode(self):
        """Run every model in eval mode (no dropout, BatchNorm uses and keeps its running statistics), then give
        each submodule back exactly the `training` flag it had.

        Re-entrant: a call enters once (`_generate`) and the stages' own entries (encode, denoise, decode) nest at no
        cost. Only flags that differ are written back, through `Module.__setattr__` (slow) only for those: walking an
        SD 1.5-sized pipeline took 6.5-13 ms per entry on the GPU machine's CPU (benchmarks/RESULTS.md, "GPU script").
        """
        if self._in_eval_mode:  # nested: the outermost entry walks and restores
            yield
            return
        modules = [m for m in self.components.values() if isinstance(m, torch.nn.Module)]
        saved = [(sub, sub.training) for module in modules for sub in module.modules()]
        if any(training for _, training in saved):
            for module in modules:
                module.eval()
        self._in_eval_mode = True
        try:
            yield
        finally:
            self._in_eval_mode = False
            for sub, training in saved:
                if sub.training != training:
                    sub.training = training

    # ------------------------------------------------------------------ audio
    def prepare_audio(self, audio, sampling_rate: int | None = None, arg: str = "audio") -> list[np.ndarray]:
        """Validate and convert sounds to mono float32 arrays at the feature extractor's rate.

        Args:
            audio: one clip or a list of clips; each a numpy array / tensor `(samples,)` or `(channels, samples)`,
                a path to an audio file (any format FFmpeg reads), the file's bytes, or a `datasets` Audio value
                (`row["audio"]`: an `AudioDecoder`, `{"array", "sampling_rate"}` or `{"bytes", "path"}`); decoded by
                [`diffusers_sonify.audio.decode_audio`]. Clips longer than `max_audio_seconds` are cropped to their
                start.
            sampling_rate (`int`, *optional*): the rate of array/tensor clips in Hz (required for them; values that
                carry their own rate ignore it).
        """
        clips = _as_list(audio)
        if not clips:
            raise ValueError(f"`{arg}` is an empty list; pass at least one sound.")
        target_sr = self.feature_extractor.sampling_rate
        return [
            prepare_waveform(
                clip,
                target_sr=target_sr,
                sampling_rate=sampling_rate,
                max_seconds=self.max_audio_seconds,
                min_seconds=MIN_AUDIO_SECONDS,
                arg=arg if len(clips) == 1 else f"{arg}[{i}]",
            )
            for i, clip in enumerate(clips)
        ]

    @torch.no_grad()
    def encode_audio(
        self,
        audio,
        sampling_rate: int | None = None,
        device: torch.device | None = None,
        num_images_per_prompt: int = 1,
    ) -> torch.Tensor:
        r"""Encode sounds into conditioning tokens. Needs only `feature_extractor`, `audio_encoder` and
        `audio_projection`; the UNet and VAE may be absent.

        Args:
            audio: see [`~AudioToImagePipeline.prepare_audio`].
            sampling_rate (`int`, *optional*): rate of array/tensor inputs in Hz.
            device (`torch.device`, *optional*): where to run the audio models (default: the execution device).
            num_images_per_prompt (`int`): each sound's tokens are repeated this many times.

        Returns:
            `torch.Tensor` `audio_embeds` of shape `(batch * num_images_per_prompt, num_tokens, cross_attention_dim)`.
        """
        waveforms = self.prepare_audio(audio, sampling_rate)
        return self._encode_waveforms(waveforms, device).repeat_interleave(num_images_per_prompt, dim=0)

    def _encode_waveforms(self, waveforms: list[np.ndarray], device=None) -> torch.Tensor:
        device = device or self._execution_device
        with self._eval_mode():
            inputs = audio_encoder_inputs(
                self.feature_extractor, self.audio_encoder, waveforms, device, self.audio_encoder.dtype
            )
            encoded = encode_audio_features(self.audio_encoder, inputs)
            proj_dtype = self.audio_projection.dtype
            return self.audio_projection(
                pooled=encoded.pooled.to(proj_dtype), hidden_states=encoded.hidden_states.to(proj_dtype)
            )

    def _null_audio_embeds(self, batch_size: int) -> torch.Tensor:
        # through the adapter's forward, so that offloading hooks place the learned null tokens on the device
        return self.audio_projection(null_batch_size=batch_size)

    @staticmethod
    def mix_audio_embeds(audio_embeds: torch.Tensor, weights) -> torch.Tensor:
        r"""Semantic mixing: the weighted mean of several sounds' tokens, `(n, tokens, dim)` -> `(1, tokens, dim)`.
        Weights are normalised to sum to one."""
        w = torch.as_tensor(weights, dtype=audio_embeds.dtype, device=audio_embeds.device)
        w = w / w.sum()
        return (w.view(-1, 1, 1) * audio_embeds).sum(dim=0, keepdim=True)

    @staticmethod
    def interpolate_audio_embeds(start: torch.Tensor, end: torch.Tensor, weight: float) -> torch.Tensor:
        r"""Linear interpolation from `start` (weight 0) to `end` (weight 1) between two `encode_audio` results;
        sweep `weight` to morph one sound's picture into another's."""
        return torch.lerp(start, end, float(weight))

    # ------------------------------------------------------------------ text
    @torch.no_grad()
    def encode_prompt(
        self,
        prompt: str | list[str] | None,
        device: torch.device | None = None,
        num_images_per_prompt: int = 1,
        do_classifier_free_guidance: bool = True,
        negative_prompt: str | list[str] | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
    ):
        r"""Encode text with the optional CLIP text encoder. Needs only `text_encoder` and `tokenizer`.

        Args:
            prompt (`str` or `list[str]`): the text (ignored when `prompt_embeds` is given).
            device (`torch.device`, *optional*): default: the execution device.
            num_images_per_prompt (`int`): each prompt's embedding is repeated this many times.
            do_classifier_free_guidance (`bool`): also encode `negative_prompt` (default: the empty prompt).
            negative_prompt (`str` or `list[str]`, *optional*): one per prompt, or one for all.
            prompt_embeds, negative_prompt_embeds (`torch.Tensor`, *optional*): precomputed; returned repeated.

        Returns:
            `(prompt_embeds, negative_prompt_embeds)`, each `(batch * num_images_per_prompt, seq, dim)`;
            `negative_prompt_embeds` is `None` without guidance. Pass both to `__call__` as they are.
        """
        device = device or self._execution_device
        if prompt is None and prompt_embeds is None:
            raise ValueError("`encode_prompt` needs `prompt` (a string or a list of strings) or `prompt_embeds`.")
        if prompt_embeds is None:
            prompts = [prompt] if isinstance(prompt, str) else list(prompt)
            prompt_embeds = self._encode_text(prompts, device)
        if do_classifier_free_guidance and negative_prompt_embeds is None:
            negatives = self._per_sound(
                negative_prompt if negative_prompt is not None else "", len(prompt_embeds), "negative_prompt"
            )
            negative_prompt_embeds = self._encode_text(negatives, device)
        prompt_embeds = prompt_embeds.repeat_interleave(num_images_per_prompt, dim=0)
        if negative_prompt_embeds is not None:
            negative_prompt_embeds = negative_prompt_embeds.repeat_interleave(num_images_per_prompt, dim=0)
        return prompt_embeds, negative_prompt_embeds

    def _encode_text(self, prompts: list[str], device) -> torch.Tensor:
        if self.text_encoder is None or self.tokenizer is None:
            raise ValueError("Encoding text needs `text_encoder` and `tokenizer`; this pipeline has none.")
        ids = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(device)
        with self._eval_mode():
            return self.text_encoder(ids)[0]

    # ------------------------------------------------------------------ conditioning
    def _prepare_conditioning(
        self,
        *,
        audio,
        sampling_rate,
        audio_weights,
        prompt,
        negative_audio,
        negative_prompt,
        audio_embeds,
        negative_audio_embeds,
        prompt_embeds,
        negative_prompt_embeds,
        guidance_scale,
        text_guidance_scale,
        num_images_per_prompt,
        device,
        dtype,
        batch_size=None,
    ) -> tuple[torch.Tensor, list[str], int]:
        """Everything the UNet is conditioned on: `(encoder_hidden_states, branch names, batch size)`.

        `encoder_hidden_states` stacks one block of `batch * num_images_per_prompt` rows per guidance branch; the
        branches are ordered `no_text`, `no_audio`, `cond` (those in use), the fully conditional one last.
        `batch_size` (optional) is a batch the sounds and prompts are broadcast to (img2img: the number of images).
        """
        waveforms = self.prepare_audio(audio, sampling_rate) if audio is not None else None
        neg_waveforms = (
            self.prepare_audio(negative_audio, sampling_rate, arg="negative_audio")
            if negative_audio is not None
            else None
        )
        num_sounds = 1 if audio_weights is not None else len(waveforms) if waveforms is not None else len(audio_embeds)
        if batch_size is None:
            batch_size = num_sounds
        elif num_sounds not in (1, batch_size):
            raise ValueError(f"Got {num_sounds} sounds for {batch_size} images; pass 1 or {batch_size}.")
        num_negative = (
            len(neg_waveforms)
            if neg_waveforms is not None
            else len(negative_audio_embeds)
            if negative_audio_embeds is not None
            else 1
        )
        if num_negative not in (1, batch_size):
            raise ValueError(f"Got {num_negative} negative sounds for {batch_size} sounds; pass 1 or {batch_size}.")

        def fit(x: torch.Tensor, name: str) -> torch.Tensor:
            if len(x) not in (1, batch_size):
                raise ValueError(f"`{name}` has {len(x)} rows for a batch of {batch_size}; pass 1 or {batch_size}.")
            return x.to(device=device, dtype=dtype).expand(batch_size, *x.shape[1:])

        with self._eval_mode():
            if audio_embeds is None:
                audio_embeds = self._encode_waveforms(waveforms, device)
                if audio_weights is not None:
                    audio_embeds = self.mix_audio_embeds(audio_embeds, audio_weights)
            cond_audio = fit(audio_embeds, "audio_embeds")
            if neg_waveforms is not None:
                negative_audio_embeds = self._encode_waveforms(neg_waveforms, device)
            if negative_audio_embeds is None:
                negative_audio_embeds = self._null_audio_embeds(1)
            neg_audio = fit(negative_audio_embeds, "negative_audio_embeds")

            do_audio_cfg = guidance_scale > 1.0
            has_text_input = prompt is not None or prompt_embeds is not None
            do_text_cfg = has_text_input and text_guidance_scale > 1.0
            branches = {}
            if self.text_encoder is not None or prompt_embeds is not None:
                if prompt_embeds is None:
                    prompts = self._per_sound(prompt if prompt is not None else "", batch_size, "prompt")
                    prompt_embeds = self._encode_text(prompts, device)
                if do_text_cfg and negative_prompt_embeds is None:
                    negatives = self._per_sound(
                        negative_prompt if negative_prompt is not None else "", batch_size, "negative_prompt"
                    )
                    negative_prompt_embeds = self._encode_text(negatives, device)
                text = fit(prompt_embeds, "prompt_embeds")
                if do_text_cfg:
                    neg_text = fit(negative_prompt_embeds, "negative_prompt_embeds")
                    branches["no_text"] = torch.cat([neg_text, neg_audio if do_audio_cfg else cond_audio], dim=1)
                if do_audio_cfg:
                    branches["no_audio"] = torch.cat([text, neg_audio], dim=1)
                branches["cond"] = torch.cat([text, cond_audio], dim=1)
            else:
                if do_audio_cfg:
                    branches["no_audio"] = neg_audio
                branches["cond"] = cond_audio
        blocks = [v.repeat_interleave(num_images_per_prompt, dim=0) for v in branches.values()]
        return torch.cat(blocks, dim=0), list(branches), batch_size

    # ------------------------------------------------------------------ latents
    def prepare_latents(self, batch_size, height, width, dtype, device, generator, latents=None):
        channels = self.unet.config.in_channels
        shape = (batch_size, channels, height // self.vae_scale_factor, width // self.vae_scale_factor)
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(f"Got {len(generator)} generators for a batch of {batch_size}; pass one per image.")
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"`latents` has shape {tuple(latents.shape)}, expected {shape}.")
        else:
            latents = latents.to(device=device, dtype=dtype)
        return latents * self.scheduler.init_noise_sigma

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        if self.vae is None:  # pixel-space diffusion: the sample already is the image in [-1, 1]
            return latents
        latents = latents.to(self.vae.dtype)
        return self.vae.decode(latents / self.vae.config.scaling_factor, return_dict=False)[0]

    # ------------------------------------------------------------------ shared loop
    def _start_call(self, guidance_scale, text_guidance_scale, guidance_rescale, callback_on_step_end, inputs):
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            inputs = callback_on_step_end.tensor_inputs
        self._guidance_scale = guidance_scale
        self._text_guidance_scale = text_guidance_scale
        self._guidance_rescale = guidance_rescale
        self._num_timesteps = 0
        self._interrupt = False
        return inputs or ["latents"]

    def _denoise(
        self,
        latents,
        timesteps,
        encoder_hidden_states,
        branch_names,
        generator,
        eta,
        callback,
        callback_inputs,
        step_end=None,
    ):
        step_params = inspect.signature(self.scheduler.step).parameters
        step_kwargs = {}
        if "eta" in step_params:
            step_kwargs["eta"] = eta
        if "generator" in step_params:
            step_kwargs["generator"] = generator
        self._num_timesteps = len(timesteps)
        with self._eval_mode(), self.progress_bar(total=len(timesteps)) as progress_bar:
            for i, t in enumerate(timesteps):
                if self.interrupt:
                    continue
                # a callback may drop guidance branches (CFGCutoffCallback keeps only the conditional block)
                num_branches = encoder_hidden_states.shape[0] // latents.shape[0]
                names = branch_names[len(branch_names) - num_branches :]
                model_input = torch.cat([latents] * num_branches)
                model_input = self.scheduler.scale_model_input(model_input, t)
                noise = self.unet(model_input, t, encoder_hidden_states=encoder_hidden_states, return_dict=False)[0]
                noise = noise.to(latents.dtype)  # under autocast the UNet answers in bf16; guide in the sample's dtype
                preds = dict(zip(names, noise.chunk(num_branches)))
                noise_pred = self._guide(preds, self._guidance_scale, self._text_guidance_scale)
                if self._guidance_rescale > 0 and len(preds) > 1:
                    noise_pred = rescale_noise_cfg(noise_pred, preds["cond"], self._guidance_rescale)
                latents = self.scheduler.step(noise_pred, t, latents, **step_kwargs, return_dict=False)[0]
                if step_end is not None:  # e.g. inpainting puts the known region back
                    latents = step_end(i, latents)

                if callback is not None:
                    available = {"latents": latents, "prompt_embeds": encoder_hidden_states}
                    out = callback(self, i, t, {k: available[k] for k in callback_inputs}) or {}
                    latents = out.pop("latents", latents)
                    encoder_hidden_states = out.pop("prompt_embeds", encoder_hidden_states)
                    self._check_callback_conditioning(encoder_hidden_states, latents.shape[0], len(branch_names))
                progress_bar.update()
        return latents

    @staticmethod
    def _check_callback_conditioning(encoder_hidden_states: torch.Tensor, batch: int, max_branches: int) -> None:
        """A step-end callback may drop guidance branches, but only whole blocks of `batch` rows (conditional last)."""
        rows = encoder_hidden_states.shape[0]
        if rows % batch or not 1 <= rows // batch <= max_branches:
            raise ValueError(
                f"`callback_on_step_end` returned `prompt_embeds` with {rows} rows for a batch of {batch} images; "
                f"keep whole blocks of {batch} rows (one block per guidance branch, the conditional one last). "
                "diffusers' `SDCFGCutoffCallback` keeps a single row, which is right for one image only: use "
                "`diffusers_sonify.CFGCutoffCallback` for batches."
            )

    def _finish(self, latents, output_type, return_dict):
        if output_type == "latent":
            images = latents
        else:
            with self._eval_mode():
                decoded = self._decode(latents)
            images = self.image_processor.postprocess(decoded, output_type=output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return AudioToImagePipelineOutput(images=images)

    # ------------------------------------------------------------------ the one generation path
    @staticmethod
    def _arguments_for(method, call: dict) -> dict:
        """The entries of `call` (a call's arguments by name) that `method` takes."""
        return {name: call[name] for name in inspect.signature(method).parameters if name in call}

    def _generate(self, call: dict):
        """Run a call of any pipeline of this family; `call` holds its `__call__` arguments by name (`locals()`).

        A pipeline that edits pictures changes only what is its own: `_prepare_pictures` (check and preprocess its
        picture arguments, before any model runs) and `_initial_sample` (the timesteps, the starting sample and what
        happens after each scheduler step).
        """
        call = {name: value for name, value in call.items() if name != "self"}
        call["callback_on_step_end_tensor_inputs"] = self._start_call(
            call["guidance_scale"],
            call["text_guidance_scale"],
            call["guidance_rescale"],
            call["callback_on_step_end"],
            call["callback_on_step_end_tensor_inputs"],
        )
        # 1. Check inputs (nothing below runs a model before every argument has been validated)
        self.check_inputs(**self._arguments_for(self.check_inputs, call))
        pictures = self._prepare_pictures(call)
        device = self._execution_device
        dtype = self.unet.dtype

        with self._eval_mode():  # once per call: the stages' own entries nest at no cost
            # 2. Encode the sounds (and the optional text)
            conditioning_args = {**call, "device": device, "dtype": dtype, "batch_size": pictures.get("batch_size")}
            encoder_hidden_states, branch_names, batch_size = self._prepare_conditioning(
                **self._arguments_for(self._prepare_conditioning, conditioning_args)
            )

            # 3. Timesteps and 4. the starting sample
            total = batch_size * call["num_images_per_prompt"]
            latents, timesteps, step_end = self._initial_sample(call, pictures, batch_size, total, device, dtype)

            # 5. Denoising loop
            latents = self._denoise(
                latents,
                timesteps,
                encoder_hidden_states,
                branch_names,
                call["generator"],
                call["eta"],
                call["callback_on_step_end"],
                call["callback_on_step_end_tensor_inputs"],
                step_end,
            )

            # 6. Decode and post-process
            return self._finish(latents, call["output_type"], call["return_dict"])

    def _prepare_pictures(self, call: dict) -> dict:
        """Text/sound to image has no picture arguments: fill in the default size from the UNet."""
        for side in ("height", "width"):
            call[side] = call[side] or self.unet.config.sample_size * self.vae_scale_factor
        return {}

    def _initial_sample(self, call: dict, pictures: dict, batch_size: int, total: int, device, dtype):
        """`(latents, timesteps, step_end)`: pure noise over the whole schedule; nothing to do after a step."""
        self.scheduler.set_timesteps(call["num_inference_steps"], device=device)
        latents = self.prepare_latents(
            total, call["height"], call["width"], dtype, device, call["generator"], call["latents"]
        )
        return latents, self.scheduler.timesteps, None

    # ------------------------------------------------------------------ call
    @torch.no_grad()
    def __call__(
        self,
        audio=None,
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
        latents: torch.Tensor | None = None,
        audio_embeds: torch.Tensor | None = None,
        negative_audio_embeds: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[[Any, int, int, dict], dict] | PipelineCallback | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
    ):
        r"""Generate images from sounds.

        Args:
            audio: one sound or a list of sounds (numpy array / torch tensor `(samples,)` or `(channels, samples)`,
                or a path to an audio file). A list is a batch, one image set per sound, unless `audio_weights`
                is given. Clips longer than `max_audio_seconds` are cropped to their start.
            sampling_rate (`int`, *optional*): rate of array inputs in Hz; resampled to the feature extractor's.
            audio_weights (`list[float]`, *optional*): mix all sounds of `audio` into ONE image, weighting their
                tokens (normalised to sum to one).
            prompt (`str` or `list[str]`, *optional*): text to combine with the sound (needs a text encoder).
            negative_audio, negative_prompt: what to steer away from; default: the adapter's learned null tokens
                and the empty prompt.
            height, width (`int`, *optional*): output size, multiples of `spatial_multiple`.
            num_inference_steps (`int`): denoising steps.
            guidance_scale (`float`): audio classifier-free guidance; <= 1 disables it (no unconditional pass).
            text_guidance_scale (`float`): text guidance, used only when `prompt` / `prompt_embeds` is given.
            guidance_rescale (`float`): in [0, 1]; rescales the guided prediction's spread towards the conditional
                one's (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are Flawed", Sec. 3.4),
                which counters the over-saturated colours that strong guidance gives.
            num_images_per_prompt (`int`): images per sound.
            eta (`float`): DDIM eta, passed to schedulers that accept it.
            generator (`torch.Generator` or list of them, *optional*): for reproducible sampling.
            latents (`torch.Tensor`, *optional*): initial noise `(batch, channels, h, w)`.
            audio_embeds, negative_audio_embeds (`torch.Tensor`, *optional*): precomputed `encode_audio` outputs
                `(batch or 1, tokens, dim)`.
            prompt_embeds, negative_prompt_embeds (`torch.Tensor`, *optional*): precomputed `encode_prompt` outputs
                `(batch or 1, seq, dim)`; they work without a text encoder in the pipeline.
            output_type (`str`): `"pil"`, `"np"`, `"pt"` or `"latent"`.
            return_dict (`bool`): return an [`AudioToImagePipelineOutput`] instead of a tuple.
            callback_on_step_end (`Callable` or a diffusers `PipelineCallback`, *optional*): called as
                `fn(pipe, step, timestep, tensors)` after each step; may return replacements for the tensors named
                in `callback_on_step_end_tensor_inputs` (default `["latents"]`; also `"prompt_embeds"`, the stacked
                conditioning with the fully conditional block last). It may change `pipe._guidance_scale`.

        Examples:
        """
        return self._generate(locals())

    @staticmethod
    def _guide(preds: dict[str, torch.Tensor], guidance_scale: float, text_guidance_scale: float) -> torch.Tensor:
        cond = preds["cond"]
        if "no_audio" in preds and "no_text" in preds:
            # compositional guidance: text direction from the null branch, audio direction on top of the text
            return (
                preds["no_text"]
                + text_guidance_scale * (preds["no_audio"] - preds["no_text"])
                + guidance_scale * (cond - preds["no_audio"])
            )
        if "no_audio" in preds:
            return preds["no_audio"] + guidance_scale * (cond - preds["no_audio"])
        if "no_text" in preds:
            return preds["no_text"] + text_guidance_scale * (cond - preds["no_text"])
        return cond

    @staticmethod
    def _per_sound(prompt: str | list[str], batch_size: int, name: str) -> list[str]:
        if isinstance(prompt, str):
            return [prompt] * batch_size
        if len(prompt) != batch_size:
            raise ValueError(
                f"`{name}` has {len(prompt)} entries for {batch_size} sounds; pass one string or one per sound."
            )
        return list(prompt)


AudioToImagePipeline.__call__.__doc__ += EXAMPLE_DOC_STRING
