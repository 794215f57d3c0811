"""Sonification builder: pair an image-only corpus with an audio-only corpus, no audio-visual pairs needed.

Stages (each a batched function for `datasets.map`): describe -> index -> retrieve -> assemble -> write.

Names are imported on first use, so `from diffusers_sonify.sonification.config import ...` (e.g. for
`build.py --help`) does not pull in torch, datasets and transformers.
"""

import importlib

_EXPORTS = {
    "assemble": ["assemble_soundscapes", "render_source"],
    "builder": ["build_sonified_dataset", "check_build", "load_corpus", "publish"],
    "checks": ["BuildInputError"],
    "config": ["BUILDER_VERSION", "BuilderConfig", "parse_build_config"],
    "describe": [
        "JSONColumnDescriber",
        "SoundDescriber",
        "VLMDescriber",
        "describe_sounds",
        "load_describer",
        "load_vlm",
        "parse_description",
        "read_prompt",
    ],
    "index": ["ClapEmbedder", "SentenceTransformerEmbedder", "embed_audio_corpus"],
    "report": ["BuildReport"],
    "retrieve": ["VLMReranker", "assign_clips", "search_topk", "topk_cosine", "topk_cosine_ivf"],
    "write": ["push_dataset_folder"],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
