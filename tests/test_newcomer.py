"""A newcomer's first hour, scripted: the README's demo, quickstart, offline build and offline training, as written.

Each command is read out of README.md and run in an empty folder on files this test makes, offline, on the CPU;
only the demo runs in its quick size and the training for two steps instead of 300. If the README drifts from what
works, this test fails.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import soundfile as sf
from sounds import SR, chirp, tone

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    body = README.split(title, 1)[1]
    return re.split(r"\n#{2,3} ", body, maxsplit=1)[0]


def code_blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


def shell_commands(block: str) -> list[str]:
    """Commands of a bash block: continuation lines joined, comments dropped."""
    joined = block.replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def run(command: str, cwd: Path, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    done = subprocess.run(command, shell=True, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"`{command}` failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done


def make_own_files(folder: Path) -> None:
    """What the README's layout shows: images with a metadata.csv of descriptions, sounds in label folders."""
    images = folder / "images"
    images.mkdir()
    scenes = {
        "beach.jpg": ((40, 120, 200), [("waves", "waves crashing on the shore", 0.9)], "outdoor", "open"),
        "kitchen.jpg": ((180, 150, 120), [("kettle", "a kettle whistling", 0.8)], "indoor", "small"),
    }
    with open(images / "metadata.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file_name", "description"])
        for name, (colour, sources, setting, space) in scenes.items():
            PIL.Image.new("RGB", (64, 48), colour).save(images / name)
            description = {
                "sound_sources": [{"name": n, "sound": s, "prominence": p, "distance": "near"} for n, s, p in sources],
                "scene": {"setting": setting, "space": space},
            }
            writer.writerow([name, json.dumps(description)])
    rng = np.random.default_rng(0)
    for label, name, wave, fmt in [
        ("waves", "surf.oga", (0.2 * rng.standard_normal(2 * SR)).astype(np.float32), "OGG"),
        ("kettle", "whistle.wav", tone(2400.0), "WAV"),
        ("speech", "hello.flac", chirp(200.0, 800.0), "FLAC"),
    ]:
        (folder / "sounds" / label).mkdir(parents=True)
        sf.write(folder / "sounds" / label / name, wave, SR, format=fmt)


@pytest.mark.slow
def test_readme_walk_demo_quickstart_build_and_train(tmp_path):
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # `python`, `accelerate`
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    }

    # the README's commands run from the repository's root: the folders they name are here as they are there
    for folder in ("dataset_builder", "train_scripts"):
        (tmp_path / folder).symlink_to(ROOT / folder, target_is_directory=True)

    # 1. `make demo`, in its quick size: a loadable pipeline and the quickstart's example sounds
    run(f"{sys.executable} -m diffusers_sonify.demo --quick --output_dir outputs/demo", tmp_path, env)
    assert (tmp_path / "outputs/demo/model/model_index.json").is_file()
    assert {"bell.wav", "bird.wav", "rain.wav"} <= {p.name for p in (tmp_path / "outputs/demo/examples").iterdir()}

    # 2. the quickstart, as written, against what the demo left
    quickstart, editing = code_blocks(section("## Quickstart"), "python")
    (tmp_path / "quickstart.py").write_text(quickstart)
    run("python quickstart.py", tmp_path, env)
    assert PIL.Image.open(tmp_path / "heard.png").size == (32, 32)
    # the editing lines, on the picture the quickstart made: inpainting keeps what the mask keeps
    (tmp_path / "editing.py").write_text(editing)
    run("python editing.py", tmp_path, env)
    heard, indoors = (np.asarray(PIL.Image.open(tmp_path / n), dtype=np.int16) for n in ("heard.png", "indoors.png"))
    assert PIL.Image.open(tmp_path / "edited.png").size == (32, 32)
    from diffusers_sonify.toyworld.editing import repaint_mask

    kept = np.asarray(repaint_mask(PIL.Image.open(tmp_path / "heard.png"))) == 0
    assert np.abs(heard - indoors)[kept].max() <= 2  # the VAE is the identity in the toy model: kept pixels return

    # 3. the offline build on the user's own files, as written
    make_own_files(tmp_path)
    block = code_blocks(section("### Offline, on your own images and sounds"), "bash")[0]
    build, load = shell_commands(block)
    run(build, tmp_path, env)
    loaded = run(load, tmp_path, env).stdout
    assert re.search(r"num_rows: 2\b", loaded), loaded
    report = json.loads((tmp_path / "outputs/my_sonified/build_report.json").read_text())
    assert report["num_rows"] == 2 and not report["skipped"]

    # 4. the offline training recipe, as written, on what the demo built (2 steps instead of 300)
    train = shell_commands(code_blocks(section("## Train"), "bash")[0])[0]
    assert "--max_train_steps 300" in train
    run(train.replace("--max_train_steps 300", "--max_train_steps 2"), tmp_path, env)
    check = (
        "from diffusers_sonify import AudioToImagePipeline; "
        "pipe = AudioToImagePipeline.from_pretrained('toy-model'); "
        "print(pipe('outputs/demo/examples/bell.wav', num_inference_steps=2).images[0].size)"
    )
    assert run(f'python -c "{check}"', tmp_path, env).stdout.strip().endswith("(32, 32)")
