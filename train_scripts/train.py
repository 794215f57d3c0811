"""Train an AudioToImagePipeline on an image+audio dataset (e.g. the sonification builder's output).

    accelerate launch train_scripts/train.py train_scripts/configs/sd15_clap.yaml [--flag value ...]

Shape: parse config -> Accelerator -> frozen parts -> trainable set -> data -> optimizer + scheduler -> prepare ->
loop -> save + card. Project logic lives in `diffusers_sonify.training_utils`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import torch
import transformers
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import ProjectConfiguration, set_seed
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from huggingface_hub import ModelCardData
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import AutoFeatureExtractor, CLIPTextModel, CLIPTokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from config import load_mapping, parse_config

from diffusers_sonify import AudioProjectionModel, AudioToImagePipeline
from diffusers_sonify import training_utils as tu
from diffusers_sonify.hub import render_model_card
from diffusers_sonify.models.audio_encoders import (
    audio_encoder_inputs,
    encode_audio_features,
    feature_extractor_seconds,
)

logger = get_logger(__name__)


def build_components(m) -> dict:
    """Components from `pretrained_pipeline`, or base model / inline UNet config + audio encoder + new adapter."""
    if m.pretrained_pipeline:
        return dict(AudioToImagePipeline.from_pretrained(m.pretrained_pipeline).components)
    base, rev = m.pretrained_model_name_or_path, m.revision
    if not m.audio_encoder_name_or_path:
        raise ValueError("Set `audio_encoder_name_or_path` (e.g. laion/clap-htsat-unfused) or `pretrained_pipeline`.")
    if not base and not (m.unet_config and m.scheduler_config):
        raise ValueError("Set `pretrained_model_name_or_path`, or both `unet_config` and `scheduler_config`.")
    if m.unet_config:
        unet = UNet2DConditionModel.from_config(load_mapping(m.unet_config, "unet_config"))
    else:
        unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet", revision=rev)
    if m.scheduler_config:
        scheduler = DDIMScheduler.from_config(load_mapping(m.scheduler_config, "scheduler_config"))
    else:
        scheduler = DDIMScheduler.from_pretrained(base, subfolder="scheduler", revision=rev)
    # pixel-space when the UNet is built inline from 3 channels; otherwise the base model's VAE
    pixel_space = m.unet_config is not None and unet.config.in_channels == 3
    vae = None if pixel_space else AutoencoderKL.from_pretrained(base, subfolder="vae", revision=rev)
    text_encoder = tokenizer = None
    if m.use_text_encoder:
        text_encoder = CLIPTextModel.from_pretrained(base, subfolder="text_encoder", revision=rev)
        tokenizer = CLIPTokenizer.from_pretrained(base, subfolder="tokenizer", revision=rev)
    encoder_cls = getattr(transformers, m.audio_encoder_class, None)
    if encoder_cls is None:
        raise ValueError(f"`audio_encoder_class`={m.audio_encoder_class!r} is not a transformers class.")
    audio_encoder = encoder_cls.from_pretrained(m.audio_encoder_name_or_path)
    feature_extractor = AutoFeatureExtractor.from_pretrained(m.audio_encoder_name_or_path)
    if getattr(feature_extractor, "truncation", None) == "fusion" and not getattr(
        audio_encoder.config, "enable_fusion", True
    ):
        logger.info("Unfused CLAP takes one mel channel: using truncation='rand_trunc' instead of 'fusion'.")
        feature_extractor.truncation = "rand_trunc"
    audio_cfg = getattr(audio_encoder.config, "audio_config", audio_encoder.config)
    audio_projection = AudioProjectionModel(
        cross_attention_dim=unet.config.cross_attention_dim,
        pooled_dim=getattr(audio_encoder.config, "projection_dim", None) or audio_cfg.hidden_size,
        hidden_dim=audio_cfg.hidden_size,
        input_type=m.adapter_input_type,
        num_pooled_tokens=m.num_pooled_tokens,
        num_hidden_tokens=m.num_hidden_tokens,
    )
    return dict(
        unet=unet,
        scheduler=scheduler,
        audio_encoder=audio_encoder,
        feature_extractor=feature_extractor,
        audio_projection=audio_projection,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
    )


def hub_id(name: str | None) -> str | None:
    """`name` when it is a Hub id (card metadata may only name Hub repos), else None."""
    return name if name and not os.path.exists(name) else None


def validate(c, pipe_scheduler, cfg, accelerator, step, final=False) -> list[PIL.Image.Image]:
    """Generate from the validation sounds with the real pipeline; save a PNG grid and log it."""
    unwrap = accelerator.unwrap_model
    pipe = AudioToImagePipeline(
        **{
            **c,
            "unet": unwrap(c["unet"]),
            "audio_projection": unwrap(c["audio_projection"]),
            "audio_encoder": unwrap(c["audio_encoder"]),
            "scheduler": pipe_scheduler,
        }
    )
    pipe.set_progress_bar_config(disable=True)
    for name in ("unet", "audio_projection", "audio_encoder"):
        getattr(pipe, name).eval()
    with torch.autocast(accelerator.device.type, enabled=accelerator.mixed_precision != "no"):
        images = pipe(
            cfg.validation_audio,
            num_inference_steps=cfg.validation_inference_steps,
            guidance_scale=cfg.validation_guidance_scale,
            generator=torch.Generator().manual_seed(cfg.seed),
        ).images
    for name in ("unet", "audio_projection", "audio_encoder"):
        getattr(pipe, name).train(c[name] is not None and any(p.requires_grad for p in c[name].parameters()))
    grid = PIL.Image.new("RGB", (sum(i.width for i in images), max(i.height for i in images)))
    for k, image in enumerate(images):
        grid.paste(image, (sum(i.width for i in images[:k]), 0))
    folder = Path(cfg.output_dir) / "validation"
    folder.mkdir(parents=True, exist_ok=True)
    grid.save(folder / f"step_{step:06d}.png")
    if final:
        grid.save(Path(cfg.output_dir) / "validation_grid.png")
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.writer.add_images(
                "validation", np.stack([np.asarray(i) for i in images]), step, dataformats="NHWC"
            )
    return images


def main(argv: list[str] | None = None) -> None:
    m, d, cfg = parse_config(argv)
    report_to = cfg.report_to if cfg.report_to != "none" else None
    if report_to == "tensorboard":
        from accelerate.utils import is_tensorboard_available

        report_to = report_to if is_tensorboard_available() else None
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision=cfg.mixed_precision,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        log_with=report_to,
        project_config=ProjectConfiguration(
            project_dir=cfg.output_dir, logging_dir=os.path.join(cfg.output_dir, "logs")
        ),
    )
    if cfg.expected_num_processes is not None and accelerator.num_processes != cfg.expected_num_processes:
        raise RuntimeError(
            f"{accelerator.num_processes} process(es) running, `expected_num_processes`={cfg.expected_num_processes}. "
            "On CPU use `accelerate launch --multi_gpu --num_processes N` (`--cpu --num_processes N` runs one)."
        )
    if accelerator.is_main_process:
        os.makedirs(cfg.output_dir, exist_ok=True)
    set_seed(cfg.seed)  # fresh adapter and LoRA initialisation; per-step randomness uses tu.step_generator
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)

    # Frozen parts
    c = build_components(m)
    pipe_scheduler = c["scheduler"]
    noise_scheduler = DDPMScheduler.from_config(pipe_scheduler.config)
    if d.caption_column and c["text_encoder"] is None:
        raise ValueError("`caption_column` needs a text encoder: set `use_text_encoder: true` (and a base model).")
    modules = {k: c[k] for k in ("unet", "audio_projection", "audio_encoder", "vae", "text_encoder")}
    params = tu.configure_trainable_parameters(
        modules,
        lora_rank=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha,
        train_unet=cfg.train_unet,
        train_audio_encoder=cfg.train_audio_encoder,
    )
    for name, module in modules.items():
        if module is None:
            continue
        trains = any(p.requires_grad for p in module.parameters())
        module.train(trains)
        if not trains and name != "unet":  # the UNet stays fp32: gradients flow through it to the adapter
            module.to(accelerator.device) if weight_dtype == torch.float32 else module.to(
                accelerator.device, weight_dtype
            )
    if cfg.gradient_checkpointing:
        c["unet"].enable_gradient_checkpointing()
        if cfg.train_audio_encoder:
            c["audio_encoder"].gradient_checkpointing_enable()
    logger.info(tu.trainable_summary(modules), main_process_only=True)

    # Data (+ caches of frozen encoders' outputs, keyed by dataset fingerprint and model weights)
    ds = tu.load_training_dataset(d.dataset_name, d.dataset_split, d.image_column, d.audio_column)
    if d.max_train_samples is not None:
        ds = ds.select(range(min(d.max_train_samples, len(ds))))
    logger.info(f"Training on {len(ds)} rows of {d.dataset_name} (split {d.dataset_split})", main_process_only=True)
    fe = c["feature_extractor"]
    max_seconds = feature_extractor_seconds(fe)
    num_window = None if max_seconds is None else int(max_seconds * fe.sampling_rate)
    caches = tu.FeatureCaches()
    cache_root = cfg.cache_dir or tu.default_cache_dir()
    device = accelerator.device
    proj = c["audio_projection"]

    def encode_waves(waves):  # mono waveforms at the feature extractor's rate -> AudioFeatures
        return encode_audio_features(
            c["audio_encoder"], audio_encoder_inputs(fe, c["audio_encoder"], waves, device, weight_dtype)
        )

    if cfg.cache_audio_features and not cfg.train_audio_encoder:

        def compute_audio(idx):
            waves = [
                tu.crop_waveform(
                    tu.load_training_audio(ds[i][d.audio_column], fe.sampling_rate, max_seconds), num_window
                )
                for i in idx
            ]
            with torch.no_grad():
                f = encode_waves(waves)
            return {
                k: v
                for k, v in (("pooled", f.pooled), ("hidden_states", f.hidden_states))
                if (k == "pooled" and proj.use_pooled) or (k == "hidden_states" and proj.use_hidden)
            }

        key = tu.model_fingerprint(c["audio_encoder"], extra={"fe": fe.to_dict(), "window": num_window})
        path = tu.feature_cache_path(cache_root, "audio", ds._fingerprint, key)
        with accelerator.main_process_first():
            caches.audio = tu.cached_features(
                path, compute_audio, len(ds), desc="Caching audio features", write=accelerator.is_main_process
            )
    if cfg.random_flip and cfg.cache_latents and c["vae"] is not None:
        raise ValueError(
            "`random_flip` needs the images, but `cache_latents` stores VAE latents: disable one of them."
        )
    if cfg.cache_latents and c["vae"] is not None:

        def compute_latents(idx):
            pixels = torch.stack([tu.preprocess_image(ds[i][d.image_column], d.resolution) for i in idx])
            with torch.no_grad():
                return {"latent_moments": c["vae"].encode(pixels.to(device, weight_dtype)).latent_dist.parameters}

        key = tu.model_fingerprint(c["vae"], extra={"resolution": d.resolution})
        path = tu.feature_cache_path(cache_root, "latents", ds._fingerprint, key)
        with accelerator.main_process_first():
            caches.latents = tu.cached_features(
                path, compute_latents, len(ds), desc="Caching latents", write=accelerator.is_main_process
            )
    train_ds = tu.SonifiedImageAudioDataset(
        ds, d.resolution, fe.sampling_rate, max_seconds, d.image_column, d.audio_column, d.caption_column, caches
    )
    sampler = tu.EpochShuffleSampler(len(train_ds), cfg.seed)
    loader = torch.utils.data.DataLoader(
        train_ds,
        batch_size=cfg.train_batch_size,
        sampler=sampler,
        collate_fn=tu.collate_examples,
        num_workers=d.dataloader_num_workers,
    )

    # Optimizer + scheduler (a list of parameters: clipping must see the same ones)
    optimizer = torch.optim.AdamW(
        params,
        lr=cfg.learning_rate,
        betas=(cfg.adam_beta1, cfg.adam_beta2),
        weight_decay=cfg.adam_weight_decay,
        eps=cfg.adam_epsilon,
    )
    steps_per_epoch = math.ceil(math.ceil(len(loader) / accelerator.num_processes) / cfg.gradient_accumulation_steps)
    max_steps = cfg.max_train_steps or cfg.num_train_epochs * steps_per_epoch
    lr_scheduler = get_scheduler(
        cfg.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=cfg.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=max_steps * accelerator.num_processes,
    )

    # Prepare: only modules with trainable weights are wrapped (DDP) and checkpointed
    trained = [
        k for k in ("audio_projection", "unet", "audio_encoder") if any(p.requires_grad for p in c[k].parameters())
    ]
    prepared = accelerator.prepare(*[c[k] for k in trained], optimizer, loader, lr_scheduler)
    c.update(zip(trained, prepared[: len(trained)]))
    optimizer, loader, lr_scheduler = prepared[len(trained) :]
    c["unet"].to(device)
    ema = EMAModel(params, decay=cfg.ema_decay) if cfg.use_ema else None
    if ema is not None:
        ema.to(device)
        accelerator.register_for_checkpointing(ema)

    def save_hook(models, weights, out):
        if accelerator.is_main_process:
            for i, model in enumerate(models):
                save_file(
                    tu.trainable_state_dict(accelerator.unwrap_model(model)),
                    os.path.join(out, f"trainable_{i}.safetensors"),
                )
        weights.clear()  # checkpoints hold trainable weights only, not the frozen base models

    def load_hook(models, inp):
        for i, model in enumerate(models):
            tu.load_trainable_state_dict(
                accelerator.unwrap_model(model), load_file(os.path.join(inp, f"trainable_{i}.safetensors"))
            )
        models.clear()

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)
    if accelerator.is_main_process:
        accelerator.init_trackers(
            "diffusers-sonify", config={k: v for k, v in vars(cfg).items() if isinstance(v, (int, float, str, bool))}
        )

    global_step = 0
    if cfg.resume_from_checkpoint:
        ckpt = cfg.resume_from_checkpoint
        if ckpt == "latest":
            found = sorted(Path(cfg.output_dir).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
            if not found:
                raise FileNotFoundError(
                    f"`resume_from_checkpoint=latest` but {cfg.output_dir} has no checkpoint-* folder."
                )
            ckpt = str(found[-1])
        accelerator.load_state(ckpt)
        global_step = int(Path(ckpt).name.split("-")[1])
        logger.info(f"Resumed from {ckpt} at step {global_step}")

    null_text = None
    if c["text_encoder"] is not None:

        def encode_text(captions):
            if null_text is not None and not any(captions):  # no captions at all: the empty prompt, encoded once
                return null_text.expand(len(captions), -1, -1)
            ids = c["tokenizer"](
                captions,
                padding="max_length",
                max_length=c["tokenizer"].model_max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids.to(device)
            with torch.no_grad():
                return c["text_encoder"](ids)[0].float()

        null_text = encode_text([""])

    def save_checkpoint(step):
        if accelerator.is_main_process and cfg.checkpoints_total_limit:
            old = sorted(Path(cfg.output_dir).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
            for path in old[: max(0, len(old) - cfg.checkpoints_total_limit + 1)]:
                shutil.rmtree(path)
        accelerator.save_state(os.path.join(cfg.output_dir, f"checkpoint-{step}"))

    # Loop
    log_path = Path(cfg.output_dir) / "train_log.jsonl"
    log_file = open(log_path, "a" if cfg.resume_from_checkpoint else "w") if accelerator.is_main_process else None
    progress = tqdm(range(max_steps), initial=global_step, desc="Steps", disable=not accelerator.is_main_process)
    first_epoch, steps_this_run, micro = global_step // steps_per_epoch, 0, 0
    record = {"loss": 0.0, "indices": []}
    done = global_step >= max_steps
    for epoch in range(first_epoch, math.ceil(max_steps / steps_per_epoch)):
        if done:
            break
        sampler.set_epoch(epoch)
        skip = (global_step - epoch * steps_per_epoch) * cfg.gradient_accumulation_steps if epoch == first_epoch else 0
        for batch in accelerator.skip_first_batches(loader, skip) if skip else loader:
            with accelerator.accumulate(*[c[k] for k in trained]):
                gen = tu.step_generator(cfg.seed, global_step, micro, accelerator.process_index)
                micro += 1
                if "latent_moments" in batch:
                    latents = DiagonalGaussianDistribution(batch["latent_moments"]).sample(gen)
                else:
                    pixels = tu.random_hflip(batch["pixel_values"], gen) if cfg.random_flip else batch["pixel_values"]
                    if c["vae"] is not None:
                        with torch.no_grad():
                            latents = c["vae"].encode(pixels.to(weight_dtype)).latent_dist.sample(gen)
                    else:
                        latents = pixels
                if c["vae"] is not None:
                    latents = (latents.float() - (c["vae"].config.shift_factor or 0.0)) * c[
                        "vae"
                    ].config.scaling_factor
                latents = latents.float().to(device)
                if "pooled" in batch or "hidden_states" in batch:
                    pooled, hidden = batch.get("pooled"), batch.get("hidden_states")
                else:
                    waves = [
                        tu.augment_waveform(w, num_window, gen, cfg.augment_gain_db)
                        if cfg.audio_augment
                        else tu.crop_waveform(w, num_window)
                        for w in batch["waveform"]
                    ]
                    with torch.set_grad_enabled(cfg.train_audio_encoder):
                        f = encode_waves(waves)
                    pooled, hidden = f.pooled, f.hidden_states
                audio_embeds = c["audio_projection"](
                    pooled=None if pooled is None else pooled.float().to(device),
                    hidden_states=None if hidden is None else hidden.float().to(device),
                )
                cond, _ = tu.drop_audio_condition(
                    audio_embeds, accelerator.unwrap_model(c["audio_projection"]), cfg.audio_drop_prob, gen
                )
                if null_text is not None:
                    text, _ = tu.drop_text_condition(encode_text(batch["caption"]), null_text, cfg.text_drop_prob, gen)
                    cond = torch.cat([text, cond], dim=1)  # text tokens first, as in the pipeline
                noise = tu.training_noise(latents.shape, gen, cfg.noise_offset).to(device)
                t = torch.randint(
                    0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],), generator=gen
                ).to(device)
                noisy = noise_scheduler.add_noise(latents, noise, t)
                pred = c["unet"](noisy, t, encoder_hidden_states=cond, return_dict=False)[0]
                target = tu.training_target(noise_scheduler, latents, noise, t)
                loss = tu.diffusion_loss(pred, target, t, noise_scheduler, cfg.snr_gamma)
                record["loss"] += (
                    accelerator.gather(loss.detach().reshape(1)).mean().item() / cfg.gradient_accumulation_steps
                )
                record["indices"].append(
                    accelerator.gather(batch["index"].to(device)).reshape(accelerator.num_processes, -1)
                )
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    grad_norm = accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
                    clipped = torch.linalg.vector_norm(
                        torch.stack([p.grad.norm() for p in params if p.grad is not None])
                    )
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()
            if not accelerator.sync_gradients:
                continue
            global_step += 1
            steps_this_run += 1
            micro = 0
            if ema is not None:
                ema.step(params)
            entry = {
                "step": global_step,
                "loss": record["loss"],
                "lr": lr_scheduler.get_last_lr()[0],
                "grad_norm": float(grad_norm),
                "grad_norm_clipped": float(clipped),
                "num_processes": accelerator.num_processes,
                "written_by_rank": accelerator.process_index,
                "indices_per_rank": torch.cat(record["indices"], dim=1).tolist(),
            }
            record = {"loss": 0.0, "indices": []}
            progress.update(1)
            progress.set_postfix(loss=f"{entry['loss']:.4f}", lr=f"{entry['lr']:.2e}")
            accelerator.log({k: entry[k] for k in ("loss", "lr", "grad_norm")}, step=global_step)
            if log_file is not None:
                log_file.write(json.dumps(entry) + "\n")
                log_file.flush()
            done = global_step >= max_steps
            interrupted = cfg.max_steps_this_run is not None and steps_this_run >= cfg.max_steps_this_run and not done
            if global_step % cfg.checkpointing_steps == 0 or interrupted:
                save_checkpoint(global_step)
            if (
                cfg.validation_audio
                and global_step % cfg.validation_steps == 0
                and not done
                and accelerator.is_main_process
            ):
                validate(c, pipe_scheduler, cfg, accelerator, global_step)
            if interrupted:
                logger.info(f"Stopping after {steps_this_run} steps (`max_steps_this_run`); resume with `latest`.")
                accelerator.end_training()
                return
            if done:
                break

    # Save: full pipeline (+ LoRA weights) + model card, written by the main process only
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if ema is not None:
            ema.copy_to(params)
        for k in trained:
            c[k] = accelerator.unwrap_model(c[k])
        if cfg.validation_audio:
            validate(c, pipe_scheduler, cfg, accelerator, global_step, final=True)
        lora_layers = None
        if cfg.lora_rank:
            lora_layers = tu.unet_lora_state_dict(c["unet"])
            c["unet"].unload_lora()  # the pipeline folder holds the base UNet; the LoRA file goes beside it
        pipeline = AudioToImagePipeline(**{**c, "scheduler": pipe_scheduler})
        if weight_dtype != torch.float32:
            pipeline.to(torch.float32)  # frozen parts ran in the mixed-precision dtype; save full precision
        pipeline.save_pretrained(cfg.output_dir)
        if lora_layers is not None:
            AudioToImagePipeline.save_lora_weights(cfg.output_dir, unet_lora_layers=lora_layers)
        card = render_model_card(
            ModelCardData(
                library_name="diffusers",
                license="apache-2.0",
                base_model=hub_id(m.pretrained_model_name_or_path),
                datasets=[hub_id(d.dataset_name)] if hub_id(d.dataset_name) else None,
                tags=["diffusers", "audio-to-image", "diffusers-sonify"] + (["lora"] if lora_layers else []),
            ),
            repo_id=cfg.hub_model_id,
            base_model=m.pretrained_model_name_or_path or m.pretrained_pipeline,
            audio_encoder=m.audio_encoder_name_or_path or type(c["audio_encoder"]).__name__,
            dataset=d.dataset_name,
            lora=lora_layers is not None,
            steps=global_step,
            hyperparameters={
                k: getattr(cfg, k)
                for k in (
                    "learning_rate",
                    "train_batch_size",
                    "gradient_accumulation_steps",
                    "lora_rank",
                    "train_unet",
                    "train_audio_encoder",
                    "audio_drop_prob",
                    "snr_gamma",
                    "noise_offset",
                    "use_ema",
                    "mixed_precision",
                    "seed",
                )
            }
            | {"resolution": d.resolution, "num_processes": accelerator.num_processes},
            validation_grid="validation_grid.png" if cfg.validation_audio else None,
        )
        card.save(os.path.join(cfg.output_dir, "README.md"))
        if cfg.push_to_hub:
            if not cfg.hub_model_id:
                raise ValueError("`push_to_hub` needs `hub_model_id`, e.g. org/sonify.")
            tu.push_training_output(cfg.output_dir, cfg.hub_model_id, private=cfg.hub_private)
    if log_file is not None:
        log_file.close()
    accelerator.end_training()


if __name__ == "__main__":
    main()
