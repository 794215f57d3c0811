"""The Gradio app (spaces/app.py) in a real browser: Debian's headless Chromium driven by Playwright's Python API."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hub_scripts import SR, example_sound

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("SONIFY_TEST_ARTIFACTS", REPO / "outputs" / "test-artifacts"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, proc: subprocess.Popen, timeout: float = 180.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"app exited: {proc.stderr.read()[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer in {timeout} s")


@pytest.mark.slow
def test_app_in_headless_chromium_shows_the_pipelines_image(tiny_pipe, tiny_pipe_dir, tmp_path):
    import gradio

    assert int(gradio.__version__.split(".")[0]) >= 6, "install the `app` extra (gradio 6)"
    from PIL import Image
    from playwright.sync_api import sync_playwright

    assert os.path.exists(CHROMIUM), "Debian's chromium package is needed (.ci/run installs it)"
    wav = tmp_path / "bell.wav"
    sf.write(wav, example_sound(), SR, subtype="PCM_16")  # 16-bit PCM: Gradio hands the app the exact samples
    port = free_port()
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    app = subprocess.Popen(
        [sys.executable, str(REPO / "spaces" / "app.py"), "--model", tiny_pipe_dir, "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_for(url, app)
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM,
                args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
            )
            page = browser.new_page()
            page.goto(url)
            page.locator("#sound input[type=file]").set_input_files(str(wav))
            page.locator("#sound audio").first.wait_for(state="attached", timeout=60_000)  # the upload was accepted
            page.locator("#generate").click()
            result = page.locator("#result img")
            result.wait_for(timeout=180_000)
            src = result.get_attribute("src")
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "space_app.png"), full_page=True)
            data = page.request.get(src).body() if not src.startswith("data:") else None
            browser.close()
    finally:
        app.terminate()
        app.wait(timeout=30)
    shown = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.int16)
    import torch

    samples, sr = sf.read(wav, dtype="int16")
    expected = tiny_pipe(
        samples.astype(np.float32) / 32768.0,
        sampling_rate=sr,
        guidance_scale=4.0,
        num_inference_steps=25,
        generator=torch.Generator().manual_seed(0),
    ).images[0]
    assert shown.shape == np.asarray(expected).shape
    assert np.abs(shown - np.asarray(expected, np.int16)).max() <= 1  # PNG of the same uint8 image
    assert (ARTIFACTS / "space_app.png").stat().st_size > 0


@pytest.mark.slow
def test_space_folder_push_pull_round_trip(hub, hub_env, tmp_path):
    from hub_helpers import run_script
    from huggingface_hub import SpaceCard
    from test_hub_wire import local_files

    from diffusers_sonify.hub import prepare_space

    folder = prepare_space(REPO / "spaces", tmp_path / "space")
    assert (folder / "diffusers_sonify" / "model_cards" / "model_card.md.j2").is_file()
    assert SpaceCard.load(folder / "README.md").data.sdk == "gradio"
    run_script(hub_env, "push-folder", folder, "org/sonify-space", "space")
    run_script(hub_env, "pull-files", "org/sonify-space", tmp_path / "pulled", "space")
    pulled = local_files(tmp_path / "pulled")
    assert {k: v for k, v in pulled.items() if k != ".gitattributes"} == local_files(folder)
