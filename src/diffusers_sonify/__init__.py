"""diffusers-sonify: audio-to-image diffusion trained without real audio-visual pairs."""

from .models import AudioProjectionModel
from .pipelines import AudioToImageImg2ImgPipeline, AudioToImagePipeline, AudioToImagePipelineOutput

__version__ = "0.1.0"

__all__ = [
    "AudioProjectionModel",
    "AudioToImageImg2ImgPipeline",
    "AudioToImagePipeline",
    "AudioToImagePipelineOutput",
    "__version__",
]
