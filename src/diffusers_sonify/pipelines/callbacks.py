"""Step-end callbacks for the audio-to-image pipelines (diffusers' `PipelineCallback` interface)."""

from __future__ import annotations

from typing import Any

from diffusers.callbacks import PipelineCallback


class CFGCutoffCallback(PipelineCallback):
    """Turn classifier-free guidance off after a step: the remaining steps run the conditional branch alone, at a
    fraction of the UNet work (a half with audio guidance, a third with audio and text guidance).

    diffusers' `SDCFGCutoffCallback` keeps the last *row* of the stacked conditioning, which is the conditional
    branch for one image only; this callback keeps the last *block* (one row per image), so it works for any batch
    size and for every guidance branch the pipeline stacks. Give `cutoff_step_ratio` (of `num_inference_steps`) or
    `cutoff_step_index`: guidance stops after that step.

    Examples:
        >>> from diffusers_sonify import CFGCutoffCallback
        >>> cutoff = CFGCutoffCallback(cutoff_step_ratio=0.5)
        >>> images = pipe([bell, bird], guidance_scale=5.0, callback_on_step_end=cutoff).images  # doctest: +SKIP
    """

    tensor_inputs = ["latents", "prompt_embeds"]

    def callback_fn(self, pipeline, step_index, timestep, callback_kwargs) -> dict[str, Any]:
        cutoff = self.config.cutoff_step_index
        if cutoff is None:
            cutoff = int(pipeline.num_timesteps * self.config.cutoff_step_ratio)
        if step_index == cutoff:
            rows = callback_kwargs["latents"].shape[0]
            callback_kwargs["prompt_embeds"] = callback_kwargs["prompt_embeds"][-rows:]  # the conditional block
            pipeline._guidance_scale = 0.0  # as diffusers' cut-off callbacks leave it
            pipeline._text_guidance_scale = 0.0
        return callback_kwargs
