"""Cards: packaged templates, licence from the base model, no local paths, metadata the Hub accepts."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from huggingface_hub import ModelCard, ModelCardData

from diffusers_sonify.hub import base_model_license, render_model_card, template_path

REPO = Path(__file__).resolve().parents[2]


def _card(tmp_path, **overrides):
    context = dict(
        repo_id="org/sonify",
        base_model="stable-diffusion-v1-5/stable-diffusion-v1-5",
        audio_encoder="laion/clap-htsat-unfused",
        dataset=str(tmp_path / "data" / "sonified"),
        lora=True,
        steps=10,
        hyperparameters={"learning_rate": 1e-4, "seed": 0, "output_dir": str(tmp_path / "out")},
        validation_grid="validation_grid.png",
    )
    context.update(overrides)
    # the call train.py makes today: a hard-coded licence and local paths in the context
    data = ModelCardData(
        library_name="diffusers", license="apache-2.0", base_model=context["base_model"], tags=["diffusers"]
    )
    return render_model_card(data, **context)


def test_templates_are_package_data():
    import diffusers_sonify

    package = Path(diffusers_sonify.__file__).parent
    assert template_path("model_card.md.j2").parent == package / "model_cards"
    assert (package / "model_cards" / "dataset_card.md.j2").is_file()
    assert (package / "prompts" / "describe_v1.txt").read_text() == (
        REPO / "dataset_builder" / "prompts" / "describe_v1.txt"
    ).read_text()
    with pytest.raises(FileNotFoundError, match="templates_dir"):
        template_path("missing.md.j2")


def test_model_card_licence_follows_the_base_model(tmp_path):
    card = _card(tmp_path)
    assert card.data.license == "creativeml-openrail-m"
    assert "creativeml-openrail-m (inherited from the base model)" in card.text
    base = tmp_path / "my_base"
    base.mkdir()
    ModelCard("---\nlicense: openrail++\n---\n# base").save(base / "README.md")
    assert base_model_license(str(base)) == "openrail++"
    assert base_model_license("org/unknown-model") is None


def test_model_card_has_no_local_paths_and_no_dead_links(tmp_path):
    card = _card(tmp_path, base_model=str(tmp_path / "pipe"), evaluation={"AIC": 0.75})
    text = str(card)
    assert str(tmp_path) not in text and "/tmp" not in text
    assert "sonified (local folder)" in text and "pipe (local folder)" in text
    assert card.data.base_model is None  # metadata may only name Hub repos
    assert "github.com" not in text
    assert "| AIC | 0.75 |" in text and "## Limitations" in text and "audio-to-image" in text


def test_cards_pass_hub_metadata_validation(hub, monkeypatch, tmp_path):
    from huggingface_hub import constants

    _, url = hub
    monkeypatch.setattr(constants, "ENDPOINT", url)
    _card(tmp_path).validate("model")
    bad = ModelCard("---\nlicense: my-own-licence\nbase_model: /home/me/base\n---\n# x")
    with pytest.raises(ValueError, match="license 'my-own-licence' is not a known licence id"):
        bad.validate("model")


@pytest.mark.slow
def test_wheel_ships_templates_and_prompts_and_renders_outside_the_repo(tmp_path):
    """`pip wheel .` contains the templates and prompts; the unpacked wheel renders a card from another folder."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(REPO), "-w", tmp_path],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    wheel = next(tmp_path.glob("diffusers_sonify-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    shipped = ("model_cards/model_card.md.j2", "model_cards/dataset_card.md.j2", "prompts/describe_v1.txt")
    for name in (*shipped, "hub_files/handler.py", "hub_files/requirements.txt"):
        assert f"diffusers_sonify/{name}" in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "from huggingface_hub import ModelCardData; from diffusers_sonify.hub import render_model_card; "
        "import diffusers_sonify; assert diffusers_sonify.__file__.startswith(%r); "
        "print(render_model_card(ModelCardData(library_name='diffusers'), audio_encoder='x', steps=1).text[:40])"
    ) % str(site)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "diffusers-sonify audio-to-image model" in out.stdout
