"""diffusers-sonify: audio-to-image diffusion trained without real audio-visual pairs."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Public names resolve on first use (PEP 562), so `import diffusers_sonify.training_config` (the programs' `--help`
# and config checks) does not pay for importing torch and diffusers.
_LAZY = {
    "AudioProjectionModel": ".models",
    "AudioToImagePipeline": ".pipelines",
    "AudioToImagePipelineOutput": ".pipelines",
}

if TYPE_CHECKING:
    from .models import AudioProjectionModel
    from .pipelines import AudioToImagePipeline, AudioToImagePipelineOutput


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["AudioProjectionModel", "AudioToImagePipeline", "AudioToImagePipelineOutput", "__version__"]
