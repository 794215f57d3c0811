"""diffusers-sonify Gradio app: upload or record a sound, see a scene that could make it.

    python spaces/app.py [--model <Hub id or folder>] [--host 127.0.0.1] [--port 7860]

The model defaults to `$SONIFY_MODEL`, else the pipeline `make demo` leaves in outputs/demo/model. Any
`AudioToImagePipeline` folder or Hub repo id works. On a Hugging Face Space, set `SONIFY_MODEL` in the Space settings.
"""

from __future__ import annotations

import argparse
import os

import gradio as gr
import numpy as np
import torch
import torchaudio

from diffusers_sonify import AudioToImagePipeline

DEFAULT_MODEL = os.environ.get("SONIFY_MODEL", "outputs/demo/model")
SOURCES = ["upload", "microphone"]


def to_waveform(value) -> tuple[np.ndarray, int]:
    """Gradio's `(sampling_rate, samples)` audio value as a float32 mono waveform in [-1, 1] and its rate."""
    sampling_rate, samples = value
    samples = np.asarray(samples)
    if np.issubdtype(samples.dtype, np.integer):
        samples = samples.astype(np.float32) / float(np.iinfo(samples.dtype).max + 1)
    samples = samples.astype(np.float32)
    return (samples.mean(axis=1) if samples.ndim == 2 else samples), int(sampling_rate)


def load_pipeline(model: str) -> AudioToImagePipeline:
    pipe = AudioToImagePipeline.from_pretrained(model)
    pipe.to("cuda" if torch.cuda.is_available() else "cpu")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def make_generate(pipe: AudioToImagePipeline):
    def generate(sound, second_sound, mix, prompt, guidance_scale, steps, seed):
        if sound is None:
            raise gr.Error("Upload or record a sound first.")
        audio, sampling_rate = to_waveform(sound)
        weights = None
        if second_sound is not None:
            second, second_rate = to_waveform(second_sound)
            if second_rate != sampling_rate:
                second = torchaudio.functional.resample(torch.from_numpy(second), second_rate, sampling_rate).numpy()
            audio, weights = [audio, second], [1.0 - float(mix), float(mix)]
        try:
            result = pipe(
                audio,
                sampling_rate=sampling_rate,
                audio_weights=weights,
                prompt=prompt or None,
                guidance_scale=float(guidance_scale),
                num_inference_steps=int(steps),
                generator=torch.Generator().manual_seed(int(seed)),
            )
        except ValueError as e:  # the pipeline's input checks: show them to the user
            raise gr.Error(str(e)) from None
        return result.images[0]

    return generate


def build_app(pipe: AudioToImagePipeline) -> gr.Blocks:
    with gr.Blocks(title="diffusers-sonify") as app:
        gr.Markdown(
            "# Hear a sound, see a scene\n"
            "An `AudioToImagePipeline` from diffusers-sonify, trained on sonified images (no real audio-visual pairs)."
        )
        with gr.Row():
            with gr.Column():
                sound = gr.Audio(sources=SOURCES, type="numpy", label="Sound", elem_id="sound")
                second = gr.Audio(sources=SOURCES, type="numpy", label="Second sound (optional)", elem_id="second")
                mix = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Mix: 0 = first sound only, 1 = second only")
                prompt = gr.Textbox(label="Text prompt (optional; models trained with a text encoder)")
                guidance = gr.Slider(1.0, 15.0, value=4.0, step=0.5, label="Guidance scale")
                steps = gr.Slider(1, 100, value=25, step=1, label="Inference steps")
                seed = gr.Number(value=0, precision=0, label="Seed")
                button = gr.Button("Generate", variant="primary", elem_id="generate")
            image = gr.Image(label="Heard scene", type="pil", format="png", elem_id="result")
        button.click(make_generate(pipe), [sound, second, mix, prompt, guidance, steps, seed], image)
    return app


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="AudioToImagePipeline folder or Hub repo id.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    args = parser.parse_args(argv)
    build_app(load_pipeline(args.model)).launch(server_name=args.host, server_port=args.port)


if __name__ == "__main__":
    main()
