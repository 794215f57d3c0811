"""Train an AudioToImagePipeline on an image+audio dataset (e.g. the sonification builder's output).

    accelerate launch train_scripts/train.py train_scripts/configs/sd15_clap.yaml [--field value ...]

Reads top to bottom: 1. setup (config, checks, accelerator, Hub repo) -> 2. models (frozen parts, trainable set) ->
3. data (bad-row scan, feature caches, loader) -> 4. optimizer, scheduler, prepare, resume -> 5. loop -> 6. save,
card, final validation, push. Project logic lives in `diffusers_sonify.training_utils` (unit-tested); the config and
its checks in `diffusers_sonify.training_config` (`--help` lists every field).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
from pathlib import Path

from diffusers_sonify.training_config import BAD_ROWS_HELP, parse_training_config


def hub_id(value: str | None) -> str | None:
    """`value` when it names a Hub repo rather than a local path (card metadata may only name Hub repos)."""
    return value if value and not os.path.exists(value) else None


def main(argv: list[str] | None = None) -> None:
    # 1. Setup. The config is parsed and checked before torch is imported: `--help`, a wrong combination of fields,
    # a missing file or a malformed Hub id answer in about a second, before any model loads.
    try:
        cfg = parse_training_config(argv)
        cfg.validate_for_training()
    except (ValueError, FileNotFoundError) as err:  # one line naming the fields, not a traceback
        raise SystemExit(f"train.py: error: {err}") from None

    from diffusers_sonify.audio import decode_audio

    for i, path in enumerate(cfg.validation_audio):  # decodable now, not after hours of training
        try:
            decode_audio(path, max_seconds=1.0, arg=f"validation_audio[{i}]")
        except (ValueError, TypeError, FileNotFoundError) as err:
            raise SystemExit(f"train.py: error: {err}") from None

    import diffusers
    import numpy as np
    import torch
    import transformers
    from accelerate import Accelerator
    from accelerate.logging import get_logger
    from accelerate.utils import ProjectConfiguration, is_tensorboard_available, set_seed
    from diffusers import DDPMScheduler
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel
    from huggingface_hub import ModelCardData, create_repo
    from tqdm.auto import tqdm

    from diffusers_sonify import AudioToImagePipeline
    from diffusers_sonify import training_utils as tu
    from diffusers_sonify.hub import render_model_card
    from diffusers_sonify.models.audio_encoders import feature_extractor_seconds

    # this script's and the library's progress lines (INFO); other libraries keep their own levels
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    logging.getLogger("diffusers_sonify").setLevel(logging.INFO)
    logger = get_logger("train", log_level="INFO")
    no_tensorboard = cfg.report_to == "tensorboard" and not is_tensorboard_available()
    report_to = None if cfg.report_to == "none" or no_tensorboard else cfg.report_to
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision=cfg.mixed_precision,  # None: `accelerate launch --mixed_precision` / the accelerate config
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
    if no_tensorboard:
        logger.warning("tensorboard is not installed: no tracker (install it, or set `report_to: none`).")
    # progress shows as one "Steps" bar; model loading prints no nested "Loading weights" bars
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    if not accelerator.is_main_process:
        diffusers.utils.logging.set_verbosity_error()
        transformers.utils.logging.set_verbosity_error()
    output_dir = Path(cfg.output_dir)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        for stale in output_dir.glob(".checkpoint-*.tmp"):  # a save interrupted by a kill
            shutil.rmtree(stale)
    repo_id = None
    if cfg.push_to_hub and accelerator.is_main_process:  # up front: a token or name problem shows before training
        repo_id = create_repo(cfg.hub_repo_id, private=cfg.hub_private, exist_ok=True).repo_id
    set_seed(cfg.seed)  # fresh adapter and LoRA initialisation; per-step randomness uses tu.step_generator
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)
    device = accelerator.device

    # 2. Models: frozen parts (cast to the mixed-precision dtype) and the trainable set
    c = tu.build_training_components(cfg)
    tu.check_model_resolution(cfg.resolution, c["unet"], c["vae"])
    if cfg.attention_processor:
        tu.set_attention_processor(c["unet"], cfg.attention_processor)
    if cfg.caption_column and c["text_encoder"] is None:
        raise ValueError(
            f"`caption_column`={cfg.caption_column!r} needs a text encoder, and `pretrained_pipeline` has none."
        )
    pipe_scheduler = c["scheduler"]
    noise_scheduler = DDPMScheduler.from_config(pipe_scheduler.config)
    modules = {k: c[k] for k in ("unet", "audio_projection", "audio_encoder", "vae", "text_encoder")}
    params = tu.configure_trainable_parameters(
        modules,
        lora_rank=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha,
        train_unet=cfg.train_unet,
        train_audio_encoder=cfg.train_audio_encoder,
    )
    alignment = None
    if cfg.repa_encoder_name_or_path:  # REPA: a projector trained with the adapter, not part of the pipeline
        from diffusers_sonify.repa import RepresentationAlignment

        alignment = RepresentationAlignment.from_pretrained(cfg.repa_encoder_name_or_path, c["unet"], cfg.repa_block)
        alignment.encoder.to(device, weight_dtype)
        modules["repa_projector"] = alignment.make_projector(cfg.repa_projector_dim)
        params += list(modules["repa_projector"].parameters())
    for name, module in modules.items():
        if module is None:
            continue
        trains = any(p.requires_grad for p in module.parameters())
        module.train(trains)
        if not trains and name != "unet":  # the UNet stays fp32: gradients flow through it to the adapter
            module.to(device, weight_dtype)
    if cfg.gradient_checkpointing:
        c["unet"].enable_gradient_checkpointing()
        if cfg.train_audio_encoder:
            c["audio_encoder"].gradient_checkpointing_enable()
    logger.info(tu.trainable_summary(modules), main_process_only=True)
    text_conditioner = None
    if c["text_encoder"] is not None:
        text_conditioner = tu.TextConditioner(c["tokenizer"], c["text_encoder"], device)

    # 3. Data: skip rows that do not decode (see BAD_ROWS_HELP), cache frozen encoders' outputs, build the loader
    ds = tu.load_training_dataset(cfg.dataset_name, cfg.dataset_split, cfg.image_column, cfg.audio_column)
    if cfg.max_train_samples is not None:
        ds = ds.select(range(min(cfg.max_train_samples, len(ds))))
    bad_rows = tu.find_bad_rows(ds, cfg.image_column, cfg.audio_column, cfg.dataset_name)
    if bad_rows:
        bad = {b["row"] for b in bad_rows}
        if len(bad) == len(ds):
            raise ValueError(f"No usable row in {cfg.dataset_name!r}: every row was skipped. {BAD_ROWS_HELP}")
        ds = ds.select([i for i in range(len(ds)) if i not in bad])
        logger.warning(
            f"Skipped {len(bad)} bad row(s) of {cfg.dataset_name}; see {output_dir / 'skipped_rows.jsonl'}.",
            main_process_only=True,
        )
        if accelerator.is_main_process:
            lines = [json.dumps({"dataset": cfg.dataset_name, **b}) for b in bad_rows]
            (output_dir / "skipped_rows.jsonl").write_text("".join(line + "\n" for line in lines))
    logger.info(f"Training on {len(ds)} rows of {cfg.dataset_name} ({cfg.dataset_split})", main_process_only=True)
    fe = c["feature_extractor"]
    max_seconds = feature_extractor_seconds(fe)
    window = None if max_seconds is None else int(max_seconds * fe.sampling_rate)
    caches = tu.cache_frozen_features(accelerator, ds, c, cfg, window, max_seconds, weight_dtype)
    train_ds = tu.SonifiedImageAudioDataset(
        ds,
        cfg.resolution,
        fe.sampling_rate,
        max_seconds,
        cfg.image_column,
        cfg.audio_column,
        cfg.caption_column,
        caches,
    )
    loader = torch.utils.data.DataLoader(
        train_ds,
        batch_size=cfg.train_batch_size,
        sampler=tu.EpochShuffleSampler(len(train_ds), cfg.seed),
        collate_fn=tu.collate_examples,
        num_workers=cfg.dataloader_num_workers,
    )

    # 4. Optimizer (a list of parameters: clipping must see the same ones), scheduler, prepare, resume
    optimizer = tu.build_optimizer(cfg, modules, params)
    steps_per_epoch = math.ceil(math.ceil(len(loader) / accelerator.num_processes) / cfg.gradient_accumulation_steps)
    max_steps = cfg.max_train_steps or cfg.num_train_epochs * steps_per_epoch
    lr_scheduler = get_scheduler(
        cfg.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=cfg.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=max_steps * accelerator.num_processes,
    )
    # only modules with trainable weights are wrapped (DDP) and checkpointed: the pipeline's (`c`), and the REPA
    # projector, which is checkpointed but never saved in the pipeline
    trained = [
        k
        for k in ("audio_projection", "unet", "audio_encoder", "repa_projector")
        if modules.get(k) is not None and any(p.requires_grad for p in modules[k].parameters())
    ]
    prepared = accelerator.prepare(*[modules[k] for k in trained], optimizer, loader, lr_scheduler)
    modules.update(zip(trained, prepared[: len(trained)]))
    in_pipeline = [k for k in trained if k in c]
    c.update({k: modules[k] for k in in_pipeline})
    optimizer, loader, lr_scheduler = prepared[len(trained) :]
    c["unet"].to(device)
    ema = EMAModel(params, decay=cfg.ema_decay) if cfg.use_ema else None
    if ema is not None:
        ema.to(device)
        accelerator.register_for_checkpointing(ema)
    hooks = tu.TrainableCheckpointHooks(accelerator)
    accelerator.register_save_state_pre_hook(hooks.save)
    accelerator.register_load_state_pre_hook(hooks.load)
    if accelerator.is_main_process:
        scalars = {k: v for k, v in vars(cfg).items() if isinstance(v, (int, float, str, bool))}
        accelerator.init_trackers("diffusers-sonify", config=scalars)

    global_step = 0
    log_path = output_dir / "train_log.jsonl"
    resume_from = tu.resolve_resume_checkpoint(output_dir, cfg.resume_from_checkpoint)
    if resume_from is not None:
        accelerator.load_state(str(resume_from))
        global_step = tu.checkpoint_step(resume_from)
        logger.info(f"Resumed from {resume_from} at step {global_step}", main_process_only=True)
    if accelerator.is_main_process:  # steps logged after the resumed checkpoint are run again: drop them
        tu.truncate_train_log(log_path, global_step)
    log_file = open(log_path, "a") if accelerator.is_main_process else None

    # 5. Loop. Every random draw of a step comes from tu.step_generator(seed, step, micro-step, rank), and the data
    # order from (seed, epoch): a resumed run repeats an uninterrupted one exactly.
    progress = tqdm(range(max_steps), initial=global_step, desc="Steps", disable=not accelerator.is_main_process)
    first_epoch, steps_this_run, micro = global_step // steps_per_epoch, 0, 0
    record = {"loss": 0.0, "indices": []}
    repa_targets = None  # with cache_repa_targets: made at the first step, when the aligned block's grid is known
    done = global_step >= max_steps
    for epoch in range(first_epoch, math.ceil(max_steps / steps_per_epoch)):
        if done:
            break
        # the prepared loader sets its sampler's epoch from its own counter on every pass (it restarts at 0 in a
        # resumed run), so the epoch is set on the loader itself
        loader.set_epoch(epoch)
        skip = (global_step - epoch * steps_per_epoch) * cfg.gradient_accumulation_steps if epoch == first_epoch else 0
        for batch in accelerator.skip_first_batches(loader, skip) if skip else loader:
            with accelerator.accumulate(*[modules[k] for k in trained]):
                gen = tu.step_generator(cfg.seed, global_step, micro, accelerator.process_index)
                micro += 1
                if "latent_moments" in batch:
                    latents = DiagonalGaussianDistribution(batch["latent_moments"]).sample(gen)
                else:
                    pixels, flips = batch["pixel_values"], None
                    if cfg.random_flip:
                        pixels, flips = tu.random_hflip(pixels, gen)
                    latents = pixels
                    if c["vae"] is not None:
                        with torch.no_grad():
                            latents = c["vae"].encode(pixels.to(weight_dtype)).latent_dist.sample(gen)
                if c["vae"] is not None:
                    vae_config = c["vae"].config
                    latents = (latents.float() - (vae_config.shift_factor or 0.0)) * vae_config.scaling_factor
                latents = latents.float().to(device)
                if "pooled" in batch or "hidden_states" in batch:
                    pooled, hidden = batch.get("pooled"), batch.get("hidden_states")
                else:
                    waves = [
                        tu.augment_waveform(w, window, gen, cfg.augment_gain_db)
                        if cfg.audio_augment
                        else tu.crop_waveform(w, window)
                        for w in batch["waveform"]
                    ]
                    with torch.set_grad_enabled(cfg.train_audio_encoder):
                        features = tu.encode_waveforms(c["audio_encoder"], fe, waves, device, weight_dtype)
                    pooled, hidden = features.pooled, features.hidden_states
                audio_embeds = c["audio_projection"](
                    pooled=None if pooled is None else pooled.float().to(device),
                    hidden_states=None if hidden is None else hidden.float().to(device),
                )
                adapter = accelerator.unwrap_model(c["audio_projection"])
                cond, _ = tu.drop_audio_condition(audio_embeds, adapter, cfg.audio_drop_prob, gen)
                if text_conditioner is not None:
                    text = text_conditioner(batch["caption"])
                    text, _ = tu.drop_text_condition(text, text_conditioner.null, cfg.text_drop_prob, gen)
                    cond = torch.cat([text, cond], dim=1)  # text tokens first, as in the pipeline
                noise = tu.training_noise(latents.shape, gen, cfg.noise_offset).to(device)
                num_timesteps = noise_scheduler.config.num_train_timesteps
                t = tu.sample_timesteps(
                    latents.shape[0],
                    num_timesteps,
                    gen,
                    cfg.timestep_sampling,
                    cfg.timestep_logit_mean,
                    cfg.timestep_logit_std,
                ).to(device)
                noisy = noise_scheduler.add_noise(latents, noise, t)
                with alignment.capture() if alignment is not None else contextlib.nullcontext():
                    pred = c["unet"](noisy, t, encoder_hidden_states=cond, return_dict=False)[0]
                target = tu.training_target(noise_scheduler, latents, noise, t)
                loss = tu.diffusion_loss(
                    pred, target, t, noise_scheduler, cfg.snr_gamma, cfg.loss_type, cfg.huber_c, cfg.rms_max_timestep
                )
                gathered_loss = accelerator.gather(loss.detach().reshape(1)).mean().item()
                record["loss"] += gathered_loss / cfg.gradient_accumulation_steps
                if alignment is not None:  # the clean images (flipped as the UNet saw them) through the encoder
                    if cfg.cache_repa_targets and repa_targets is None:  # the block's grid is known now
                        batches = tu.image_batches(train_ds, cfg.train_batch_size)
                        repa_targets = alignment.cache_targets(batches, alignment.captured_grid, cfg.random_flip)
                        logger.info(f"Cached REPA targets of {len(repa_targets)} rows", main_process_only=True)
                    target = None if repa_targets is None else repa_targets(batch["index"], flips)
                    cosine = alignment.cosine(modules["repa_projector"], pixels, target)
                    gathered = accelerator.gather(cosine.detach().reshape(1)).mean().item()
                    record["repa_cosine"] = record.get("repa_cosine", 0.0) + gathered / cfg.gradient_accumulation_steps
                    loss = loss - cfg.repa_weight * cosine
                indices = accelerator.gather(batch["index"].to(device)).reshape(accelerator.num_processes, -1)
                record["indices"].append(indices)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    grad_norm = accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
                    grads = [p.grad.norm() for p in params if p.grad is not None]
                    clipped = torch.linalg.vector_norm(torch.stack(grads))
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
                "loss": record["loss"],  # the diffusion loss, without the REPA term
                **({"repa_cosine": record["repa_cosine"]} if "repa_cosine" in record else {}),
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
                tu.save_checkpoint(accelerator, output_dir, global_step, cfg.checkpoints_total_limit)
            if cfg.validation_audio and global_step % cfg.validation_steps == 0 and not done:
                if accelerator.is_main_process:
                    unwrapped = {k: accelerator.unwrap_model(c[k]) for k in in_pipeline}
                    pipeline = AudioToImagePipeline(**{**c, **unwrapped, "scheduler": pipe_scheduler})
                    images = tu.generate_validation_images(
                        pipeline,
                        cfg.validation_audio,
                        cfg.validation_inference_steps,
                        cfg.validation_guidance_scale,
                        cfg.seed,
                        autocast=weight_dtype != torch.float32,
                    )
                    (output_dir / "validation").mkdir(exist_ok=True)
                    tu.image_grid(images).save(output_dir / "validation" / f"step_{global_step:06d}.png")
                    for tracker in accelerator.trackers:
                        if tracker.name == "tensorboard":
                            arrays = np.stack([np.asarray(i) for i in images])
                            tracker.writer.add_images("validation", arrays, global_step, dataformats="NHWC")
                accelerator.wait_for_everyone()
            if interrupted:
                logger.info(
                    f"Stopping after {steps_this_run} steps (`max_steps_this_run`) at step {global_step}; "
                    f"resume with `--resume_from_checkpoint latest`.",
                    main_process_only=True,
                )
                if log_file is not None:
                    log_file.close()
                accelerator.end_training()
                return
            if done:
                break

    # 6. Save the pipeline (+ LoRA weights) and card first, then the final validation, then push: a late error
    # (validation, upload) cannot cost the trained model. Written by the main process only.
    accelerator.wait_for_everyone()
    if log_file is not None:
        log_file.close()
    if accelerator.is_main_process:
        if ema is not None:
            ema.copy_to(params)
        for k in in_pipeline:
            c[k] = accelerator.unwrap_model(c[k])
        lora_layers = None
        if cfg.lora_rank:
            lora_layers = tu.unet_lora_state_dict(c["unet"])
            c["unet"].unload_lora()  # the pipeline folder holds the base UNet; the LoRA file goes beside it
        pipeline = AudioToImagePipeline(**{**c, "scheduler": pipe_scheduler})
        if weight_dtype != torch.float32:
            pipeline.to(torch.float32)  # frozen parts ran in the mixed-precision dtype; save full precision
        pipeline.save_pretrained(output_dir)
        if lora_layers is not None:
            AudioToImagePipeline.save_lora_weights(output_dir, unet_lora_layers=lora_layers)
        hyperparameters = {
            k: getattr(cfg, k)
            for k in (
                "optimizer",
                "learning_rate",
                "train_batch_size",
                "gradient_accumulation_steps",
                "lora_rank",
                "train_unet",
                "train_audio_encoder",
                "audio_drop_prob",
                "loss_type",
                "snr_gamma",
                "noise_offset",
                "use_ema",
                "seed",
                "resolution",
            )
        }
        if cfg.loss_type == "huber":
            hyperparameters["huber_c"] = cfg.huber_c
        if cfg.rms_max_timestep is not None:
            hyperparameters["rms_max_timestep"] = cfg.rms_max_timestep
        if cfg.repa_encoder_name_or_path:
            hyperparameters |= {
                "repa_encoder": cfg.repa_encoder_name_or_path,  # a local path is reduced to its folder name
                "repa_weight": cfg.repa_weight,
                "repa_block": cfg.repa_block,
            }
        hyperparameters |= {"mixed_precision": accelerator.mixed_precision, "num_processes": accelerator.num_processes}
        card = render_model_card(
            ModelCardData(
                library_name="diffusers",
                license="apache-2.0",
                base_model=hub_id(cfg.pretrained_model_name_or_path),
                datasets=[hub_id(cfg.dataset_name)] if hub_id(cfg.dataset_name) else None,
                tags=["diffusers", "audio-to-image", "diffusers-sonify"] + (["lora"] if lora_layers else []),
            ),
            repo_id=repo_id or cfg.hub_model_id,
            base_model=cfg.pretrained_model_name_or_path or cfg.pretrained_pipeline,
            audio_encoder=cfg.audio_encoder_name_or_path or type(c["audio_encoder"]).__name__,
            dataset=cfg.dataset_name,
            lora=lora_layers is not None,
            steps=global_step,
            hyperparameters=hyperparameters,
            validation_grid="validation_grid.png" if cfg.validation_audio else None,
        )
        card.save(output_dir / "README.md")
        logger.info(f"saved to {output_dir.resolve()}", main_process_only=True)
        if cfg.validation_audio:
            if lora_layers is not None:
                tu.load_unet_lora(pipeline, output_dir)  # validate what a user loads: base pipeline + LoRA file
            images = tu.generate_validation_images(
                pipeline, cfg.validation_audio, cfg.validation_inference_steps, cfg.validation_guidance_scale, cfg.seed
            )
            grid = tu.image_grid(images)
            (output_dir / "validation").mkdir(exist_ok=True)
            grid.save(output_dir / "validation" / f"step_{global_step:06d}.png")
            grid.save(output_dir / "validation_grid.png")
        if cfg.push_to_hub:
            commit = tu.push_training_output(output_dir, repo_id, private=cfg.hub_private)
            logger.info(f"pushed to {getattr(commit, 'commit_url', repo_id)}", main_process_only=True)
    accelerator.end_training()


if __name__ == "__main__":
    main()
