"""Stage contracts: ids checked at joins, too-short clips rejected at indexing, the VLM reranker on a tiny random
VLM through the describer's cached loader, and built folders that plain `load_dataset` reads as they are now."""

import io

import numpy as np
import pytest
import torch
from sonify_helpers import PROMPT, clip, png_bytes, tiny_llava, wav_bytes

from diffusers_sonify.sonification import (
    BuilderConfig,
    BuildReport,
    SentenceTransformerEmbedder,
    VLMDescriber,
    VLMReranker,
    embed_audio_corpus,
)
from diffusers_sonify.sonification.builder import join_on_image_id, retrieve_candidates, write_output
from diffusers_sonify.sonification.describe import load_vlm

SR = 16_000


def test_join_checks_ids_row_by_row():
    from datasets import Dataset

    a = Dataset.from_dict({"image_id": ["x", "y", "z"], "scene": [1, 2, 3]})
    b = Dataset.from_dict({"image_id": ["x", "y", "z"], "sources": [4, 5, 6]})
    joined = join_on_image_id([a, b], "retrieve")
    assert joined.column_names == ["image_id", "scene", "sources"] and joined["sources"] == [4, 5, 6]
    shuffled = Dataset.from_dict({"image_id": ["x", "z", "y"], "sources": [4, 6, 5]})
    with pytest.raises(RuntimeError, match="retrieve: stage outputs disagree on image ids at row 1"):
        join_on_image_id([a, shuffled], "retrieve")
    with pytest.raises(RuntimeError, match="at row 2"):
        join_on_image_id([a, b.select([0, 1])], "assemble")


class _TextOnly:
    """Stands in for the text embedder: a fixed vector per text (the index stage only needs `embed_texts`)."""

    def embed_texts(self, texts):
        return torch.ones(len(texts), 4)


def test_clips_shorter_than_the_minimum_are_rejected_with_their_file():
    cells = [
        {"bytes": wav_bytes(clip(0)), "path": "long.wav"},
        {"bytes": wav_bytes(np.array([0.5], np.float32)), "path": "one_sample.wav"},
        {"bytes": wav_bytes(clip(1, seconds=0.05)), "path": None},
    ]
    out = embed_audio_corpus(
        {"audio": cells, "label": ["a", "b", "c"]},
        embedder=_TextOnly(),
        audio_column="audio",
        text_columns=["label"],
        label_names={},
        min_seconds=0.1,
    )
    assert out["valid"] == [True, False, False]
    assert out["invalid_reason"][1].startswith("too short (one_sample.wav): 0.000 s < `min_clip_seconds` 0.1 s")
    assert out["invalid_reason"][2].startswith("too short: 0.050 s")


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    return tiny_llava(tmp_path_factory.mktemp("llava") / "model")


def test_reranker_and_describer_share_one_cached_vlm(llava):
    load_vlm.cache_clear()
    config = BuilderConfig(vlm_model=llava, prompt_file=PROMPT, rerank=True, max_new_tokens=8)
    describer = VLMDescriber.from_config(config)
    reranker = VLMReranker.from_config(config)
    assert reranker.model is describer.model and reranker.processor is describer.processor
    assert load_vlm.cache_info().misses == 1
    from PIL import Image

    image = Image.open(io.BytesIO(png_bytes(0))).convert("RGB")
    choice = reranker.choose(image, "dog", ["a dog barking", "rain on a roof", "a car horn"])
    assert choice is None or 0 <= choice < 3  # a random model answers random bytes: either is handled
    assert reranker.choose(image, "dog", ["a dog barking", "rain on a roof", "a car horn"]) == choice  # greedy


def test_retrieval_with_reranking_on_a_tiny_vlm(llava):
    from datasets import Dataset

    config = BuilderConfig(vlm_model=llava, prompt_file=PROMPT, rerank=True, top_k=2, max_new_tokens=8)
    described = Dataset.from_dict(
        {
            "image_id": ["0", "1"],
            "sound_sources": [[{"name": "dog", "sound": "a dog barking", "prominence": 1.0, "distance": "near"}], []],
            "skip_reason": [None, "corrupt image"],
        }
    )
    texts = ["a dog barking", "heavy rain on a roof", "a puppy yapping"]
    embeddings = SentenceTransformerEmbedder().embed_texts(texts)  # the offline all-MiniLM-L6-v2
    index = Dataset.from_dict({"embedding": embeddings.tolist(), "valid": [True] * 3, "clip_text": texts})
    images = Dataset.from_dict({"image": [{"bytes": png_bytes(i), "path": None} for i in range(2)]})
    candidates = retrieve_candidates(config, described, index, images=images)
    assert candidates[1] == []
    (per_source,) = candidates[0]
    assert sorted(c for c, _ in per_source) == [0, 2]  # the two nearest clips, in the VLM's or cosine order


