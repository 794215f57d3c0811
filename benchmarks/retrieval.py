"""Exact top-k cosine retrieval at scale vs. a plain matrix multiply of the same shape, in one run.

python benchmarks/retrieval.py [--queries 100000] [--bank 100000] [--dim 384] [--k 5] [--chunk 4096]

The plain-mm rate is measured on the same chunk shapes (a full 100k x 100k float32 result would need 40 GB):
`chunk x dim @ dim x bank` repeated, with no normalisation and no top-k.
"""

import argparse
import time

import torch

from diffusers_sonify.sonification import topk_cosine


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--queries", type=int, default=100_000)
    p.add_argument("--bank", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--chunk", type=int, default=4096)
    p.add_argument("--mm_chunks", type=int, default=4, help="chunks timed for the plain-mm reference rate")
    a = p.parse_args()
    g = torch.Generator().manual_seed(0)
    q = torch.randn(a.queries, a.dim, generator=g)
    b = torch.randn(a.bank, a.dim, generator=g)
    flops = 2.0 * a.queries * a.bank * a.dim

    bt = b.T.contiguous()
    torch.mm(q[: a.chunk], bt)  # warm-up
    t0 = time.perf_counter()
    for i in range(a.mm_chunks):
        torch.mm(q[i * a.chunk : (i + 1) * a.chunk], bt)
    mm_s = time.perf_counter() - t0
    mm_rate = 2.0 * a.mm_chunks * a.chunk * a.bank * a.dim / mm_s / 1e9

    t0 = time.perf_counter()
    idx, scores = topk_cosine(q, b, a.k, chunk_size=a.chunk)
    wall = time.perf_counter() - t0
    rate = flops / wall / 1e9
    print(f"threads={torch.get_num_threads()} queries={a.queries} bank={a.bank} dim={a.dim} k={a.k} chunk={a.chunk}")
    print(f"topk_cosine: {wall:.1f} s, {rate:.1f} GFLOP/s")
    print(f"plain torch.mm ({a.mm_chunks} chunks of {a.chunk}x{a.dim} @ {a.dim}x{a.bank}): {mm_rate:.1f} GFLOP/s")
    print(f"ratio: {rate / mm_rate:.2f} of the matmul rate; projected plain-mm wall {flops / mm_rate / 1e9:.1f} s")


if __name__ == "__main__":
    main()
