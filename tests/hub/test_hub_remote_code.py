"""The self-contained export: plain `DiffusionPipeline.from_pretrained(..., trust_remote_code=True)` in an
fresh venv that cannot import diffusers_sonify, from a folder and from the (loopback) Hub."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from hub_helpers import run_script
from test_hub_wire import reference_images

from diffusers_sonify.hub import export_remote_code

CLIENT = str(Path(__file__).resolve().parent / "remote_code_client.py")


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory) -> str:
    """A fresh venv without diffusers_sonify: its one .pth line puts the shared site-packages on sys.path, which adds
    the installed libraries but processes none of that folder's own .pth files (the editable install of the package).
    """
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "shared_site_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return str(python)


def run_without_package(python, env, *args) -> subprocess.CompletedProcess:
    env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    proc = subprocess.run([python, CLIENT, *map(str, args)], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def test_export_rejects_what_it_cannot_export(tmp_path, tiny_pipe_dir):
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        export_remote_code(tmp_path, tmp_path / "out")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("")
    with pytest.raises(FileExistsError, match="not empty"):
        export_remote_code(tiny_pipe_dir, tmp_path / "out")


@pytest.mark.slow
def test_remote_code_loads_without_the_package(hub, hub_env, bare_python, tiny_pipe_dir, tmp_path):
    exported = export_remote_code(tiny_pipe_dir, tmp_path / "export")
    assert {"pipeline.py", "handler.py", "requirements.txt"} <= set(os.listdir(exported))
    reference = reference_images(tiny_pipe_dir)

    local = run_without_package(bare_python, hub_env, exported, tmp_path / "local.npy")
    assert "CLASS diffusers_modules" in local.stdout and "Expected types" not in local.stderr
    np.testing.assert_allclose(np.load(tmp_path / "local.npy"), reference, atol=1e-4)

    run_script(hub_env, "push-folder", exported, "org/sonify-remote-code")
    run_without_package(bare_python, hub_env, "org/sonify-remote-code", tmp_path / "hub.npy")
    np.testing.assert_allclose(np.load(tmp_path / "hub.npy"), reference, atol=1e-4)

    refused = run_without_package(bare_python, hub_env, "org/sonify-remote-code", tmp_path / "x.npy", "--no-trust")
    assert "LOAD ERROR" in refused.stdout and "trust_remote_code=True" in refused.stdout


def test_export_adds_the_remote_code_usage_to_the_model_card(tiny_pipe_dir, tmp_path):
    import shutil

    from huggingface_hub import ModelCard, ModelCardData

    from diffusers_sonify.hub import render_model_card

    source = Path(shutil.copytree(tiny_pipe_dir, tmp_path / "trained"))
    card = render_model_card(ModelCardData(library_name="diffusers"), repo_id="org/x", audio_encoder="clap", steps=1)
    assert "trust_remote_code" not in card.text  # a plain training output needs the package
    card.save(source / "README.md")
    exported = export_remote_code(source, tmp_path / "export", repo_id="org/x")
    text = ModelCard.load(exported / "README.md").text
    assert 'AudioToImagePipeline.from_pretrained("org/x")' in text
    assert 'DiffusionPipeline.from_pretrained("org/x", trust_remote_code=True)' in text
    assert text.index("trust_remote_code=True` means") < text.index("## Inference")
