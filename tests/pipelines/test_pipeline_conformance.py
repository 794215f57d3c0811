"""What diffusers checks of every pipeline (its shared `PipelineTesterMixin` & co.), written for ours.

Behaviours and tolerances follow diffusers' `tests/pipelines/test_pipelines_common.py`; every test runs on tiny
real-class components, for sound only, sound + text, the img2img and the inpainting pipeline.
"""

from __future__ import annotations

import inspect

import diffusers
import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import DiffusionPipeline, StableDiffusionPipeline
from diffusers.callbacks import SDCFGCutoffCallback
from diffusers.schedulers import KarrasDiffusionSchedulers
from sounds import SR, chirp, tone

from diffusers_sonify import (
    AudioToImageImg2ImgPipeline,
    AudioToImageInpaintPipeline,
    AudioToImagePipeline,
    CFGCutoffCallback,
)
from diffusers_sonify.tiny import stable_diffusion_pipeline, tiny_pipeline_components

VARIANTS = ["audio", "audio+text", "img2img", "inpaint"]
EDITING = ("img2img", "inpaint")
CLASSES = {"img2img": AudioToImageImg2ImgPipeline, "inpaint": AudioToImageInpaintPipeline}


def components_for(variant: str) -> dict:
    return tiny_pipeline_components(with_text=variant != "audio")


def make(variant: str, components: dict | None = None):
    cls = CLASSES.get(variant, AudioToImagePipeline)
    pipe = cls(**(components or components_for(variant)))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def inputs_for(variant: str, seed: int = 0, **overrides) -> dict:
    kwargs = {
        "audio": tone(440.0),
        "sampling_rate": SR,
        "num_inference_steps": 2,
        "guidance_scale": 3.0,
        "generator": torch.Generator().manual_seed(seed),
        "output_type": "np",
    }
    if variant != "audio":
        kwargs.update(prompt="rain on a roof", text_guidance_scale=2.0)
    if variant in EDITING:
        rng = np.random.default_rng(0)
        kwargs.update(image=PIL.Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)), strength=1.0)
    if variant == "inpaint":  # repaint the left half
        kwargs.update(mask_image=PIL.Image.fromarray(np.tile(np.repeat([255, 0], 16).astype(np.uint8), (32, 1))))
    kwargs.update(overrides)
    return kwargs


def unet_batches(pipe, **kwargs) -> list[int]:
    sizes = []
    handle = pipe.unet.register_forward_pre_hook(lambda mod, args: sizes.append(args[0].shape[0]))
    try:
        pipe(**kwargs)
    finally:
        handle.remove()
    return sizes


@pytest.fixture(params=VARIANTS)
def variant(request):
    return request.param


# ----------------------------------------------------------------------------- save / load
def test_save_load_local(variant, tmp_path):
    pipe = make(variant)
    before = pipe(**inputs_for(variant)).images
    pipe.save_pretrained(tmp_path)
    loaded = type(pipe).from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    np.testing.assert_allclose(loaded(**inputs_for(variant)).images, before, atol=5e-4, rtol=0)


def test_save_load_optional_components_none(tmp_path):
    """Optional components saved as None load as None (pixel space: no VAE; no text encoder/tokenizer)."""
    pipe = AudioToImagePipeline(**tiny_pipeline_components(latent=False))
    pipe.set_progress_bar_config(disable=True)
    before = pipe(**inputs_for("audio")).images
    pipe.save_pretrained(tmp_path)
    loaded = AudioToImagePipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.vae is None and loaded.text_encoder is None and loaded.tokenizer is None
    np.testing.assert_allclose(loaded(**inputs_for("audio")).images, before, atol=1e-4, rtol=0)


def test_variants_and_dtype_maps(tmp_path):
    pipe = make("audio")
    pipe.save_pretrained(tmp_path, variant="fp16")
    assert list(tmp_path.glob("unet/*.fp16.safetensors")) and list(tmp_path.glob("audio_projection/*.fp16.*"))
    loaded = AudioToImagePipeline.from_pretrained(tmp_path, variant="fp16")
    assert isinstance(loaded.audio_projection, type(pipe.audio_projection))
    with pytest.raises(ValueError, match="variant"):
        AudioToImagePipeline.from_pretrained(tmp_path, variant="no-such-variant")
    mapped = AudioToImagePipeline.from_pretrained(
        tmp_path, variant="fp16", torch_dtype={"unet": torch.bfloat16, "default": torch.float32}
    )
    assert mapped.unet.dtype == torch.bfloat16 and mapped.vae.dtype == torch.float32
    assert mapped.audio_projection.dtype == torch.float32