def _write(folder, n_rows: int, seed: int):
    from datasets import Dataset

    rows = {
        "image": [{"bytes": png_bytes(seed + i), "path": None} for i in range(n_rows)],
        "image_id": [f"{seed}-{i}" for i in range(n_rows)],
        "audio": [{"bytes": wav_bytes(clip(i)), "path": None} for i in range(n_rows)],
    }
    config = BuilderConfig(output_dir=str(folder), sample_rate=SR)
    report = BuildReport(num_images=n_rows, num_rows=n_rows)
    write_output(config, Dataset.from_dict(rows), report, {"prompt_version": "v", "describer": "d"})


def test_plain_load_dataset_sees_a_rebuild_in_place_and_a_same_named_folder(tmp_path):
    """#10.5: datasets keys a local folder's cache on its name and card; the card's content-derived data_files
    pattern makes `load_dataset(folder)` return the current rows."""
    from datasets import load_dataset

    folder = tmp_path / "a" / "sonified"
    _write(folder, 3, seed=0)
    assert load_dataset(str(folder), split="train")["image_id"] == ["0-0", "0-1", "0-2"]
    _write(folder, 1, seed=10)  # rebuild in place: 3 rows -> 1 row
    assert load_dataset(str(folder), split="train")["image_id"] == ["10-0"]
    other = tmp_path / "b" / "sonified"  # another build in a folder with the same name
    _write(other, 2, seed=20)
    assert load_dataset(str(other), split="train")["image_id"] == ["20-0", "20-1"]
    assert load_dataset(str(folder), split="train")["image_id"] == ["10-0"]
    samples = load_dataset(str(other), split="train")[0]["audio"].get_all_samples()
    assert samples.sample_rate == SR and np.allclose(samples.data.numpy()[0], clip(0), atol=1e-6)


def test_retrieve_stage_in_chunks_makes_the_choices_of_one_pass(tmp_path, monkeypatch):
    """The retrieve stage searches, assigns and saves `RETRIEVE_CHUNK_ROWS` rows at a time (its memory does not
    grow with the corpus); the reuse cap's counts carry over, so chunks choose what one pass over the rows does."""
    from datasets import Dataset

    from diffusers_sonify.sonification import builder

    texts = ["a dog barking", "heavy rain on a roof", "a puppy yapping"]
    index = Dataset.from_dict(
        {
            "embedding": SentenceTransformerEmbedder().embed_texts(texts).tolist(),
            "valid": [True] * 3,
            "clip_text": texts,
        }
    )
    dog = [{"name": "dog", "sound": "a dog barking", "prominence": 1.0, "distance": "near"}]
    described = Dataset.from_dict(
        {
            "image_id": [f"img{i}" for i in range(7)],
            "sound_sources": [dog] * 7,
            "skip_reason": [None, None, None, "corrupt image", None, None, None],
        }
    )

    def retrieve(chunk_rows: int, cache: str):
        monkeypatch.setattr(builder, "RETRIEVE_CHUNK_ROWS", chunk_rows)
        config = BuilderConfig(cache_dir=str(tmp_path / cache), top_k=3, max_clip_uses=2, min_score=-1.0)
        out, _, cached = builder.run_retrieve(config, described, index, "d", "i", audio=None)
        assert not cached
        return out

    whole, chunked = retrieve(4096, "whole"), retrieve(2, "chunked")
    assert len(list((tmp_path / "chunked").glob("retrieve-*/shard-*"))) == 4
    # the query embeddings of a chunk are batched differently, so scores may differ in the last float bits
    assert np.allclose(_scores(chunked), _scores(whole), atol=1e-5)
    assert _without_scores(chunked) == _without_scores(whole)
    clips = [[s["clip_text"] for s in row] for row in chunked["sources"]]
    # the barking clip twice, then the next nearest (the puppy) twice, then the rain: the cap of 2 held across
    # chunk boundaries (rows 0-1 | 2-3 | 4-5 | 6), and the skipped row kept its reason
    assert clips == [[texts[0]], [texts[0]], [texts[2]], [], [texts[2]], [texts[1]], [texts[1]]]
    assert chunked["skip_reason"][3] == "corrupt image"
    assert chunked["image_id"] == described["image_id"]


