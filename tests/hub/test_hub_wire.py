"""Wire-level push -> pull round trips of every artifact against the loopback Hub server (tests/hub/hub_server.py).

Each push and each pull runs in a fresh interpreter with `HF_ENDPOINT` pointing at the server and an empty
`HF_HOME`, so everything a pull returns came over HTTP.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hub_helpers import FAKE_TOKEN, run_script
from hub_scripts import SR, example_sound, rows_digest

from diffusers_sonify.hub import push_folder

REPO = Path(__file__).resolve().parents[2]


def local_files(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".cache" not in p.relative_to(folder).parts  # huggingface_hub's local_dir metadata
    }


def assert_same_pipeline_files(local: Path, pulled: Path):
    """Weights and every non-JSON file byte-identical; JSON configs equal up to `_name_or_path` (a re-save's path)."""
    local_names = sorted(local_files(local))
    assert set(local_names) <= set(local_files(pulled))
    for name in local_names:
        a, b = (local / name).read_bytes(), (pulled / name).read_bytes()
        if name.endswith(".json"):
            a, b = ({k: v for k, v in json.loads(x).items() if k != "_name_or_path"} for x in (a, b))
        assert a == b, name


def reference_images(folder, lora=None) -> np.ndarray:
    from hub_scripts import generate

    from diffusers_sonify import AudioToImagePipeline

    return generate(AudioToImagePipeline.from_pretrained(folder), lora)


def assert_token_nowhere(state, *logs: str):
    """The fake token reached the server in Authorization headers, and appears in no log and no pushed file."""
    assert any(h.get("authorization") == f"Bearer {FAKE_TOKEN}" for h in state.headers_seen)
    for log in logs:
        assert FAKE_TOKEN not in log and FAKE_TOKEN[3:] not in log
    for repo in state.repos.values():
        for commit in repo.commits:
            for path, entry in commit.files.items():
                data = state.file_bytes(entry)
                assert FAKE_TOKEN.encode() not in data and FAKE_TOKEN[3:].encode() not in data, path


# ---------------------------------------------------------------------------------------------- the server itself
UPLOAD_SEQUENCE = [("POST", "create_repo"), ("POST", "preupload"), ("POST", "lfs_batch"), ("PUT", "lfs_put")]


def test_server_speaks_the_hub_protocol(hub, tmp_path):
    """Upload and download through HfApi record the request sequence huggingface_hub really makes; revisions work."""
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download

    state, url = hub
    api = HfApi(endpoint=url, token=FAKE_TOKEN)
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text('{"a": 1}')
    (folder / "sub" / "weights.safetensors").write_bytes(bytes(range(256)) * 8)
    repo_id = api.create_repo("org/protocol").repo_id
    first = api.upload_folder(repo_id=repo_id, folder_path=folder)
    assert state.requests[:5] == UPLOAD_SEQUENCE + [("POST", "commit")]
    assert api.model_info(repo_id).sha == first.oid
    (folder / "config.json").write_text('{"a": 2}')
    api.upload_folder(repo_id=repo_id, folder_path=folder)  # second commit: the LFS file is already there
    assert ("PUT", "lfs_put") not in state.requests[5:]

    cache = tmp_path / "cache"
    root = Path(snapshot_download(repo_id, endpoint=url, cache_dir=cache, token=FAKE_TOKEN))
    assert local_files(root) == {**local_files(folder), ".gitattributes": local_files(root)[".gitattributes"]}
    old = hf_hub_download(repo_id, "config.json", revision=first.oid, endpoint=url, cache_dir=cache)
    assert json.loads(Path(old).read_text()) == {"a": 1}
    assert [b.name for b in api.list_repo_refs(repo_id).branches] == ["main"]
    assert len(api.list_repo_commits(repo_id)) == 3  # initial commit + two uploads
    with pytest.raises(Exception, match="RepoNotFound|not found|404"):
        api.model_info("org/missing")


# ---------------------------------------------------------------------------------------------- round trips
@pytest.mark.slow
def test_pipeline_push_pull_round_trip(hub, hub_env, tiny_pipe_dir, tmp_path):
    state, _ = hub
    pushed = run_script(hub_env, "push-pipeline", tiny_pipe_dir, "org/sonify-tiny")
    pulled = run_script(hub_env, "pull-files", "org/sonify-tiny", tmp_path / "pulled")
    assert_same_pipeline_files(Path(tiny_pipe_dir), tmp_path / "pulled")
    assert (tmp_path / "pulled" / "README.md").is_file()  # push_to_hub wrote a card
    out = tmp_path / "pulled.npy"
    generated = run_script(hub_env, "generate", "org/sonify-tiny", out)
    np.testing.assert_allclose(np.load(out), reference_images(tiny_pipe_dir), atol=1e-4)
    assert_token_nowhere(state, *(p.stdout + p.stderr for p in (pushed, pulled, generated)))


@pytest.mark.slow
def test_lora_push_pull_round_trip(hub, hub_env, tiny_pipe_dir, tmp_path):
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from diffusers_sonify import AudioToImagePipeline
    from diffusers_sonify.tiny import tiny_pipeline

    trained = tiny_pipeline(seed=0)
    trained.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
    with torch.no_grad():
        for name, param in trained.unet.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5, generator=torch.Generator().manual_seed(7))
    lora_dir = tmp_path / "lora"
    AudioToImagePipeline.save_lora_weights(
        lora_dir, unet_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(trained.unet))
    )
    run_script(hub_env, "push-folder", lora_dir, "org/sonify-lora")
    out = tmp_path / "pulled.npy"
    run_script(hub_env, "generate", tiny_pipe_dir, out, "org/sonify-lora")
    with_lora = reference_images(tiny_pipe_dir, lora=str(lora_dir))
    assert np.abs(with_lora - reference_images(tiny_pipe_dir)).max() > 1e-3  # the LoRA matters
    np.testing.assert_allclose(np.load(out), with_lora, atol=1e-4)


