"""Tiny, randomly initialised components built from the real classes.

Nothing can be downloaded where this project is developed and tested, so tests, the untrained demo and
benchmarks assemble pipelines from these. Every component is the real diffusers/transformers class at a
small configuration; seeds make them reproducible.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import (
    ClapAudioConfig,
    ClapAudioModelWithProjection,
    ClapFeatureExtractor,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
)

from .models.audio_projection import AudioProjectionModel
from .pipelines.audio_to_image import AudioToImagePipeline

TINY_SAMPLING_RATE = 16_000

# Real-architecture shapes (random weights when built here): what the sd15_clap recipe loads from
# runwayml/stable-diffusion-v1-5's unet/ and vae/ subfolders. Tests and benchmarks use them to prove shapes and
# to time work at realistic relative sizes.
SD15_UNET_CONFIG = {
    "sample_size": 64,
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
}
SD15_VAE_CONFIG = {
    "block_out_channels": (128, 256, 512, 512),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "layers_per_block": 2,
    "latent_channels": 4,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}


def tiny_clip_tokenizer(model_max_length: int = 16) -> CLIPTokenizer:
    """A CLIP tokenizer over printable ASCII characters (no merges): real class, no download."""
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for code in range(33, 127):
        vocab[chr(code)] = len(vocab)
        vocab[chr(code) + "</w>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=model_max_length)


# The CLAP-HTSAT audio tower at toy width (16 mel bins, 64-frame spectrogram, two Swin stages of one layer each).
TINY_CLAP_AUDIO_ARGS = dict(
    spec_size=64,
    num_mel_bins=16,
    patch_size=4,
    patch_stride=(4, 4),
    window_size=4,
    hidden_size=32,
    depths=[1, 1],
    num_attention_heads=[2, 2],
    patch_embeds_hidden_size=16,
    enable_fusion=False,
)


def tiny_clap_audio(seed: int = 0, projection_dim: int = 16, max_length_s: int = 2):
    """A CLAP-HTSAT audio tower with projection at toy width, and a matching feature extractor (16 kHz)."""
    torch.manual_seed(seed)
    config = ClapAudioConfig(**TINY_CLAP_AUDIO_ARGS, projection_dim=projection_dim, projection_hidden_size=32)
    # rand_trunc: the unfused model takes one mel channel (the default "fusion" gives four)
    feature_extractor = ClapFeatureExtractor(
        feature_size=16,
        sampling_rate=TINY_SAMPLING_RATE,
        hop_length=160,
        fft_window_size=400,
        frequency_max=TINY_SAMPLING_RATE // 2,
        max_length_s=max_length_s,
        truncation="rand_trunc",
        padding="repeatpad",
    )
    return ClapAudioModelWithProjection(config).eval(), feature_extractor


def tiny_pipeline_components(
    seed: int = 0,
    latent: bool = True,
    with_text: bool = False,
    cross_attention_dim: int = 32,
    input_type: str = "both",
) -> dict:
    """Components for a tiny [`AudioToImagePipeline`] producing 32x32 images.

    Args:
        seed (`int`): seeds every component in turn.
        latent (`bool`): include a tiny `AutoencoderKL` (latent diffusion); else pixel-space diffusion.
        with_text (`bool`): include a tiny CLIP text encoder and tokenizer.
        cross_attention_dim (`int`): token width shared by text, audio tokens and the UNet.
        input_type (`str`): the adapter's `input_type`.
    """
    torch.manual_seed(seed)
    channels = 4 if latent else 3
    unet = UNet2DConditionModel(
        sample_size=16 if latent else 32,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    vae = None
    if latent:
        torch.manual_seed(seed + 1)
        vae = AutoencoderKL(
            block_out_channels=[32, 64],
            in_channels=3,
            out_channels=3,
            down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
            up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
            latent_channels=4,
            norm_num_groups=32,
            sample_size=32,
        )
    audio_encoder, feature_extractor = tiny_clap_audio(seed + 2)
    torch.manual_seed(seed + 3)
    audio_projection = AudioProjectionModel(
        cross_attention_dim=cross_attention_dim,
        pooled_dim=audio_encoder.config.projection_dim,
        hidden_dim=audio_encoder.config.hidden_size,
        input_type=input_type,
        num_pooled_tokens=2,
        num_hidden_tokens=4,
    )
    text_encoder = tokenizer = None
    if with_text:
        torch.manual_seed(seed + 4)
        tokenizer = tiny_clip_tokenizer()
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                hidden_size=cross_attention_dim,
                intermediate_size=37,
                num_hidden_layers=2,
                num_attention_heads=4,
                max_position_embeddings=tokenizer.model_max_length,
                bos_token_id=0,
                eos_token_id=1,
                pad_token_id=1,
            )
        ).eval()
    scheduler = DDIMScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return {
        "unet": unet,
        "scheduler": scheduler,
        "audio_encoder": audio_encoder,
        "feature_extractor": feature_extractor,
        "audio_projection": audio_projection,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
    }


def tiny_pipeline(**kwargs) -> AudioToImagePipeline:
    """A tiny [`AudioToImagePipeline`]; see [`tiny_pipeline_components`] for the arguments."""
    pipe = AudioToImagePipeline(**tiny_pipeline_components(**kwargs))
    pipe.set_progress_bar_config(disable=True)
    return pipe