def _scores(ds):
    return [s["score"] for row in ds["sources"] for s in row]


def _without_scores(ds):
    rows = ds.to_list()
    for row in rows:
        row["sources"] = [{k: v for k, v in s.items() if k != "score"} for s in row["sources"]]
    return rows


def test_parquet_shards_are_cut_from_uneven_chunks_in_order(tmp_path):
    """The write stage streams: `write_parquet_shards` takes the rows as chunks of any size (empty ones too) and
    writes `rows_per_parquet` rows per file, in order, with one empty file holding the schema when no row is kept."""
    import pyarrow.parquet as pq
    from datasets import Dataset, load_dataset

    from diffusers_sonify.sonification.write import write_parquet_shards

    def chunk(ids):
        return Dataset.from_dict(
            {
                "image": [{"bytes": png_bytes(i), "path": None} for i in ids],
                "image_id": [str(i) for i in ids],
                "audio": [{"bytes": wav_bytes(clip(i)), "path": None} for i in ids],
            },
        )

    sizes, ids, chunks = [3, 0, 5, 1, 4], iter(range(13)), []
    for size in sizes:
        chunks.append(chunk([next(ids) for _ in range(size)]))
    paths, content, columns = write_parquet_shards(iter(chunks), tmp_path, rows_per_shard=4, sample_rate=SR)
    assert columns == ["image", "image_id", "audio"]
    assert [p.name for p in paths] == [f"train-{content}-{i:05d}-of-00004.parquet" for i in range(4)]
    assert [pq.read_metadata(p).num_rows for p in paths] == [4, 4, 4, 1]
    loaded = load_dataset("parquet", data_files=str(tmp_path / "data" / "*.parquet"), split="train")
    assert loaded["image_id"] == [str(i) for i in range(13)]
    assert loaded[12]["audio"].get_all_samples().sample_rate == SR

    empty = tmp_path / "empty"
    paths, _, _ = write_parquet_shards(iter([chunk([]), chunk([])]), empty, rows_per_shard=4, sample_rate=SR)
    assert len(paths) == 1 and pq.read_metadata(paths[0]).num_rows == 0


def test_assembly_with_a_shared_clip_cache_equals_assembly_without_and_stays_under_its_bound():
    from diffusers_sonify.sonification.assemble import DryClipCache, assemble_soundscapes

    config = BuilderConfig(sample_rate=SR, duration_s=1.0, seed=3)
    cells = [{"bytes": wav_bytes(clip(k)), "path": f"c{k}.wav"} for k in range(3)]
    cells.append({"bytes": b"not audio", "path": "broken.wav"})

    def source(k, prominence):
        return {"name": f"s{k}", "clip_index": k, "clip_id": f"c{k}", "prominence": prominence, "distance": "near"}

    batch = {  # clips 0 and 1 are used by several rows; clip 3 cannot be decoded
        "image_id": ["a", "b", "c", "d"],
        "scene": [{"setting": "indoor", "space": "large"}, {"setting": "outdoor", "space": "open"}] * 2,
        "sources": [
            [source(0, 0.9), source(1, 0.3)],
            [source(1, 0.5), source(3, 0.5)],
            [source(0, 0.2)],
            [source(2, 1.0)],
        ],
        "skip_reason": [None] * 4,
    }
    plain = assemble_soundscapes(batch, audio_corpus=cells, config=config)
    one_clip = SR * 4  # bytes of one dry clip (1 s of float32): the cache keeps at most two
    cache = DryClipCache(max_bytes=2 * one_clip)
    cached = [assemble_soundscapes(batch, audio_corpus=cells, config=config, clips=cache) for _ in range(2)]
    for out in cached:
        assert [a["bytes"] for a in out["audio"]] == [a["bytes"] for a in plain["audio"]]
        assert out["sources"] == plain["sources"] and out["mix_lufs"] == plain["mix_lufs"]
        assert out["dropped_sources"] == plain["dropped_sources"]
        assert len(out["dropped_sources"][1]) == 1 and "broken.wav" in out["dropped_sources"][1][0]
    assert cache.nbytes <= 2 * one_clip and len(cache._clips) == 2
