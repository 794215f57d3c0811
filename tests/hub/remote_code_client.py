"""Load an exported diffusers-sonify repo with plain diffusers and generate, in a venv WITHOUT the package.

    <bare venv>/bin/python remote_code_client.py REPO_OR_DIR OUT.npy [--no-trust]

It refuses to run where diffusers_sonify is importable. With --no-trust it prints the loading error instead.
"""

import sys

import numpy as np
import torch
from diffusers import DiffusionPipeline

SR = 16_000


def main(repo, out, *flags):
    try:
        import diffusers_sonify  # noqa: F401

        raise SystemExit("diffusers_sonify is importable here; this client must run without it")
    except ModuleNotFoundError:
        pass
    if "--no-trust" in flags:
        try:
            DiffusionPipeline.from_pretrained(repo)
        except Exception as e:  # report whatever diffusers raises
            print(f"LOAD ERROR: {type(e).__name__}: {e}")
            return
        raise SystemExit("loaded remote code without trust_remote_code")
    pipe = DiffusionPipeline.from_pretrained(repo, trust_remote_code=True)
    pipe.set_progress_bar_config(disable=True)
    t = np.arange(SR) / SR
    sound = (0.5 * np.sin(2 * np.pi * 440.0 * t) * np.minimum(1.0, t / 0.01)).astype(np.float32)
    images = pipe(
        sound, sampling_rate=SR, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np"
    ).images
    np.save(out, images)
    print("CLASS", type(pipe).__module__, type(pipe).__name__)


if __name__ == "__main__":
    main(*sys.argv[1:])
