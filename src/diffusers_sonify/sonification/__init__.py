"""Sonification builder: pair an image-only corpus with an audio-only corpus, no audio-visual pairs needed.

Stages (each a batched function for `datasets.map`): describe -> index -> retrieve -> assemble -> write.
"""

from .assemble import assemble_soundscapes, render_source
from .builder import build_sonified_dataset, load_corpus, publish
from .config import BUILDER_VERSION, BuilderConfig, parse_build_config
from .describe import (
    JSONColumnDescriber,
    SoundDescriber,
    VLMDescriber,
    describe_sounds,
    load_describer,
    parse_description,
    read_prompt,
)
from .index import ClapEmbedder, SentenceTransformerEmbedder, embed_audio_corpus
from .report import BuildReport
from .retrieve import VLMReranker, assign_clips, topk_cosine
from .write import push_dataset_folder

__all__ = [
    "BUILDER_VERSION",
    "BuildReport",
    "BuilderConfig",
    "ClapEmbedder",
    "JSONColumnDescriber",
    "SentenceTransformerEmbedder",
    "SoundDescriber",
    "VLMDescriber",
    "VLMReranker",
    "assemble_soundscapes",
    "assign_clips",
    "build_sonified_dataset",
    "describe_sounds",
    "embed_audio_corpus",
    "load_corpus",
    "load_describer",
    "parse_build_config",
    "parse_description",
    "publish",
    "push_dataset_folder",
    "read_prompt",
    "render_source",
    "topk_cosine",
]