def _tiny_dataset(path: Path, n: int = 4) -> str:
    from datasets import Audio, Dataset, Features, Image, Value
    from PIL import Image as PILImage

    def wav(i):
        buffer = io.BytesIO()
        sf.write(
            buffer,
            (0.3 * np.sin(2 * np.pi * (200 + 150 * i) * np.arange(SR) / SR)).astype(np.float32),
            SR,
            format="WAV",
        )
        return buffer.getvalue()

    images = [PILImage.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)) for i in range(n)]
    features = Features({"image": Image(), "audio": Audio(decode=False), "caption": Value("string")})
    Dataset.from_dict(
        {"image": images, "audio": [{"bytes": wav(i), "path": None} for i in range(n)], "caption": ["x"] * n},
        features=features,
    ).save_to_disk(str(path))
    return str(path)


@pytest.mark.slow
def test_training_output_push_pull_and_card_quickstart(hub, hub_env, tmp_path):
    """train.py --push_to_hub uploads the output; the pulled pipeline + LoRA equal the local output, and the
    quickstart in the pushed model card runs against the pulled repo."""
    import subprocess

    from diffusers_sonify.tiny import tiny_pipeline

    state, _ = hub
    base = tmp_path / "base"
    tiny_pipeline(seed=0).save_pretrained(base)
    data = _tiny_dataset(tmp_path / "data")
    out_dir = tmp_path / "trained"
    cmd = [sys.executable, str(REPO / "train_scripts/train.py"), str(REPO / "train_scripts/configs/tiny.yaml")]
    cmd += ["--pretrained_pipeline", str(base), "--dataset_name", data, "--output_dir", str(out_dir)]
    cmd += ["--lora_rank", "4", "--max_train_steps", "2", "--report_to", "none", "--cache_dir", str(tmp_path / "c")]
    cmd += ["--push_to_hub", "--hub_model_id", "org/sonify-trained"]
    train = subprocess.run(cmd, env=hub_env, capture_output=True, text=True, timeout=300)
    assert train.returncode == 0, train.stderr[-5000:]

    run_script(hub_env, "pull-files", "org/sonify-trained", tmp_path / "pulled")
    from diffusers_sonify.training_utils import files_to_push

    local, remote = local_files(out_dir), local_files(tmp_path / "pulled")
    assert remote.keys() - {".gitattributes"} == set(files_to_push(out_dir))
    assert {k: local[k] for k in files_to_push(out_dir)} == {k: v for k, v in remote.items() if k != ".gitattributes"}
    out = tmp_path / "pulled.npy"
    run_script(hub_env, "generate", "org/sonify-trained", out, "org/sonify-trained")
    np.testing.assert_allclose(np.load(out), reference_images(out_dir, lora=str(out_dir)), atol=1e-4)

    card = next(
        state.file_bytes(e)
        for p, e in state.repos[("model", "org/sonify-trained")].commits[-1].files.items()
        if p == "README.md"
    ).decode()
    assert str(tmp_path) not in card and "/tmp/" not in card
    quickstart = re.search(r"```py\n(.*?)```", card, re.S)[1]
    assert 'from_pretrained("org/sonify-trained")' in quickstart
    run_dir = tmp_path / "quickstart"
    run_dir.mkdir()
    sf.write(run_dir / "rain_on_a_window.wav", example_sound(), SR)
    (run_dir / "quickstart.py").write_text(quickstart.replace("num_inference_steps=25", "num_inference_steps=2"))
    quick = subprocess.run([sys.executable, "quickstart.py"], env=hub_env, cwd=run_dir, capture_output=True, text=True)
    assert quick.returncode == 0, quick.stderr[-3000:]
    assert (run_dir / "heard.png").is_file()
    assert_token_nowhere(state, train.stdout + train.stderr, quick.stdout + quick.stderr)