def test_plain_diffusion_pipeline_loading_needs_the_class(tmp_path):
    """diffusers resolves `_class_name` only inside its own namespace (`getattr(diffusers, name)`) or from remote
    code; a saved folder therefore loads through the package's classes, both from the same folder."""
    make("audio").save_pretrained(tmp_path)
    assert not hasattr(diffusers, "AudioToImagePipeline")
    with pytest.raises(AttributeError, match="AudioToImagePipeline"):
        DiffusionPipeline.from_pretrained(tmp_path)
    assert type(AudioToImagePipeline.from_pretrained(tmp_path)) is AudioToImagePipeline
    for cls in CLASSES.values():
        assert type(cls.from_pretrained(tmp_path)) is cls


# ----------------------------------------------------------------------------- call semantics
def test_call_signature_has_diffusers_names(variant):
    params = inspect.signature(make(variant).__call__).parameters
    expected = {"num_inference_steps", "num_images_per_prompt", "generator", "output_type", "return_dict"}
    expected |= {"prompt_embeds", "negative_prompt_embeds", "callback_on_step_end", "guidance_scale"}
    if variant not in EDITING:
        expected.add("latents")
    assert expected <= set(params)


def test_batch_equals_singles_and_num_images_per_prompt(variant):
    pipe = make(variant)
    sounds = [tone(440.0), chirp(300.0, 3000.0)]
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    extra = {"prompt": ["rain", "a bell"]} if variant != "audio" else {}
    batch = pipe(**inputs_for(variant, audio=sounds, generator=gens, **extra)).images
    for i in range(2):
        single_extra = {"prompt": extra["prompt"][i]} if extra else {}
        single = pipe(**inputs_for(variant, seed=i, audio=sounds[i], **single_extra)).images
        np.testing.assert_allclose(batch[i], single[0], atol=1e-4, rtol=0)
    assert pipe(**inputs_for(variant, audio=sounds, num_images_per_prompt=3)).images.shape[0] == 6


def test_dict_tuple_and_output_types_equivalent(variant):
    pipe = make(variant)
    as_np = pipe(**inputs_for(variant)).images
    (as_tuple,) = pipe(**inputs_for(variant, return_dict=False))
    np.testing.assert_allclose(as_tuple, as_np, atol=1e-4, rtol=0)
    as_pt = pipe(**inputs_for(variant, output_type="pt")).images
    np.testing.assert_allclose(as_pt.permute(0, 2, 3, 1).numpy(), as_np, atol=1e-4, rtol=0)
    as_pil = pipe(**inputs_for(variant, output_type="pil")).images
    np.testing.assert_allclose(np.asarray(as_pil[0]) / 255.0, as_np[0], atol=1 / 255 + 1e-6)


def test_every_karras_scheduler(variant):
    pipe = make(variant)
    for scheduler_enum in KarrasDiffusionSchedulers:
        cls = getattr(diffusers, scheduler_enum.name)
        if scheduler_enum.name == "DPMSolverSDEScheduler":
            try:
                import torchsde  # noqa: F401
            except ImportError:
                continue  # optional dependency of that scheduler, not of this project
        # PRK warm-up steps need more steps than these tests run; Stable Diffusion's configs skip them too
        extra = {"skip_prk_steps": True} if scheduler_enum.name == "PNDMScheduler" else {}
        pipe.scheduler = cls.from_config(pipe.scheduler.config, **extra)
        steps = 5 if "KDPM2" in scheduler_enum.name else 2  # as diffusers' test: KDPM2 needs more steps
        images = pipe(**inputs_for(variant, num_inference_steps=steps)).images
        assert images.shape == (1, 32, 32, 3) and np.isfinite(images).all(), scheduler_enum.name


def test_attention_slicing_keeps_the_output(variant):
    pipe = make(variant)
    plain = pipe(**inputs_for(variant)).images
    pipe.enable_attention_slicing(slice_size=1)
    np.testing.assert_allclose(pipe(**inputs_for(variant)).images, plain, atol=1e-3, rtol=0)


# ----------------------------------------------------------------------------- dtype, offloading
def test_to_dtype_and_layerwise_casting(variant):
    pipe = make(variant)
    plain = pipe(**inputs_for(variant)).images
    pipe.to(torch.bfloat16)
    assert all(c.dtype == torch.bfloat16 for c in pipe.components.values() if isinstance(c, torch.nn.Module))
    pipe.to(torch.float32)
    pipe.unet.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.float32)
    cast = pipe(**inputs_for(variant)).images
    assert cast.shape == plain.shape and np.isfinite(cast).all()


