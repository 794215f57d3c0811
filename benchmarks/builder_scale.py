"""How the dataset builder's cost and memory grow with the corpus: toy corpora of 10^3, 10^4, 10^5 images through
every non-VLM stage of the real builder, a projection to 10^6, and the describe stage at a tiny VLM's speed.

    python benchmarks/builder_scale.py                      # sizes 1000 10000 100000
    python benchmarks/builder_scale.py --sizes 1000 10000   # a subset
    python benchmarks/builder_scale.py --quick              # sizes 40 120, tiny describe checks (seconds; a test)

For each size, in fresh subprocesses: the image corpus is streamed to disk (`toyworld.corpora.write_image_corpus`,
never held in RAM), then `build_sonified_dataset` runs the toy-world config (`dataset_builder/configs/toyworld.yaml`:
`ToySceneDescriber` reads the scene metadata in place of the VLM; the audio corpus is the toy demo's, 40 clips per
class) with `num_proc 1`, one torch thread and `max_clip_uses 0` (no reuse cap: with the demo's cap of 20 a few
thousand images exhaust the corpus and the rest would be skipped instead of assembled). Measured per size: rows/s
of every stage (load, describe (metadata), index, retrieve, assemble, and write = the rest of the build: joins,
report, Parquet shards, card), peak RSS of the build process (`ru_maxrss`), disk per output row and the stage
cache's size. The 10^6 projection extends the slope between the two largest sizes.

Describe at a VLM's speed (`--describe_model`): a tiny random Idefics3 (`benchmarks/describe.py`'s model:
SmolVLM's family, image tokens and prompt/answer lengths), or a random one at SmolVLM-256M's architecture (the
default `vlm_model`'s size), through `VLMDescriber` at `describe_batch_size` 16, one thread; and the builder's
multi-process describe (`run_describe(rank, world_size)`, shard `s` to rank `s % world_size`, as under
`accelerate launch`) in 2 processes at one thread each against 1 process, same images, fresh caches, repeated
(`--describe_repeats`, alternating) with the median ratio reported: one run of a few seconds swings with load.

Ratios are printed last: RSS at the largest size over the smallest, assembly real-time factor per core, non-VLM
stages over describe, and the 2-process describe speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import cpu_model

HERE = Path(__file__).resolve().parent
STAGES = ("load", "describe", "index", "retrieve", "assemble", "write")


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) if Path(path).exists() else 0


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class RssSampler:
    """Peaks of the process's anonymous and file-backed resident memory (`RssAnon`, `RssFile` in
    /proc/self/status, Linux), sampled every 20 ms in a thread: `ru_maxrss` counts both, and file-backed pages
    (memory-mapped Arrow files the kernel can drop at any time) grow with what a build has read."""

    def __init__(self):
        import threading

        self.peaks = {"RssAnon": 0, "RssFile": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with open("/proc/self/status") as f:
                    for line in f:
                        key, _, value = line.partition(":")
                        if key in self.peaks:
                            self.peaks[key] = max(self.peaks[key], int(value.split()[0]) // 1024)
            except OSError:  # not Linux: no breakdown
                return
            self._stop.wait(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _child(args: list[str]) -> dict:
    """Run this script with `args` in a fresh interpreter (one torch thread); return the JSON it prints last."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------------------------------
# Child commands
# ---------------------------------------------------------------------------------------------------------------------


def child_corpora(work: Path, num_images: int, clips_per_class: int) -> dict:
    from diffusers_sonify.toyworld.corpora import make_audio_corpus, write_image_corpus

    t0 = time.perf_counter()
    write_image_corpus(work / "images", num_images, seed=0)
    audio = work.parent / f"audio-{clips_per_class}"
    if not audio.exists():
        tmp = audio.with_name(audio.name + f".tmp-{os.getpid()}")
        make_audio_corpus(clips_per_class, seed=1).save_to_disk(str(tmp))
        tmp.rename(audio)
    return {"seconds": time.perf_counter() - t0, "peak_rss_mb": _peak_rss_mb()}


def toy_config(work: Path, clips_per_class: int, **overrides):
    from diffusers_sonify.config_loading import parse_config_args
    from diffusers_sonify.programs import config_path
    from diffusers_sonify.sonification.config import BuilderConfig

    argv = [
        str(config_path("dataset_builder", "toyworld.yaml")),
        "--image_dataset",
        str(work / "images"),
        "--audio_dataset",
        str(work.parent / f"audio-{clips_per_class}"),
        "--output_dir",
        str(work / "out"),
        "--num_proc",
        "1",
        "--max_clip_uses",
        "0",
    ]
    for key, value in overrides.items():
        argv += [f"--{key}", str(value)]
    return parse_config_args((BuilderConfig,), argv)[0]