@pytest.mark.slow
def test_dataset_builder_push_pull_round_trip(hub, hub_env, tmp_path):
    """build.py --push_to_hub publishes the built folder; load_dataset(<repo id>) gives the local rows."""
    import subprocess

    helpers = REPO / "tests" / "sonification"
    sys.path.insert(0, str(helpers))
    from sonify_helpers import make_corpora

    image_path, audio_path = make_corpora(tmp_path, num_images=4, num_clips=8, bad_rows=False)
    out = tmp_path / "built"
    env = dict(hub_env, PYTHONPATH=f"{helpers}:{hub_env['PYTHONPATH']}")
    cmd = [sys.executable, str(REPO / "dataset_builder/build.py"), str(REPO / "dataset_builder/configs/default.yaml")]
    cmd += ["--image_dataset", image_path, "--audio_dataset", audio_path, "--output_dir", str(out)]
    cmd += ["--image_id_column", "photo_id", "--audio_id_column", "clip_name", "--metadata_columns", "metadata"]
    cmd += ["--describer", "sonify_helpers:ScriptedDescriber", "--sample_rate", "16000", "--duration_s", "1"]
    cmd += ["--min_score", "0.4", "--push_to_hub", "--hub_model_id", "org/sonified-tiny"]
    build = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-5000:]

    rows = tmp_path / "rows.json"
    run_script(hub_env, "pull-dataset", "org/sonified-tiny", rows)
    from datasets import load_dataset

    local = rows_digest(load_dataset(str(out), split="train"))
    assert len(local) > 0 and json.loads(rows.read_text()) == local
    state, _ = hub
    card = state.file_bytes(state.repos[("dataset", "org/sonified-tiny")].branches["main"].files["README.md"])
    assert str(tmp_path).encode() not in card
    assert_token_nowhere(state, build.stdout + build.stderr)


# ---------------------------------------------------------------------------------------------- failures
@pytest.mark.slow
def test_push_survives_server_errors_and_retry_completes(hub, hub_env, tiny_pipe_dir, tmp_path):
    state, _ = hub
    before = local_files(Path(tiny_pipe_dir))
    state.fail_lfs_put = 10**6  # the server keeps failing every large-file upload: one clear error
    failed = run_script(hub_env, "push-folder", tiny_pipe_dir, "org/flaky", check=False, timeout=120)
    assert failed.returncode != 0
    errors = [line for line in failed.stderr.splitlines() if re.match(r"[\w.]+(Error|Exception): ", line)]
    assert len(errors) == 1 and errors[0].startswith("diffusers_sonify.hub.HubPushError: Pushing")
    assert "org/flaky" in errors[0] and "500" in errors[0] and "run the same push again" in errors[0]
    assert state.repos[("model", "org/flaky")].branches["main"].files.keys() == {".gitattributes"}  # no half commit
    assert local_files(Path(tiny_pipe_dir)) == before
    state.fail_lfs_put = 1  # the retried push meets one more transient 500: huggingface_hub's own retry absorbs it
    run_script(hub_env, "push-folder", tiny_pipe_dir, "org/flaky")
    assert state.fail_lfs_put == 0
    head = state.repos[("model", "org/flaky")].branches["main"].files
    assert {p: hashlib.sha256(state.file_bytes(e)).hexdigest() for p, e in head.items() if p in before} == before


@pytest.mark.slow
def test_push_to_unreachable_hub_is_one_clear_error(hub_env, tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    env = dict(hub_env, HF_ENDPOINT=f"http://127.0.0.1:{port}")
    failed = run_script(env, "push-folder", tmp_path / "model", "org/x", check=False, timeout=120)
    errors = [line for line in failed.stderr.splitlines() if re.match(r"[\w.]+(Error|Exception): ", line)]
    assert failed.returncode != 0 and len(errors) == 1, failed.stderr[-3000:]
    assert re.match(
        r"diffusers_sonify.hub.HubPushError: Pushing 'model' to the Hub repo 'org/x' failed: .*", errors[0]
    )
    assert "refused" in errors[0].lower() and "run the same push again" in errors[0]
    assert (tmp_path / "model" / "config.json").read_text() == "{}"
    with pytest.raises(ValueError, match="org/name"):
        push_folder(tmp_path / "model", "no-namespace")