@pytest.mark.parametrize("offload", ["model", "sequential", "group"])
def test_cpu_offloading_gives_the_same_image(variant, offload):
    """The CPU stands in as execution device where no accelerator exists (accelerate wants `cpu`, not `cpu:0`)."""
    pipe = make(variant)
    plain = pipe(**inputs_for(variant)).images
    if offload == "model":
        pipe.enable_model_cpu_offload(device="cpu")
    elif offload == "sequential" and torch.cuda.is_available():
        pipe.enable_sequential_cpu_offload()
    elif offload == "sequential":
        # What `enable_sequential_cpu_offload` does, with `cpu` as execution device: it always appends an index
        # (`cpu:0`), and accelerate 1.15 + torch 2.14 then fail to re-create BatchNorm parameters (CLAP has one).
        from accelerate import cpu_offload

        for component in pipe.components.values():
            if isinstance(component, torch.nn.Module):
                cpu_offload(component, torch.device("cpu"), offload_buffers=len(component._parameters) > 0)
    else:
        for name in ("unet", "vae"):
            pipe.components[name].enable_group_offload(
                onload_device=torch.device("cpu"), offload_type="block_level", num_blocks_per_group=1
            )
    if offload == "sequential":
        assert pipe.audio_projection.null_audio_embeds.device.type == "meta"  # placed only inside forward
    for _ in range(2):  # hooks must survive a call (diffusers re-arms them in maybe_free_model_hooks)
        np.testing.assert_allclose(pipe(**inputs_for(variant)).images, plain, atol=2e-4, rtol=0)


# ----------------------------------------------------------------------------- callbacks
def test_callback_tensor_inputs(variant):
    pipe = make(variant)
    seen = []

    def callback(p, step, t, tensors):
        seen.append(sorted(tensors))
        if step == p.num_timesteps - 1:
            tensors["latents"] = torch.zeros_like(tensors["latents"])
        return tensors

    out = pipe(
        **inputs_for(
            variant,
            output_type="latent",
            callback_on_step_end=callback,
            callback_on_step_end_tensor_inputs=pipe._callback_tensor_inputs,
        )
    ).images
    assert seen == [sorted(pipe._callback_tensor_inputs)] * pipe.num_timesteps and out.abs().sum() == 0


def test_callback_changes_guidance(variant):
    pipe = make(variant)

    def raise_guidance(p, step, t, tensors):
        p._guidance_scale += 1.0
        return tensors

    pipe(**inputs_for(variant, guidance_scale=2.0, callback_on_step_end=raise_guidance))
    assert pipe.guidance_scale == 2.0 + pipe.num_timesteps


def test_diffusers_cfg_cutoff_callback_drops_the_unconditional_branch():
    pipe = make("audio")
    callback = SDCFGCutoffCallback(cutoff_step_ratio=None, cutoff_step_index=2)
    sizes = unet_batches(pipe, **inputs_for("audio", num_inference_steps=4, callback_on_step_end=callback))
    assert sizes == [2, 2, 2, 1] and pipe.guidance_scale == 0.0


def test_diffusers_cfg_cutoff_callback_on_a_batch_gets_a_clear_error():
    # it keeps one row of the conditioning, the conditional branch of one image only
    pipe = make("audio")
    callback = SDCFGCutoffCallback(cutoff_step_ratio=None, cutoff_step_index=1)
    inputs = inputs_for("audio", num_inference_steps=3, callback_on_step_end=callback)
    with pytest.raises(ValueError, match="1 rows for a batch of 2 images; keep whole blocks of 2 rows"):
        pipe(**{**inputs, "audio": [tone(440.0), tone(880.0)]})


