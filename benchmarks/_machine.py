"""What the benchmark scripts print about the machine they ran on (imported as a sibling module)."""

from diffusers_sonify.machine import cpu_model

__all__ = ["cpu_model"]
