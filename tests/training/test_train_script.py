"""End-to-end runs of `train_scripts/train.py` under `accelerate launch` (CPU): few launches, many assertions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import soundfile as sf
import torch
import yaml
from safetensors.torch import load_file
from train_helpers import launch

from diffusers_sonify.machine import free_port

pytestmark = pytest.mark.slow  # accelerate launch: about 15 s per run

MAX_GRAD_NORM = 0.01  # below the tiny model's gradient norm, so every step is clipped


def read_log(output_dir) -> list[dict]:
    return [json.loads(line) for line in (Path(output_dir) / "train_log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def single_runs(tmp_path_factory, tiny_text_pipe_dir, tiny_dataset_dir, validation_wavs):
    """Run A: 8 uninterrupted steps (two epochs of 4). Run B: the same, killed and resumed twice in a row.

    B stops at step 4 (`max_steps_this_run`, an epoch boundary), resumes and stops at step 7; its checkpoint-7 is
    then deleted, as if the process had been killed after logging step 7 and before saving it, so the last resume
    starts mid-epoch from checkpoint-6 and runs step 7 again. Both: a saved tiny pipeline with a text encoder,
    captions, LoRA rank 4, EMA, logit-normal timesteps, cached latents and audio features, validation every 2 steps,
    the Muon optimizer (the adapter's weight matrices; AdamW for LoRA and the rest), whose state must resume too, and
    the pseudo-Huber loss.
    """
    root = tmp_path_factory.mktemp("runs")
    common = [
        "--pretrained_pipeline",
        tiny_text_pipe_dir,
        "--dataset_name",
        tiny_dataset_dir,
        "--caption_column",
        "caption",
        "--lora_rank",
        "4",
        "--use_ema",
        "--timestep_sampling",
        "logit_normal",  # the toy recipe's draw: its timesteps must resume exactly too
        "--optimizer",
        "muon",
        "--loss_type",
        "huber",
        "--huber_c",
        "0.5",
        "--max_train_steps",
        "8",
        "--max_grad_norm",
        str(MAX_GRAD_NORM),
        "--cache_dir",
        str(root / "cache"),
        "--validation_audio",
        *validation_wavs,
    ]
    single = ["--num_processes", "1", "--cpu"]
    proc = launch(single, [*common, "--output_dir", str(root / "A")])
    b = ["--output_dir", str(root / "B")]
    launch(single, [*common, *b, "--max_steps_this_run", "4"])
    first = read_log(root / "B")
    assert not (root / "B" / "model_index.json").exists(), "an interrupted run must not write the final pipeline"
    launch(single, [*common, *b, "--resume_from_checkpoint", "latest", "--max_steps_this_run", "3"])
    second = read_log(root / "B")
    shutil.rmtree(root / "B" / "checkpoint-7")
    launch(single, [*common, *b, "--resume_from_checkpoint", "latest"])
    return root / "A", root / "B", (first, second), proc.stdout + proc.stderr


def test_exact_resume_across_epochs_and_repeated_kills(single_runs):
    a, b, (first, second), _ = single_runs
    log_a, log_b = read_log(a), read_log(b)
    assert [e["step"] for e in first] == [1, 2, 3, 4]
    assert [e["step"] for e in second] == [1, 2, 3, 4, 5, 6, 7]
    assert [e["step"] for e in log_b] == list(range(1, 9)), "a resumed run must not repeat steps in train_log.jsonl"
    assert [e["indices_per_rank"] for e in log_a] == [e["indices_per_rank"] for e in log_b]
    assert [e["loss"] for e in log_a] == [e["loss"] for e in log_b]
    order = [i for e in log_a for i in e["indices_per_rank"][0]]
    assert sorted(order[:8]) == sorted(order[8:]) == list(range(8)) and order[:8] != order[8:]  # a new epoch order
    for name in ("audio_projection/diffusion_pytorch_model.safetensors", "pytorch_lora_weights.safetensors"):
        wa, wb = load_file(a / name), load_file(b / name)
        assert wa.keys() == wb.keys() and wa
        assert all(torch.equal(wa[k], wb[k]) for k in wa), name
    assert len({e["loss"] for e in log_a}) == 8  # the weights did move


def test_clean_run_output(single_runs):
    a, _, _, output = single_runs
    assert f"saved to {a.resolve()}" in output
    assert "Loading weights" not in output and "Writing model shards" not in output and "No LoRA keys" not in output
    assert "Traceback" not in output and "FutureWarning" not in output and "UserWarning" not in output, output


def test_checkpoints_hold_trainable_weights_only(single_runs, tiny_text_pipe_dir):
    a, _, _, _ = single_runs
    ckpt = a / "checkpoint-2"
    files = sorted(p.name for p in ckpt.iterdir())
    assert "optimizer.bin" in files and "scheduler.bin" in files and "random_states_0.pkl" in files
    assert not [f for f in files if f.startswith("model")], files  # accelerate's full-model files are not written
    tensors = {}
    for f in files:
        if f.startswith("trainable_"):
            tensors.update(load_file(ckpt / f))
    adapter_keys = set(load_file(Path(tiny_text_pipe_dir) / "audio_projection/diffusion_pytorch_model.safetensors"))
    lora = {k for k in tensors if "lora_" in k}
    assert lora and adapter_keys <= set(tensors) and set(tensors) == adapter_keys | lora


def test_clipping_and_log(single_runs):
    a, _, _, _ = single_runs
    log = read_log(a)
    assert all(e["num_processes"] == 1 and e["written_by_rank"] == 0 for e in log)
    for e in log:
        assert e["grad_norm"] > MAX_GRAD_NORM  # the pre-clip norm (what accelerate returns)
        assert e["grad_norm_clipped"] == pytest.approx(MAX_GRAD_NORM, rel=1e-3)
    assert list((a / "logs").rglob("events.out.tfevents.*")), "tensorboard events were not written"
    assert sorted(p.name for p in (a / "validation").iterdir()) == [f"step_00000{i}.png" for i in (2, 4, 6, 8)]


def test_output_reloads_and_lora_reproduces_validation(single_runs, validation_wavs):
    from diffusers_sonify import AudioToImagePipeline

    a, _, _, _ = single_runs
    cfg = yaml.safe_load((Path(__file__).resolve().parents[2] / "train_scripts/configs/tiny.yaml").read_text())
    pipe = AudioToImagePipeline.from_pretrained(a)
    pipe.set_progress_bar_config(disable=True)
    kwargs = dict(
        num_inference_steps=cfg["validation_inference_steps"], guidance_scale=cfg["validation_guidance_scale"]
    )
    base = pipe(
        validation_wavs, generator=torch.Generator().manual_seed(cfg["seed"]), output_type="np", **kwargs
    ).images
    assert base.shape == (2, 32, 32, 3) and np.isfinite(base).all()
    pipe.load_lora_weights(a)
    images = pipe(validation_wavs, generator=torch.Generator().manual_seed(cfg["seed"]), **kwargs).images
    grid = np.asarray(PIL.Image.open(a / "validation_grid.png").convert("RGB"))
    # another process and module instance: float bits may differ by CPU vendor, so one uint8 level is allowed
    reloaded = np.concatenate([np.asarray(i) for i in images], axis=1).astype(int)
    assert np.abs(reloaded - grid.astype(int)).max() <= 1
    without_lora = (np.concatenate(list(base), axis=1) * 255).round().astype(np.uint8)
    assert np.abs(without_lora.astype(int) - grid.astype(int)).max() > 0, "LoRA had no effect on the images"


def test_model_card_and_push_folder(single_runs):
    from huggingface_hub import ModelCard

    from diffusers_sonify.training_utils import files_to_push

    a, _, _, _ = single_runs
    card = ModelCard.load(a / "README.md")
    assert card.data.library_name == "diffusers" and "lora" in card.data.tags
    assert "load_lora_weights" in card.text and "![validation grid](validation_grid.png)" in card.text
    assert "| lora_rank | 4 |" in card.text and "| optimizer | muon |" in card.text
    assert "| loss_type | huber |" in card.text and "| huber_c | 0.5 |" in card.text
    assert "ClapAudioModelWithProjection" in card.text
    pushed = files_to_push(a)
    for name in (
        "model_index.json",
        "README.md",
        "pytorch_lora_weights.safetensors",
        "validation_grid.png",
        "unet/diffusion_pytorch_model.safetensors",
        "audio_projection/config.json",
    ):
        assert name in pushed
    assert not [p for p in pushed if p.startswith(("checkpoint-", "logs/")) or p == "train_log.jsonl"]


PIXEL_UNET = json.dumps(
    {
        "sample_size": 32,
        "in_channels": 3,
        "out_channels": 3,
        "block_out_channels": [32, 32],
        "layers_per_block": 1,
        "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
        "cross_attention_dim": 32,
        "attention_head_dim": 8,
    }
)


def pixel_space_flags(base: str, audio: str) -> list[str]:
    """A pixel-space UNet from `PIXEL_UNET`, the base model's scheduler and an audio encoder folder."""
    return [
        "--unet_config",
        PIXEL_UNET,
        "--scheduler_config",
        f"{base}/scheduler/scheduler_config.json",
        "--audio_encoder_name_or_path",
        audio,
    ]


def test_repa_resumes_exactly_and_its_projector_stays_out_of_the_pipeline(
    tmp_path, tiny_dataset_dir, tiny_base_dirs, tiny_vlm_dir
):
    """REPA with a VLM's vision tower: run A trains 6 steps (8 rows in batches of 2: into a second epoch); run B
    stops mid-epoch at step 3 and resumes. The projector is in the checkpoint, not in the saved pipeline. Run C is B
    with the targets cached before the first step (again after its resume): it trains as A does."""
    base, audio = tiny_base_dirs
    common = [
        *pixel_space_flags(base, audio),
        "--dataset_name",
        tiny_dataset_dir,
        "--train_unet",
        "--random_flip",
        "--optimizer",
        "muon",
        "--repa_encoder_name_or_path",
        tiny_vlm_dir,
        "--repa_projector_dim",
        "24",
        "--attention_processor",
        "AttnProcessor",  # the toy recipe's: exact resume holds with it too
        "--max_train_steps",
        "6",
        "--checkpointing_steps",
        "100",
        "--cache_dir",
        str(tmp_path / "cache"),
        "--report_to",
        "none",
    ]
    single = ["--num_processes", "1", "--cpu"]
    a, b = tmp_path / "A", tmp_path / "B"
    launch(single, [*common, "--output_dir", str(a)])
    launch(single, [*common, "--output_dir", str(b), "--max_steps_this_run", "3"])
    saved = [load_file(f) for f in sorted((b / "checkpoint-3").glob("trainable_*.safetensors"))]
    projector = [s for s in saved if "layers.0.weight" in s]
    assert len(projector) == 1 and projector[0]["layers.0.weight"].shape == (24, 32)  # mid block: 32 channels
    assert projector[0]["layers.4.weight"].shape == (64, 24)  # the VLM's vision width
    launch(single, [*common, "--output_dir", str(b), "--resume_from_checkpoint", "latest"])
    log_a, log_b = read_log(a), read_log(b)
    assert [e["step"] for e in log_b] == list(range(1, 7))
    assert [(e["loss"], e["repa_cosine"]) for e in log_a] == [(e["loss"], e["repa_cosine"]) for e in log_b]
    assert all(-1 < e["repa_cosine"] < 1 for e in log_a) and len({e["repa_cosine"] for e in log_a}) == 6
    unet_file = "unet/diffusion_pytorch_model.safetensors"
    wa, wb = load_file(a / unet_file), load_file(b / unet_file)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    cached = [*common, "--output_dir", str(tmp_path / "C"), "--cache_repa_targets"]
    launch(single, [*cached, "--max_steps_this_run", "3"])
    launch(single, [*cached, "--resume_from_checkpoint", "latest"])
    log_c = read_log(tmp_path / "C")
    assert [e["step"] for e in log_c] == list(range(1, 7))
    # the same numbers up to the products' rounding (the cache runs the rows in order, a step its shuffled batch)
    for name in ("loss", "repa_cosine"):
        torch.testing.assert_close(torch.tensor([e[name] for e in log_c]), torch.tensor([e[name] for e in log_a]))
    wc = load_file(tmp_path / "C" / unet_file)
    for k in wa:
        torch.testing.assert_close(wc[k], wa[k], rtol=1e-4, atol=1e-4)

    from diffusers import UNet2DConditionModel

    from diffusers_sonify import AudioToImagePipeline

    assert set(wa) == set(UNet2DConditionModel.from_config(json.loads(PIXEL_UNET)).state_dict())
    index = json.loads((a / "model_index.json").read_text())
    assert not any("repa" in key for key in index)
    assert sorted(p.name for p in a.glob("*/*.safetensors")) == sorted(
        p.name for p in a.glob("*/*.safetensors") if p.parent.name in index
    )
    pipe = AudioToImagePipeline.from_pretrained(a)
    assert not any("repa" in name for name in pipe.components)
    card = (a / "README.md").read_text()
    assert "repa_weight" in card and "repa_block" in card
    assert f"| repa_encoder | {Path(tiny_vlm_dir).name} (local folder) |" in card and tiny_vlm_dir not in card


def test_two_processes_pixel_space_with_trainable_audio_encoder(
    tmp_path, tiny_dataset_dir, tiny_base_dirs, tiny_vlm_dir
):
    """Two gloo processes; a pixel-space UNet from an inline config; the audio encoder trains (no audio cache);
    REPA on the UNet's 16 x 16 mid block from the encoder's 8 x 8 patches (its projector wrapped in DDP too)."""
    base, audio = tiny_base_dirs
    out = tmp_path / "out"
    launch(
        ["--multi_gpu", "--num_processes", "2", "--main_process_port", str(free_port())],
        [
            *pixel_space_flags(base, audio),
            "--train_audio_encoder",
            "--repa_encoder_name_or_path",
            tiny_vlm_dir,
            "--repa_projector_dim",
            "16",
            "--dataset_name",
            tiny_dataset_dir,
            "--expected_num_processes",
            "2",
            "--output_dir",
            str(out),
            "--cache_dir",
            str(tmp_path / "cache"),
            "--report_to",
            "none",
        ],
    )
    log = read_log(out)
    assert [e["step"] for e in log] == [1, 2]
    assert all(e["num_processes"] == 2 and e["written_by_rank"] == 0 and -1 < e["repa_cosine"] < 1 for e in log)
    for e in log:
        rank0, rank1 = e["indices_per_rank"]
        assert len(rank0) == len(rank1) == 2 and not set(rank0) & set(rank1)
    assert not (tmp_path / "cache").exists(), "audio features must not be cached while the audio encoder trains"

    from diffusers_sonify import AudioToImagePipeline

    pipe = AudioToImagePipeline.from_pretrained(out)
    assert pipe.vae is None and pipe.unet.config.in_channels == 3
    start = load_file(Path(audio) / "model.safetensors")
    trained = load_file(out / "audio_encoder/model.safetensors")
    assert any(not torch.equal(start[k], trained[k]) for k in start), "the audio encoder did not train"
    image = pipe(
        np.sin(np.linspace(0, 800, 16000)).astype(np.float32),
        sampling_rate=16000,
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images
    assert image.shape == (1, 32, 32, 3)


def test_bad_rows_are_skipped_counted_and_named(tmp_path, tiny_text_pipe_dir, bad_rows_dataset_dir):
    out = tmp_path / "out"
    proc = launch(
        ["--num_processes", "1", "--cpu"],
        [
            "--pretrained_pipeline",
            tiny_text_pipe_dir,
            "--dataset_name",
            bad_rows_dataset_dir,
            "--max_train_steps",
            "1",
            "--cache_dir",
            str(tmp_path / "cache"),
            "--report_to",
            "none",
            "--output_dir",
            str(out),
        ],
    )
    skipped = [json.loads(line) for line in (out / "skipped_rows.jsonl").read_text().splitlines()]
    assert [(s["row"], s["column"]) for s in skipped] == [(8, "image"), (9, "audio")]
    assert all(s["dataset"] == bad_rows_dataset_dir for s in skipped)
    assert f"{bad_rows_dataset_dir} row 8 column image" in proc.stderr
    assert f"{bad_rows_dataset_dir} row 9 column audio" in proc.stderr and "NaN" in proc.stderr
    assert "Skipped 2 bad row(s)" in proc.stderr and "Training on 8 rows" in proc.stderr
    assert (out / "model_index.json").is_file()
    from diffusers_sonify.training_utils import files_to_push

    assert "skipped_rows.jsonl" not in files_to_push(out)  # local paths stay local


def test_pipeline_is_saved_before_the_final_validation(tmp_path, monkeypatch, tiny_text_pipe_dir, tiny_dataset_dir):
    """A late error (here: the final validation) must not cost the trained model: it is saved first."""
    import runpy

    from train_helpers import TRAIN

    from diffusers_sonify import training_utils as tu

    def broken_validation(*args, **kwargs):
        raise RuntimeError("validation broke")

    monkeypatch.setattr(tu, "generate_validation_images", broken_validation)
    wav = tmp_path / "v.wav"
    sf.write(wav, np.zeros(16_000, np.float32), 16_000)  # a real sound: train.py decodes it at startup
    main = runpy.run_path(str(TRAIN))["main"]
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="validation broke"):
        main(
            [
                str(Path(TRAIN).parent / "configs" / "tiny.yaml"),
                "--pretrained_pipeline",
                tiny_text_pipe_dir,
                "--dataset_name",
                tiny_dataset_dir,
                "--max_train_steps",
                "1",
                "--validation_audio",
                str(wav),
                "--validation_steps",
                "100",
                "--cache_dir",
                str(tmp_path / "cache"),
                "--report_to",
                "none",
                "--output_dir",
                str(out),
            ]
        )
    assert (out / "model_index.json").is_file() and (out / "README.md").is_file()
    from diffusers_sonify import AudioToImagePipeline

    assert AudioToImagePipeline.from_pretrained(out).audio_projection is not None