def child_build(work: Path, clips_per_class: int) -> dict:
    import torch

    from diffusers_sonify.sonification.builder import build_sonified_dataset

    torch.set_num_threads(1)
    config = toy_config(work, clips_per_class)
    rss0 = _peak_rss_mb()
    t0 = time.perf_counter()
    with RssSampler() as rss:
        report = build_sonified_dataset(config)
    wall = time.perf_counter() - t0
    seconds = dict(report.stage_seconds)
    seconds["write"] = max(0.0, wall - sum(seconds.values()))
    return {
        "num_images": report.num_images,
        "num_rows": report.num_rows,
        "num_skipped": report.num_skipped,
        "duration_s": config.duration_s,
        "seconds": seconds,
        "wall": wall,
        "rss_before_build_mb": rss0,
        "peak_rss_mb": _peak_rss_mb(),
        "peak_rss_anon_mb": rss.peaks["RssAnon"],
        "peak_rss_file_mb": rss.peaks["RssFile"],
        "children_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0,
    }


def _describe_vlm(folder: Path, model: str = "tiny", num_answers: int = 256) -> None:
    sys.path.insert(0, str(HERE))
    from describe import describe_vlm, toy_rows

    from diffusers_sonify.sonification.config import default_prompt_file
    from diffusers_sonify.sonification.describe import read_prompt

    _, answers = toy_rows(num_answers)
    describe_vlm(folder, read_prompt(default_prompt_file())[0], answers, model)


def _vlm_overrides(vlm: Path, max_new_tokens: int, batch_size: int, shard_size: int) -> dict:
    return {
        "describer": "diffusers_sonify.sonification.describe:VLMDescriber",
        "vlm_model": str(vlm),
        "max_new_tokens": max_new_tokens,
        "describe_batch_size": batch_size,
        "shard_size": shard_size,
        "torch_dtype": "float32",
    }


def _answer_tokens(vlm: Path) -> int:
    import numpy as np
    from transformers import AutoTokenizer

    sys.path.insert(0, str(HERE))
    from describe import toy_rows

    tokenizer = AutoTokenizer.from_pretrained(str(vlm))
    _, answers = toy_rows(256)
    return int(np.median([len(tokenizer(a)["input_ids"]) for a in answers]))


def child_describe(work: Path, clips_per_class: int, vlm: Path, rank: int, world_size: int, opts: dict) -> dict:
    """One rank of the builder's describe stage with the tiny VLM; times `run_describe` after the model loads."""
    import torch

    from diffusers_sonify.sonification.builder import _cached_describer, _config_json, prepare_images, run_describe

    torch.set_num_threads(1)
    config = toy_config(work, clips_per_class, **opts)
    images = prepare_images(config)
    describer = _cached_describer(_config_json(config), "cpu")
    if os.environ.get("SCALE_FIXED_LENGTH") == "1":  # a random VLM: every answer the same length
        describer.model.generation_config.min_new_tokens = config.max_new_tokens
    barrier = Path(os.environ["SCALE_BARRIER"])  # ranks start together, once every one has loaded the model
    (barrier / f"ready-{rank}").touch()
    while len(list(barrier.glob("ready-*"))) < world_size:
        time.sleep(0.005)
    t0 = time.perf_counter()
    run_describe(config, images, rank=rank, world_size=world_size)
    return {"seconds": time.perf_counter() - t0, "rank": rank, "images": len(images)}


# ---------------------------------------------------------------------------------------------------------------------
# Parent
# ---------------------------------------------------------------------------------------------------------------------


def measure_size(root: Path, n: int, clips_per_class: int) -> dict:
    work = root / f"n{n}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    gen = _child(["--_corpora", str(work), str(n), str(clips_per_class)])
    result = _child(["--_build", str(work), str(clips_per_class)])
    result["corpus_seconds"] = gen["seconds"]
    result["output_bytes"] = _du(work / "out")
    result["cache_bytes"] = _du(work / "out.cache")
    result["image_corpus_bytes"] = _du(work / "images")
    result["load_average"] = os.getloadavg()
    shutil.rmtree(work / "images", ignore_errors=True)
    shutil.rmtree(work / "out.cache", ignore_errors=True)
    shutil.rmtree(work / "out", ignore_errors=True)
    return result


