"""Configuration of the sonification builder: one dataclass, parsed by `HfArgumentParser` from YAML + CLI flags.

Every number that shapes the sound is a field here, with its source, so a dataset card can state it.
"""

from __future__ import annotations

import importlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import ClassVar, Optional

from ..config_loading import require_positive

# part of every stage key: bump it when a stage's output or cache layout changes (0.2.0: the retrieve stage is
# saved in shards; 0.3.0: loudness through scipy's K-weighting, reverb through scipy.fft: last-bit changes)
BUILDER_VERSION = "0.3.0"
DEFAULT_DESCRIBER = "diffusers_sonify.sonification.describe:VLMDescriber"
# A small instruction-tuned VLM with a chat template that runs with stock transformers (no remote code).
DEFAULT_VLM = "HuggingFaceTB/SmolVLM-256M-Instruct"
DEFAULT_TEXT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_CLAP_MODEL = "laion/clap-htsat-unfused"
DISTANCES = ("near", "mid", "far")
# A Hub repo id `namespace/name` (huggingface_hub's rules: no leading `-`/`.`, no `--` or `..`, at most 96 chars).
REPO_ID_PATTERN = re.compile(r"^(?=.{3,96}$)(?![-.])(?!.*(--|\.\.))[\w.-]+/(?![-.])[\w.-]+(?<![-.])$")
SETTINGS = ("indoor", "outdoor")
SPACES = ("small", "medium", "large", "open")


STAGES = ("describe", "index", "retrieve", "assemble")


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


RETRIEVAL_BACKENDS = ("exact", "faiss-ivf", "auto")


class _FieldMetadata(Mapping):
    """A field's metadata. `HfArgumentParser` passes every key it iterates to `argparse.add_argument`, so it
    iterates as `{"help": ...}` only; the cache declarations `stages` and `cache_neutral` are read by key."""

    def __init__(self, help: str, stages: tuple[str, ...], cache_neutral: str | None):
        self._data = {"help": help, "stages": stages, "cache_neutral": cache_neutral}

    def __getitem__(self, key):
        return self._data[key]

    def __iter__(self):
        return iter(("help",))

    def __len__(self) -> int:
        return 1


def default_prompt_file() -> str:
    """The shipped describe prompt (dataset_builder/prompts/, package data), wherever the package is installed."""
    from importlib.resources import files

    return str(files("diffusers_sonify").joinpath("prompts", "describe_v1.txt"))


def _help(text: str, stages: tuple[str, ...] = (), neutral: str | None = None, **kw):
    """A config field. `stages`: the cached stages whose output it changes (their cache keys hash it);
    `neutral`: why it changes no cached output. Every field declares one of the two (a test checks it)."""
    if bool(stages) == bool(neutral) or not set(stages) <= set(STAGES):
        raise ValueError(f"declare the stages of {STAGES} a field changes, or why it is cache-neutral: {text!r}")
    return field(metadata=_FieldMetadata(text, tuple(stages), neutral), **kw)