def test_cfg_cutoff_callback_keeps_each_image_of_a_batch_conditional(variant):
    sounds = [tone(440.0), chirp(300.0, 3000.0)]
    cutoff = CFGCutoffCallback(cutoff_step_ratio=None, cutoff_step_index=1)
    pipe = make(variant)
    branches = 2 if variant == "audio" else 3  # the other variants add text guidance
    extra = {}
    if variant == "audio+text":
        extra["prompt"] = ["rain on a roof", "a bell in a hall"]
    if variant in EDITING:
        extra["image"] = [inputs_for(variant)["image"]] * 2
    if variant == "inpaint":
        extra["mask_image"] = [inputs_for(variant)["mask_image"]] * 2

    def call(audio, generators, **kwargs):
        return pipe(**inputs_for(variant, num_inference_steps=4, audio=audio, generator=generators, **kwargs)).images

    sizes = unet_batches(
        pipe, **inputs_for(variant, num_inference_steps=4, audio=sounds, callback_on_step_end=cutoff, **extra)
    )
    assert sizes == [2 * branches] * 2 + [2] * 2 and pipe.guidance_scale == 0.0
    generators = [torch.Generator().manual_seed(s) for s in (1, 2)]
    batch = call(sounds, generators, callback_on_step_end=cutoff, **extra)
    for i, sound in enumerate(sounds):
        alone = {k: v[i] for k, v in extra.items()}
        single = call(sound, torch.Generator().manual_seed(i + 1), callback_on_step_end=cutoff, **alone)
        np.testing.assert_allclose(batch[i], single[0], atol=1e-3, rtol=1e-3)
    uncut = call(sounds, [torch.Generator().manual_seed(s) for s in (1, 2)], **extra)
    assert np.abs(batch - uncut).max() > 1e-3  # the last steps ran without guidance


# ----------------------------------------------------------------------------- embeddings in isolation
def test_encode_prompt_and_encode_audio_in_isolation():
    components = components_for("audio+text")
    text_only = {k: (v if k in ("text_encoder", "tokenizer") else None) for k, v in components.items()}
    prompt_embeds, negative_prompt_embeds = make("audio+text", text_only).encode_prompt("rain on a roof")
    audio_only = {k: (v if k.startswith("audio") or k == "feature_extractor" else None) for k, v in components.items()}
    audio_embeds = make("audio+text", audio_only).encode_audio(tone(440.0), sampling_rate=SR)

    no_encoders = {**components, "text_encoder": None, "tokenizer": None}
    pipe = make("audio+text", no_encoders)
    inputs = inputs_for("audio+text")
    inputs.pop("prompt"), inputs.pop("audio"), inputs.pop("sampling_rate")
    from_embeds = pipe(
        **inputs,
        audio_embeds=audio_embeds,
        prompt_embeds=prompt_embeds,
        negative_prompt_embeds=negative_prompt_embeds,
    ).images
    full = make("audio+text", components)(**inputs_for("audio+text")).images
    np.testing.assert_allclose(from_embeds, full, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="needs `negative_prompt_embeds`"):
        pipe(**inputs, audio_embeds=audio_embeds, prompt_embeds=prompt_embeds)
    with pytest.raises(ValueError, match="needs `prompt`"):
        make("audio+text", text_only).encode_prompt(None)


# ----------------------------------------------------------------------------- from_pipe
def _tiny_stable_diffusion(components: dict) -> StableDiffusionPipeline:
    sd = stable_diffusion_pipeline(components)
    sd.set_progress_bar_config(disable=True)
    return sd


def test_from_pipe_to_and_from_stable_diffusion():
    components = components_for("audio+text")
    sd = _tiny_stable_diffusion(components)
    sd_kwargs = dict(prompt="rain", num_inference_steps=2, output_type="np")
    sd_before = sd(**sd_kwargs, generator=torch.Generator().manual_seed(0)).images
    audio_parts = {k: components[k] for k in ("audio_encoder", "feature_extractor", "audio_projection")}
    for variant, cls in {"audio+text": AudioToImagePipeline, **CLASSES}.items():
        pipe = cls.from_pipe(sd, **audio_parts)
        assert pipe.unet is sd.unet and pipe.text_encoder is sd.text_encoder  # shared, not copied
        assert pipe(**inputs_for(variant)).images.shape == (1, 32, 32, 3)
        back = StableDiffusionPipeline.from_pipe(pipe, feature_extractor=None, safety_checker=None)
        back.set_progress_bar_config(disable=True)
        sd_after = back(**sd_kwargs, generator=torch.Generator().manual_seed(0)).images
        np.testing.assert_allclose(sd_after, sd_before, atol=1e-3, rtol=0)


@pytest.mark.parametrize("editing", EDITING)
def test_from_pipe_between_text_to_image_and_editing(editing):
    t2i = make("audio")
    edit = CLASSES[editing].from_pipe(t2i)
    assert edit.unet is t2i.unet and edit.audio_projection is t2i.audio_projection
    assert edit(**inputs_for(editing, prompt=None, text_guidance_scale=1.0)).images.shape == (1, 32, 32, 3)
    again = AudioToImagePipeline.from_pipe(edit)
    np.testing.assert_allclose(again(**inputs_for("audio")).images, t2i(**inputs_for("audio")).images, atol=1e-4)


