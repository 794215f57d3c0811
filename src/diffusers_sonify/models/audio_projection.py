"""The audio adapter: encoder outputs -> cross-attention tokens for a text-to-image UNet.

This module path is recorded in every saved pipeline's `model_index.json`; do not move it.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn
from torch.nn import functional as F

# copies of training_config.ADAPTER_INPUT_TYPES / ADAPTER_HIDDEN_POOLS: this file is exported alone as Hub remote code
# (hub.export_remote_code), so it imports nothing from the package; tests/test_models.py keeps the copies in step
_INPUT_TYPES = ("pooled", "hidden_states", "both")
_HIDDEN_POOLS = ("mean", "max")


class AudioProjectionModel(ModelMixin, ConfigMixin):
    r"""Maps an audio encoder's outputs to `num_tokens` conditioning tokens of width `cross_attention_dim`.

    Two paths, selected by `input_type`:

    * `"pooled"`: the clip embedding goes through an MLP to `num_pooled_tokens` tokens (as IP-Adapter does for
      image embeddings).
    * `"hidden_states"`: the encoder's token sequence is projected per token, then pooled over runs of consecutive
      tokens (their mean, or with `hidden_pool="max"` their maximum) to `num_hidden_tokens` tokens, so the output
      length does not depend on the clip length.
    * `"both"`: the two token sets, pooled first.

    The module also owns the learned unconditional tokens (`null_audio_embeds`) used for condition dropout in
    training and for classifier-free guidance at inference, so both always agree.

    Args:
        cross_attention_dim (`int`): token width, the UNet's `cross_attention_dim`.
        pooled_dim (`int`, *optional*): width of the pooled audio embedding (CLAP: 512).
        hidden_dim (`int`, *optional*): width of the encoder's hidden states (CLAP-HTSAT: 768, AST: 768).
        input_type (`str`): `"pooled"`, `"hidden_states"` or `"both"`.
        num_pooled_tokens (`int`): tokens made from the pooled embedding.
        num_hidden_tokens (`int`): tokens made from the hidden-state sequence.
        mlp_ratio (`int`): hidden width of the pooled MLP as a multiple of `cross_attention_dim`.
        hidden_pool (`str`): how a run of projected hidden states becomes one token: `"mean"` or `"max"` (each
            feature's largest value in the run: a short event, a chirp or a strike, is kept at its own strength
            instead of being diluted by the run's quiet frames).
    """

    @register_to_config
    def __init__(
        self,
        cross_attention_dim: int = 768,
        pooled_dim: int | None = 512,
        hidden_dim: int | None = 768,
        input_type: str = "both",
        num_pooled_tokens: int = 4,
        num_hidden_tokens: int = 8,
        mlp_ratio: int = 2,
        hidden_pool: str = "mean",
    ):
        super().__init__()
        if input_type not in _INPUT_TYPES:
            raise ValueError(f"`input_type` must be one of {_INPUT_TYPES}, got {input_type!r}.")
        if hidden_pool not in _HIDDEN_POOLS:
            raise ValueError(f"`hidden_pool` must be one of {_HIDDEN_POOLS}, got {hidden_pool!r}.")
        self.use_pooled = input_type in ("pooled", "both")
        self.use_hidden = input_type in ("hidden_states", "both")
        if self.use_pooled and not pooled_dim:
            raise ValueError(f"`input_type={input_type!r}` needs `pooled_dim` (the encoder's pooled width).")
        if self.use_hidden and not hidden_dim:
            raise ValueError(f"`input_type={input_type!r}` needs `hidden_dim` (the encoder's hidden width).")

        if self.use_pooled:
            inner = mlp_ratio * cross_attention_dim
            self.pooled_proj = nn.Sequential(
                nn.Linear(pooled_dim, inner), nn.GELU(), nn.Linear(inner, num_pooled_tokens * cross_attention_dim)
            )
            self.pooled_norm = nn.LayerNorm(cross_attention_dim)
        if self.use_hidden:
            self.hidden_proj = nn.Linear(hidden_dim, cross_attention_dim)
            self.hidden_norm = nn.LayerNorm(cross_attention_dim)

        self.num_tokens = num_pooled_tokens * self.use_pooled + num_hidden_tokens * self.use_hidden
        # Small random init rather than zeros keeps the unconditional branch distinguishable from "silence".
        self.null_audio_embeds = nn.Parameter(torch.randn(1, self.num_tokens, cross_attention_dim) * 0.02)

    def forward(
        self,
        pooled: torch.Tensor | None = None,
        hidden_states: torch.Tensor | None = None,
        null_batch_size: int | None = None,
    ) -> torch.Tensor:
        r"""
        Args:
            pooled (`torch.Tensor` of shape `(batch, pooled_dim)`): the clip embedding.
            hidden_states (`torch.Tensor` of shape `(batch, seq, hidden_dim)`): the encoder's token sequence.
            null_batch_size (`int`, *optional*): return the learned null tokens for this many rows instead (the
                inputs are then ignored). Pipelines read the null tokens this way, through `forward`, because
                offloading hooks (accelerate, diffusers group offloading) only place parameters on the device
                for a forward call.

        Returns:
            `torch.Tensor` of shape `(batch, num_tokens, cross_attention_dim)`.
        """
        if null_batch_size is not None:
            return self.get_null_audio_embeds(null_batch_size)
        cfg = self.config
        tokens = []
        if self.use_pooled:
            if pooled is None:
                raise ValueError("This adapter reads the pooled audio embedding: pass `pooled`.")
            x = self.pooled_proj(pooled).reshape(pooled.shape[0], cfg.num_pooled_tokens, cfg.cross_attention_dim)
            tokens.append(self.pooled_norm(x))
        if self.use_hidden:
            if hidden_states is None:
                raise ValueError("This adapter reads the audio encoder's hidden states: pass `hidden_states`.")
            x = self.hidden_proj(hidden_states)
            pool = F.adaptive_max_pool1d if cfg.hidden_pool == "max" else F.adaptive_avg_pool1d
            x = pool(x.transpose(1, 2), cfg.num_hidden_tokens).transpose(1, 2)
            tokens.append(self.hidden_norm(x))
        return torch.cat(tokens, dim=1)

    def get_null_audio_embeds(self, batch_size: int) -> torch.Tensor:
        """The learned unconditional tokens, `(batch_size, num_tokens, cross_attention_dim)`."""
        return self.null_audio_embeds.expand(batch_size, -1, -1)

    def drop_condition(self, audio_embeds: torch.Tensor, drop_mask: torch.Tensor) -> torch.Tensor:
        """Replace the rows of `audio_embeds` where `drop_mask` (bool, `(batch,)`) is set by the null tokens."""
        null = self.get_null_audio_embeds(audio_embeds.shape[0]).to(audio_embeds.dtype)
        return torch.where(drop_mask.view(-1, 1, 1), null, audio_embeds)
