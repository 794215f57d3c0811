from .audio_to_image import EXAMPLE_DOC_STRING, AudioToImagePipeline, AudioToImagePipelineOutput
from .audio_to_image_img2img import AudioToImageImg2ImgPipeline
from .audio_to_image_inpaint import AudioToImageInpaintPipeline
from .callbacks import CFGCutoffCallback

__all__ = [
    "EXAMPLE_DOC_STRING",
    "AudioToImageImg2ImgPipeline",
    "AudioToImageInpaintPipeline",
    "AudioToImagePipeline",
    "AudioToImagePipelineOutput",
    "CFGCutoffCallback",
]
