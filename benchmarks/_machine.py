"""What the benchmark scripts print about the machine they ran on (imported as a sibling module)."""

import platform


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (what `lscpu` shows), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"
