"""Seconds per training step of the toy VLM (`diffusers_sonify.toyworld.vlm`), the demo chain's VLM stage, measured
side by side in one run:

* the loss: the language-model head over every position (the model's own causal-LM loss) against logits kept only
  where an answer token is predicted (`answer_loss`, what training uses), interleaved step by step, one thread;
* the program (`python -m diffusers_sonify.toyworld.vlm` as the demo launches it, `demo.vlm_command`): one process
  of one thread, one process of two threads, two data-parallel processes of one thread each
  (`accelerate launch --multi_gpu`, gloo), each for the same steps; its own `train_seconds`, so start-up is not
  counted.

    .venv/bin/python benchmarks/toy_vlm.py           # the demo's toy VLM, 200 steps per run (about 4 minutes)
    .venv/bin/python benchmarks/toy_vlm.py --quick   # seconds: a 1-layer VLM, 5 steps (the test)

Run it on a quiet machine: the program runs use both cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import tempfile
import time

import numpy as np
import torch
from _machine import cpu_model

from diffusers_sonify.demo import DemoSize, vlm_command
from diffusers_sonify.sonification.config import default_prompt_file
from diffusers_sonify.sonification.describe import read_prompt
from diffusers_sonify.toyworld.corpora import image_corpus_rows
from diffusers_sonify.toyworld.vlm import ToyVLMConfig, answer_loss, answer_tokens, build_toy_vlm, vlm_answer

TINY = {"hidden_size": 32, "num_hidden_layers": 1}


def time_losses(config: ToyVLMConfig, steps: int) -> dict[str, float]:
    """Median seconds of forward + backward + AdamW with each loss, interleaved, one torch thread."""
    torch.set_num_threads(1)
    prompt = read_prompt(default_prompt_file())[0]
    rows = list(image_corpus_rows(200, seed=config.image_seed))
    answers = [vlm_answer(r["objects"], r["setting"], r["space"]) for r in rows]
    processor, model = build_toy_vlm(config, prompt, answers)
    prefix, targets = answer_tokens(processor, prompt, rows[0]["image"], answers)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    rng = np.random.default_rng(0)

    def every_position(batch_targets, images):
        return answer_loss(model, processor, prefix, batch_targets, images, all_logits=True)

    def kept(batch_targets, images):
        return answer_loss(model, processor, prefix, batch_targets, images)

    seconds = {"every position": [], "kept logits": []}
    model.train()
    for _ in range(steps + 2):  # two warm-up rounds
        batch = rng.choice(len(rows), config.batch_size, replace=False)
        for name, loss_fn in (("every position", every_position), ("kept logits", kept)):
            start = time.perf_counter()
            loss = loss_fn([targets[i] for i in batch], [rows[i]["image"] for i in batch])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            seconds[name].append(time.perf_counter() - start)
    return {name: float(np.median(times[2:])) for name, times in seconds.items()}


def time_program(steps: int, processes: int, threads: int, extra: list[str], work: str) -> float:
    """The program's own `train_seconds` per step for `steps` steps."""
    out = os.path.join(work, f"p{processes}t{threads}")
    size = dataclasses.replace(DemoSize(), vlm_steps=steps)
    cmd = vlm_command(out, size, seed=0, processes=processes) + extra
    cmd[cmd.index("--threads") + 1] = str(threads)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": str(threads)}
    if processes == 1:  # accelerate launch sets OMP_NUM_THREADS from --num_cpu_threads_per_process
        cmd[cmd.index("--num_cpu_threads_per_process") + 1] = str(threads)
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    with open(os.path.join(out, "toy_vlm_training.json")) as f:
        return json.load(f)["train_seconds"] / steps


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a 1-layer VLM, 5 steps: seconds (the test)")
    p.add_argument("--steps", type=int, default=200)
    args = p.parse_args(argv)
    steps = 5 if args.quick else args.steps
    config = ToyVLMConfig(**TINY) if args.quick else ToyVLMConfig()
    extra = [arg for key, value in TINY.items() for arg in (f"--{key}", str(value))] if args.quick else []
    print(f"toy VLM training step, {cpu_model()}, {os.cpu_count()} cores, batch {config.batch_size}, {steps} steps")
    losses = time_losses(config, steps)
    for name, seconds in losses.items():
        print(f"  loss over {name:15s} {seconds:.4f} s/step (1 thread)")
    ratio = losses["every position"] / losses["kept logits"]
    print(f"  kept logits: {ratio:.2f}x faster")
    results = {"losses": losses, "kept_logits_speedup": ratio, "program": {}}
    with tempfile.TemporaryDirectory() as work:
        for processes, threads in ((1, 1), (1, 2), (2, 1)):
            seconds = time_program(steps, processes, threads, extra, work)
            results["program"][f"{processes}x{threads}"] = seconds
            print(f"  program, {processes} process(es) x {threads} thread(s): {seconds:.4f} s/step")
    program = results["program"]
    results["data_parallel_speedup"] = program["1x1"] / program["2x1"]
    results["two_threads_speedup"] = program["1x1"] / program["1x2"]
    print(f"  2 processes x 1 thread: {results['data_parallel_speedup']:.2f}x one process of one thread")
    print(f"  1 process x 2 threads: {results['two_threads_speedup']:.2f}x one process of one thread")
    return results


if __name__ == "__main__":
    main()
