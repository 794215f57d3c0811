"""The machine line of measured runs (the demo's report, the benchmarks) names the CPU as `lscpu` does."""

import shutil
import subprocess

import pytest

from diffusers_sonify.machine import NATIVE_BF16_FLAGS, cpu_flags, cpu_has_native_bf16, cpu_model, cpu_summary

needs_lscpu = pytest.mark.skipif(shutil.which("lscpu") is None, reason="needs util-linux's lscpu")


def lscpu_values(field: str) -> list[str]:
    """The values `lscpu` shows for `field` (e.g. "Model name")."""
    lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines()
    return [line.split(":", 1)[1].strip() for line in lines if line.startswith(f"{field}:")]


@needs_lscpu
def test_cpu_model_is_the_model_lscpu_shows():
    shown = lscpu_values("Model name")
    assert shown and cpu_model() == shown[0]
    assert cpu_summary().startswith(shown[0])
    # two different CPUs a VM names alike ("AMD EPYC") are told apart by their family and model numbers
    family, model = lscpu_values("CPU family"), lscpu_values("Model")
    if family and model:
        assert cpu_summary().startswith(f"{shown[0]} (family {family[0]} model {model[0]}), ")
    native = bool(NATIVE_BF16_FLAGS & set(lscpu_values("Flags")[0].split()))
    assert cpu_summary().endswith(" cores, " + ("bf16" if native else "no bf16") + " arithmetic in hardware")


@needs_lscpu
def test_cpu_flags_are_the_flags_lscpu_shows():
    shown = [set(value.split()) for value in lscpu_values("Flags")]
    assert shown and cpu_flags() == shown[0]
    assert cpu_has_native_bf16() == bool(NATIVE_BF16_FLAGS & shown[0])
