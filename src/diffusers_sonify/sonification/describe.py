"""Describe stage: what would each pictured scene sound like?

A [`SoundDescriber`] turns a batch of the image corpus into sound sources and a scene. The default,
[`VLMDescriber`], prompts any transformers image-text-to-text model with a versioned prompt file and parses its
JSON answer with [`parse_description`]; other describers (e.g. one reading procedural scene metadata) plug in
through the `describer: module:Class` config field.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import io
import json
import logging
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from .config import DISTANCES, SETTINGS, SPACES

logger = logging.getLogger(__name__)

# Output columns of the describe stage and their `datasets` types.
SOURCE_FIELDS = ("name", "sound", "prominence", "distance")


def describe_features():
    from datasets import Features, List, Value

    source = {
        "name": Value("string"),
        "sound": Value("string"),
        "prominence": Value("float32"),
        "distance": Value("string"),
    }
    return Features(
        {
            "sound_sources": List(source),
            "scene": {"setting": Value("string"), "space": Value("string")},
            "description_raw": Value("string"),
            "skip_reason": Value("string"),
        }
    )


@runtime_checkable
class SoundDescriber(Protocol):
    """Interface of the describe stage.

    `describe(batch)` receives a batch of the image corpus as a dict of equally long column lists: `image` holds
    decoded RGB `PIL.Image`s, every other corpus column (ids, metadata) is passed through. It returns a dict of
    new columns, one entry per row:

    - `sound_sources`: list of `{"name": str, "sound": str, "prominence": float in [0, 1],
      "distance": "near" | "mid" | "far"}`; `sound` is the short description used as the retrieval query.
    - `scene`: `{"setting": "indoor" | "outdoor", "space": "small" | "medium" | "large" | "open"}` or `None`.
    - `description_raw`: the raw text behind the row (VLM output, or a rendering of the metadata).
    - `skip_reason`: `None`, or why the row cannot be used.

    Optional attributes recorded as provenance: `model_id` (str) and `prompt_version` (str).
    """

    def describe(self, batch: dict) -> dict: ...


# ---------------------------------------------------------------------------------------------------------------------
# Parsing and repair of the JSON answer
# ---------------------------------------------------------------------------------------------------------------------

_DISTANCE_SYNONYMS = {
    "near": "near",
    "close": "near",
    "nearby": "near",
    "foreground": "near",
    "mid": "mid",
    "medium": "mid",
    "middle": "mid",
    "midground": "mid",
    "far": "far",
    "distant": "far",
    "background": "far",
    "faraway": "far",
}
_SPACE_SYNONYMS = {
    "small": "small",
    "tiny": "small",
    "medium": "medium",
    "mid": "medium",
    "large": "large",
    "big": "large",
    "huge": "large",
    "vast": "large",
    "open": "open",
    "outdoors": "open",
    "open-air": "open",
    "unbounded": "open",
}
_PROMINENCE_WORDS = {
    "dominant": 1.0,
    "very high": 0.9,
    "high": 0.8,
    "loud": 0.8,
    "medium": 0.5,
    "moderate": 0.5,
    "low": 0.25,
    "quiet": 0.2,
    "faint": 0.1,
    "very low": 0.1,
}


def _extract_json_text(text: str) -> str | None:
    fenced = re.search(r"```(?:json)?\s*(.*?)(```|$)", text, flags=re.S)
    if fenced and "{" in fenced.group(1):
        text = fenced.group(1)
    start = text.find("{")
    return None if start < 0 else text[start:]


def _close_truncated(text: str) -> str:
    """Cut after the last complete value and close open brackets: repairs output cut off by `max_new_tokens`."""
    stack, in_string, escape, cut = [], False, False, None
    for i, ch in enumerate(text):
        if in_string:
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == '"':
                in_string = False
            continue
        if ch == '"':
            in_string = True
        elif ch in "{[":
            stack.append("}" if ch == "{" else "]")
        elif ch in "}]":
            if not stack:
                return text[:i]
            stack.pop()
            if not stack:
                return text[: i + 1]
            cut = (i + 1, list(stack))
        elif ch == ",":
            cut = (i, list(stack))
    if cut is None:
        return text
    end, still_open = cut
    return text[:end].rstrip().rstrip(",") + "".join(reversed(still_open))


def _loads_lenient(text: str) -> Any:
    candidates = [text, re.sub(r",\s*([}\]])", r"\1", text)]
    for candidate in list(candidates):
        candidates.append(_close_truncated(candidate))
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except json.JSONDecodeError:
            pass
    for candidate in candidates:  # single quotes / Python literals (True, None) from chatty models
        try:
            value = ast.literal_eval(
                candidate.replace("true", "True").replace("false", "False").replace("null", "None")
            )
            if isinstance(value, dict):
                return value
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            pass
    return None


def _prominence(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        v = float(value)
        if 1.0 < v <= 10.0:  # a 0-10 scale
            v /= 10.0
        elif 10.0 < v <= 100.0:  # a percentage
            v /= 100.0
        return min(1.0, max(0.0, v)) if v == v else None
    if isinstance(value, str):
        s = value.strip().lower().rstrip("%")
        if s in _PROMINENCE_WORDS:
            return _PROMINENCE_WORDS[s]
        try:
            return _prominence(float(s))
        except ValueError:
            return None
    return None


def _normalise_source(raw: Any) -> dict | None:
    if not isinstance(raw, dict):
        return None
    name = raw.get("name") or raw.get("source") or raw.get("what")
    sound = raw.get("sound") or raw.get("sound_description") or raw.get("description")
    if not isinstance(name, str) or not name.strip():
        return None
    if not isinstance(sound, str) or not sound.strip():
        sound = name
    prominence = _prominence(raw.get("prominence", raw.get("loudness")))
    distance = raw.get("distance")
    distance = _DISTANCE_SYNONYMS.get(distance.strip().lower()) if isinstance(distance, str) else None
    if prominence is None or distance is None:
        return None
    return {"name": name.strip()[:100], "sound": sound.strip()[:200], "prominence": prominence, "distance": distance}


def parse_description(text: str, max_sources: int = 4) -> tuple[list[dict], dict | None, str | None]:
    """Parse a describer's JSON answer into `(sound_sources, scene, skip_reason)`.

    Safe repairs: text around the JSON or a Markdown fence, trailing commas, single quotes, Python literals,
    output cut off by the token budget (closed after its last complete element), synonyms ("close" -> "near",
    "big" -> "large"), prominence on a 0-10 / percent / word scale. Sources missing a name, prominence or distance
    are dropped; the rest are sorted by prominence and the `max_sources` most prominent kept. When nothing usable
    remains, `skip_reason` says why and the other values are empty.
    """
    if not isinstance(text, str) or not text.strip():
        return [], None, "unparsable description: empty output"
    json_text = _extract_json_text(text)
    if json_text is None:
        return [], None, "unparsable description: no JSON object in the output"
    data = _loads_lenient(json_text)
    if not isinstance(data, dict):
        return [], None, "unparsable description: invalid JSON that could not be repaired"
    raw_sources = data.get("sound_sources", data.get("sources"))
    if not isinstance(raw_sources, list):
        return [], None, "invalid description: `sound_sources` is not a list"
    sources = [s for s in (_normalise_source(r) for r in raw_sources) if s is not None]
    raw_scene = data.get("scene")
    scene = None
    if isinstance(raw_scene, dict):
        setting = str(raw_scene.get("setting", "")).strip().lower()
        setting = {"inside": "indoor", "indoors": "indoor", "outside": "outdoor", "outdoors": "outdoor"}.get(
            setting, setting
        )
        space = _SPACE_SYNONYMS.get(str(raw_scene.get("space", raw_scene.get("size", ""))).strip().lower())
        if setting in SETTINGS and space in SPACES:
            scene = {"setting": setting, "space": space}
    if scene is None:
        return [], None, "invalid description: `scene` needs setting indoor/outdoor and space small/medium/large/open"
    if not sources:
        return [], None, "invalid description: no sound source with name, prominence and distance"
    sources.sort(key=lambda s: -s["prominence"])  # stable: ties keep the model's order
    return sources[:max_sources], scene, None


def describe_result(texts: list[str], max_sources: int = 4) -> dict:
    """Columns of the describe stage from raw texts, via [`parse_description`]."""
    out = {"sound_sources": [], "scene": [], "description_raw": [], "skip_reason": []}
    for text in texts:
        sources, scene, reason = parse_description(text, max_sources=max_sources)
        out["sound_sources"].append(sources)
        out["scene"].append(scene)
        out["description_raw"].append(text if isinstance(text, str) else "")
        out["skip_reason"].append(reason)
    return out


# ---------------------------------------------------------------------------------------------------------------------
# The VLM describer
# ---------------------------------------------------------------------------------------------------------------------


def read_prompt(path: str | Path) -> tuple[str, str]:
    """Prompt text and its version `<file stem>@<sha256[:8] of the text>`: any edit changes the version."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"prompt file {str(path)!r} not found; set `prompt_file` to a file in dataset_builder/prompts/."
        )
    text = path.read_text(encoding="utf-8").strip()
    return text, f"{path.stem}@{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def _torch_dtype(name: str):
    import torch

    if name == "auto":
        return "auto"
    if not hasattr(torch, name):
        raise ValueError(f"`torch_dtype` must be auto, float32, bfloat16 or float16, got {name!r}.")
    return getattr(torch, name)


