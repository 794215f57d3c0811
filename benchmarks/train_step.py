"""Samples/s of the sonify trainer's step (cached VAE latents + cached audio features) against a plain
diffusers-style text-to-image LoRA step (VAE encode + text encode every batch), same UNet, same batch, one run.

    .venv/bin/python benchmarks/train_step.py [--steps 20] [--batch_size 8] [--resolution 64]
"""

from __future__ import annotations

import argparse
import time

import torch
from diffusers import DDPMScheduler
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

from diffusers_sonify import training_utils as tu
from diffusers_sonify.models import encode_audio_features
from diffusers_sonify.tiny import tiny_pipeline_components


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--resolution", type=int, default=64)
    args = parser.parse_args()
    torch.manual_seed(0)
    c = tiny_pipeline_components(seed=0, with_text=True)
    modules = {k: c[k] for k in ("unet", "audio_projection", "audio_encoder", "vae", "text_encoder")}
    params = tu.configure_trainable_parameters(modules, lora_rank=4)
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    sched = DDPMScheduler(num_train_timesteps=1000)
    vae, unet, text_encoder, tok = c["vae"], c["unet"], c["text_encoder"], c["tokenizer"]
    b, r = args.batch_size, args.resolution
    pixels = torch.rand(b, 3, r, r) * 2 - 1
    captions = [f"a photo of scene {i}" for i in range(b)]
    waves = [torch.randn(32000).numpy() * 0.1 for _ in range(b)]

    # the trainer's caches, computed once (not timed: they are reused across epochs and runs)
    with torch.no_grad():
        moments = vae.encode(pixels).latent_dist.parameters
        fe = c["feature_extractor"]
        feats = encode_audio_features(c["audio_encoder"], fe(waves, sampling_rate=fe.sampling_rate, return_tensors="pt").input_features)

    def finish(latents, cond, gen):
        noise = torch.randn(latents.shape, generator=gen)
        t = torch.randint(0, 1000, (b,), generator=gen)
        pred = unet(sched.add_noise(latents, noise, t), t, encoder_hidden_states=cond).sample
        loss = tu.diffusion_loss(pred, tu.training_target(sched, latents, noise, t), t, sched)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad()

    def sonify_step(step):
        gen = tu.step_generator(0, step)
        latents = DiagonalGaussianDistribution(moments).sample(gen) * vae.config.scaling_factor
        embeds = c["audio_projection"](pooled=feats.pooled, hidden_states=feats.hidden_states)
        cond, _ = tu.drop_audio_condition(embeds, c["audio_projection"], 0.1, gen)
        finish(latents, cond, gen)

    def text_to_image_lora_step(step):  # diffusers train_text_to_image_lora.py: encode every batch
        gen = tu.step_generator(0, step)
        with torch.no_grad():
            latents = vae.encode(pixels).latent_dist.sample(gen) * vae.config.scaling_factor
            ids = tok(captions, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt").input_ids
            cond = text_encoder(ids)[0]
        finish(latents, cond, gen)

    # interleaved (one step of each in turn), so load from other processes on a shared machine hits both alike
    steps = {"sonify (cached)": sonify_step, "text-to-image LoRA": text_to_image_lora_step}
    seconds = dict.fromkeys(steps, 0.0)
    for i in range(args.warmup + args.steps):
        for name, step_fn in steps.items():
            start = time.perf_counter()
            step_fn(i)
            if i >= args.warmup:
                seconds[name] += time.perf_counter() - start
    results = {name: args.steps * b / s for name, s in seconds.items()}
    for name, value in results.items():
        print(f"{name:>20}: {value:7.2f} samples/s")
    ratio = results["sonify (cached)"] / results["text-to-image LoRA"]
    print(f"ratio: {ratio:.2f}x  (batch {b}, {r}x{r} images, {args.steps} steps, {torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
