"""The toy recipe's components assemble into a working pipeline; encoder pre-training data is what it claims."""

from __future__ import annotations

import numpy as np
import torch

from diffusers_sonify import AudioToImagePipeline
from diffusers_sonify.toyworld import CLASS_NAMES, synthesize
from diffusers_sonify.toyworld.components import (
    make_pretraining_mixtures,
    pretrain_audio_encoder,
    toy_audio_encoder,
    toy_pipeline_components,
)
from diffusers_sonify.toyworld.sonify import LUFS_RANGE, loudness

CLIPS = {name: [synthesize(name, s) for s in range(2)] for name in CLASS_NAMES}


def test_pretraining_mixture_targets():
    waves, presence, level, reverb = make_pretraining_mixtures(CLIPS, 24, seed=0)
    assert len(waves) == 24 and presence.shape == level.shape == (24, len(CLASS_NAMES))
    assert set(presence.sum(1).tolist()) <= {1.0, 2.0, 3.0} and set(reverb.tolist()) <= {0.0, 1.0}
    assert torch.all(level[presence == 0] == 0)
    for wave, p, lv in zip(waves, presence, level):
        if p.sum() == 1:  # one source: the mixture's loudness is the target (unless the limiter acted)
            target = LUFS_RANGE[0] + float(lv.max()) * (LUFS_RANGE[1] - LUFS_RANGE[0])
            assert abs(loudness(wave) - target) < 0.5


def test_pretraining_updates_and_freezes_the_encoder():
    encoder, fe = toy_audio_encoder(seed=0)
    before = [p.detach().clone() for p in encoder.parameters()]
    losses = pretrain_audio_encoder(encoder, fe, CLIPS, num_mixtures=16, steps=2, batch_size=8)
    assert all(np.isfinite(v) for v in losses.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, encoder.parameters()))
    assert not any(p.requires_grad for p in encoder.parameters()) and not encoder.training


def test_toy_pipeline_generates_32px_images_from_sound():
    pipe = AudioToImagePipeline(**toy_pipeline_components(seed=0))
    pipe.set_progress_bar_config(disable=True)
    sounds = [synthesize("bell", 0), synthesize("engine", 0)]
    out = pipe(
        sounds,
        sampling_rate=16_000,
        num_inference_steps=2,
        output_type="np",
        generator=[torch.Generator().manual_seed(i) for i in range(2)],
    ).images
    assert out.shape == (2, 32, 32, 3) and np.isfinite(out).all()
    assert pipe.max_audio_seconds == 2.0


def test_toy_pipeline_samples_under_cpu_bf16_autocast():
    # the demo samples under bf16 autocast on CPUs with bf16 arithmetic: the AST feature extractor must stay in
    # float32 (its filterbank goes through numpy; under autocast it raised a TypeError), and the pictures must be
    # fp32 and the fp32 ones up to bf16 rounding
    pipe = AudioToImagePipeline(**toy_pipeline_components(seed=0))
    pipe.set_progress_bar_config(disable=True)
    sounds = [synthesize("bell", 0), synthesize("rain", 1)]

    def sample():
        generators = [torch.Generator().manual_seed(i) for i in range(2)]
        kwargs = dict(sampling_rate=16_000, num_inference_steps=3, guidance_scale=2.0, guidance_rescale=0.7)
        return pipe(sounds, output_type="pt", generator=generators, **kwargs).images

    full = sample()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = sample()
    assert mixed.dtype == torch.float32 and mixed.shape == full.shape == (2, 3, 32, 32)
    assert (mixed - full).abs().max() < 0.05  # bf16 rounding of a random UNet's convolutions, not another picture