@dataclass
class BuilderConfig:
    """All settings of one build. Fields are grouped: inputs, describe, index/retrieve, assemble, output."""

    # relative paths of these fields in a YAML config resolve against the YAML file's folder (config_loading)
    PATH_FIELDS: ClassVar[tuple[str, ...]] = ("prompt_file",)

    # ---- inputs ---------------------------------------------------------------------------------------------------
    image_dataset: Optional[str] = _help(
        "Image corpus: a Hub id, a `save_to_disk` folder, a Parquet file/glob, or `imagefolder:<dir>`.",
        stages=("describe",),
        default=None,
    )
    image_split: str = _help("Split of the image corpus.", stages=("describe",), default="train")
    image_column: str = _help("Column holding the images.", stages=("describe",), default="image")
    image_id_column: Optional[str] = _help(
        "Column with a stable image id; default the row index.", stages=("describe",), default=None
    )
    metadata_columns: list[str] = _help(
        "Image-corpus columns copied unchanged into the output.", stages=("describe",), default_factory=list
    )
    max_images: Optional[int] = _help(
        "Use only the first N images (for trial builds).", stages=("describe",), default=None
    )
    audio_dataset: Optional[str] = _help(
        "Audio corpus: a Hub id, a `save_to_disk` folder, a Parquet file/glob, or `audiofolder:<dir>`.",
        stages=("index",),
        default=None,
    )
    audio_split: str = _help("Split of the audio corpus.", stages=("index",), default="train")
    audio_column: str = _help(
        "Column holding the audio clips.",
        stages=("index", "assemble"),
        default="audio",
    )
    audio_id_column: Optional[str] = _help(
        "Column with a stable clip id; default the row index.", stages=("retrieve",), default=None
    )
    audio_text_columns: list[str] = _help(
        "Text columns describing each clip (labels and/or captions; ClassLabel ints become names). "
        "Empty: unlabelled audio, which needs `index_backend: clap`.",
        stages=("index",),
        default_factory=lambda: ["label"],
    )

    # ---- describe -------------------------------------------------------------------------------------------------
    describer: str = _help(
        "Import path `module:Class` of the SoundDescriber that says what each image sounds like. Shipped: "
        "`diffusers_sonify.sonification.describe:VLMDescriber` (default; prompts `vlm_model` with `prompt_file`; "
        "needs the model locally or the Hub), `diffusers_sonify.sonification.describe:JSONColumnDescriber` (no model: "
        "reads descriptions already in an image-corpus column, `describer_kwargs: {column: <name>}`; the column "
        "holds the JSON the prompt asks for), `diffusers_sonify.toyworld.describer:ToySceneDescriber` (no model: "
        "reads the toy world's scene metadata). Any class with `describe(batch) -> dict` works.",
        stages=("describe",),
        default=DEFAULT_DESCRIBER,
    )
    describer_kwargs: Optional[str] = _help(
        "Keyword arguments for the describer, a JSON object (a mapping in YAML).", stages=("describe",), default=None
    )
    vlm_model: str = _help(
        "VLM for the default describer: any transformers image-text-to-text model with a chat template.",
        stages=("describe", "retrieve"),
        default=DEFAULT_VLM,
    )
    prompt_file: str = _help(
        "Versioned prompt for the VLM (default: the shipped dataset_builder/prompts/describe_v1.txt).",
        stages=("describe",),
        default_factory=default_prompt_file,
    )
    max_new_tokens: int = _help("Generation budget for the VLM's JSON answer.", stages=("describe",), default=320)
    describe_batch_size: int = _help("Images per VLM forward pass.", stages=("describe",), default=4)
    shard_size: int = _help(
        "Rows per cached shard of the describe and assemble stages (resume granularity).",
        stages=("describe", "assemble"),
        default=64,
    )
    max_sources: int = _help(
        "Keep at most this many (most prominent) sound sources per image.", stages=("describe",), default=4
    )
    trust_remote_code: bool = _help(
        "Allow custom model code from the VLM repository (off: safer).",
        stages=("describe", "retrieve"),
        default=False,
    )
    torch_dtype: str = _help(
        "dtype for the VLM: auto, float32, bfloat16, float16.",
        stages=("describe", "retrieve"),
        default="auto",
    )

    # ---- index / retrieve -----------------------------------------------------------------------------------------
    index_backend: str = _help(
        "`sentence-transformers` (clip text) or `clap` (clip audio).",
        stages=("index", "retrieve"),
        default="sentence-transformers",
    )
    text_model: str = _help(
        "sentence-transformers model for the text index.",
        stages=("index", "retrieve"),
        default=DEFAULT_TEXT_MODEL,
    )
    clap_model: str = _help(
        "transformers ClapModel for the audio index.",
        stages=("index", "retrieve"),
        default=DEFAULT_CLAP_MODEL,
    )
    top_k: int = _help("Candidates retrieved per sound source.", stages=("retrieve",), default=5)
    min_score: float = _help(
        "Cosine-similarity threshold below which a candidate is rejected.", stages=("retrieve",), default=0.35
    )
    max_clip_uses: int = _help(
        "Reuse cap: a clip is used at most this many times in the dataset (0: no cap).",
        stages=("retrieve",),
        default=25,
    )
    rerank: bool = _help(
        "Let the VLM re-rank the top-k candidates while looking at the image.", stages=("retrieve",), default=False
    )
    rerank_model: Optional[str] = _help("VLM for re-ranking; default `vlm_model`.", stages=("retrieve",), default=None)
    retrieval_chunk_size: int = _help(
        "Query rows per matrix-multiply chunk (bounds memory).",
        neutral="exact search: the chunking bounds memory, not results",
        default=4096,
    )
    retrieval_backend: str = _help(
        "Nearest-neighbour search: `exact` (chunked matrix multiply), `faiss-ivf` (approximate inverted-file index; "
        "needs the `faiss` extra) or `auto` (exact below 10^8 query x clip pairs, faiss-ivf from there on, where it "
        "is faster; see benchmarks/RESULTS.md).",
        stages=("retrieve",),
        default="auto",
    )
    faiss_nlist: int = _help(
        "faiss-ivf: k-means cells of the clip index (0: about 4 sqrt(clips)).", stages=("retrieve",), default=0
    )
    faiss_nprobe: int = _help(
        "faiss-ivf: cells scanned per query (more: higher recall, slower).", stages=("retrieve",), default=32
    )

    # ---- assemble -------------------------------------------------------------------------------------------------
    sample_rate: int = _help("Output sampling rate in Hz (48 kHz: CLAP's rate).", stages=("assemble",), default=48_000)
    duration_s: float = _help(
        "Output clip length in seconds (10 s: CLAP's input window).",
        stages=("index", "assemble"),
        default=10.0,
    )
    # -23 LUFS: EBU R128 programme loudness target; the most prominent, nearest source is set to it.
    reference_lufs: float = _help(
        "Target LUFS of a prominence-1, near source (EBU R128: -23).", stages=("assemble",), default=-23.0
    )
    # 20 LU: the span from a dominant to a barely audible background source; of the order of the loudness
    # range (LRA, EBU Tech 3342) of broadcast programmes.
    prominence_range_lu: float = _help("LU between prominence 1 and prominence 0.", stages=("assemble",), default=20.0)
    # Inverse-square law: -6 dB per doubling of distance (near ~ 1-2 m, mid ~ 4 m, far ~ 8 m and beyond).
    distance_near_lu: float = _help("Loudness offset of near sources (LU).", stages=("assemble",), default=0.0)
    distance_mid_lu: float = _help(
        "Loudness offset of mid-distance sources (LU; inverse-square law).", stages=("assemble",), default=-6.0
    )
    distance_far_lu: float = _help(
        "Loudness offset of far sources (LU; inverse-square law).", stages=("assemble",), default=-12.0
    )
    # Direct-to-reverberant energy ratio falls with distance (sources beyond the critical distance are dominated
    # by the reverberant field).
    near_direct_to_reverb_db: float = _help(
        "Direct-to-reverberant ratio of near sources (dB).", stages=("assemble",), default=10.0
    )
    mid_direct_to_reverb_db: float = _help(
        "Direct-to-reverberant ratio of mid sources (dB).", stages=("assemble",), default=3.0
    )
    far_direct_to_reverb_db: float = _help(
        "Direct-to-reverberant ratio of far sources (dB).", stages=("assemble",), default=-3.0
    )
    # Typical reverberation times: small furnished rooms 0.3-0.5 s (DIN 18041), classrooms/offices 0.6-0.8 s
    # (ANSI S12.60 caps classrooms at 0.6-0.7 s), halls and churches 1.5-2.5 s (Beranek, "Concert Halls and Opera
    # Houses"); an open space is a free field: no reverberation.
    rt60_small: float = _help("RT60 (s) of a small space (living room, office).", stages=("assemble",), default=0.4)
    rt60_medium: float = _help(
        "RT60 (s) of a medium space (classroom, restaurant).", stages=("assemble",), default=0.8
    )
    rt60_large: float = _help("RT60 (s) of a large space (hall, church, station).", stages=("assemble",), default=1.8)
    rt60_open: float = _help(
        "RT60 (s) of an open space (free field: 0, no reverb).", stages=("assemble",), default=0.0
    )
    # Outdoors a few reflecting surfaces (facades, canyon walls) give short, weak decays.
    outdoor_rt60_scale: float = _help("RT60 multiplier for outdoor scenes.", stages=("assemble",), default=0.3)
    peak_ceiling_dbfs: float = _help(
        "True-peak limiter ceiling in dBTP (4x oversampled, ITU-R BS.1770-4 Annex 2; EBU R128: -1 dBTP max).",
        stages=("assemble",),
        default=-1.0,
    )
    fade_ms: float = _help("Fade at loop seams and clip ends (ms).", stages=("assemble",), default=10.0)
    # 0.1 s: shorter clips loop into a buzz or DC (a 1-sample clip tiles into constant offset), not their sound;
    # the same floor the pipeline applies to its input (pipelines/audio_to_image.py MIN_AUDIO_SECONDS).
    min_clip_seconds: float = _help(
        "Clips shorter than this (s) are rejected with a skip reason instead of being looped.",
        stages=("index", "assemble"),
        default=0.1,
    )
    seed: int = _help("Seeds reverb noise (per row: seed + hash of the image id).", stages=("assemble",), default=0)

    # ---- output ---------------------------------------------------------------------------------------------------
    output_dir: Optional[str] = _help(
        "Folder written in Hub layout (Parquet shards + README.md).",
        neutral="where the result is written, not what it holds",
        default=None,
    )
    cache_dir: Optional[str] = _help(
        "Stage cache; default `<output_dir>.cache`. Reruns resume from it.",
        neutral="where the stage caches live",
        default=None,
    )
    num_proc: int = _help(
        "Processes for the CPU stages (index, assemble).",
        neutral="parallelism only: shards are assembled independently",
        default=1,
    )
    rows_per_parquet: int = _help("Rows per output Parquet shard.", neutral="write stage (not cached)", default=500)
    dataset_name: str = _help(
        "Title of the dataset card.", neutral="write stage (not cached): the card", default="Sonified images"
    )
    license: str = _help(
        "License tag of the dataset card (the corpora's licenses bind it).",
        neutral="write stage (not cached): the card",
        default="other",
    )
    push_to_hub: bool = _help(
        "Publish the built folder to the Hub dataset repo `hub_model_id` after the build.",
        neutral="publishing, after the build",
        default=False,
    )
    hub_model_id: Optional[str] = _help(
        "Hub repo id `org/name` for `push_to_hub` (diffusers' name for it; here a dataset repo).",
        neutral="publishing, after the build",
        default=None,
    )
    hub_private: bool = _help(
        "Create the Hub dataset repo private.", neutral="publishing, after the build", default=False
    )

    def __post_init__(self):
        if isinstance(self.describer_kwargs, str):
            try:
                self.describer_kwargs = json.loads(self.describer_kwargs) if self.describer_kwargs.strip() else {}
            except json.JSONDecodeError as err:
                raise ValueError(f"`describer_kwargs` must be a JSON object, got {self.describer_kwargs!r} ({err}).")
        elif self.describer_kwargs is None:
            self.describer_kwargs = {}
        if not isinstance(self.describer_kwargs, dict):
            raise ValueError(f"`describer_kwargs` must be a mapping, got {type(self.describer_kwargs).__name__}.")
        if ":" not in self.describer:
            raise ValueError(f"`describer` must be an import path `module:Class`, got {self.describer!r}.")
        if self.index_backend not in ("sentence-transformers", "clap"):
            raise ValueError(f"`index_backend` must be 'sentence-transformers' or 'clap', got {self.index_backend!r}.")
        if self.index_backend == "sentence-transformers" and not self.audio_text_columns:
            raise ValueError(
                "`audio_text_columns` is empty, so the clips have no text to index: set `index_backend: clap` "
                "to retrieve unlabelled audio from its sound, or name the label/caption columns."
            )
        require_positive(
            self,
            (
                "sample_rate",
                "top_k",
                "shard_size",
                "describe_batch_size",
                "num_proc",
                "rows_per_parquet",
                "max_sources",
                "max_new_tokens",
                "retrieval_chunk_size",
            ),
        )
        if not (self.duration_s > 0 and math.isfinite(self.duration_s)):
            raise ValueError(f"`duration_s` must be a positive number of seconds, got {self.duration_s}.")
        if self.retrieval_backend not in RETRIEVAL_BACKENDS:
            raise ValueError(
                f"`retrieval_backend` must be one of {RETRIEVAL_BACKENDS}, got {self.retrieval_backend!r}."
            )
        if self.retrieval_backend == "faiss-ivf" and not _importable("faiss"):
            raise ValueError(
                "`retrieval_backend: faiss-ivf` needs faiss, which is not installed: `pip install "
                "'diffusers-sonify[faiss]'`, or set `retrieval_backend: exact` (or `auto`)."
            )
        if self.faiss_nprobe <= 0 or self.faiss_nlist < 0:
            raise ValueError(
                f"`faiss_nprobe` must be > 0 and `faiss_nlist` >= 0 (0: automatic), got {self.faiss_nprobe} and "
                f"{self.faiss_nlist}."
            )
        if self.max_clip_uses < 0:
            raise ValueError(f"`max_clip_uses` must be >= 0 (0 disables the cap), got {self.max_clip_uses}.")
        if not -1.0 <= self.min_score <= 1.0:
            raise ValueError(f"`min_score` is a cosine similarity in [-1, 1], got {self.min_score}.")
        if not self.min_clip_seconds >= 0:
            raise ValueError(f"`min_clip_seconds` must be >= 0 seconds, got {self.min_clip_seconds}.")
        if self.push_to_hub and not self.hub_model_id:
            raise ValueError("`push_to_hub` needs `hub_model_id`, the dataset repo id `org/name` to publish to.")
        if self.hub_model_id is not None and not REPO_ID_PATTERN.match(str(self.hub_model_id)):
            raise ValueError(
                f"`hub_model_id` must be a Hub repo id `org/name` (letters, digits, `-`, `_`, `.`), got "
                f"{self.hub_model_id!r}."
            )
        if self.peak_ceiling_dbfs > 0:
            raise ValueError(f"`peak_ceiling_dbfs` must be <= 0 dBFS, got {self.peak_ceiling_dbfs}.")
        for name in (
            "rt60_small",
            "rt60_medium",
            "rt60_large",
            "rt60_open",
            "outdoor_rt60_scale",
            "prominence_range_lu",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be >= 0, got {getattr(self, name)}.")
        if not (self.distance_near_lu >= self.distance_mid_lu >= self.distance_far_lu):
            raise ValueError(
                "Distance offsets must not increase with distance: need distance_near_lu >= distance_mid_lu >= "
                f"distance_far_lu, got {self.distance_near_lu}, {self.distance_mid_lu}, {self.distance_far_lu}."
            )

    def stage_settings(self, stage: str) -> dict:
        """The config values that `stage`'s cached output depends on (fields declaring it in `stages`)."""
        if stage not in STAGES:
            raise ValueError(f"`stage` must be one of {STAGES}, got {stage!r}.")
        return {f.name: getattr(self, f.name) for f in fields(self) if stage in f.metadata["stages"]}

    def validate_for_build(self):
        """Check the fields a build needs but a partial config (e.g. a stage test) may omit."""
        for name in ("image_dataset", "audio_dataset", "output_dir"):
            if not getattr(self, name):
                raise ValueError(f"`{name}` is required: set it in the YAML config or pass --{name}.")

    # ---- explicit mappings (the assemble stage uses only these) ---------------------------------------------------
    def target_lufs(self, prominence: float, distance: str) -> float:
        """Target loudness of a source: `reference_lufs - (1 - prominence) * prominence_range_lu + distance offset`.

        Monotonic: more prominent or nearer never means quieter.
        """
        if distance not in DISTANCES:
            raise ValueError(f"`distance` must be one of {DISTANCES}, got {distance!r}.")
        prominence = min(1.0, max(0.0, float(prominence)))
        offset = {"near": self.distance_near_lu, "mid": self.distance_mid_lu, "far": self.distance_far_lu}[distance]
        return self.reference_lufs - (1.0 - prominence) * self.prominence_range_lu + offset

    def direct_to_reverb_db(self, distance: str) -> float:
        return {
            "near": self.near_direct_to_reverb_db,
            "mid": self.mid_direct_to_reverb_db,
            "far": self.far_direct_to_reverb_db,
        }[distance]

    def rt60(self, setting: str, space: str) -> float:
        """Reverberation time (s) of a scene from its `space`, scaled by `outdoor_rt60_scale` outdoors."""
        if setting not in SETTINGS or space not in SPACES:
            raise ValueError(
                f"scene must have setting in {SETTINGS} and space in {SPACES}, got {setting!r}, {space!r}."
            )
        value = getattr(self, f"rt60_{space}")
        return value * (self.outdoor_rt60_scale if setting == "outdoor" else 1.0)

    def resolved_cache_dir(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir else Path(str(self.output_dir).rstrip("/") + ".cache")

    def to_dict(self) -> dict:
        return asdict(self)


USAGE = "build.py [config.yaml] [--field value ...]"


def parse_build_config(argv: list[str] | None = None, description: str | None = None) -> BuilderConfig:
    """`[config.yaml] [--field value ...]` -> `BuilderConfig`: YAML values are defaults, flags override them.

    A relative `prompt_file` in the YAML is resolved against the YAML file's folder (not the working directory),
    so a config and its prompt travel together. `description` is the `--help` text above the options.
    """
    from ..config_loading import parse_config_args

    (config,) = parse_config_args((BuilderConfig,), argv, description=description, usage=USAGE)
    return config
