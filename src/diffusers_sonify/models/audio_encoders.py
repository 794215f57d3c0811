"""Run a transformers audio model and return its pooled and token-level outputs in one form.

Supported encoders (all from transformers): `ClapModel`, `ClapAudioModelWithProjection`, `ClapAudioModel`,
`ASTModel` and, generally, any audio model whose forward takes `input_features` or `input_values` and returns
`last_hidden_state` (+ optionally `pooler_output` / `audio_embeds`).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch


@dataclass
class AudioFeatures:
    """Encoder outputs before the adapter.

    Attributes:
        pooled (`torch.Tensor` of shape `(batch, pooled_dim)`): one vector per clip (CLAP: the projected
            512-d audio embedding; AST: the pooled [CLS]/distillation vector).
        hidden_states (`torch.Tensor` of shape `(batch, seq, hidden_dim)`): the last hidden layer as a token
            sequence (CLAP's 4-D feature map is flattened over its two spatial axes).
    """

    pooled: torch.Tensor
    hidden_states: torch.Tensor


def audio_input_name(audio_encoder: torch.nn.Module) -> str:
    """The name of the tensor argument the encoder's forward takes (`input_features` or `input_values`)."""
    audio_encoder = getattr(audio_encoder, "module", audio_encoder)  # look through a DistributedDataParallel wrapper
    module = audio_encoder.audio_model if hasattr(audio_encoder, "get_audio_features") else audio_encoder
    params = inspect.signature(module.forward).parameters
    for name in ("input_features", "input_values"):
        if name in params:
            return name
    raise TypeError(
        f"{type(audio_encoder).__name__} takes neither `input_features` nor `input_values`; "
        "pass a transformers audio model such as ClapModel, ClapAudioModelWithProjection or ASTModel."
    )


def audio_encoder_inputs(feature_extractor, audio_encoder, waveforms: list, device, dtype) -> torch.Tensor:
    """Run the feature extractor on mono waveforms (already at its `sampling_rate`) and return the tensor the
    encoder's forward takes (`input_features` or `input_values`) on `device` / `dtype`.

    Feature extractors compute on the CPU in float32 and hand numpy arrays back: under a CPU `torch.autocast` (a
    pipeline called inside one) their filterbank would come out in bfloat16, which numpy cannot take, so autocast is
    off here."""
    with torch.autocast("cpu", enabled=False):
        features = feature_extractor(waveforms, sampling_rate=feature_extractor.sampling_rate, return_tensors="pt")
    return features[audio_input_name(audio_encoder)].to(device=device, dtype=dtype)


def feature_extractor_seconds(feature_extractor) -> float | None:
    """Seconds of audio a feature extractor keeps: CLAP's `max_length_s`, AST's `max_length` frames at a 10 ms hop;
    None when it does not say."""
    if getattr(feature_extractor, "nb_max_samples", None):
        return feature_extractor.nb_max_samples / feature_extractor.sampling_rate
    if getattr(feature_extractor, "max_length", None):
        return feature_extractor.max_length / 100.0
    return None


def _as_token_sequence(hidden: torch.Tensor) -> torch.Tensor:
    if hidden.ndim == 4:  # CLAP/HTSAT: (batch, channels, freq, time) feature map
        return hidden.flatten(2).transpose(1, 2)
    if hidden.ndim != 3:
        raise ValueError(f"Expected 3-D or 4-D hidden states from the audio encoder, got shape {tuple(hidden.shape)}.")
    return hidden


def _run_model_offload_hook(model: torch.nn.Module) -> None:
    """Give accelerate's model-offload hook on `model` its turn (it moves the whole model to the execution device and
    offloads the previous one). The hook wraps `forward` only, and a full ClapModel's audio path is not its forward
    (that needs text too); without this the audio tower would stay on the CPU under `enable_model_cpu_offload`."""
    hook = getattr(model, "_hf_hook", None)
    if hook is None:
        return
    from accelerate.hooks import CpuOffload

    if isinstance(hook, CpuOffload):
        hook.pre_forward(model)


def encode_audio_features(audio_encoder: torch.nn.Module, inputs: torch.Tensor) -> AudioFeatures:
    """Encode feature-extractor output with a transformers audio model.

    Args:
        audio_encoder: a transformers audio model (see module docstring).
        inputs (`torch.Tensor`): the feature extractor's `input_features` / `input_values`, already on the
            encoder's device and dtype.
    """
    name = audio_input_name(audio_encoder)
    if hasattr(audio_encoder, "get_audio_features"):  # full ClapModel: audio tower + projection head
        _run_model_offload_hook(audio_encoder)
        out = audio_encoder.audio_model(**{name: inputs})
        pooled = audio_encoder.audio_projection(out.pooler_output)
        return AudioFeatures(pooled=pooled, hidden_states=_as_token_sequence(out.last_hidden_state))
    out = audio_encoder(**{name: inputs})
    pooled = getattr(out, "audio_embeds", None)
    if pooled is None:
        pooled = getattr(out, "pooler_output", None)
    hidden = _as_token_sequence(out.last_hidden_state)
    if pooled is None:
        pooled = hidden.mean(dim=1)
    return AudioFeatures(pooled=pooled, hidden_states=hidden)
