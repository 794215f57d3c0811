"""Tiny, randomly initialised components built from the real classes.

Nothing can be downloaded where this project is developed and tested, so tests, the untrained demo and
benchmarks assemble pipelines from these. Every component is the real diffusers/transformers class at a
small configuration; seeds make them reproducible.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
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
# openai/clip-vit-large-patch14's text tower, SD 1.5's text encoder
SD15_TEXT_CONFIG = {
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
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


def stable_diffusion_pipeline(components: dict) -> StableDiffusionPipeline:
    """A `StableDiffusionPipeline` over the Stable Diffusion parts of `components` (VAE, text encoder, tokenizer,
    UNet, scheduler), without a safety checker: the text-to-image sibling `from_pipe` moves to and from, and the
    reference the GPU benchmark times against."""
    return StableDiffusionPipeline(
        vae=components["vae"],
        text_encoder=components["text_encoder"],
        tokenizer=components["tokenizer"],
        unet=components["unet"],
        scheduler=components["scheduler"],
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def tiny_byte_tokenizer(
    specials: list[str],
    extra_special_tokens: dict | None = None,
    train_texts=None,
    vocab_size=512,
    max_token_length: int | None = None,
):
    """A byte-level BPE `PreTrainedTokenizerFast` with `<unk> <s> </s> <pad>` then `specials` first, built with the
    `tokenizers` library, no download. Without `train_texts` it has all 256 byte characters and no merges (every
    byte a token); with them, BPE merges are learned on those texts up to `vocab_size`, so texts like them take
    about as many tokens as with a real model's tokenizer (a few characters per token). With `max_token_length`
    merges may cross spaces and punctuation (SentencePiece-style) up to tokens of that many characters, digits
    always standing alone: a text repeated in `train_texts` (a fixed prompt) takes a fraction of the tokens."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    base = ["<unk>", "<s>", "</s>", "<pad>"]
    if train_texts is None:
        vocab = {tok: i for i, tok in enumerate(base + specials + sorted(pre_tokenizers.ByteLevel.alphabet()))}
        backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    else:
        backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if max_token_length is not None:
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex("[0-9]"), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    backend.decoder = decoders.ByteLevel()
    if train_texts is not None:
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=base + specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
            max_token_length=max_token_length,
        )
        backend.train_from_iterator(list(train_texts), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        extra_special_tokens=extra_special_tokens or {},
    )
    tokenizer.add_special_tokens({"additional_special_tokens": specials})
    return tokenizer


# SmolVLM's chat layout (the default `vlm_model`, HuggingFaceTB/SmolVLM-256M-Instruct), as a Jinja template.
_IDEFICS3_CHAT_TEMPLATE = (
    "<|im_start|>{% for m in messages %}{{ m['role'] | capitalize }}:"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)


def tiny_idefics3(
    path=None,
    seed: int = 0,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    image_size: int = 32,
    patch_size: int = 8,
    tokenizer_texts=None,
    vocab_size: int = 2048,
    max_token_length: int | None = None,
    scale_factor: int = 2,
) -> tuple:
    """A randomly initialised `Idefics3ForConditionalGeneration` (the default VLM's family: SmolVLM) and its
    `Idefics3Processor`, at toy width, from the real classes with no download.

    The processor's tokenizer is byte-level with Idefics3's special tokens: every byte a token, or BPE merges learned
    on `tokenizer_texts` ([`tiny_byte_tokenizer`]; e.g. the describe prompt and answers like the expected ones, so
    prompt and answer lengths in tokens are close to SmolVLM's; `max_token_length` lets merges cross words). Images
    are resized to `image_size` without splitting, so each image is `(image_size / patch_size / scale_factor) ** 2`
    image tokens after the pixel-shuffle connector (`image_size=64, patch_size=4` at the default scale factor 2
    gives SmolVLM's 64 per image). The tokenizer pads on the left, as batched generation needs.
    With `path`, both are saved there (loadable by `AutoProcessor` / `AutoModelForImageTextToText`).

    Returns:
        `(processor, model)`.
    """
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
        Idefics3VisionConfig,
        LlamaConfig,
    )

    grid = [f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)]
    specials = ["<|im_start|>", "<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>", *grid]
    tokenizer = tiny_byte_tokenizer(
        specials,
        {"image_token": "<image>"},
        train_texts=tokenizer_texts,
        vocab_size=vocab_size,
        max_token_length=max_token_length,
    )
    tokenizer.padding_side = "left"
    image_processor = Idefics3ImageProcessor(
        do_image_splitting=False,
        size={"longest_edge": image_size},
        max_image_size={"longest_edge": image_size},
    )
    processor = Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=(image_size // patch_size) ** 2 // scale_factor**2,
        chat_template=_IDEFICS3_CHAT_TEMPLATE,
    )
    torch.manual_seed(seed)
    config = Idefics3Config(
        vision_config=Idefics3VisionConfig(
            hidden_size=hidden_size,
            intermediate_size=2 * hidden_size,
            num_hidden_layers=num_hidden_layers,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=patch_size,
        ).to_dict(),
        text_config=LlamaConfig(
            hidden_size=hidden_size,
            intermediate_size=2 * hidden_size,
            num_hidden_layers=num_hidden_layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=len(tokenizer),
            max_position_embeddings=2048,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.convert_tokens_to_ids("<end_of_utterance>"),
        ).to_dict(),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        scale_factor=scale_factor,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = Idefics3ForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("<end_of_utterance>")
    if path is not None:
        model.save_pretrained(path)
        processor.save_pretrained(path)
    return processor, model
