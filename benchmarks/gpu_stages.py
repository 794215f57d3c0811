"""Where the GPU pipeline's time goes (issue 16, point 5): `AudioToImagePipeline` vs `StableDiffusionPipeline` per
stage, dtype by dtype in the order fp16, bf16, fp16 (the second fp16 pass shows what is warm-up and what is the
dtype), each with 2 warm-up and 5 timed calls, then a `torch.profiler` table of one 25-step sonify call (GPU kernel
time vs wall time). Same components as `benchmarks/gpu.sh` (SD 1.5 / CLAP-HTSAT shapes, random weights, 512 px).

    python benchmarks/gpu_stages.py            # CUDA machine (the device machine: see DEVELOPERS.md)
    python benchmarks/gpu_stages.py --quick    # CPU, tiny shapes, seconds: checks the script, not a measurement
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpu_bench  # the same components and sync helpers as gpu.sh


def median_seconds(fn, device: str) -> float:
    """Median wall seconds of `fn()` over 5 calls after 2 warm-ups (gpu.sh's timer)."""
    return gpu_bench.timed(fn, device, warmup=2, runs=5)[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="CPU, tiny shapes: checks that the script works")
    a = p.parse_args()
    device = "cpu" if a.quick else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("No CUDA device: run with --quick on CPU, or on a GPU machine (DEVELOPERS.md).")
    size, steps = (32, 2) if a.quick else (512, 25)
    c = gpu_bench.components(a.quick, device)
    fe = c["feature_extractor"]
    wave = np.random.default_rng(0).standard_normal(int(fe.nb_max_samples)).astype(np.float32) * 0.1
    dtypes = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
    ratios = []
    for name in ["fp32"] if a.quick else ["fp16", "bf16", "fp16"]:
        dtype = dtypes[name]
        sonify, sd = gpu_bench.both_pipelines(c, dtype, device)
        common = {"height": size, "width": size, "output_type": "np"}
        embeds = sonify.encode_audio(wave, sampling_rate=fe.sampling_rate)

        def run_sonify(n, **kw):
            gen = torch.Generator().manual_seed(0)
            return lambda: sonify(num_inference_steps=n, generator=gen, **common, **kw)

        def run_sd(n):
            gen = torch.Generator().manual_seed(0)
            return lambda: sd(prompt="a dog in a park", num_inference_steps=n, generator=gen, **common)

        sound = {"audio": wave, "sampling_rate": fe.sampling_rate}
        r = {
            "feature_extractor_cpu": median_seconds(
                lambda: fe([wave], sampling_rate=fe.sampling_rate, return_tensors="pt"), device
            ),
            "encode_audio": median_seconds(lambda: sonify.encode_audio(wave, sampling_rate=fe.sampling_rate), device),
            "sonify_1_step": median_seconds(run_sonify(1, **sound), device),
            "sd_1_step": median_seconds(run_sd(1), device),
            "sonify": median_seconds(run_sonify(steps, **sound), device),
            "sd": median_seconds(run_sd(steps), device),
            "sonify_from_audio_embeds": median_seconds(run_sonify(steps, audio_embeds=embeds), device),
        }
        r["ratio"] = r["sonify"] / r["sd"]
        ratios.append((name, r["ratio"]))
        print(name, ", ".join(f"{k} {v:.3f}" for k, v in r.items()), flush=True)
        activities = [torch.profiler.ProfilerActivity.CPU]
        if device == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        with torch.profiler.profile(activities=activities) as prof:
            run_sonify(steps, **sound)()
            gpu_bench.sync(device)
        events = prof.key_averages()
        kernel_s = sum(e.self_device_time_total for e in events) / 1e6 if device == "cuda" else float("nan")
        host_s = sum(e.self_cpu_time_total for e in events) / 1e6
        print(f"{name} profiled sonify call: GPU kernel time {kernel_s:.3f} s, host (CPU) op time {host_s:.3f} s")
        sort = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
        print(events.table(sort_by=sort, row_limit=8, max_name_column_width=60), flush=True)
    print("ratio: sonify / StableDiffusionPipeline, " + ", ".join(f"{n} {v:.2f}" for n, v in ratios))


if __name__ == "__main__":
    main()
