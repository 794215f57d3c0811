"""`benchmarks/describe.py --quick`: the describe-stage throughput benchmark runs and reports its ratio."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_describe_benchmark_quick():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "describe.py"), "--quick"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert "unbatched generate loop:" in out.stdout
    assert [line.split("|")[0].strip() for line in lines if line.strip()[:1].isdigit()] == ["1", "2", "4"]
    assert lines[-1].startswith("ratio: batched (batch 4) / unbatched = ")


def test_tiny_idefics3_describes_through_the_builder_loader(tmp_path):
    """The tiny Idefics3 saves, reloads through `load_vlm` (left padding) and answers every image of a batch."""
    from PIL import Image

    from diffusers_sonify.sonification.config import default_prompt_file
    from diffusers_sonify.sonification.describe import VLMDescriber, load_vlm
    from diffusers_sonify.tiny import tiny_idefics3

    tiny_idefics3(tmp_path, tokenizer_texts=["a bell rings", '{"sound_sources": []}'], vocab_size=300)
    load_vlm.cache_clear()
    describer = VLMDescriber(str(tmp_path), default_prompt_file(), max_new_tokens=4, batch_size=3)
    assert type(describer.model).__name__ == "Idefics3ForConditionalGeneration"
    assert describer.processor.tokenizer.padding_side == "left"
    images = [Image.new("RGB", (32, 24 + 4 * i), (40 * i, 0, 0)) for i in range(4)]
    out = describer.describe({"image": images})
    assert len(out["skip_reason"]) == 4
    assert all(reason is not None for reason in out["skip_reason"])  # random text is no JSON: rows skipped
    load_vlm.cache_clear()
