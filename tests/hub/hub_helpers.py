"""Helpers shared by the Hub tests (a plain module: importing `conftest` collides across test folders)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPTS = str(Path(__file__).resolve().parent / "hub_scripts.py")
# A token in the Hub's format, made up for these tests: it must reach the server and nothing else.
FAKE_TOKEN = "hf_SonifyFakeToken0123456789abcdefABCDEF"


def run_script(env, *args, cwd=None, check=True, timeout=300) -> subprocess.CompletedProcess:
    """Run `hub_scripts.py <args>` in a fresh interpreter; its stdout+stderr are returned for log greps."""
    proc = subprocess.run(
        [sys.executable, SCRIPTS, *map(str, args)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc
