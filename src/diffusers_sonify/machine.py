"""What a measured run says about the machine it ran on (the demo's report, the benchmarks' output), and a free port
for a data-parallel program's rendezvous on it."""

from __future__ import annotations

import os
import platform
import socket


def _cpuinfo_value(*keys: str) -> str | None:
    """The value of the first /proc/cpuinfo line that starts with one of `keys`; None where there is none."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(keys):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (what `lscpu` shows), else what `platform` knows."""
    return _cpuinfo_value("model name") or platform.processor() or platform.machine() or "unknown"


# /proc/cpuinfo flags of bf16 arithmetic in hardware: AVX-512 BF16 (AMD Zen 4, Intel Cooper Lake and later), AMX
# tiles (Intel Sapphire Rapids and later), and aarch64's `bf16`. Without one, bf16 is emulated and slower than fp32.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (`flags` on x86, `Features` on arm); empty where unreadable."""
    return set((_cpuinfo_value("flags", "Features") or "").split())


def cpu_has_native_bf16() -> bool:
    """Whether this CPU does bf16 arithmetic in hardware (so bf16 autocast speeds training up rather than down)."""
    return bool(NATIVE_BF16_FLAGS & cpu_flags())


def cpu_summary() -> str:
    """`"<CPU model> (family <f> model <m>), <n> cores, <bf16>"`: the cores this process may use (a container's CPU
    set, not the host's), and whether it does bf16 arithmetic in hardware, which decides the demo's precision.

    Virtual machines often name only the vendor's line ("AMD EPYC" for a Zen 3 with AVX2 and a Zen 4 with AVX-512
    BF16 alike: toyworld/RECIPE.md, d38 and d40), so the x86 family and model numbers are given where /proc/cpuinfo
    has them.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    family, model = _cpuinfo_value("cpu family"), _cpuinfo_value("model\t")
    ident = f" (family {family} model {model})" if family and model else ""
    bf16 = "bf16 arithmetic in hardware" if cpu_has_native_bf16() else "no bf16 arithmetic in hardware"
    return f"{cpu_model()}{ident}, {cores} cores, {bf16}"


def free_port() -> int:
    """A loopback TCP port nothing listens on now (for `accelerate launch --main_process_port`)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
