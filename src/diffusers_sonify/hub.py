"""Hub artifacts: model and dataset cards rendered from the packaged templates, and folder pushes.

The Jinja templates are package data (`diffusers_sonify/model_cards/*.md.j2`, the repository's `model_cards/`
folder), so an installed wheel renders cards outside a source checkout. Cards hold only facts a reader elsewhere can
use: local paths are replaced by their folder name, and a model's licence follows its base model.
"""

from __future__ import annotations

import logging
import os
import re
from importlib import resources
from pathlib import Path

from huggingface_hub import DatasetCard, DatasetCardData, ModelCard, ModelCardData

logger = logging.getLogger(__name__)

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

# Licences of base models this project fine-tunes. A derivative carries its base model's licence (the OpenRAIL
# licences require it: use restrictions pass on to derivatives, CreativeML OpenRAIL-M section III.4).
BASE_MODEL_LICENSES = {
    "stable-diffusion-v1-5/stable-diffusion-v1-5": "creativeml-openrail-m",
    "runwayml/stable-diffusion-v1-5": "creativeml-openrail-m",
    "CompVis/stable-diffusion-v1-4": "creativeml-openrail-m",
    "stabilityai/stable-diffusion-2-1": "openrail++",
    "stabilityai/stable-diffusion-2-1-base": "openrail++",
    "stabilityai/stable-diffusion-xl-base-1.0": "openrail++",
}


def template_path(name: str, templates_dir: str | os.PathLike | None = None) -> Path:
    """Path of a card template shipped with the package (e.g. `template_path("dataset_card.md.j2")`), or of one in
    `templates_dir`; a clear error when it is missing."""
    root = Path(templates_dir) if templates_dir else Path(str(resources.files("diffusers_sonify") / "model_cards"))
    path = root / name
    if not path.is_file():
        raise FileNotFoundError(
            f"Card template {name!r} not found in {str(root)!r}. Pass `templates_dir=` pointing at a folder that "
            "holds it, or reinstall diffusers-sonify (the wheel ships them in diffusers_sonify/model_cards)."
        )
    return path


def is_local_path(value) -> bool:
    """True when `value` names a local file or folder rather than a Hub repo id."""
    if not isinstance(value, (str, os.PathLike)):
        return False
    text = os.fspath(value)
    return os.path.isabs(text) or text.startswith(("./", "../", "~")) or os.path.exists(text)


def public_name(value):
    """`value` as a card may show it: a Hub id unchanged, a local path reduced to `<folder name> (local folder)`."""
    if value is None or not is_local_path(value):
        return value
    return f"{Path(os.fspath(value)).expanduser().resolve().name} (local folder)"


def hub_repo_id(value) -> str | None:
    """`value` when it is a Hub repo id (the only thing card metadata such as `base_model` may name), else None."""
    if isinstance(value, str) and _REPO_ID.match(value) and not is_local_path(value):
        return value
    return None


def base_model_license(base_model) -> str | None:
    """The licence a model fine-tuned from `base_model` inherits: from the table of known bases, or from the
    `license` in the README metadata of a local base folder. None when unknown."""
    if base_model is None:
        return None
    if not is_local_path(base_model):
        return BASE_MODEL_LICENSES.get(str(base_model))
    readme = Path(os.fspath(base_model)).expanduser() / "README.md"
    if readme.is_file():
        data = ModelCard.load(readme).data
        if data.license:
            return data.license
        if data.base_model:
            return base_model_license(data.base_model if isinstance(data.base_model, str) else data.base_model[0])
    return None


def _scrub(value):
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_scrub(v) for v in value)
    return public_name(value) if isinstance(value, (str, os.PathLike)) else value


def render_model_card(
    card_data: ModelCardData,
    template: str = "model_card.md.j2",
    templates_dir=None,
    *,
    evaluation: dict | None = None,
    **context,
) -> ModelCard:
    """Render a model card: YAML metadata from `card_data`, body from the template with `context`.

    Context keys the packaged template uses: `repo_id`, `base_model`, `audio_encoder`, `dataset`, `lora` (bool),
    `steps`, `hyperparameters` (dict), `validation_grid` (file name in the repo), and optionally `evaluation`
    (metric name -> value, shown as a table). Local paths anywhere in the context are reduced to folder names; the
    metadata's `base_model`/`datasets` keep only Hub ids; the licence is the base model's when it is known.
    """
    derived = base_model_license(context.get("base_model"))
    if derived and derived != card_data.license:
        logger.info("Model card licence: %s, inherited from the base model (was %s).", derived, card_data.license)
        card_data.license = derived
    base = card_data.base_model
    if base is not None:
        ids = [b for b in ([base] if isinstance(base, str) else base) if hub_repo_id(b)]
        card_data.base_model = (ids[0] if len(ids) == 1 else ids) or None
    if card_data.datasets:
        card_data.datasets = [d for d in card_data.datasets if hub_repo_id(d)] or None
    context = _scrub(context)
    context.setdefault("repo_id", None)
    context.setdefault("hyperparameters", {})
    context["license"] = card_data.license
    context["remote_code_usage"] = remote_code_usage(context["repo_id"]) if context.pop("remote_code", False) else ""
    text = template_path(template, templates_dir).read_text()
    return ModelCard.from_template(card_data, template_str=text, evaluation=evaluation or {}, **context)