def image_prompt(processor, prompt: str) -> str:
    """The chat text a VLM gets for one image followed by `prompt`, ending with the generation prompt (the
    processor's chat template). The describer, the reranker and the toy VLM's training prefix all use it."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True)


@lru_cache(maxsize=2)
def load_vlm(model_id: str, device: str = "cpu", torch_dtype: str = "auto", trust_remote_code: bool = False):
    """`(processor, model)` of an image-text-to-text model, loaded once per process and shared by the describer and
    the reranker ([`~diffusers_sonify.sonification.retrieve.VLMReranker`]) when they name the same model.

    The processor's tokenizer pads on the left (batched generation appends after the prompt). Raises `ValueError`
    when the model has no chat template.
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(model_id, trust_remote_code=trust_remote_code)
    if getattr(processor, "chat_template", None) is None:
        raise ValueError(f"`vlm_model` {model_id!r} has no chat template; pick an instruction-tuned VLM that has one.")
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is not None:
        tokenizer.padding_side = "left"
    model = AutoModelForImageTextToText.from_pretrained(
        model_id, dtype=_torch_dtype(torch_dtype), trust_remote_code=trust_remote_code, use_safetensors=True
    )
    return processor, model.to(device).eval()


class VLMDescriber:
    """Prompts a transformers image-text-to-text model (`AutoProcessor` + `AutoModelForImageTextToText`).

    Args:
        model_id (`str`): Hub id or local folder of any VLM with a chat template.
        prompt_file (`str`): versioned prompt; its version is recorded in every row.
        max_new_tokens (`int`): generation budget for the JSON answer.
        batch_size (`int`): images per forward pass.
        max_sources (`int`): sources kept per image.
        device (`str`): e.g. "cpu", "cuda:1".
        torch_dtype (`str`): "auto", "float32", "bfloat16", "float16".
        trust_remote_code (`bool`): allow custom model code (off by default).

    Generation is greedy, so a rerun reproduces the same descriptions.
    """

    def __init__(
        self,
        model_id: str,
        prompt_file: str,
        max_new_tokens: int = 320,
        batch_size: int = 4,
        max_sources: int = 4,
        device: str = "cpu",
        torch_dtype: str = "auto",
        trust_remote_code: bool = False,
    ):
        self.model_id = model_id
        self.prompt, self.prompt_version = read_prompt(prompt_file)
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.max_sources = max_sources
        self.processor, self.model = load_vlm(model_id, str(device), torch_dtype, trust_remote_code)
        self.device = device

    @classmethod
    def from_config(cls, config, device: str = "cpu", **overrides) -> "VLMDescriber":
        kwargs = dict(
            model_id=config.vlm_model,
            prompt_file=config.prompt_file,
            max_new_tokens=config.max_new_tokens,
            batch_size=config.describe_batch_size,
            max_sources=config.max_sources,
            device=device,
            torch_dtype=config.torch_dtype,
            trust_remote_code=config.trust_remote_code,
        )
        kwargs.update(overrides)
        return cls(**kwargs)

    def generate(self, images: list, prompt: str) -> list[str]:
        """One prompt per image -> the model's decoded answers (greedy)."""
        import torch

        text = image_prompt(self.processor, prompt)
        answers = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            inputs = self.processor(images=chunk, text=[text] * len(chunk), padding=True, return_tensors="pt").to(
                self.device
            )
            with torch.inference_mode():
                out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
            new_tokens = out[:, inputs["input_ids"].shape[1] :]
            answers.extend(self.processor.batch_decode(new_tokens, skip_special_tokens=True))
        return answers

    def describe(self, batch: dict) -> dict:
        return describe_result(self.generate(list(batch["image"]), self.prompt), max_sources=self.max_sources)


