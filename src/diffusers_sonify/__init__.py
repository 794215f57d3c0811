"""diffusers-sonify: audio-to-image diffusion trained without real audio-visual pairs."""

import importlib

__version__ = "0.1.0"

# Imported on first use (PEP 562), so light entry points (`build.py --help`, configs) do not import diffusers/torch.
_LAZY = {
    "AudioProjectionModel": ".models",
    "AudioToImageImg2ImgPipeline": ".pipelines",
    "AudioToImageInpaintPipeline": ".pipelines",
    "AudioToImagePipeline": ".pipelines",
    "AudioToImagePipelineOutput": ".pipelines",
    "CFGCutoffCallback": ".pipelines",
}

__all__ = [
    "AudioProjectionModel",
    "AudioToImageImg2ImgPipeline",
    "AudioToImageInpaintPipeline",
    "AudioToImagePipeline",
    "AudioToImagePipelineOutput",
    "CFGCutoffCallback",
    "__version__",
]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
