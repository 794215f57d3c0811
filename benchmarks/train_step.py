"""Samples/s of the sonify trainer's step (cached VAE latents + cached audio features) against a plain
diffusers-style text-to-image LoRA step (VAE encode + text encode every batch), same UNet, same batch, one run.

    .venv/bin/python benchmarks/train_step.py            # realistic: SD 1.5 / CLIP ViT-L/14 / CLAP-HTSAT shapes
    .venv/bin/python benchmarks/train_step.py --tiny     # quick check with the tiny test components
    .venv/bin/python benchmarks/train_step.py --levers   # bf16, channels_last, AttnProcessor, compile, Muon
    .venv/bin/python benchmarks/train_step.py --quick    # seconds: tiny components, floor + levers (the test)

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
* `trainer (train.py step)`: the body of `train_scripts/train.py`'s loop through a prepared `Accelerator` (UNet and
  adapter prepared, `accumulate`, loss and index `gather`, `accelerator.backward`, `clip_grad_norm_`, the gradient
  norm logged, LR scheduler step), on cached latents and audio features.
* `floor`: the bare limit: the same UNet + LoRA forward, backward and AdamW step on pre-made tensors (noisy latents,
  timesteps, conditioning, target), nothing else. The trainer's samples/s over the floor's is the ratio reported.

`--levers` times the floor under the CPU levers a user of this machine has: bf16 autocast, channels_last, bf16
autocast with diffusers' matrix-product `AttnProcessor` in place of the default fused attention (the
`attention_processor` option) and `torch.compile` (each alone; compile time reported apart), at SD 1.5 shapes (LoRA)
and at the toy world's shapes (`toyworld.components.UNET_CONFIG`, full UNet training, batch 16, 3x32x32 pixel space,
the adapter's 12 audio tokens); at the toy shapes also the cost of the Muon optimizer's step (`optimizer: muon`)
against AdamW's.

The loops run interleaved step by step, so load from other processes on a shared machine hits them alike.
Gradient checkpointing is off in all loops (it would slow the shared UNet part of every loop alike).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from _machine import cpu_model
from accelerate import Accelerator
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from diffusers.optimization import get_scheduler
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
from diffusers_sonify.tiny import (
    SD15_TEXT_CONFIG,
    SD15_UNET_CONFIG,
    SD15_VAE_CONFIG,
    tiny_clip_tokenizer,
    tiny_pipeline_components,
)


def realistic_components(seed: int = 0) -> dict:
    """SD 1.5-shaped UNet + VAE, CLIP ViT-L/14-shaped text encoder, CLAP-HTSAT audio tower, default adapter."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**SD15_UNET_CONFIG)
    vae = AutoencoderKL(**SD15_VAE_CONFIG)
    text_encoder = CLIPTextModel(CLIPTextConfig(**SD15_TEXT_CONFIG))
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
    cpu = cpu_model()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU (runs on CPU)"
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, {gpu}, torch {torch.__version__}"


def floor_inputs(unet, batch: int, latent_shape: tuple, tokens: int, seed: int = 0) -> dict:
    """Pre-made tensors for the floor step: noisy input, timesteps, conditioning, target."""
    g = torch.Generator().manual_seed(seed)
    return {
        "sample": torch.randn(batch, *latent_shape, generator=g),
        "timestep": torch.randint(0, 1000, (batch,), generator=g),
        "encoder_hidden_states": torch.randn(batch, tokens, unet.config.cross_attention_dim, generator=g),
        "target": torch.randn(batch, *latent_shape, generator=g),
    }


