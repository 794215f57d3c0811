"""`AudioToImageInpaintPipeline`: sound repaints the masked part of a picture and keeps the rest."""

from __future__ import annotations

from .audio_to_image_img2img import AudioToImageImg2ImgPipeline


class AudioToImageInpaintPipeline(AudioToImageImg2ImgPipeline):
    r"""Inpaint with a sound: [`AudioToImageImg2ImgPipeline`] with `mask_image` required.

    Inside the mask (white) the picture is noised as `strength` says and denoised with the sound; outside it the
    picture is put back after every step (noised to the step's level), so it is kept as it is, through the VAE. This
    is diffusers' approach for UNets without mask input channels, so any UNet of the family works, and it loads the
    same saved folders; convert with `from_pipe` (no copies of the weights). `strength=1.0` repaints the masked
    region from noise.

    Example:
        ```py
        >>> from diffusers_sonify import AudioToImageInpaintPipeline
        >>> from PIL import Image

        >>> pipe = AudioToImageInpaintPipeline.from_pretrained("outputs/demo/model")
        >>> image, mask = Image.open("street.png"), Image.open("sky_mask.png")  # white: the part to repaint
        >>> edited = pipe("thunder.wav", image=image, mask_image=mask, strength=1.0).images[0]
        ```

    Args: see [`AudioToImagePipeline`].
    """

    def _prepare_pictures(self, call: dict) -> dict:
        if call["mask_image"] is None:
            raise ValueError(
                "`mask_image` is required: white where the sound repaints the picture, black where it is kept "
                "(for an edit of the whole picture use `AudioToImageImg2ImgPipeline`)."
            )
        return super()._prepare_pictures(call)