def remote_code_usage(repo_id: str | None) -> str:
    """The model card section on loading an exported repo (see [`export_remote_code`]) without the package."""
    name = repo_id or "path/to/this/folder"
    return f"""
Without the package, this repository carries the pipeline and adapter code as files (`pipeline.py`,
`audio_projection/audio_projection.py`), which diffusers runs when you pass `trust_remote_code=True`:

```python
import soundfile as sf
from diffusers import DiffusionPipeline

pipe = DiffusionPipeline.from_pretrained("{name}", trust_remote_code=True)
audio, sampling_rate = sf.read("rain_on_a_window.wav", dtype="float32")
image = pipe(audio, sampling_rate=sampling_rate, num_inference_steps=25).images[0]
```

`trust_remote_code=True` means: Python files from this repository are downloaded and executed on your machine with
your permissions. Read them first (or pin a reviewed `revision=`). Without the flag, loading stops with an error that
asks for it.

"""


def render_dataset_card(
    card_data: DatasetCardData, template: str = "dataset_card.md.j2", templates_dir=None, **context
) -> DatasetCard:
    """Render a dataset card: YAML metadata from `card_data`, body from the template with `context`.

    Sets `size_categories` from `context["report"]["num_rows"]` when the caller did not, and reduces local paths in
    the context (corpus folders, model folders) to folder names.
    """
    num_rows = (context.get("report") or {}).get("num_rows")
    if getattr(card_data, "size_categories", None) is None and isinstance(num_rows, int):
        card_data.size_categories = [_size_category(num_rows)]
    context = _scrub(context)
    context.setdefault("repo_id", None)
    text = template_path(template, templates_dir).read_text()
    return DatasetCard.from_template(card_data, template_str=text, **context)


def _size_category(n: int) -> str:
    # The Hub's size_categories buckets
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "n>1M"


class HubPushError(RuntimeError):
    """A push to the Hub failed; the local folder is untouched and the same call can be repeated."""


def push_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    repo_type: str = "model",
    token: str | None = None,
    private: bool | None = None,
    ignore_patterns: list[str] | None = None,
    commit_message: str = "Upload with diffusers-sonify",
) -> str:
    """Create `repo_id` if needed and upload `folder` to it in one commit; returns the commit URL.

    Any network or server failure becomes one [`HubPushError`] that names the repo and the cause. Nothing local is
    modified, and a repeated call completes the push (large files the server already holds are not re-sent).
    """
    import httpx2
    from huggingface_hub import create_repo, upload_folder
    from huggingface_hub.errors import HfHubHTTPError

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"Cannot push {str(folder)!r}: it is not a folder.")
    if not isinstance(repo_id, str) or not _REPO_ID.match(repo_id):
        raise ValueError(f"Repo id must look like `org/name`, got {repo_id!r}.")
    try:
        sdk = "gradio" if repo_type == "space" else None  # a Space needs an SDK; the app is spaces/app.py
        repo_id = create_repo(
            repo_id, repo_type=repo_type, token=token, private=private, exist_ok=True, space_sdk=sdk
        ).repo_id
        commit = upload_folder(
            repo_id=repo_id,
            repo_type=repo_type,
            folder_path=str(folder),
            token=token,
            commit_message=commit_message,
            ignore_patterns=ignore_patterns,
        )
    # huggingface_hub reports a failed large-file upload as RuntimeError("Error while uploading ...") chained to the
    # HTTP error; both lines go into the one message.
    except (HfHubHTTPError, httpx2.HTTPError, OSError, RuntimeError) as e:
        causes, error = [], e
        while error is not None and len(causes) < 4:
            line = str(error).splitlines()[0] if str(error) else type(error).__name__
            if line not in causes:
                causes.append(line)
            error = error.__cause__ or error.__context__
        raise HubPushError(
            f"Pushing {folder.name!r} to the Hub repo {repo_id!r} failed: {' <- '.join(causes)}. The local folder is "
            "unchanged; run the same push again to complete it."
        ) from None
    return str(commit.commit_url)


# ------------------------------------------------------------------------------------- self-contained export
# Modules whose code goes into the exported repo, in dependency order; their relative imports are removed because
# the concatenation defines every name they import.
_EXPORTED_MODULES = (
    "audio.py",
    "models/audio_encoders.py",
    "models/audio_projection.py",
    "pipelines/audio_to_image.py",
)
_RELATIVE_IMPORT = re.compile(r"^from \.+[\w.]* import (\([^)]*\)|[^\n]*)\n", re.M)


