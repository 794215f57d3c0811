"""Seconds per object of the scene parser's shape search (`toyworld.parser.match_shape`), measured side by side
in one run against the same search redrawing every outline (`overlaps_by_redrawing`, what `match_shape` did before
it slid one drawing per scale), on the same objects:

* renders of the toy world's scenes, and the same renders blurred and grained as a diffusion model's are;
* shapeless colour blobs, what a barely trained model draws (the quick demo's evaluation parses ~20 per image).

It also prints how often the two searches name the same shape and their largest overlap difference.

    .venv/bin/python benchmarks/parser.py           # 60 images of each kind (about a minute)
    .venv/bin/python benchmarks/parser.py --quick   # 4 of each (the test)
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from _machine import cpu_model
from scipy import ndimage

from diffusers_sonify.toyworld.corpora import image_corpus_rows
from diffusers_sonify.toyworld.parser import match_shape, overlaps_by_redrawing, shape_regions


def images(count: int, seed: int) -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    renders = [np.asarray(r["image"], dtype=np.float32) / 255 for r in image_corpus_rows(count, seed=seed)]
    degraded = [
        np.clip(ndimage.gaussian_filter(a, (0.7, 0.7, 0)) + rng.normal(0, 0.05, a.shape), 0, 1) for a in renders
    ]
    blobs = [
        np.clip(ndimage.gaussian_filter(rng.random((32, 32, 3)), (1.2, 1.2, 0)) * 2.2 - 0.6, 0, 1)
        for _ in range(count)
    ]
    return {"renders": renders, "blurred and grained renders": degraded, "colour blobs": blobs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 images of each kind")
    args = parser.parse_args()
    count = 4 if args.quick else 60
    print(f"machine: {cpu_model()}")
    results = {}
    for kind, batch in images(count, seed=5).items():
        objects = [region[1:] for image in batch for region in shape_regions(image)]
        t0 = time.perf_counter()
        slid = [match_shape(*o) for o in objects]
        t_slid = time.perf_counter() - t0
        t0 = time.perf_counter()
        redrawn = [overlaps_by_redrawing(*o) for o in objects]
        t_redrawn = time.perf_counter() - t0
        same = np.mean([shape == max(ref, key=ref.get) for (shape, _), ref in zip(slid, redrawn)])
        gap = max(abs(iou - ref[shape]) for (shape, iou), ref in zip(slid, redrawn))
        results[kind] = {
            "objects": len(objects),
            "ms_per_object_redrawn": round(1e3 * t_redrawn / len(objects), 2),
            "ms_per_object_slid": round(1e3 * t_slid / len(objects), 2),
            "speedup": round(t_redrawn / t_slid, 1),
            "same_shape": round(float(same), 4),
            "max_overlap_difference": round(float(gap), 4),
        }
        r = results[kind]
        print(
            f"{kind}: {r['objects']} objects, redrawn {r['ms_per_object_redrawn']} ms/object, slid "
            f"{r['ms_per_object_slid']} ms/object: {r['speedup']}x faster; same shape {r['same_shape']}, "
            f"largest overlap difference {r['max_overlap_difference']}"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
