"""Real-scale shapes: a Stable Diffusion 1.5-shaped UNet/VAE with a CLAP-HTSAT audio tower (random weights).

Proves that the adapter's defaults fit the checkpoints the sd15_clap recipe loads
(`runwayml/stable-diffusion-v1-5`-style UNet/VAE, `laion/clap-htsat-unfused`), without downloading them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import ClapAudioConfig, ClapAudioModelWithProjection, ClapFeatureExtractor

from diffusers_sonify import AudioProjectionModel, AudioToImagePipeline
from diffusers_sonify.tiny import SD15_UNET_CONFIG, SD15_VAE_CONFIG


@pytest.mark.slow
def test_sd15_unet_with_clap_htsat_runs_one_step():
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**SD15_UNET_CONFIG)
    vae = AutoencoderKL(**SD15_VAE_CONFIG)
    audio_config = ClapAudioConfig()  # the defaults are laion/clap-htsat-unfused's audio tower
    assert (audio_config.hidden_size, audio_config.projection_dim, audio_config.num_mel_bins) == (768, 512, 64)
    audio_encoder = ClapAudioModelWithProjection(audio_config).eval()
    feature_extractor = ClapFeatureExtractor(truncation="rand_trunc")  # 48 kHz, 10 s, 64 mels, unfused input
    adapter = AudioProjectionModel()  # defaults: 512-d pooled + 768-d hidden -> 768-d tokens
    pipe = AudioToImagePipeline(
        unet=unet,
        scheduler=DDIMScheduler(
            beta_schedule="scaled_linear",
            beta_start=0.00085,
            beta_end=0.012,
            steps_offset=1,
            clip_sample=False,
            set_alpha_to_one=False,
        ),
        audio_encoder=audio_encoder,
        feature_extractor=feature_extractor,
        audio_projection=adapter,
        vae=vae,
    )
    pipe.set_progress_bar_config(disable=True)
    assert pipe.vae_scale_factor == 8 and pipe.spatial_multiple == 64
    assert pipe.max_audio_seconds == 10.0

    sr = 44_100  # resampled to CLAP's 48 kHz; 12 s is cropped to the 10 s window
    clip = (0.3 * np.sin(2 * np.pi * 440 * np.arange(12 * sr) / sr)).astype(np.float32)
    embeds = pipe.encode_audio(clip, sampling_rate=sr)
    assert embeds.shape == (1, 4 + 8, 768)  # 4 pooled tokens + 8 tokens from the (768, 2, 32) feature map

    images = pipe(
        audio_embeds=embeds,
        num_inference_steps=1,
        height=64,
        width=64,
        guidance_scale=3.0,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images
    assert images.shape == (1, 64, 64, 3) and np.isfinite(images).all()
