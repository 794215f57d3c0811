"""The Inference Endpoints handler shipped by `export_remote_code`: base64 and raw audio in, image out, 400s."""

from __future__ import annotations

import base64
import importlib.util
import io

import numpy as np
import pytest
import soundfile as sf
from hub_scripts import SR, example_sound

from diffusers_sonify.hub import export_remote_code


@pytest.fixture(scope="module")
def handler_module(tmp_path_factory, tiny_pipe_dir):
    exported = export_remote_code(tiny_pipe_dir, tmp_path_factory.mktemp("endpoint") / "repo")
    spec = importlib.util.spec_from_file_location("endpoint_handler", exported / "handler.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, module.EndpointHandler(str(exported))


def wav_bytes() -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, example_sound(), SR, format="WAV")
    return buffer.getvalue()


def test_handler_base64_and_raw_bytes_give_the_pipeline_image(handler_module, tiny_pipe):
    import torch

    _, handler = handler_module
    parameters = {"num_inference_steps": 2, "seed": 3}
    from_b64 = handler({"inputs": base64.b64encode(wav_bytes()).decode(), "parameters": parameters})
    from_raw = handler({"inputs": wav_bytes(), "parameters": parameters})
    audio, sr = sf.read(io.BytesIO(wav_bytes()), dtype="float32")
    expected = tiny_pipe(audio, sampling_rate=sr, num_inference_steps=2, generator=torch.Generator().manual_seed(3))
    for image in (from_b64, from_raw):
        diff = np.abs(np.asarray(image, np.int16) - np.asarray(expected.images[0], np.int16))
        assert image.size == expected.images[0].size and diff.max() <= 1


@pytest.mark.parametrize(
    "payload, message",
    [
        ({"parameters": {}}, 'no "inputs"'),
        ({"inputs": "this is not base64!"}, "not base64"),
        ({"inputs": base64.b64encode(b"RIFF-not-really-audio").decode()}, "not a readable audio file"),
        ({"inputs": 42}, "must be base64 text or bytes"),
        ({"inputs": b"", "parameters": {"steps": 3}}, "not a readable audio file"),
    ],
)
def test_handler_bad_payloads_are_400_with_a_reason(handler_module, payload, message):
    module, handler = handler_module
    with pytest.raises(module.BadRequest, match=message) as error:
        handler(payload)
    assert error.value.status_code == 400


def test_handler_rejects_unknown_parameters(handler_module):
    module, handler = handler_module
    with pytest.raises(module.BadRequest, match=r"Unknown parameters \['steps'\]"):
        handler({"inputs": wav_bytes(), "parameters": {"steps": 3}})