# ----------------------------------------------------------------------------- module state (issue 10.2)
def _state(pipe) -> tuple[dict, dict]:
    flags = {
        f"{n}.{sub}": m.training
        for n, c in pipe.components.items()
        if isinstance(c, torch.nn.Module)
        for sub, m in c.named_modules()
    }
    buffers = {
        f"{n}.{b}": t.clone()
        for n, c in pipe.components.items()
        if isinstance(c, torch.nn.Module)
        for b, t in c.named_buffers()
    }
    return flags, buffers


@pytest.mark.parametrize("pipeline_variant", VARIANTS)
def test_training_mode_components_give_the_eval_image_and_keep_their_state(pipeline_variant):
    """Freshly built transformers/diffusers models are in training mode (CLAP: dropout 0.1, a BatchNorm over mel
    bins). A call runs them in eval mode and leaves every flag and buffer exactly as it found them."""
    components = components_for(pipeline_variant)
    for c in components.values():
        if isinstance(c, torch.nn.Module):
            c.train()
    pipe = make(pipeline_variant, components)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in pipe.audio_encoder.modules())
    assert pipe.audio_encoder.config.hidden_dropout_prob > 0
    flags, buffers = _state(pipe)
    first = pipe(**inputs_for(pipeline_variant)).images
    pipe.encode_audio(tone(300.0), sampling_rate=SR)
    after_flags, after_buffers = _state(pipe)
    assert after_flags == flags and all(after_flags.values())
    assert all(torch.equal(after_buffers[k], v) for k, v in buffers.items())
    np.testing.assert_array_equal(pipe(**inputs_for(pipeline_variant)).images, first)  # no dropout
    for c in pipe.components.values():
        if isinstance(c, torch.nn.Module):
            c.eval()
    np.testing.assert_array_equal(pipe(**inputs_for(pipeline_variant)).images, first)  # as in eval mode


def test_a_call_that_fails_midway_gives_back_mixed_flags_and_the_next_call_runs_in_eval_mode():
    """One walk over the modules per call (the stages' entries nest): a call that raises inside the denoising loop
    must still give back every flag, a mix of training and eval ones, and leave no nesting behind, or the next call
    would skip eval mode and run CLAP's dropout."""
    components = components_for("audio")
    for c in components.values():
        if isinstance(c, torch.nn.Module):
            c.train()
    pipe = make("audio", components)
    pipe.unet.eval()
    pipe.unet.conv_in.train()  # a mix: the flags come back as they were, not all True or all False
    flags, _ = _state(pipe)
    first = pipe(**inputs_for("audio")).images

    def stop(pipeline, step, timestep, callback_kwargs):
        raise RuntimeError("stopped by the callback")

    with pytest.raises(RuntimeError, match="stopped by the callback"):
        pipe(**inputs_for("audio"), callback_on_step_end=stop)
    assert _state(pipe)[0] == flags
    np.testing.assert_array_equal(pipe(**inputs_for("audio")).images, first)  # eval mode again: no dropout
    assert _state(pipe)[0] == flags


def test_latent_unet_without_vae_is_rejected_at_construction():
    components = tiny_pipeline_components(latent=True)
    components["vae"] = None
    with pytest.raises(ValueError, match="needs a UNet with 3 input and output channels.*Pass the `vae`"):
        AudioToImagePipeline(**components)


def test_model_offload_moves_a_full_clap_model():
    """A full ClapModel's audio path is not its forward; accelerate's model-offload hook (on forward) must still run
    for it, or on an accelerator the audio tower would stay on the CPU."""
    from transformers import ClapConfig, ClapModel

    from diffusers_sonify import AudioProjectionModel

    components = components_for("audio")
    audio = components["audio_encoder"]
    text = dict(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37)
    torch.manual_seed(0)
    clap = ClapModel(ClapConfig(text_config=text, audio_config=audio.config.to_dict(), projection_dim=16)).eval()
    components.update(
        audio_encoder=clap,
        audio_projection=AudioProjectionModel(
            cross_attention_dim=32, pooled_dim=16, hidden_dim=32, num_pooled_tokens=2, num_hidden_tokens=4
        ),
    )
    pipe = make("audio", components)
    plain = pipe(**inputs_for("audio")).images
    pipe.enable_model_cpu_offload(device="cpu")
    hook = pipe.audio_encoder._hf_hook
    calls = []
    real_pre_forward = hook.pre_forward
    hook.pre_forward = lambda module, *a, **k: calls.append(module) or real_pre_forward(module, *a, **k)
    np.testing.assert_allclose(pipe(**inputs_for("audio")).images, plain, atol=2e-4, rtol=0)
    assert calls == [pipe.audio_encoder]
