"""Fixtures for wire-level Hub tests: a loopback Hub server and an environment that points at it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hub_helpers import FAKE_TOKEN
from hub_server import serve

HERE = Path(__file__).resolve().parent


@pytest.fixture
def hub(monkeypatch):
    """(state, url) of a fresh loopback Hub; in-process huggingface_hub calls are allowed to go online to it."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)  # plain LFS "basic" transfer, as HF_HUB_DISABLE_XET=1
    server, state, url = serve()
    yield state, url
    server.shutdown()
    server.server_close()


@pytest.fixture
def hub_env(hub, tmp_path):
    """Environment for a subprocess that talks to the loopback Hub with an empty cache and the fake token."""
    _, url = hub
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(
        HF_ENDPOINT=url,
        HF_HUB_DISABLE_XET="1",
        HF_HUB_OFFLINE="0",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HOME=str(tmp_path / "hf_home"),  # empty: every pull downloads over the wire
        HF_DATASETS_CACHE=str(tmp_path / "datasets_cache"),
        HF_TOKEN=FAKE_TOKEN,
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS="1",
    )
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    return env