def _module_body(relative: str) -> str:
    text = (resources.files("diffusers_sonify") / relative).read_text()
    text = text.replace("from __future__ import annotations\n", "")
    return _RELATIVE_IMPORT.sub("", text)


def export_remote_code(
    pipeline_dir: str | os.PathLike, output_dir: str | os.PathLike, repo_id: str | None = None
) -> Path:
    """Write a copy of a saved `AudioToImagePipeline` folder that loads without diffusers-sonify installed.

    The repo gets `pipeline.py` (the pipeline with the audio helpers and adapter it uses) and
    `audio_projection/audio_projection.py` (the adapter as a diffusers custom component), and `model_index.json`
    points at them, so `DiffusionPipeline.from_pretrained(<repo>, trust_remote_code=True)` loads it. It also gets the
    Inference Endpoints `handler.py` and its `requirements.txt`. Weights are copied unchanged.

    Args:
        pipeline_dir: a folder written by `AudioToImagePipeline.save_pretrained` (or a training output).
        output_dir: where to write the repo folder (created; must not exist or be empty).
        repo_id: the Hub id the folder will be pushed to, for the usage snippet added to its README.md.
    Returns:
        The output folder.
    """
    import json
    import shutil

    source, out = Path(pipeline_dir), Path(output_dir)
    index_path = source / "model_index.json"
    if not index_path.is_file():
        raise FileNotFoundError(f"{str(source)!r} has no model_index.json: pass a saved AudioToImagePipeline folder.")
    index = json.loads(index_path.read_text())
    if index.get("_class_name") != "AudioToImagePipeline":
        raise ValueError(f"{str(source)!r} holds a {index.get('_class_name')}, not an AudioToImagePipeline.")
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"Export folder {str(out)!r} is not empty; choose a new folder.")
    shutil.copytree(source, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("checkpoint-*", "logs"))

    code = "from __future__ import annotations\n\n" + "\n\n".join(_module_body(m) for m in _EXPORTED_MODULES)
    # The adapter is loaded from its component file, a different module than the copy in pipeline.py: annotate the
    # pipeline argument with the base class so diffusers' type check accepts it.
    code = code.replace("audio_projection: AudioProjectionModel,", "audio_projection: ModelMixin,", 1)
    header = '"""AudioToImagePipeline (diffusers-sonify), self-contained for `trust_remote_code=True` loading."""\n'
    (out / "pipeline.py").write_text(header + code)
    adapter = "from __future__ import annotations\n\n" + _module_body("models/audio_projection.py")
    (out / "audio_projection" / "audio_projection.py").write_text(adapter)
    for name in ("handler.py", "requirements.txt"):
        (out / name).write_text((resources.files("diffusers_sonify") / "hub_files" / name).read_text())
    for path in (out / "pipeline.py", out / "audio_projection" / "audio_projection.py"):
        leftover = re.findall(r"^\s*(?:from|import) (?:\.|diffusers_sonify)\S*", path.read_text(), re.M)
        if leftover:
            raise RuntimeError(f"Exported {path.name} still imports {leftover}; update `_EXPORTED_MODULES`.")

    readme = out / "README.md"
    if readme.is_file():  # add the trust_remote_code usage to the card rendered at training time
        card = ModelCard.load(readme)
        section = remote_code_usage(repo_id)
        card.text = card.text.replace("## Inference", section.lstrip("\n") + "## Inference", 1)
        if section.strip() not in card.text:
            card.text += section
        card.save(readme)

    index["_class_name"] = ["pipeline", "AudioToImagePipeline"]
    index["audio_projection"] = ["audio_projection", "AudioProjectionModel"]
    (out / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return out


def prepare_space(app_dir: str | os.PathLike, output_dir: str | os.PathLike) -> Path:
    """A Space folder: the Gradio app files from `app_dir` (the repository's `spaces/`) plus a copy of the installed
    diffusers_sonify package beside `app.py`, since the package is not on PyPI. Push it with
    `push_folder(folder, "<user>/<space>", repo_type="space")`; set `SONIFY_MODEL` in the Space settings."""
    import shutil

    app_dir, out = Path(app_dir), Path(output_dir)
    if not (app_dir / "app.py").is_file() or not (app_dir / "README.md").is_file():
        raise FileNotFoundError(f"{str(app_dir)!r} must hold app.py and README.md (the repository's spaces/ folder).")
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"Space folder {str(out)!r} is not empty; choose a new folder.")
    shutil.copytree(app_dir, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    package = Path(str(resources.files("diffusers_sonify")))
    shutil.copytree(package, out / "diffusers_sonify", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return out