def floor_step(unet, optimizer, x: dict, autocast: bool = False) -> None:
    """The bare limit: UNet forward, loss, backward, optimizer step on pre-made tensors, nothing else."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        pred = unet(x["sample"], x["timestep"], encoder_hidden_states=x["encoder_hidden_states"], return_dict=False)[0]
    F.mse_loss(pred.float(), x["target"]).backward()
    optimizer.step()
    optimizer.zero_grad()


def lever_rates(
    unet, params, x: dict, steps: int, warmup: int, compile_model: bool = True, muon: bool = False
) -> dict:
    """Samples/s of the floor step: fp32, bf16 autocast, channels_last, with `muon` the Muon optimizer in AdamW's
    place (`optimizer: muon`; eager, interleaved step by step so load hits them alike), then `torch.compile`
    (default mode; its compile time is reported apart)."""
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    b = x["sample"].shape[0]
    x_cl = {**x, "sample": x["sample"].contiguous(memory_format=torch.channels_last)}
    variants = {
        "fp32 (eager)": lambda: floor_step(unet, optimizer, x),
        "bf16 autocast": lambda: floor_step(unet, optimizer, x, autocast=True),
        "channels_last": lambda: floor_step(unet, optimizer, x_cl),
        # diffusers' matrix-product attention instead of torch's fused kernel (`attention_processor: AttnProcessor`)
        "bf16 + AttnProcessor": lambda: floor_step(unet, optimizer, x, autocast=True),
    }
    if muon:
        from diffusers_sonify.optimization import MuonAdamW, muon_parameter_split

        muon_optimizer = MuonAdamW(*muon_parameter_split({"unet": unet}), lr=1e-4)
        variants["Muon optimizer"] = lambda: floor_step(unet, muon_optimizer, x)
    spent = dict.fromkeys(variants, 0.0)
    for i in range(warmup + steps):
        for name, fn in variants.items():
            unet.to(memory_format=torch.channels_last if name == "channels_last" else torch.contiguous_format)
            tu.set_attention_processor(unet, "AttnProcessor" if "AttnProcessor" in name else "AttnProcessor2_0")
            start = time.perf_counter()
            fn()
            if i >= warmup:
                spent[name] += time.perf_counter() - start
    unet.to(memory_format=torch.contiguous_format)
    tu.set_attention_processor(unet, "AttnProcessor2_0")
    rates = {name: steps * b / t for name, t in spent.items()}
    if compile_model:
        compiled = torch.compile(unet)
        start = time.perf_counter()
        floor_step(compiled, optimizer, x)  # compiles forward and backward
        compile_s = time.perf_counter() - start
        for _ in range(warmup):
            floor_step(compiled, optimizer, x)
        start = time.perf_counter()
        for _ in range(steps):
            floor_step(compiled, optimizer, x)
        rates[f"torch.compile (compiled in {compile_s:.0f} s)"] = steps * b / (time.perf_counter() - start)
    return rates


def run_levers(args) -> None:
    """The CPU levers at SD 1.5 shapes (LoRA on the attention) and at the toy world's (full UNet)."""
    from diffusers_sonify.toyworld.components import ADAPTER_CONFIG, UNET_CONFIG

    load_before = os.getloadavg()
    results = {}
    if args.quick:
        unet = tiny_pipeline_components(seed=0)["unet"]
        shapes = {"tiny UNet, LoRA": (unet, 2, (unet.config.in_channels, 16, 16), 4)}
    else:
        torch.manual_seed(0)
        sd = UNet2DConditionModel(**SD15_UNET_CONFIG)
        r = (args.resolution or 256) // 8
        shapes = {f"SD 1.5 UNet, LoRA rank {args.lora_rank}, batch 2, 4x{r}x{r}": (sd, 2, (4, r, r), 12)}
    torch.manual_seed(0)
    toy = UNet2DConditionModel(**UNET_CONFIG)
    size = UNET_CONFIG["sample_size"]
    toy_tokens = ADAPTER_CONFIG["num_pooled_tokens"] + ADAPTER_CONFIG["num_hidden_tokens"]
    toy_batch = 4 if args.quick else 16  # bf16 autocast runs a batch of 16 at ~6 s per step on a CPU without AMX
    shapes[f"toy UNet (full training), batch {toy_batch}, 3x{size}x{size}"] = (
        toy,
        toy_batch,
        (3, size, size),
        toy_tokens,
    )
    for name, (unet, batch, shape, tokens) in shapes.items():
        unet.train() if name.startswith("toy") else unet.eval()  # LoRA-trained UNets run in eval mode in train.py
        if "LoRA" in name:
            unet.requires_grad_(False)
            from peft import LoraConfig

            unet.add_adapter(
                LoraConfig(r=args.lora_rank, init_lora_weights="gaussian", target_modules=tu.LORA_TARGET_MODULES)
            )
        params = [p for p in unet.parameters() if p.requires_grad]
        x = floor_inputs(unet, batch, shape, tokens)
        steps = args.steps or (2 if args.quick else 3 if "SD 1.5" in name else 10)
        full = name.startswith("toy")  # Muon takes weight matrices, not LoRA factors
        results[name] = lever_rates(unet, params, x, steps, args.warmup, not args.no_compile, muon=full)
        print(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in results[name].items()), flush=True)
    print(f"\nmachine: {machine()}")
    print(f"load average before/after: {load_before[0]:.2f} / {os.getloadavg()[0]:.2f}")
    for name, rates in results.items():
        base = rates["fp32 (eager)"]
        print(f"{name}:")
        for lever, value in rates.items():
            print(f"  {lever:>36}: {value:8.3f} samples/s ({value / base:.2f}x fp32 eager)")


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
    parser.add_argument("--levers", action="store_true", help="time bf16 autocast, channels_last, torch.compile")
    parser.add_argument("--no_compile", action="store_true", help="--levers without torch.compile")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="check run: --tiny with 5 timed steps, then --levers at tiny + toy shapes without compile",
    )
    args = parser.parse_args()
    if args.quick:
        args.tiny, args.steps, args.warmup = True, args.steps or 5, 2
    if args.levers:
        return run_levers(args)
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

    # train.py's step body through a prepared Accelerator (one process; on CPU as train.py sets it up)
    accelerator = Accelerator(cpu=device == "cpu")
    lr_scheduler = get_scheduler("constant", optimizer=optimizer)
    acc_adapter, acc_unet, acc_optimizer, acc_scheduler = accelerator.prepare(adapter, unet, optimizer, lr_scheduler)
    row_index = torch.arange(b)

    def trainer_step(step):
        with accelerator.accumulate(acc_adapter, acc_unet):
            gen = tu.step_generator(0, step, 0, accelerator.process_index)
            latents = DiagonalGaussianDistribution(moments).sample(gen)
            latents = (latents.float() - (vae.config.shift_factor or 0.0)) * scale
            latents = latents.float().to(device)
            embeds = acc_adapter(pooled=pooled.float().to(device), hidden_states=hidden.float().to(device))
            cond, _ = tu.drop_audio_condition(embeds, accelerator.unwrap_model(acc_adapter), 0.1, gen)
            noise = tu.training_noise(latents.shape, gen, 0.0).to(device)
            t = torch.randint(0, sched.config.num_train_timesteps, (b,), generator=gen).to(device)
            pred = acc_unet(sched.add_noise(latents, noise, t), t, encoder_hidden_states=cond, return_dict=False)[0]
            loss = tu.diffusion_loss(pred, tu.training_target(sched, latents, noise, t), t, sched, None)
            accelerator.gather(loss.detach().reshape(1)).mean().item()
            accelerator.gather(row_index.to(device)).reshape(accelerator.num_processes, -1)
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(params, 1.0)
                grads = [p.grad.norm() for p in params if p.grad is not None]
                float(torch.linalg.vector_norm(torch.stack(grads)))
            acc_optimizer.step()
            acc_scheduler.step()
            acc_optimizer.zero_grad()

    # the floor: the same UNet + LoRA forward, backward and optimizer step on pre-made tensors
    with torch.no_grad():
        gen = tu.step_generator(0, 0)
        latents = DiagonalGaussianDistribution(moments).sample(gen) * scale
        noise, t = torch.randn(latents.shape, generator=gen), torch.randint(0, 1000, (b,), generator=gen)
        floor_x = {
            "sample": sched.add_noise(latents, noise, t),
            "timestep": t,
            "encoder_hidden_states": adapter(pooled=pooled, hidden_states=hidden),
            "target": tu.training_target(sched, latents, noise, t),
        }

    loops = {"sonify (audio only)": sonify_step}
    if not args.no_recipe:
        loops["sonify (sd15_clap recipe)"] = sonify_recipe_step
    loops["text-to-image LoRA"] = text_to_image_lora_step
    loops["trainer (train.py step)"] = trainer_step
    loops["floor"] = lambda step: floor_step(unet, optimizer, floor_x)
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
        ratio = f"  ({value / baseline:.2f}x t2i, {value / rates['floor']:.2f} of the floor)"
        print(f"{name:>26}: {value:8.3f} samples/s{ratio}")
    ratio = rates["sonify (audio only)"] / baseline
    print(
        f"ratio sonify (audio only) / text-to-image LoRA: {ratio:.2f}x "
        f"(target >= 1.3x: {'met' if ratio >= 1.3 else 'not met'})"
    )
    of_floor = rates["trainer (train.py step)"] / rates["floor"]
    verdict = "met" if of_floor >= 0.9 else "not met"
    print(f"ratio trainer (train.py step) / floor: {of_floor:.2f} (goal >= 0.9: {verdict})")
    if args.quick:  # the levers path too, at tiny and toy shapes (eager only: compiling takes minutes)
        args.no_compile, args.steps, args.warmup = True, 2, 1
        run_levers(args)


if __name__ == "__main__":
    main()
