"""The toy world's model components (the recipe in RECIPE.md) and the audio encoder's pre-training.

The audio encoder is a transformers `ASTModel` at toy size with no pretrained weights. It is pre-trained on the
audio corpus alone (no images, no pairs): random mixtures of 1-3 corpus clips at random loudness, dry or
reverberated, and it learns to report which categories are present, each one's loudness and whether the mixture
is reverberant. It is then frozen; the UNet and the adapter learn the sound -> picture mapping from the sonified
pairs through the diffusion loss.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from tqdm.auto import tqdm
from transformers import ASTConfig, ASTFeatureExtractor, ASTModel

from ..audio import torch_threads
from ..models.audio_projection import AudioProjectionModel
from .sonify import LUFS_RANGE, RT60_BY_SPACE, apply_reverb, mix, set_loudness
from .world import CLASS_NAMES, IMAGE_SIZE, SAMPLING_RATE

logger = logging.getLogger(__name__)

CROSS_ATTENTION_DIM = 64
FEATURE_EXTRACTOR_ARGS = {"num_mel_bins": 32, "max_length": 200, "sampling_rate": SAMPLING_RATE}  # 2 s at 10 ms hop
AUDIO_ENCODER_CONFIG = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "patch_size": 16,
    "frequency_stride": 8,
    "time_stride": 8,
    "max_length": 200,
    "num_mel_bins": 32,
}
UNET_CONFIG = {
    "sample_size": IMAGE_SIZE,
    "in_channels": 3,
    "out_channels": 3,
    "block_out_channels": (32, 64, 64),
    "layers_per_block": 1,
    # cross-attention at 8x8 only: the 16x16 level cost 40 % of a step; without it two-source mixing fell with
    # uniform timesteps, but holds with logit-normal ones (RECIPE.md, P1/P2/d10, then P15/P15LN and d16)
    "down_block_types": ("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    "cross_attention_dim": CROSS_ATTENTION_DIM,
    "attention_head_dim": 8,
    "norm_num_groups": 16,
    # the audio tokens are also attention-pooled into the timestep embedding: global conditioning of every
    # ResNet block (class, size, background), on top of cross-attention in the two low-resolution levels
    "addition_embed_type": "text",
    "addition_embed_type_num_heads": 4,
}
# 4 tokens from the encoder's pooled output and 8 from its output tokens (two special ones, then patches of 3
# frequency bands x 24 time steps, pooled in runs of about 9): two-source mixing up on every seed over four draws
# per sound (RECIPE.md, d29)
ADAPTER_CONFIG = {
    "cross_attention_dim": CROSS_ATTENTION_DIM,
    "pooled_dim": AUDIO_ENCODER_CONFIG["hidden_size"],  # AST's pooled output: the mean of its two special tokens
    "hidden_dim": AUDIO_ENCODER_CONFIG["hidden_size"],
    "input_type": "both",
    "num_pooled_tokens": 4,
    "num_hidden_tokens": 8,
    # the maximum of each run, not its mean: the intermittent sources (bird, bell) keep their strength (RECIPE.md, d34)
    "hidden_pool": "max",
}
# v-prediction with "trailing" sampling steps: the first step starts at t = 999, where the cosine schedule leaves
# (almost) no signal, and predicts the clean image there, so the background follows the sound (RECIPE.md, run V)
SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_schedule": "squaredcos_cap_v2",
    "prediction_type": "v_prediction",
    "timestep_spacing": "trailing",
}


def toy_audio_encoder(seed: int = 0) -> tuple[ASTModel, ASTFeatureExtractor]:
    """A fresh toy `ASTModel` (88k parameters) and its feature extractor (32 log-mel bins, fixed normalisation,
    so absolute loudness stays in the features)."""
    torch.manual_seed(seed)
    return ASTModel(ASTConfig(**AUDIO_ENCODER_CONFIG)).eval(), ASTFeatureExtractor(**FEATURE_EXTRACTOR_ARGS)


def toy_noise_scheduler() -> DDPMScheduler:
    """The training noise scheduler of the recipe."""
    return DDPMScheduler(**SCHEDULER_CONFIG)


def toy_pipeline_components(seed: int = 0, audio_encoder=None, feature_extractor=None) -> dict:
    """Components for the toy [`AudioToImagePipeline`]: pixel-space UNet (1.7 M parameters), DDIM sampler with
    clipping, toy AST encoder (fresh unless given, e.g. after [`pretrain_audio_encoder`]) and an adapter reading its
    pooled output and its patch tokens."""
    if audio_encoder is None or feature_extractor is None:
        audio_encoder, feature_extractor = toy_audio_encoder(seed)
    torch.manual_seed(seed + 1)
    unet = UNet2DConditionModel(**UNET_CONFIG)
    torch.manual_seed(seed + 2)
    adapter = AudioProjectionModel(**ADAPTER_CONFIG)
    scheduler = DDIMScheduler(**SCHEDULER_CONFIG, clip_sample=True, set_alpha_to_one=False)
    return {
        "unet": unet,
        "scheduler": scheduler,
        "audio_encoder": audio_encoder,
        "feature_extractor": feature_extractor,
        "audio_projection": adapter,
    }


def _features(feature_extractor, waves: list[np.ndarray], chunk: int = 256) -> torch.Tensor:
    return torch.cat(
        [
            feature_extractor(waves[i : i + chunk], sampling_rate=SAMPLING_RATE, return_tensors="pt").input_values
            for i in range(0, len(waves), chunk)
        ]
    )


def make_pretraining_mixtures(clips_by_category: dict[str, list[np.ndarray]], num_mixtures: int, seed: int = 0):
    """Random mixtures of 1-3 corpus clips with their targets.

    Returns `(waves, presence (N, C), loudness (N, C) normalised to [0, 1] over LUFS_RANGE, reverberant (N,))`.
    """
    missing = [c for c in CLASS_NAMES if not clips_by_category.get(c)]
    if missing:
        raise ValueError(f"`clips_by_category` has no clips for {missing}; the audio corpus must cover every class.")
    rng = np.random.default_rng([seed, 4])
    waves, presence, level, reverb = (
        [],
        np.zeros((num_mixtures, len(CLASS_NAMES))),
        np.zeros((num_mixtures, len(CLASS_NAMES))),
        np.zeros(num_mixtures),
    )
    for i in tqdm(range(num_mixtures), desc="Encoder pre-training mixtures"):
        k = int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2]))
        cats = rng.choice(len(CLASS_NAMES), k, replace=False)
        lufs = rng.uniform(*LUFS_RANGE, size=k)
        space = str(rng.choice(["open", "medium", "large"], p=[0.5, 0.25, 0.25]))
        sources = []
        for c, target in zip(cats, lufs):
            pool = clips_by_category[CLASS_NAMES[c]]
            clip = apply_reverb(pool[rng.integers(len(pool))], RT60_BY_SPACE[space], int(rng.integers(2**31)))
            sources.append(set_loudness(clip, float(target)))
        waves.append(mix(sources))
        presence[i, cats] = 1
        level[i, cats] = (lufs - LUFS_RANGE[0]) / (LUFS_RANGE[1] - LUFS_RANGE[0])
        reverb[i] = float(space != "open")
    as_t = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    return waves, as_t(presence), as_t(level), as_t(reverb)


def pretrain_audio_encoder(
    audio_encoder: ASTModel,
    feature_extractor: ASTFeatureExtractor,
    clips_by_category: dict[str, list[np.ndarray]],
    num_mixtures: int = 2000,
    steps: int = 600,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    seed: int = 0,
) -> dict:
    """Pre-train `audio_encoder` in place on audio-corpus mixtures (see module docstring); returns it in eval mode.

    A linear head on the pooled output predicts presence (BCE), per-category loudness (MSE on present
    categories) and reverberation (BCE); the head is discarded afterwards.

    Returns:
        `dict` with the final `presence_loss`, `loudness_loss`, `reverb_loss`.
    """
    with torch_threads(1):  # as fast as two threads since loudness moved to scipy (2.3 ms per mixture either way)
        waves, presence, level, reverb = make_pretraining_mixtures(clips_by_category, num_mixtures, seed)
    inputs = _features(feature_extractor, waves)
    torch.manual_seed(seed)
    num = len(CLASS_NAMES)
    head = torch.nn.Linear(audio_encoder.config.hidden_size, 2 * num + 1)
    params = list(audio_encoder.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.01)
    audio_encoder.train()
    losses = {}
    for step in tqdm(range(steps), desc="Encoder pre-training"):
        idx = torch.randint(0, len(waves), (batch_size,))
        out = head(audio_encoder(input_values=inputs[idx]).pooler_output)
        p = presence[idx]
        losses = {
            "presence_loss": F.binary_cross_entropy_with_logits(out[:, :num], p),
            "loudness_loss": ((out[:, num : 2 * num] - level[idx]) ** 2 * p).sum() / p.sum(),
            "reverb_loss": F.binary_cross_entropy_with_logits(out[:, -1], reverb[idx]),
        }
        loss = losses["presence_loss"] + 4 * losses["loudness_loss"] + 2 * losses["reverb_loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    audio_encoder.eval().requires_grad_(False)
    result = {k: v.item() for k, v in losses.items()}
    logger.info("Audio encoder pre-trained for %d steps: %s", steps, result)
    return result
