"""GPU benchmark of diffusers-sonify at real shapes with random weights (nothing is downloaded); `benchmarks/gpu.sh`
runs it. Three measurements, each in fp16 and bf16:

1. Pipeline latency: `AudioToImagePipeline` (SD 1.5-shaped UNet + SD VAE, CLAP-HTSAT audio tower, default adapter;
   10 s of 48 kHz audio) against `StableDiffusionPipeline` over the same UNet and VAE with a CLIP ViT-L/14-shaped
   text encoder; 512x512, DDIM, classifier-free guidance in both; median wall time and peak GPU memory of each.
2. Training samples/s: the adapter alone, and the adapter + UNet LoRA (rank 4 on to_q/to_k/to_v/to_out.0), from
   cached VAE latent moments and cached CLAP features, as `train_scripts/train.py` runs with `cache_latents`
   (frozen UNet in the half dtype, trainable parameters in fp32, autocast, gradient clipping, AdamW).
3. Describe throughput: a random `Idefics3ForConditionalGeneration` at HuggingFaceTB/SmolVLM-256M-Instruct's
   architecture (config values written out in `SMOLVLM_256M`), greedy `generate` with KV cache of
   `--max_new_tokens` tokens (the builder's default 320) at batch 1 and batch 16 (left-padded prompts of equal
   length: the image tokens of `--vlm_crops` 512 px crops plus a ~230-token prompt); tokens/s and images/s.

`--quick` runs the same code on CPU with tiny shapes (tiny components of `diffusers_sonify.tiny`, 32 px) in
seconds: a check that the script works, not a measurement. Results go to `--output` as JSON and are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np
import torch

# HuggingFaceTB/SmolVLM-256M-Instruct (config.json): SmolLM2-135M text model with the image tokens added
# (vocab 49280), SigLIP base patch-16/512 vision tower, pixel shuffle by 4 (64 tokens per 512 px crop).
SMOLVLM_256M = {
    "image_token_id": 49190,
    "scale_factor": 4,
    "tie_word_embeddings": False,
    "text_config": {
        "model_type": "llama",
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "head_dim": 64,
        "vocab_size": 49280,
        "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-5,
        "rope_theta": 100000.0,
        "hidden_act": "silu",
        "pad_token_id": 2,
        "bos_token_id": 1,
        "eos_token_id": 49279,
    },
    "vision_config": {
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "image_size": 512,
        "patch_size": 16,
    },
}
TINY_VLM = {
    "image_token_id": 100,
    "scale_factor": 2,
    "tie_word_embeddings": False,
    "text_config": {
        "model_type": "llama",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 8,
        "vocab_size": 128,
        "max_position_embeddings": 512,
        "pad_token_id": 2,
        "bos_token_id": 1,
        "eos_token_id": 127,
    },
    "vision_config": {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "image_size": 32,
        "patch_size": 8,
    },
}


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def peak_reset(device: str) -> None:
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None


def components(quick: bool, device: str) -> dict:
    """SD 1.5 UNet + VAE, CLIP ViT-L/14-shaped text encoder, CLAP-HTSAT audio tower, default adapter (random
    weights); `quick`: the tiny test components."""
    from diffusers import DDIMScheduler

    from diffusers_sonify.tiny import tiny_pipeline_components

    if quick:
        return tiny_pipeline_components(seed=0, with_text=True)
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import (
        ClapAudioConfig,
        ClapAudioModelWithProjection,
        ClapFeatureExtractor,
        CLIPTextConfig,
        CLIPTextModel,
    )

    from diffusers_sonify import AudioProjectionModel
    from diffusers_sonify.tiny import SD15_TEXT_CONFIG, SD15_UNET_CONFIG, SD15_VAE_CONFIG, tiny_clip_tokenizer

    torch.manual_seed(0)
    with torch.device(device):  # random init on the GPU: seconds instead of a minute on CPU
        c = {
            "unet": UNet2DConditionModel(**SD15_UNET_CONFIG),
            "vae": AutoencoderKL(**SD15_VAE_CONFIG),
            "text_encoder": CLIPTextModel(CLIPTextConfig(**SD15_TEXT_CONFIG)),
            "audio_encoder": ClapAudioModelWithProjection(ClapAudioConfig()),  # laion/clap-htsat-unfused's tower
            "audio_projection": AudioProjectionModel(),
        }
    c["tokenizer"] = tiny_clip_tokenizer(model_max_length=77)
    c["feature_extractor"] = ClapFeatureExtractor(truncation="rand_trunc")
    c["scheduler"] = DDIMScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return c


def timed(fn, device: str, warmup: int, runs: int) -> tuple[float, float | None]:
    """Median wall seconds of `fn()` over `runs` after `warmup`, and the peak GPU memory (GiB) of the timed runs."""
    for _ in range(warmup):
        fn()
    peak_reset(device)
    times = []
    for _ in range(runs):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), peak_gib(device)


def both_pipelines(c: dict, dtype, device: str):
    """`(AudioToImagePipeline, StableDiffusionPipeline)` over the same UNet and VAE, on `device` in `dtype`."""
    from diffusers_sonify import AudioToImagePipeline
    from diffusers_sonify.tiny import stable_diffusion_pipeline

    sonify = AudioToImagePipeline(
        unet=c["unet"],
        scheduler=c["scheduler"],
        audio_encoder=c["audio_encoder"],
        feature_extractor=c["feature_extractor"],
        audio_projection=c["audio_projection"],
        vae=c["vae"],
    ).to(device, dtype)
    sd = stable_diffusion_pipeline(c).to(device, dtype)
    for pipe in (sonify, sd):
        pipe.set_progress_bar_config(disable=True)
    return sonify, sd


def pipeline_latency(c: dict, dtype, device: str, a) -> dict:
    sonify, sd = both_pipelines(c, dtype, device)
    fe = c["feature_extractor"]
    wave = np.random.default_rng(0).standard_normal(int(fe.nb_max_samples)).astype(np.float32) * 0.1
    common = {"height": a.resolution, "width": a.resolution, "num_inference_steps": a.steps, "output_type": "np"}

    def run_sonify():
        sonify(audio=wave, sampling_rate=fe.sampling_rate, generator=torch.Generator().manual_seed(0), **common)

    def run_sd():
        sd(prompt="a dog in a park", generator=torch.Generator().manual_seed(0), **common)

    s_lat, s_mem = timed(run_sonify, device, a.warmup, a.runs)
    b_lat, b_mem = timed(run_sd, device, a.warmup, a.runs)
    return {
        "sonify_s": s_lat,
        "stable_diffusion_s": b_lat,
        "latency_ratio": s_lat / b_lat,
        "sonify_peak_gib": s_mem,
        "stable_diffusion_peak_gib": b_mem,
    }


def training_rate(c: dict, dtype, device: str, a, lora_rank: int) -> dict:
    """Samples/s of the training step on cached latents and cached CLAP features (train.py's recipe): the adapter
    alone (`lora_rank` 0) or the adapter + UNet LoRA."""
    from diffusers import DDPMScheduler
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    from diffusers_sonify import training_utils as tu
    from diffusers_sonify.models import encode_audio_features

    unet, adapter, vae = c["unet"], c["audio_projection"], c["vae"]
    modules = {k: c[k] for k in ("unet", "audio_projection", "audio_encoder", "vae", "text_encoder")}
    for name in ("unet", "audio_encoder", "vae", "text_encoder"):
        modules[name].to(device, dtype).eval()  # frozen parts in the half dtype, as train.py casts them
    adapter.to(device, torch.float32).train()
    params = tu.configure_trainable_parameters(modules, lora_rank=lora_rank)
    for p in params:  # LoRA weights created on a half-precision UNet: train them in fp32, as train.py does
        p.data = p.data.float()
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    b = a.train_batch
    fe = c["feature_extractor"]
    waves = [np.random.default_rng(i).standard_normal(fe.nb_max_samples).astype(np.float32) * 0.1 for i in range(b)]
    with torch.no_grad():  # the caches: computed once, untimed (train.py computes them once per dataset)
        inputs = fe(waves, sampling_rate=fe.sampling_rate, return_tensors="pt").input_features.to(device, dtype)
        features = encode_audio_features(c["audio_encoder"], inputs)
        pooled, hidden = features.pooled.float(), features.hidden_states.float()
        pixels = torch.rand(b, 3, a.resolution, a.resolution, generator=torch.Generator().manual_seed(0))
        moments = vae.encode((pixels * 2 - 1).to(device, dtype)).latent_dist.parameters.float()

    def step(i):
        gen = tu.step_generator(0, i)
        latents = DiagonalGaussianDistribution(moments).sample(gen) * vae.config.scaling_factor
        with torch.autocast(device_type=device, dtype=dtype, enabled=device == "cuda"):
            cond, _ = tu.drop_audio_condition(adapter(pooled=pooled, hidden_states=hidden), adapter, 0.1, gen)
            noise = torch.randn(latents.shape, generator=gen).to(device)
            t = torch.randint(0, 1000, (b,), generator=gen).to(device)
            pred = unet(sched.add_noise(latents, noise, t), t, encoder_hidden_states=cond, return_dict=False)[0]
        loss = tu.diffusion_loss(pred.float(), tu.training_target(sched, latents, noise, t), t, sched)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad()

    for i in range(a.warmup + 1):
        step(i)
    peak_reset(device)
    sync(device)
    start = time.perf_counter()
    for i in range(a.train_steps):
        step(100 + i)
    sync(device)
    seconds = time.perf_counter() - start
    result = {"samples_per_s": a.train_steps * b / seconds, "batch": b, "peak_gib": peak_gib(device)}
    if lora_rank:
        c["unet"].unload_lora()  # leave the UNet as built for the next measurement
    return result


def describe_throughput(dtype, device: str, a) -> dict:
    """Greedy generation of a random Idefics3 model at SmolVLM-256M's architecture: batch 1 vs batch 16."""
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration

    cfg = TINY_VLM if a.quick else SMOLVLM_256M
    torch.manual_seed(0)
    with torch.device(device):
        model = Idefics3ForConditionalGeneration(Idefics3Config(**cfg)).to(dtype).eval()
    vision = cfg["vision_config"]
    per_crop = (vision["image_size"] // vision["patch_size"]) ** 2 // cfg["scale_factor"] ** 2
    crops = 2 if a.quick else a.vlm_crops
    prompt_tokens = 16 if a.quick else 230  # dataset_builder/prompts/describe_v1.txt + chat template
    new_tokens = 8 if a.quick else a.max_new_tokens
    g = torch.Generator().manual_seed(0)
    text = torch.randint(3, cfg["image_token_id"], (prompt_tokens,), generator=g)
    image = torch.full((crops * per_crop,), cfg["image_token_id"])
    ids = torch.cat([torch.tensor([cfg["text_config"]["bos_token_id"]]), image, text])
    out = {"image_tokens": crops * per_crop, "prompt_tokens": len(ids), "new_tokens": new_tokens}
    size = vision["image_size"]
    for batch in (1, a.vlm_batch):
        inputs = {
            "input_ids": ids.expand(batch, -1).to(device),
            "attention_mask": torch.ones(batch, len(ids), dtype=torch.long, device=device),
            "pixel_values": torch.rand(batch, crops, 3, size, size, generator=g).to(device, dtype),
        }

        def gen():
            with torch.inference_mode():
                model.generate(
                    **inputs,
                    max_new_tokens=new_tokens,
                    min_new_tokens=new_tokens,  # random weights: no early end of sequence
                    do_sample=False,
                    pad_token_id=cfg["text_config"]["pad_token_id"],
                )

        seconds, peak = timed(gen, device, warmup=1, runs=2)
        out[f"batch_{batch}"] = {
            "images_per_s": batch / seconds,
            "tokens_per_s": batch * new_tokens / seconds,
            "peak_gib": peak,
        }
    out["batch_speedup"] = out[f"batch_{a.vlm_batch}"]["images_per_s"] / out["batch_1"]["images_per_s"]
    return out


# (result key, label, LoRA rank): the adapter alone, then the adapter + UNet LoRA
TRAINING_RUNS = (("training_adapter", "adapter only", 0), ("training", "adapter + LoRA", 4))


def guarded(label: str, fn):
    """`fn()`, or the error it raised: a single run on a borrowed machine keeps every measurement that worked."""
    try:
        result = fn()
    except Exception as error:  # recorded, not hidden: the JSON and the log carry the failure
        import traceback

        traceback.print_exc()
        result = {"error": f"{type(error).__name__}: {error}"}
    print(f"{label}: {json.dumps(result)}", flush=True)
    return result


def write(results: dict, path: str, start: float) -> None:
    results["wall_s"] = time.perf_counter() - start
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(results, f, indent=2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="CPU, tiny shapes, seconds: checks that the script works")
    p.add_argument("--output", default="gpu_results.json")
    p.add_argument("--dtypes", nargs="+", default=["fp16", "bf16"], choices=["fp16", "bf16", "fp32"])
    p.add_argument("--resolution", type=int, default=None, help="image side (default 512; quick 32)")
    p.add_argument("--steps", type=int, default=None, help="inference steps (default 25; quick 2)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--runs", type=int, default=None, help="timed pipeline calls (default 5; quick 1)")
    p.add_argument("--train_batch", type=int, default=None, help="default 8; quick 2")
    p.add_argument("--train_steps", type=int, default=None, help="timed steps (default 20; quick 2)")
    p.add_argument("--vlm_batch", type=int, default=16)
    p.add_argument("--vlm_crops", type=int, default=17, help="512 px crops per image: 4x4 split + global")
    p.add_argument("--max_new_tokens", type=int, default=320)
    a = p.parse_args()
    device = "cpu" if a.quick else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("No CUDA device: run with --quick on CPU, or on a GPU machine (DEVELOPERS.md).")
    a.resolution = a.resolution or (32 if a.quick else 512)
    a.steps = a.steps or (2 if a.quick else 25)
    a.runs = a.runs or (1 if a.quick else 5)
    a.train_batch = a.train_batch or (2 if a.quick else 8)
    a.train_steps = a.train_steps or (2 if a.quick else 20)
    a.vlm_batch = 2 if a.quick else a.vlm_batch
    if a.quick:
        a.dtypes = ["fp32"]
    dtypes = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}

    start = time.perf_counter()
    results = {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else f"CPU ({platform.processor() or 'cpu'})",
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "mode": "quick (tiny shapes, CPU)" if a.quick else "SD 1.5 / CLAP-HTSAT / SmolVLM-256M shapes, random weights",
        "settings": {k: v for k, v in vars(a).items() if k not in ("output",)},
    }
    c = components(a.quick, device)
    print(f"built components in {time.perf_counter() - start:.1f} s on {results['device']}", flush=True)
    for name in a.dtypes:
        dtype = dtypes[name]
        r = results[name] = {}
        r["pipeline"] = guarded(f"[{name}] pipeline", lambda: pipeline_latency(c, dtype, device, a))
        for key, label, rank in TRAINING_RUNS:
            r[key] = guarded(f"[{name}] training, {label}", lambda: training_rate(c, dtype, device, a, rank))
        r["describe"] = guarded(f"[{name}] describe", lambda: describe_throughput(dtype, device, a))
        write(results, a.output, start)  # after each dtype: a run cut short keeps what it measured
    print(f"\nwrote {a.output} ({results['wall_s']:.0f} s)")
    for name in a.dtypes:
        r = results[name]
        parts = []
        if "error" not in r["pipeline"]:
            ratio = r["pipeline"]["latency_ratio"]
            parts.append(f"pipeline latency ratio sonify / StableDiffusionPipeline {ratio:.2f}")
        for key, label, _ in TRAINING_RUNS:
            if "error" not in r[key]:
                parts.append(f"training ({label}) {r[key]['samples_per_s']:.2f} samples/s")
        if "error" not in r["describe"]:
            batched = r["describe"][f"batch_{a.vlm_batch}"]
            parts.append(
                f"describe batch {a.vlm_batch} {r['describe']['batch_speedup']:.1f}x batch 1 "
                f"({batched['tokens_per_s']:.0f} tokens/s, {batched['images_per_s']:.2f} images/s)"
            )
        failed = [k for k, v in r.items() if "error" in v]
        print(f"{name}: " + "; ".join(parts) + (f"; FAILED: {', '.join(failed)}" if failed else ""))


if __name__ == "__main__":
    main()
