"""Inference Endpoints handler for a diffusers-sonify audio-to-image repository.

Inference Endpoints (custom handler) loads `EndpointHandler(path)` from this file at the repository root and calls
it with the request's JSON. It needs only diffusers, transformers, torch, soundfile and pillow: the pipeline code
ships in the repository (`pipeline.py`) and is loaded with `trust_remote_code=True`.

Request: `{"inputs": <base64 audio file (wav/flac/ogg)> | <raw audio bytes>, "parameters": {"num_inference_steps":
25, "guidance_scale": 4.0, "seed": 0, "prompt": "..."}}`. Response: a PIL image (the endpoint returns it as PNG).
"""

from __future__ import annotations

import base64
import binascii
import io

PARAMETERS = {"num_inference_steps": int, "guidance_scale": float, "seed": int, "prompt": str}


class BadRequest(ValueError):
    """A payload this handler cannot use (the endpoint answers 400 with the message)."""

    status_code = 400


class EndpointHandler:
    def __init__(self, path: str = ""):
        import torch
        from diffusers import DiffusionPipeline

        self.torch = torch
        self.pipe = DiffusionPipeline.from_pretrained(path, trust_remote_code=True)
        self.pipe.to("cuda" if torch.cuda.is_available() else "cpu")
        self.pipe.set_progress_bar_config(disable=True)

    def __call__(self, data: dict):
        audio, sampling_rate = decode_audio(data.get("inputs") if isinstance(data, dict) else data)
        parameters = (data.get("parameters") if isinstance(data, dict) else None) or {}
        if not isinstance(parameters, dict):
            raise BadRequest("`parameters` must be a JSON object.")
        unknown = sorted(set(parameters) - set(PARAMETERS))
        if unknown:
            raise BadRequest(f"Unknown parameters {unknown}; allowed: {sorted(PARAMETERS)}.")
        try:
            kwargs = {k: PARAMETERS[k](v) for k, v in parameters.items()}
        except (TypeError, ValueError) as e:
            raise BadRequest(f"Bad parameter value: {e}") from None
        seed = kwargs.pop("seed", 0)
        generator = self.torch.Generator(device="cpu").manual_seed(seed)
        return self.pipe(audio, sampling_rate=sampling_rate, generator=generator, **kwargs).images[0]


def decode_audio(inputs):
    """(mono float32 waveform, sampling rate) from base64 text or raw bytes of an audio file; BadRequest otherwise."""
    import numpy as np
    import soundfile as sf

    if inputs is None:
        raise BadRequest('The request has no "inputs": send the audio file as base64 text or as raw bytes.')
    if isinstance(inputs, str):
        try:
            inputs = base64.b64decode(inputs, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest('"inputs" is text but not base64: send a base64-encoded audio file.') from None
    if not isinstance(inputs, (bytes, bytearray)):
        raise BadRequest(f'"inputs" must be base64 text or bytes of an audio file, got {type(inputs).__name__}.')
    try:
        audio, sampling_rate = sf.read(io.BytesIO(bytes(inputs)), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises its own LibsndfileError for anything it cannot parse
        raise BadRequest(f'"inputs" is not a readable audio file (wav, flac or ogg): {e}') from None
    if audio.shape[0] == 0:
        raise BadRequest('"inputs" holds an audio file with no samples.')
    return np.ascontiguousarray(audio.mean(axis=1)), int(sampling_rate)
