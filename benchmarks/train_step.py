"""Samples/s of the sonify trainer's step (cached VAE latents + cached audio features) against a plain
diffusers-style text-to-image LoRA step (VAE encode + text encode every batch), same UNet, same batch, one run.

    .venv/bin/python benchmarks/train_step.py            # realistic: SD 1.5 / CLIP ViT-L/14 / CLAP-HTSAT shapes
    .venv/bin/python benchmarks/train_step.py --tiny     # quick check with the tiny test components

The realistic mode builds the real architectures with random weights (nothing can be downloaded here): a Stable
Diffusion 1.5-shaped UNet and VAE, a CLIP ViT-L/14-shaped text encoder for the baseline and the CLAP-HTSAT audio
tower (`ClapAudioConfig()` defaults) whose features the sonify trainer caches. Every loop trains LoRA rank 4 on the
same UNet's attention (to_q/to_k/to_v/to_out.0) with AdamW over the trainable parameters; the UNet forward,
backward, clipping and optimizer step are identical, only what comes before them differs:

* `sonify (audio only)`: cached latent moments are sampled, cached CLAP features go through the adapter
  (12 tokens), condition dropout; what `train_scripts/train.py` does with `cache_latents` and cached audio features.
* `sonify (sd15_clap recipe)`: the same plus the frozen CLIP text encoder that `sd15_clap.yaml` keeps
  (`use_text_encoder: true`, no caption column: the empty prompt encoded once), text dropout, 77 + 12 tokens.
* `text-to-image LoRA`: diffusers' `train_text_to_image_lora.py` step: VAE encode + CLIP text encode every batch.

The loops run interleaved step by step, so load from other processes on a shared machine hits them alike.
Gradient checkpointing is off in all loops (it would slow the shared UNet part of every loop alike).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import numpy as np
import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from transformers import (
    ClapAudioConfig,
    ClapAudioModelWithProjection,
    ClapFeatureExtractor,
    CLIPTextConfig,
    CLIPTextModel,
)

from diffusers_sonify import AudioProjectionModel
from diffusers_sonify import training_utils as tu
from diffusers_sonify.models import encode_audio_features
from diffusers_sonify.tiny import SD15_UNET_CONFIG, SD15_VAE_CONFIG, tiny_clip_tokenizer, tiny_pipeline_components


def realistic_components(seed: int = 0) -> dict:
    """SD 1.5-shaped UNet + VAE, CLIP ViT-L/14-shaped text encoder, CLAP-HTSAT audio tower, default adapter."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**SD15_UNET_CONFIG)
    vae = AutoencoderKL(**SD15_VAE_CONFIG)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
        )
    )
    return {
        "unet": unet,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tiny_clip_tokenizer(model_max_length=77),
        "audio_encoder": ClapAudioModelWithProjection(ClapAudioConfig()),  # laion/clap-htsat-unfused's audio tower
        "feature_extractor": ClapFeatureExtractor(truncation="rand_trunc"),  # 48 kHz, 10 s, unfused input
        "audio_projection": AudioProjectionModel(),  # 512-d pooled + 768-d hidden -> 4 + 8 tokens of width 768
    }


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU (runs on CPU)"
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, {gpu}, torch {torch.__version__}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--tiny", action="store_true", help="tiny test components (quick check) instead of real shapes"
    )
    parser.add_argument("--steps", type=int, default=None, help="timed steps per loop (default 3 realistic, 10 tiny)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per loop first")
    parser.add_argument("--batch_size", type=int, default=None, help="default 2 realistic, 8 tiny")
    parser.add_argument("--resolution", type=int, default=None, help="image side; default 256 realistic, 32 tiny")
    parser.add_argument("--lora_rank", type=int, default=4)
    parser.add_argument("--no_recipe", action="store_true", help="skip the sd15_clap-recipe loop (text encoder kept)")
    args = parser.parse_args()
    steps = args.steps or (10 if args.tiny else 3)
    b = args.batch_size or (8 if args.tiny else 2)
    r = args.resolution or (32 if args.tiny else 256)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    load_before = os.getloadavg()

    start = time.perf_counter()
    c = tiny_pipeline_components(seed=0, with_text=True) if args.tiny else realistic_components(seed=0)
    for name in ("unet", "vae", "text_encoder", "audio_encoder", "audio_projection"):
        c[name].to(device)
        if name != "audio_projection":
            c[name].eval()  # frozen or LoRA-trained: no dropout; the adapter trains in train mode as in train.py
    modules = {k: c[k] for k in ("unet", "audio_projection", "audio_encoder", "vae", "text_encoder")}
    params = tu.configure_trainable_parameters(modules, lora_rank=args.lora_rank)
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    vae, unet, text_encoder, tok, fe = c["vae"], c["unet"], c["text_encoder"], c["tokenizer"], c["feature_extractor"]
    adapter = c["audio_projection"]
    print(f"built components in {time.perf_counter() - start:.1f} s; {tu.trainable_summary(modules)}")

    gen0 = torch.Generator().manual_seed(0)
    pixels = (torch.rand(b, 3, r, r, generator=gen0) * 2 - 1).to(device)
    captions = [f"a photo of scene {i}" for i in range(b)]
    waves = [np.random.default_rng(i).standard_normal(fe.nb_max_samples).astype(np.float32) * 0.1 for i in range(b)]

    def encode_text(texts):
        ids = tok(texts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt")
        with torch.no_grad():
            return text_encoder(ids.input_ids.to(device))[0].float()

    def encode_audio(idx):
        inputs = fe([waves[i] for i in idx], sampling_rate=fe.sampling_rate, return_tensors="pt").input_features
        features = encode_audio_features(c["audio_encoder"], inputs.to(device))
        return {"pooled": features.pooled, "hidden_states": features.hidden_states}

    # the trainer's caches, computed once through the trainer's own cache function (not timed: train.py computes
    # them once per dataset fingerprint and reuses them across epochs and runs)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache_dir, torch.no_grad():
        latent_cache = tu.cached_features(
            tu.feature_cache_path(cache_dir, "latents", "bench", "vae"),
            lambda idx: {"latent_moments": vae.encode(pixels[idx]).latent_dist.parameters},
            num_rows=b,
            batch_size=b,
        )
        audio_cache = tu.cached_features(
            tu.feature_cache_path(cache_dir, "audio", "bench", "clap"), encode_audio, num_rows=b, batch_size=b
        )
    moments = latent_cache["latent_moments"].to(device)
    pooled, hidden = audio_cache["pooled"].to(device), audio_cache["hidden_states"].to(device)
    null_text = encode_text([""])
    print(
        f"cached latents {tuple(moments.shape)} and audio features {tuple(pooled.shape)} + {tuple(hidden.shape)} "
        f"in {time.perf_counter() - start:.1f} s (untimed)"
    )

    scale = vae.config.scaling_factor

    def finish(latents, cond, gen):
        """The part every loop shares: noise, UNet forward + backward, clipping, AdamW step."""
        noise = torch.randn(latents.shape, generator=gen).to(device)
        t = torch.randint(0, sched.config.num_train_timesteps, (b,), generator=gen).to(device)
        pred = unet(sched.add_noise(latents, noise, t), t, encoder_hidden_states=cond, return_dict=False)[0]
        loss = tu.diffusion_loss(pred, tu.training_target(sched, latents, noise, t), t, sched)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad()

    def sonify_cond(gen):
        latents = DiagonalGaussianDistribution(moments).sample(gen) * scale
        embeds = adapter(pooled=pooled, hidden_states=hidden)
        cond, _ = tu.drop_audio_condition(embeds, adapter, 0.1, gen)
        return latents, cond

    def sonify_step(step):
        gen = tu.step_generator(0, step)
        finish(*sonify_cond(gen), gen)

    def sonify_recipe_step(step):  # as train.py with use_text_encoder and no caption column (sd15_clap.yaml)
        gen = tu.step_generator(0, step)
        latents, cond = sonify_cond(gen)
        # no caption column: train.py reuses the empty prompt's embedding, encoded once
        text, _ = tu.drop_text_condition(null_text.expand(b, -1, -1), null_text, 0.1, gen)
        finish(latents, torch.cat([text, cond], dim=1), gen)

    def text_to_image_lora_step(step):  # diffusers train_text_to_image_lora.py: encode every batch
        gen = tu.step_generator(0, step)
        with torch.no_grad():
            latents = vae.encode(pixels).latent_dist.sample(gen) * scale
        finish(latents, encode_text(captions), gen)

    loops = {"sonify (audio only)": sonify_step}
    if not args.no_recipe:
        loops["sonify (sd15_clap recipe)"] = sonify_recipe_step
    loops["text-to-image LoRA"] = text_to_image_lora_step
    spent = dict.fromkeys(loops, 0.0)
    for i in range(args.warmup + steps):
        for name, step_fn in loops.items():
            start = time.perf_counter()
            step_fn(i)
            if i >= args.warmup:
                spent[name] += time.perf_counter() - start
        print(
            f"step {i + 1}/{args.warmup + steps}{' (warm-up)' if i < args.warmup else ''}: "
            + ", ".join(f"{n} {s:.1f} s" for n, s in spent.items()),
            flush=True,
        )

    rates = {name: steps * b / s for name, s in spent.items()}
    baseline = rates["text-to-image LoRA"]
    mode = "tiny components" if args.tiny else "SD 1.5 UNet/VAE, CLIP ViT-L/14 text, CLAP-HTSAT audio (random weights)"
    print(f"\nmachine: {machine()}")
    print(f"load average before/after: {load_before[0]:.2f} / {os.getloadavg()[0]:.2f}")
    print(
        f"config: {mode}; batch {b}, {r}x{r} images -> "
        f"{moments.shape[1] // 2}x{moments.shape[2]}x{moments.shape[3]} latents, LoRA rank "
        f"{args.lora_rank}, fp32, {args.warmup} warm-up + {steps} timed steps per loop, interleaved"
    )
    for name, value in rates.items():
        ratio = f"  ({value / baseline:.2f}x)" if name != "text-to-image LoRA" else ""
        print(f"{name:>26}: {value:8.3f} samples/s{ratio}")
    ratio = rates["sonify (audio only)"] / baseline
    print(
        f"ratio sonify (audio only) / text-to-image LoRA: {ratio:.2f}x "
        f"(target >= 1.3x: {'met' if ratio >= 1.3 else 'not met'})"
    )


if __name__ == "__main__":
    main()
