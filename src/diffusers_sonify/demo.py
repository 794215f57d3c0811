"""`make demo` (interim): save a tiny pipeline, reload it, and render an image grid from sounds made here.

The weights are RANDOM: this shows the whole inference path (save -> from_pretrained -> encode sound -> denoise ->
image, mixing, interpolation), not learning. The toy-world demo replaces it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import PIL.Image
import torch

from . import AudioToImagePipeline
from .tiny import TINY_SAMPLING_RATE, tiny_pipeline


def example_sounds(sr: int = TINY_SAMPLING_RATE, seconds: float = 1.5) -> dict[str, np.ndarray]:
    """A few synthetic sounds: tones, a sweep, noise bursts."""
    t = np.arange(int(sr * seconds)) / sr
    rng = np.random.default_rng(0)
    return {
        "low hum": 0.5 * np.sin(2 * np.pi * 110 * t),
        "high beep": 0.5 * np.sin(2 * np.pi * 1760 * t) * (np.sin(2 * np.pi * 4 * t) > 0),
        "sweep": 0.4 * np.sin(2 * np.pi * (200 * t + 900 * t**2)),
        "noise bursts": 0.3 * rng.standard_normal(len(t)) * (np.sin(2 * np.pi * 3 * t) > 0.5),
    }


def image_grid(rows: list[list[PIL.Image.Image]], scale: int = 4) -> PIL.Image.Image:
    h, w = rows[0][0].height, rows[0][0].width
    grid = PIL.Image.new("RGB", (w * max(len(r) for r in rows), h * len(rows)), "white")
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            grid.paste(image, (j * w, i * h))
    return grid.resize((grid.width * scale, grid.height * scale), PIL.Image.NEAREST)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output_dir", default="outputs/demo")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args(argv)
    start = time.time()
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)

    tiny_pipeline(seed=0).save_pretrained(out / "pipeline")
    pipe = AudioToImagePipeline.from_pretrained(out / "pipeline")
    sounds = {k: v.astype(np.float32) for k, v in example_sounds().items()}
    names = list(sounds)
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    single = pipe(list(sounds.values()), sampling_rate=TINY_SAMPLING_RATE, num_inference_steps=args.steps,
                  generator=[gen() for _ in names]).images  # fmt: skip
    mixed = pipe([sounds[names[0]], sounds[names[1]]], sampling_rate=TINY_SAMPLING_RATE, audio_weights=[0.5, 0.5],
                 num_inference_steps=args.steps, generator=gen()).images  # fmt: skip
    a = pipe.encode_audio(sounds[names[0]], sampling_rate=TINY_SAMPLING_RATE)
    b = pipe.encode_audio(sounds[names[2]], sampling_rate=TINY_SAMPLING_RATE)
    sweep = [
        pipe(audio_embeds=AudioToImagePipeline.interpolate_audio_embeds(a, b, w), num_inference_steps=args.steps,
             generator=gen()).images[0]
        for w in np.linspace(0, 1, 4)
    ]  # fmt: skip
    image_grid([single, mixed + sweep[:3]]).save(out / "grid.png")
    metrics = {"num_eval_images": len(single) + len(mixed) + len(sweep), "wall_seconds": round(time.time() - start, 1),
               "trained": False}  # fmt: skip
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out / "report.md").write_text(
        "# diffusers-sonify demo (untrained weights)\n\n"
        "The pipeline below has RANDOM weights: it demonstrates the inference path end to end "
        "(save, `from_pretrained`, audio encoding, denoising, mixing, interpolation), not learning.\n\n"
        f"Row 1: {', '.join(names)}. Row 2: 50/50 mix of the first two; then a sweep from "
        f"'{names[0]}' towards '{names[2]}'.\n\n![grid](grid.png)\n\n```json\n{json.dumps(metrics, indent=2)}\n```\n"
    )
    print(f"Wrote {out / 'report.md'} and {out / 'grid.png'} in {metrics['wall_seconds']} s (untrained weights).")
    return metrics


if __name__ == "__main__":
    main()
