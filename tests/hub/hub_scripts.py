"""Push and pull steps run in a fresh interpreter by the wire-level Hub tests (HF_ENDPOINT set by the caller).

python hub_scripts.py push-pipeline DIR REPO
python hub_scripts.py push-folder DIR REPO [model|dataset|space]
python hub_scripts.py generate REPO_OR_DIR OUT.npy [LORA_REPO_OR_DIR]
python hub_scripts.py pull-files REPO OUT_DIR [model|dataset|space]
python hub_scripts.py pull-dataset REPO OUT.json
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from pathlib import Path

import numpy as np

SR = 16_000


def example_sound() -> np.ndarray:
    t = np.arange(SR) / SR
    return (0.5 * np.sin(2 * np.pi * 440.0 * t) * np.minimum(1.0, t / 0.01)).astype(np.float32)


def generate(pipe, lora=None) -> np.ndarray:
    import torch

    if lora:
        pipe.load_lora_weights(lora)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(
        example_sound(),
        sampling_rate=SR,
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    )
    return out.images


def rows_digest(dataset) -> list[dict]:
    """Each row with media reduced to hashes of their decoded content."""
    from datasets import Audio, Image

    dataset = dataset.cast_column("audio", Audio(decode=False)).cast_column("image", Image(decode=False))
    out = []
    for row in dataset:
        row = dict(row)
        row["audio"] = hashlib.sha256(row["audio"]["bytes"]).hexdigest()
        row["image"] = hashlib.sha256(row["image"]["bytes"]).hexdigest()
        out.append(row)
    return json.loads(json.dumps(out, default=str))


def main(argv):
    logging.basicConfig(level=logging.INFO)
    command, *args = argv
    if command == "push-pipeline":
        from diffusers_sonify import AudioToImagePipeline

        AudioToImagePipeline.from_pretrained(args[0]).push_to_hub(args[1])
    elif command == "push-folder":
        from diffusers_sonify.hub import push_folder

        print(push_folder(args[0], args[1], repo_type=args[2] if len(args) > 2 else "model"))
    elif command == "generate":
        from diffusers_sonify import AudioToImagePipeline

        pipe = AudioToImagePipeline.from_pretrained(args[0])
        np.save(args[1], generate(pipe, args[2] if len(args) > 2 else None))
    elif command == "pull-files":
        from huggingface_hub import snapshot_download

        snapshot_download(args[0], repo_type=args[2] if len(args) > 2 else "model", local_dir=args[1])
    elif command == "pull-dataset":
        from datasets import load_dataset

        Path(args[1]).write_text(json.dumps(rows_digest(load_dataset(args[0], split="train"))))
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main(sys.argv[1:])
