"""Retrieval: exact chunked top-k, threshold + reuse cap, real MiniLM accuracy, CLAP backend, VLM re-ranking parse."""

import sys

import numpy as np
import pytest
import torch
from sonify_helpers import LABEL_QUERIES, LABELS, SR, clip, wav_bytes

from diffusers_sonify.sonification import SentenceTransformerEmbedder, assign_clips, embed_audio_corpus, topk_cosine
from diffusers_sonify.sonification.retrieve import parse_choice, rerank


def _brute_force(q, b, k):
    s = torch.nn.functional.normalize(q.double(), dim=1) @ torch.nn.functional.normalize(b.double(), dim=1).T
    return torch.topk(s, k, dim=1)


@pytest.mark.parametrize("chunk, bank_chunk", [(7, None), (1000, None), (5, 13), (64, 1)])
def test_topk_cosine_matches_brute_force(chunk, bank_chunk):
    g = torch.Generator().manual_seed(0)
    q, b = torch.randn(50, 16, generator=g), torch.randn(101, 16, generator=g) * 3
    idx, scores = topk_cosine(q, b, 5, chunk_size=chunk, bank_chunk_size=bank_chunk)
    ref = _brute_force(q, b, 5)
    assert idx.shape == (50, 5) and scores.dtype == torch.float32
    assert torch.equal(idx, ref.indices)
    assert torch.allclose(scores.double(), ref.values, atol=1e-5)
    assert torch.all(scores[:, :-1] >= scores[:, 1:])


def test_topk_cosine_bad_inputs():
    with pytest.raises(ValueError, match="same width"):
        topk_cosine(torch.randn(3, 4), torch.randn(5, 3), 1)
    with pytest.raises(ValueError, match="`k`"):
        topk_cosine(torch.randn(3, 4), torch.randn(5, 4), 6)


def test_assign_clips_threshold_and_reuse_cap():
    # three rows each wanting clip 0 first; cap 2 pushes the third onto clip 1; clip 2 is below threshold
    row = [[(0, 0.9), (1, 0.8), (2, 0.1)]]
    choices, uses = assign_clips([row, row, row, [[(2, 0.1)]]], min_score=0.5, max_uses=2)
    assert [c[0] for c in choices] == [(0, 0.9), (0, 0.9), (1, 0.8), None]
    assert uses == {0: 2, 1: 1}
    uncapped, _ = assign_clips([row, row, row], min_score=0.5, max_uses=0)
    assert all(c[0] == (0, 0.9) for c in uncapped)


def test_rerank_parse():
    assert parse_choice("3", 5) == 2 and parse_choice("The best is 1.", 5) == 0
    assert parse_choice("9", 5) is None and parse_choice("\x01garbage", 5) is None
    cands = [(10, 0.9), (11, 0.8), (12, 0.7)]
    assert rerank(cands, 2) == [(12, 0.7), (10, 0.9), (11, 0.8)] and rerank(cands, None) == cands


@pytest.fixture(scope="module")
def minilm():
    return SentenceTransformerEmbedder()


def test_real_minilm_retrieves_paraphrases(minilm):
    queries = [(q, label) for label, qs in LABEL_QUERIES.items() for q in qs]
    assert len(queries) >= 50 and len(LABELS) >= 20
    bank = minilm.embed_texts(LABELS)
    q = minilm.embed_texts([text for text, _ in queries])
    assert q.shape == (len(queries), 384)
    idx, _ = topk_cosine(q, bank, 1, chunk_size=16)
    hits = [LABELS[int(i)] == label for i, (_, label) in zip(idx[:, 0], queries)]
    assert np.mean(hits) >= 0.9, [t for (t, _), h in zip(queries, hits) if not h]