def measure_describe(
    root: Path, n: int, clips_per_class: int, batch_size: int, shard_size: int, repeats: int = 3, model: str = "tiny"
) -> dict:
    """Describe `n` images with the tiny VLM: 1 process vs 2 processes (ranks 0, 1), one thread each, `repeats`
    times alternating; the speed-up is the median of the repeats' ratios (single runs swing with other load).

    `model`: "tiny" or "smolvlm-256m" (random weights, answers forced to the toy answers' median length), or the
    folder of a saved VLM such as the trained toy VLM (`python -m diffusers_sonify.toyworld.vlm`), which answers
    until its own end of utterance (at most 160 new tokens)."""
    import statistics

    work = root / "describe"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    trained = Path(model).is_dir()
    vlm = Path(model) if trained else work / "vlm"
    if not trained:
        _describe_vlm(vlm, model)
    _child(["--_corpora", str(work), str(n), str(clips_per_class)])
    opts = _vlm_overrides(vlm, 160 if trained else _answer_tokens(vlm), batch_size, shard_size)
    out = {"num_images": n, "max_new_tokens": opts["max_new_tokens"], "batch_size": batch_size, "model": model}
    out["shard_size"] = shard_size
    runs = {1: [], 2: []}
    for _ in range(repeats):
        for world in (1, 2):
            shutil.rmtree(work / "out.cache", ignore_errors=True)
            barrier = work / f"barrier-{world}"
            shutil.rmtree(barrier, ignore_errors=True)
            barrier.mkdir()
            env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
            env["SCALE_BARRIER"], env["SCALE_FIXED_LENGTH"] = str(barrier), "0" if trained else "1"
            args = [str(work), str(clips_per_class), str(vlm), json.dumps(opts), str(world)]
            procs = [
                subprocess.Popen(
                    [sys.executable, __file__, "--_describe", *args, str(rank)],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env=env,
                )
                for rank in range(world)
            ]
            results = []
            for p in procs:
                stdout, stderr = p.communicate()
                if p.returncode != 0:
                    raise RuntimeError(f"describe rank failed:\n{stderr[-4000:]}")
                results.append(json.loads(stdout.strip().splitlines()[-1]))
            runs[world].append(max(r["seconds"] for r in results))
    out["procs_1_seconds"], out["procs_2_seconds"] = runs[1], runs[2]
    out["images_per_s_1proc"] = n / statistics.median(runs[1])
    out["speedup_2proc"] = statistics.median(a / b for a, b in zip(runs[1], runs[2]))
    out["load_average"] = os.getloadavg()
    shutil.rmtree(work, ignore_errors=True)
    return out


