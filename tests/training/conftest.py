"""Tiny saved models and a tiny image+audio dataset for the training tests (built once per session)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from train_helpers import SR, scene, sound, wav_bytes


@pytest.fixture(scope="session")
def tiny_dataset_dir(tmp_path_factory) -> str:
    """8 rows: `image` (Image), `audio` (Audio, 16 kHz WAV bytes), `caption`; saved with save_to_disk."""
    from datasets import Audio, Dataset, Features, Image, Value

    n = 8
    features = Features({"image": Image(), "audio": Audio(decode=False), "caption": Value("string")})
    ds = Dataset.from_dict(
        {
            "image": [scene(i) for i in range(n)],
            "audio": [{"bytes": wav_bytes(sound(i)), "path": None} for i in range(n)],
            "caption": [f"scene {i}" for i in range(n)],
        },
        features=features,
    ).cast_column("audio", Audio())
    path = tmp_path_factory.mktemp("data") / "tiny"
    ds.save_to_disk(str(path))
    return str(path)


@pytest.fixture(scope="session")
def bad_rows_dataset_dir(tmp_path_factory) -> str:
    """10 rows: 8 good ones, row 8 with a truncated JPEG, row 9 with a NaN waveform; saved with save_to_disk."""
    import io

    from datasets import Audio, Dataset, Features, Image, Value

    buf = io.BytesIO()
    scene(8).save(buf, format="JPEG")
    images = [{"bytes": _png(scene(i)), "path": None} for i in range(8)]
    images += [{"bytes": buf.getvalue()[:300], "path": None}, {"bytes": _png(scene(9)), "path": None}]
    nan_wave = sound(9).copy()
    nan_wave[::7] = np.nan
    audio = [{"bytes": wav_bytes(sound(i)), "path": None} for i in range(9)] + [{"bytes": wav_bytes(nan_wave)}]
    features = Features({"image": Image(), "audio": Audio(), "caption": Value("string")})
    ds = Dataset.from_dict(
        {"image": images, "audio": audio, "caption": [f"scene {i}" for i in range(10)]}, features=features
    )
    path = tmp_path_factory.mktemp("bad") / "with_bad_rows"
    ds.save_to_disk(str(path))
    return str(path)


def _png(image) -> bytes:
    import io

    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="session")
def validation_wavs(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("val")
    paths = []
    for i, freq in enumerate((330.0, 990.0)):
        p = folder / f"val{i}.wav"
        t = np.arange(SR) / SR
        sf.write(p, (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32), SR)
        paths.append(str(p))
    return paths


@pytest.fixture(scope="session")
def tiny_text_pipe_dir(tmp_path_factory) -> str:
    """A tiny latent AudioToImagePipeline with a CLIP text encoder, saved."""
    from diffusers_sonify.tiny import tiny_pipeline

    path = tmp_path_factory.mktemp("pipe_text")
    tiny_pipeline(seed=0, with_text=True).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_base_dirs(tmp_path_factory) -> tuple[str, str]:
    """(base text-to-image folder with unet/vae/scheduler/text_encoder/tokenizer, audio encoder folder)."""
    from diffusers_sonify.tiny import tiny_pipeline_components

    c = tiny_pipeline_components(seed=1, with_text=True)
    base = tmp_path_factory.mktemp("base")
    for name in ("unet", "vae", "scheduler", "text_encoder", "tokenizer"):
        c[name].save_pretrained(base / name)
    audio = tmp_path_factory.mktemp("clap")
    c["audio_encoder"].save_pretrained(audio)
    c["feature_extractor"].save_pretrained(audio)
    return str(base), str(audio)


@pytest.fixture(scope="session")
def tiny_vlm_dir(tmp_path_factory) -> str:
    """A tiny Idefics3 (the toy VLM's family: 32-px images, 8 x 8 patches) saved whole, as a REPA encoder."""
    from diffusers_sonify.tiny import tiny_idefics3

    path = tmp_path_factory.mktemp("vlm")
    tiny_idefics3(path, seed=3, image_size=32, patch_size=4)
    return str(path)