def test_index_stage_marks_corrupt_and_silent_clips(minilm):
    batch = {
        "audio": [
            {"bytes": wav_bytes(clip(0)), "path": None},
            {"bytes": b"RIFFxx", "path": None},
            {"bytes": wav_bytes(np.zeros(SR // 2, np.float32)), "path": None},
        ],
        "label": [0, 1, 2],
    }
    out = embed_audio_corpus(
        batch, embedder=minilm, audio_column="audio", text_columns=["label"], label_names={"label": LABELS}
    )
    assert out["valid"] == [True, False, False] and out["clip_text"][0] == LABELS[0]
    assert "corrupt audio" in out["invalid_reason"][1] and "silent" in out["invalid_reason"][2]
    assert len(out["embedding"][0]) == 384 and out["embedding"][1] is None


def test_clap_backend_with_tiny_random_clap(tmp_path):
    from transformers import (
        BertTokenizerFast,
        ClapAudioConfig,
        ClapConfig,
        ClapFeatureExtractor,
        ClapModel,
        ClapTextConfig,
    )

    from diffusers_sonify.sonification import ClapEmbedder
    from diffusers_sonify.sonification.index import resolve_text_model
    from diffusers_sonify.tiny import TINY_CLAP_AUDIO_ARGS

    torch.manual_seed(0)
    tokenizer = BertTokenizerFast.from_pretrained(resolve_text_model("all-MiniLM-L6-v2"))
    audio_cfg = ClapAudioConfig(**TINY_CLAP_AUDIO_ARGS)
    text_cfg = ClapTextConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
    )
    model = ClapModel(ClapConfig(text_config=text_cfg.to_dict(), audio_config=audio_cfg.to_dict(), projection_dim=16))
    fe = ClapFeatureExtractor(
        feature_size=16,
        sampling_rate=SR,
        hop_length=160,
        fft_window_size=400,
        max_length_s=1,
        truncation="rand_trunc",
        padding="repeatpad",
    )
    for obj in (model, tokenizer, fe):
        obj.save_pretrained(tmp_path)
    embedder = ClapEmbedder(str(tmp_path))
    t = embedder.embed_texts(["a dog barking", "rain"])
    batch = {"audio": [{"bytes": wav_bytes(clip(j), sr=8000), "path": None} for j in range(3)]}
    out = embed_audio_corpus(batch, embedder=embedder, audio_column="audio", text_columns=[], label_names={})
    assert out["valid"] == [True] * 3  # no text needed with CLAP
    bank = torch.tensor(out["embedding"])
    assert t.shape == (2, 16) and bank.shape == (3, 16)
    assert torch.allclose(bank.norm(dim=1), torch.ones(3), atol=1e-4)
    idx, scores = topk_cosine(t, bank, 3)
    assert torch.allclose(scores, torch.gather(t @ bank.T, 1, idx), atol=1e-5)


def _clustered(n: int, dim: int = 32, clusters: int = 12, seed: int = 0) -> torch.Tensor:
    """Vectors around a few centres: the neighbour structure real text/audio embeddings have."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, dim, generator=g)
    return centres[torch.randint(clusters, (n,), generator=g)] + 0.3 * torch.randn(n, dim, generator=g)


def test_faiss_ivf_scanning_every_list_finds_the_exact_top_k():
    from diffusers_sonify.sonification.retrieve import topk_cosine_ivf

    queries, bank = _clustered(200, seed=1), _clustered(3000, seed=2)
    exact_idx, exact_scores = topk_cosine(queries, bank, 5)
    idx, scores = topk_cosine_ivf(queries, bank, 5, nlist=16, nprobe=16)
    assert torch.equal(idx, exact_idx)
    torch.testing.assert_close(scores, exact_scores, atol=1e-5, rtol=0)
    # one list of 16 scanned: still the right neighbours for most queries on clustered data, but not all of them
    few, _ = topk_cosine_ivf(queries, bank, 5, nlist=16, nprobe=1)
    recall = np.mean([len(set(a.tolist()) & set(b.tolist())) / 5 for a, b in zip(few, exact_idx)])
    assert 0.5 < recall < 1.0


def test_search_topk_auto_is_exact_below_the_crossover():
    from diffusers_sonify.sonification.retrieve import AUTO_FAISS_MIN_PAIRS, search_topk

    queries, bank = _clustered(50, seed=3), _clustered(400, seed=4)
    assert 50 * 400 < AUTO_FAISS_MIN_PAIRS
    assert torch.equal(search_topk(queries, bank, 3, backend="auto")[0], topk_cosine(queries, bank, 3)[0])
    with pytest.raises(ValueError, match="retrieval_backend"):
        search_topk(queries, bank, 3, backend="hnsw")


def test_search_in_chunks_decides_auto_on_all_queries_and_builds_one_index(monkeypatch):
    """The retrieve stage searches chunk by chunk: `auto` must follow the whole stage's query count (a chunk alone
    is below the crossover), and the chunks' results are one search's."""
    from diffusers_sonify.sonification import retrieve
    from diffusers_sonify.sonification.retrieve import TopKSearch, search_topk

    queries, bank = _clustered(300, seed=5), _clustered(2000, seed=6)
    monkeypatch.setattr(retrieve, "AUTO_FAISS_MIN_PAIRS", 300 * 2000)
    builds = []
    build = retrieve.build_ivf_index
    monkeypatch.setattr(retrieve, "build_ivf_index", lambda *a, **k: builds.append(1) or build(*a, **k))
    search = TopKSearch(bank, 5, backend="auto", num_queries=300, nlist=16, nprobe=4)
    assert search.backend == "faiss-ivf" and len(builds) == 1
    parts = [search(queries[a : a + 64]) for a in range(0, 300, 64)]
    assert len(builds) == 1
    whole_idx, whole_scores = search_topk(queries, bank, 5, backend="auto", nlist=16, nprobe=4)
    assert torch.equal(torch.cat([i for i, _ in parts]), whole_idx)
    torch.testing.assert_close(torch.cat([s for _, s in parts]), whole_scores, atol=1e-6, rtol=0)
    assert TopKSearch(bank, 5, backend="auto", num_queries=299).backend == "exact"


def test_builder_config_checks_the_retrieval_backend(monkeypatch):
    from diffusers_sonify.sonification.config import BuilderConfig

    with pytest.raises(ValueError, match="retrieval_backend.*one of"):
        BuilderConfig(retrieval_backend="annoy")
    with pytest.raises(ValueError, match="faiss_nprobe"):
        BuilderConfig(retrieval_backend="faiss-ivf", faiss_nprobe=0)
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` fails, as without the faiss extra
    with pytest.raises(ValueError, match=r"diffusers-sonify\[faiss\]"):
        BuilderConfig(retrieval_backend="faiss-ivf")
    BuilderConfig(retrieval_backend="auto")  # auto falls back to exact search without faiss
