"""Describe-stage throughput: the builder's batched `VLMDescriber.generate` against an unbatched `generate` loop.

    python benchmarks/describe.py            # 32 images, batch sizes 1 2 4 8 16 32
    python benchmarks/describe.py --quick    # 4 images, batch sizes 1 2 4, 8 new tokens (seconds; run by a test)

The model is a tiny random `Idefics3ForConditionalGeneration` (the default VLM's family, SmolVLM) built by
`diffusers_sonify.tiny.tiny_idefics3` at SmolVLM's 64 image tokens per image, with a BPE tokenizer learned here on
the prompt and the toy world's JSON answers (so prompt and answer lengths in tokens are SmolVLM-like rather than
one token per byte), saved to a temporary folder, loaded by the builder's own loader (`load_vlm`), prompted with
the shipped `describe_v1.txt` through the chat template. Every image gets exactly `--max_new_tokens` tokens
(default: the median toy answer's length in tokens; `min_new_tokens` is set to the same value: a random model
would otherwise stop at a random end-of-utterance and the two loops would generate different amounts).

* `unbatched`: one processor call and one `model.generate` per image (what a naive describer does).
* `batched B`: `VLMDescriber(batch_size=B).generate`: one processor call per batch, left padding, KV cache
  (`generate`'s default), greedy.

Timings use one torch thread (`--threads`), the same images and model for all loops, in one process.
The ratio printed last is batched at `--goal_batch` (default 16) over unbatched, images/s.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch
from _machine import cpu_model


def toy_rows(n: int, seed: int = 0) -> tuple[list, list[str]]:
    """`n` toy-world 32x32 RGB images and the JSON answers a perfect describer gives for them (`ToySceneDescriber`)."""
    from diffusers_sonify.toyworld.corpora import image_corpus_rows
    from diffusers_sonify.toyworld.describer import ToySceneDescriber

    rows = list(_take(image_corpus_rows(n, seed), n))
    batch = {k: [r[k] for r in rows] for k in ("objects", "setting", "space")}
    return [r["image"] for r in rows], ToySceneDescriber().describe(batch)["description_raw"]


def tiny_describe_vlm(path, prompt: str, answers: list[str], hidden_size: int = 64, layers: int = 2):
    """The tiny random Idefics3 saved at `path`, with SmolVLM's 64 image tokens per image and a BPE tokenizer
    learned on the prompt and `answers`, so the prompt and answers take about as many tokens as with SmolVLM."""
    from diffusers_sonify.tiny import tiny_idefics3

    return tiny_idefics3(
        path,
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        image_size=64,
        patch_size=4,
        tokenizer_texts=[prompt, *answers],
    )


def smolvlm_shaped_vlm(path, prompt: str, answers: list[str]):
    """A random Idefics3 at HuggingFaceTB/SmolVLM-256M-Instruct's architecture (`gpu_bench.SMOLVLM_256M`: 30-layer
    576-wide text model with its 49,280-entry vocabulary, SigLIP-base vision tower at 512 px / patch 16, pixel
    shuffle 4 -> 64 image tokens), saved at `path` with the toy BPE tokenizer of [`tiny_describe_vlm`]: what
    describing costs at the default VLM's size."""
    import copy

    from gpu_bench import SMOLVLM_256M
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor

    from diffusers_sonify.tiny import tiny_idefics3

    small, _ = tiny_idefics3(None, image_size=512, patch_size=16, tokenizer_texts=[prompt, *answers])
    processor = Idefics3Processor(
        image_processor=small.image_processor,
        tokenizer=small.tokenizer,
        image_seq_len=64,
        chat_template=small.chat_template,
    )
    tokenizer = processor.tokenizer
    eos = tokenizer.convert_tokens_to_ids("<end_of_utterance>")
    config = copy.deepcopy(SMOLVLM_256M)
    config["text_config"].update(
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=eos
    )
    config.update(image_token_id=tokenizer.convert_tokens_to_ids("<image>"), pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = Idefics3ForConditionalGeneration(Idefics3Config(**config)).eval()
    model.generation_config.pad_token_id, model.generation_config.eos_token_id = tokenizer.pad_token_id, eos
    processor.save_pretrained(path)
    model.save_pretrained(path)


def describe_vlm(path, prompt: str, answers: list[str], model: str = "tiny", hidden_size: int = 64, layers: int = 2):
    """`model` "tiny" ([`tiny_describe_vlm`]) or "smolvlm-256m" ([`smolvlm_shaped_vlm`]), saved at `path`."""
    if model == "smolvlm-256m":
        return smolvlm_shaped_vlm(path, prompt, answers)
    return tiny_describe_vlm(path, prompt, answers, hidden_size, layers)


def _take(iterator, n):
    for i, item in enumerate(iterator):
        if i >= n:
            return
        yield item


def unbatched_generate(processor, model, images: list, text: str, max_new_tokens: int) -> list:
    """One processor call and one `generate` per image."""
    out = []
    for image in images:
        inputs = processor(images=[image], text=[text], return_tensors="pt")
        with torch.inference_mode():
            ids = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        out.append(processor.batch_decode(ids[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)[0])
    return out


def run(args) -> dict:
    from diffusers_sonify.sonification.config import default_prompt_file
    from diffusers_sonify.sonification.describe import VLMDescriber, image_prompt, load_vlm, read_prompt

    torch.set_num_threads(args.threads)
    images, answers = toy_rows(max(args.num_images, 256))
    images = images[: args.num_images]
    with tempfile.TemporaryDirectory() as tmp:
        prompt = read_prompt(default_prompt_file())[0]
        describe_vlm(tmp, prompt, answers, args.model, args.hidden_size, args.layers)
        load_vlm.cache_clear()
        describer = VLMDescriber(tmp, default_prompt_file())
        # both loops use the describer's model: `load_vlm`'s cache keys on how it is called, so a second
        # `load_vlm(tmp)` would be another instance without the `min_new_tokens` below (it would stop early)
        processor, model = describer.processor, describer.model
        if args.max_new_tokens is None:  # the toy answers' median length in this tokenizer
            args.max_new_tokens = int(np.median([len(processor.tokenizer(a)["input_ids"]) for a in answers]))
        describer.max_new_tokens = args.max_new_tokens
        model.generation_config.min_new_tokens = args.max_new_tokens
        text = image_prompt(processor, describer.prompt)
        prompt_tokens = len(processor(images=[images[0]], text=[text], return_tensors="pt")["input_ids"][0])

        unbatched_generate(processor, model, images[:1], text, args.max_new_tokens)  # warm-up
        t0 = time.perf_counter()
        reference = unbatched_generate(processor, model, images, text, args.max_new_tokens)
        unbatched_s = time.perf_counter() - t0
        curve = {}
        for b in args.batch_sizes:
            describer.batch_size = b
            t0 = time.perf_counter()
            answers = describer.generate(images, describer.prompt)
            curve[b] = time.perf_counter() - t0
            if len(answers) != len(reference):
                raise RuntimeError(f"batch {b}: {len(answers)} answers for {len(images)} images")
        # the unbatched loop again, after the curve: the first timed loop of a process can run slower (warm-up of
        # allocator and caches); the faster of the two is the baseline, so the ratio is not inflated by order
        t0 = time.perf_counter()
        unbatched_generate(processor, model, images, text, args.max_new_tokens)
        unbatched_again_s = time.perf_counter() - t0
        unbatched_first_s, unbatched_s = unbatched_s, min(unbatched_s, unbatched_again_s)
    n, tokens = len(images), len(images) * args.max_new_tokens
    result = {
        "cpu": cpu_model(),
        "threads": args.threads,
        "load_average": os.getloadavg(),
        "num_images": n,
        "prompt_tokens": prompt_tokens,
        "max_new_tokens": args.max_new_tokens,
        "params": sum(p.numel() for p in model.parameters()),
        "unbatched": {
            "seconds": unbatched_s,
            "images_per_s": n / unbatched_s,
            "tokens_per_s": tokens / unbatched_s,
            "seconds_before_and_after_the_curve": [unbatched_first_s, unbatched_again_s],
        },
        "batched": {
            b: {"seconds": s, "images_per_s": n / s, "tokens_per_s": tokens / s, "vs_unbatched": unbatched_s / s}
            for b, s in curve.items()
        },
    }
    return result


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="4 images, batches 1 2 4, 8 new tokens")
    p.add_argument("--num_images", type=int, default=32)
    p.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    p.add_argument("--goal_batch", type=int, default=16)
    p.add_argument(
        "--max_new_tokens", type=int, default=None, help="default: the median toy answer's length in tokens"
    )
    p.add_argument(
        "--model",
        choices=["tiny", "smolvlm-256m"],
        default="tiny",
        help="tiny random Idefics3, or a random one at SmolVLM-256M's architecture (slow on CPU: few images)",
    )
    p.add_argument("--hidden_size", type=int, default=64, help="tiny model only")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    if args.quick:
        args.num_images, args.batch_sizes, args.goal_batch, args.max_new_tokens = 4, [1, 2, 4], 4, 8
    if args.goal_batch not in args.batch_sizes:
        p.error(f"--goal_batch {args.goal_batch} must be one of --batch_sizes {args.batch_sizes}")
    r = run(args)
    print(f"cpu: {r['cpu']}; torch threads {r['threads']}; load average {np.round(r['load_average'], 2).tolist()}")
    print(
        f"{'tiny random' if args.model == 'tiny' else 'SmolVLM-256M-shaped random'} Idefics3 "
        f"({r['params'] / 1e6:.2f} M params), {r['num_images']} images, prompt "
        f"{r['prompt_tokens']} tokens (64 of them image tokens), {r['max_new_tokens']} new tokens per image"
    )
    u = r["unbatched"]
    first, again = u["seconds_before_and_after_the_curve"]
    print(
        f"unbatched generate loop: {u['images_per_s']:.2f} images/s, {u['tokens_per_s']:.1f} tokens/s "
        f"(the faster of {first:.2f} s before and {again:.2f} s after the batched runs)"
    )
    print("batch | images/s | tokens/s | vs unbatched")
    for b, row in r["batched"].items():
        print(f"{b:5d} | {row['images_per_s']:8.2f} | {row['tokens_per_s']:8.1f} | {row['vs_unbatched']:.2f}x")
    ratio = r["batched"][args.goal_batch]["vs_unbatched"]
    print(f"ratio: batched (batch {args.goal_batch}) / unbatched = {ratio:.2f}x (goal >= 4x)")
    return r


if __name__ == "__main__":
    main()