class JSONColumnDescriber:
    """Reads descriptions already present in a text column (e.g. produced offline by a larger VLM).

    Each cell holds the JSON the prompt asks for (see `dataset_builder/prompts/describe_v1.txt`); it goes through
    the same [`parse_description`]. Needs no model: with `imagefolder:` and a `metadata.csv` holding `file_name` and
    `description` columns it describes a user's own images offline.
    """

    @staticmethod
    def required_columns(column: str = "description", **_) -> list[str]:
        """Image-corpus columns this describer reads, for the build's check before describing."""
        return [column]

    def __init__(self, column: str = "description", max_sources: int = 4, model_id: str = "precomputed"):
        self.column, self.max_sources, self.model_id, self.prompt_version = (
            column,
            max_sources,
            model_id,
            "precomputed",
        )

    def describe(self, batch: dict) -> dict:
        if self.column not in batch:
            raise ValueError(f"JSONColumnDescriber: column {self.column!r} not in the image corpus ({sorted(batch)}).")
        return describe_result(list(batch[self.column]), max_sources=self.max_sources)


# ---------------------------------------------------------------------------------------------------------------------
# Loading and the stage function
# ---------------------------------------------------------------------------------------------------------------------


def import_object(spec: str):
    """`"package.module:Name"` -> the object."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"expected an import path `module:Class`, got {spec!r}.")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"cannot import module {module_name!r} from `describer` {spec!r}: {err}") from err
    if not hasattr(module, attr):
        raise ValueError(f"module {module_name!r} has no attribute {attr!r} (from `describer` {spec!r}).")
    return getattr(module, attr)


def load_describer(config, device: str = "cpu") -> SoundDescriber:
    """Build the describer named by `config.describer` with `config.describer_kwargs`.

    A class with a `from_config(config, device, **kwargs)` classmethod (like [`VLMDescriber`]) gets the config;
    any other class is called with the kwargs alone.
    """
    cls = import_object(config.describer)
    kwargs = dict(config.describer_kwargs)
    describer = cls.from_config(config, device=device, **kwargs) if hasattr(cls, "from_config") else cls(**kwargs)
    if not callable(getattr(describer, "describe", None)):
        raise TypeError(f"`describer` {config.describer!r} has no `describe(batch) -> dict` method.")
    return describer


def decode_image(value):
    """A `datasets.Image(decode=False)` cell (`{"bytes", "path"}`) or a PIL image -> RGB PIL image."""
    from PIL import Image

    if isinstance(value, Image.Image):
        return value.convert("RGB")
    if not isinstance(value, dict):
        raise ValueError(f"unsupported image cell of type {type(value).__name__}")
    if value.get("bytes"):
        image = Image.open(io.BytesIO(value["bytes"]))
    elif value.get("path"):
        image = Image.open(value["path"])
    else:
        raise ValueError("image cell has neither bytes nor path")
    image.load()
    return image.convert("RGB")


def describe_sounds(
    batch: dict,
    rank: int | None = None,
    *,
    describer: SoundDescriber,
    image_column: str = "image",
    max_sources: int = 4,
) -> dict:
    """Describe stage (batched): add `sound_sources`, `scene`, `description_raw`, `skip_reason`.

    Images that fail to decode are not shown to the describer; their rows get `skip_reason = "corrupt image: ..."`.
    A describer that raises on the batch marks every row of it skipped with the error, so one bad batch never
    stops a build.
    """
    n = len(batch[image_column])
    out = {
        "sound_sources": [[] for _ in range(n)],
        "scene": [None] * n,
        "description_raw": [""] * n,
        "skip_reason": [None] * n,
    }
    good, images = [], []
    for i, cell in enumerate(batch[image_column]):
        try:
            images.append(decode_image(cell))
            good.append(i)
        except Exception as err:  # PIL raises many types (OSError, SyntaxError, ValueError) for corrupt files
            path = cell.get("path") if isinstance(cell, dict) else None
            where = f" ({path})" if path else ""
            out["skip_reason"][i] = f"corrupt image{where}: {type(err).__name__}: {err}"[:400]
    if not good:
        return out
    sub = {k: [v[i] for i in good] for k, v in batch.items()}
    sub[image_column] = images
    if image_column != "image":
        sub["image"] = images
    try:
        result = describer.describe(sub)
    except Exception as err:  # a describer failure must become skipped rows, not a crashed build
        logger.warning("describer failed on a batch of %d rows: %s", len(good), err)
        for i in good:
            out["skip_reason"][i] = f"describer error: {type(err).__name__}: {err}"[:300]
        return out
    for key in ("sound_sources", "scene", "description_raw", "skip_reason"):
        if key not in result or len(result[key]) != len(good):
            raise ValueError(f"describer returned no column {key!r} of length {len(good)}; see SoundDescriber.")
    for j, i in enumerate(good):
        sources = [dict(s) for s in (result["sound_sources"][j] or [])]
        for s in sources:
            if s.get("distance") not in DISTANCES or not 0.0 <= float(s.get("prominence", -1)) <= 1.0:
                raise ValueError(f"describer returned an invalid source {s}; see SoundDescriber for the fields.")
        out["sound_sources"][i] = sorted(sources, key=lambda s: -s["prominence"])[:max_sources]
        out["scene"][i] = result["scene"][j]
        out["description_raw"][i] = result["description_raw"][j] or ""
        out["skip_reason"][i] = result["skip_reason"][j]
        if out["skip_reason"][i] is None and (not out["sound_sources"][i] or out["scene"][i] is None):
            out["skip_reason"][i] = "describer returned no sound source or no scene"
    return out
