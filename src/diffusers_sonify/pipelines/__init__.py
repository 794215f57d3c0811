from .audio_to_image import EXAMPLE_DOC_STRING, AudioToImagePipeline, AudioToImagePipelineOutput

__all__ = ["EXAMPLE_DOC_STRING", "AudioToImagePipeline", "AudioToImagePipelineOutput"]