def project(results: dict[int, dict], target: int = 1_000_000) -> dict:
    """Linear extension from the two largest sizes to `target` images."""
    sizes = sorted(results)
    if len(sizes) < 2:
        return {}
    a, b = sizes[-2], sizes[-1]
    ra, rb = results[a], results[b]

    def ext(va: float, vb: float) -> float:
        return vb + (vb - va) / (b - a) * (target - b)

    seconds = {s: ext(ra["seconds"][s], rb["seconds"][s]) for s in STAGES}
    return {
        "images": target,
        "seconds": seconds,
        "peak_rss_mb": ext(ra["peak_rss_mb"], rb["peak_rss_mb"]),
        "output_gb": ext(ra["output_bytes"], rb["output_bytes"]) / 1e9,
        "cache_gb": ext(ra["cache_bytes"], rb["cache_bytes"]) / 1e9,
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    p.add_argument("--clips_per_class", type=int, default=40, help="audio corpus size (the toy demo's: 40)")
    p.add_argument("--describe_images", type=int, default=512, help="images for the describe timings")
    p.add_argument("--describe_shard_size", type=int, default=32, help="describe shard (rank s % 2 gets shard s)")
    p.add_argument("--describe_repeats", type=int, default=3, help="1- and 2-process runs, alternating")
    p.add_argument(
        "--describe_model",
        default="tiny",
        help="the describe stage's VLM: `tiny` (random Idefics3), `smolvlm-256m` (random at SmolVLM-256M's "
        "architecture, slow) or a saved VLM's folder, e.g. the trained toy VLM",
    )
    p.add_argument("--describe_batch_size", type=int, default=16)
    p.add_argument("--skip_describe", action="store_true")
    p.add_argument("--work_dir", default=None, help="default: a temporary folder")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--quick", action="store_true", help="sizes 40 120, 8 describe images, one repeat")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.clips_per_class, args.describe_images, args.describe_batch_size = [40, 120], 4, 8, 4
        args.describe_shard_size, args.describe_repeats = 2, 1
    root = Path(args.work_dir or tempfile.mkdtemp(prefix="builder_scale-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"cpu: {cpu_model()}; load average {[round(x, 2) for x in os.getloadavg()]}; work dir {root}", flush=True)

    results: dict[int, dict] = {}
    for n in sorted(args.sizes):
        r = results[n] = measure_size(root, n, args.clips_per_class)
        rates = ", ".join(f"{s} {n / max(r['seconds'][s], 1e-9):.0f}" for s in STAGES)
        print(
            f"n={n}: wall {r['wall']:.1f} s; rows/s: {rates}; peak RSS {r['peak_rss_mb']:.0f} MB (anonymous "
            f"{r['peak_rss_anon_mb']} MB, file-backed {r['peak_rss_file_mb']} MB); "
            f"disk {r['output_bytes'] / max(r['num_rows'], 1) / 1024:.1f} KiB/row; cache "
            f"{r['cache_bytes'] / 1e6:.1f} MB; rows {r['num_rows']} (skipped {r['num_skipped']}); "
            f"load {[round(x, 2) for x in r['load_average']]}",
            flush=True,
        )
    proj = project(results)
    if proj:
        print(
            f"projection to 10^6 images: {sum(proj['seconds'].values()) / 3600:.1f} h of non-VLM stages on one core "
            f"({', '.join(f'{s} {v / 3600:.2f} h' for s, v in proj['seconds'].items())}); peak RSS "
            f"{proj['peak_rss_mb']:.0f} MB; output {proj['output_gb']:.1f} GB; cache {proj['cache_gb']:.1f} GB"
        )
    describe = None
    label = {"tiny": "tiny random", "smolvlm-256m": "SmolVLM-256M-shaped random"}.get(
        args.describe_model, f"saved ({args.describe_model})"
    )
    if label.startswith("saved") and not Path(args.describe_model).is_dir():
        p.error(f"--describe_model {args.describe_model!r}: not `tiny`, `smolvlm-256m` or a saved VLM's folder")
    if not args.skip_describe:
        describe = measure_describe(
            root,
            args.describe_images,
            args.clips_per_class,
            args.describe_batch_size,
            args.describe_shard_size,
            args.describe_repeats,
            args.describe_model,
        )
        print(
            f"describe ({label} Idefics3, {describe['max_new_tokens']} new tokens at most, batch "
            f"{describe['batch_size']}, 1 thread): {describe['images_per_s_1proc']:.2f} images/s in 1 process; "
            f"1 process {[round(t, 2) for t in describe['procs_1_seconds']]} s, 2 processes "
            f"{[round(t, 2) for t in describe['procs_2_seconds']]} s (alternating runs); "
            f"load {[round(x, 2) for x in describe['load_average']]}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"sizes": results, "projection": proj, "describe": describe}, indent=1))
    small, large = min(results), max(results)
    rl = results[large]
    print(f"ratio: peak RSS at {large} / at {small} images = {rl['peak_rss_mb'] / results[small]['peak_rss_mb']:.2f}")
    rtf = rl["num_rows"] * rl["duration_s"] / max(rl["seconds"]["assemble"], 1e-9)
    print(f"ratio: assembly real-time factor (one thread) = {rtf:.0f}x")
    if describe is not None:
        non_vlm = sum(v for s, v in rl["seconds"].items() if s != "describe") / large
        vlm = 1.0 / describe["images_per_s_1proc"]
        print(f"ratio: non-VLM stages / describe at the {label} VLM's speed = {non_vlm / vlm:.3f} (per image)")
        print(f"ratio: describe 2 processes / 1 process = {describe['speedup_2proc']:.2f}x")
    if not args.work_dir:
        shutil.rmtree(root, ignore_errors=True)
    return {"sizes": results, "projection": proj, "describe": describe}


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1].startswith("--_"):
        cmd, rest = sys.argv[1], sys.argv[2:]
        if cmd == "--_corpora":
            out = child_corpora(Path(rest[0]), int(rest[1]), int(rest[2]))
        elif cmd == "--_build":
            out = child_build(Path(rest[0]), int(rest[1]))
        elif cmd == "--_describe":
            work, cpc, vlm, opts, world, rank = rest
            out = child_describe(Path(work), int(cpc), Path(vlm), int(rank), int(world), json.loads(opts))
        else:
            raise SystemExit(f"unknown internal command {cmd}")
        print(json.dumps(out))
    else:
        main()
