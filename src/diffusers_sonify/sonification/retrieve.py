"""Retrieve stage: per sound source, the best clips of the audio corpus by cosine similarity.

Exact search with plain chunked tensor math ([`topk_cosine`]) or, for large corpora, an approximate inverted-file
index through faiss ([`topk_cosine_ivf`]; [`search_topk`] picks one from the builder config), then a score
threshold and a reuse cap applied in one deterministic pass over the dataset ([`assign_clips`]), optionally after
VLM re-ranking ([`VLMReranker`]).
"""

from __future__ import annotations

import logging
import math
import re

import torch

from .config import RETRIEVAL_BACKENDS

logger = logging.getLogger(__name__)

# `auto` switches from exact search to faiss IVF when queries x bank items reach this many pairs. Measured with
# benchmarks/retrieval.py on 2 cores (RESULTS.md, "Retrieval at scale"): exact is faster at 10^7 pairs (0.07 s vs
# 0.09 s), faiss IVF from 10^8 on (0.41 s vs 1.09 s; 2.8 s vs 8.4 s at 10^9), with recall@5 1.000 at these sizes.
AUTO_FAISS_MIN_PAIRS = 10**8
# k-means training rows per inverted list. faiss warns below 39 and subsamples above 256; at 10^6 clips training on
# 256 per list (all of them) was the slowest part of the build (RESULTS.md), 64 per list is the default here.
TRAIN_POINTS_PER_LIST = 64


def topk_cosine(
    queries: torch.Tensor, bank: torch.Tensor, k: int, chunk_size: int = 4096, bank_chunk_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k cosine similarity of every query against a bank.

    Args:
        queries (`torch.Tensor`): `(num_queries, dim)`.
        bank (`torch.Tensor`): `(num_items, dim)`.
        k (`int`): neighbours per query, `1 <= k <= num_items`.
        chunk_size (`int`): query rows per matrix multiply.
        bank_chunk_size (`int`, *optional*): bank rows per matrix multiply; with `chunk_size` it bounds the score
            block to `chunk_size * bank_chunk_size` floats. Default: the whole bank.

    Returns:
        `(indices, scores)`: `(num_queries, k)` int64 bank rows and float32 cosines, best first. Zero vectors
        score 0 against everything.
    """
    if queries.ndim != 2 or bank.ndim != 2 or queries.shape[1] != bank.shape[1]:
        raise ValueError(
            f"`queries` {tuple(queries.shape)} and `bank` {tuple(bank.shape)} must be 2-D with the same width (dim)."
        )
    if not 1 <= k <= bank.shape[0]:
        raise ValueError(f"`k` must be in [1, {bank.shape[0]}] (the bank size), got {k}.")
    if chunk_size <= 0 or (bank_chunk_size is not None and bank_chunk_size <= 0):
        raise ValueError("`chunk_size` and `bank_chunk_size` must be positive.")
    dtype = torch.promote_types(queries.dtype, bank.dtype) if queries.is_floating_point() else torch.float32
    bank = torch.nn.functional.normalize(bank.to(dtype), dim=1)
    bank_t = bank.T.contiguous() if bank_chunk_size is None else None
    num = queries.shape[0]
    indices = torch.empty(num, k, dtype=torch.long, device=queries.device)
    scores = torch.empty(num, k, dtype=torch.float32, device=queries.device)
    for start in range(0, num, chunk_size):
        q = torch.nn.functional.normalize(queries[start : start + chunk_size].to(dtype), dim=1)
        if bank_chunk_size is None:
            top = torch.topk(q @ bank_t, k, dim=1)
            best_s, best_i = top.values, top.indices
        else:
            best_s = best_i = None
            for b in range(0, bank.shape[0], bank_chunk_size):
                block = q @ bank[b : b + bank_chunk_size].T
                kk = min(k, block.shape[1])
                top = torch.topk(block, kk, dim=1)
                s, i = top.values, top.indices + b
                if best_s is not None:
                    s, i = torch.cat([best_s, s], 1), torch.cat([best_i, i], 1)
                    merged = torch.topk(s, min(k, s.shape[1]), dim=1)
                    s, i = merged.values, torch.gather(i, 1, merged.indices)
                best_s, best_i = s, i
        indices[start : start + q.shape[0]] = best_i
        scores[start : start + q.shape[0]] = best_s.float()
    return indices, scores


def default_nlist(num_items: int) -> int:
    """Inverted lists for a bank: ~4 sqrt(n) (faiss' guideline for 10^5-10^7 vectors), at least 1 and at most
    n / 39 so that k-means has the 39 training points per centroid faiss asks for."""
    return max(1, min(int(4 * math.sqrt(num_items)), num_items // 39))


def _faiss():
    try:
        import faiss
    except ImportError as err:
        raise ImportError(
            "`retrieval_backend: faiss-ivf` needs faiss: `pip install 'diffusers-sonify[faiss]'` (the faiss-cpu "
            "wheel), or set `retrieval_backend: exact`."
        ) from err
    return faiss


def faiss_available() -> bool:
    try:
        _faiss()
    except ImportError:
        return False
    return True


def build_ivf_index(bank: torch.Tensor, nlist: int | None = None, train_size: int | None = None, seed: int = 0):
    """A trained and filled faiss `IndexIVFFlat` (inner product) over the L2-normalised rows of `bank`; arguments
    as in [`topk_cosine_ivf`]. Search it with L2-normalised float32 queries after setting `index.nprobe`."""
    faiss = _faiss()
    num_items, dim = bank.shape
    nlist = min(nlist or default_nlist(num_items), num_items)
    xb = torch.nn.functional.normalize(bank.detach().float().cpu(), dim=1).numpy()
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    train_size = min(num_items, train_size or TRAIN_POINTS_PER_LIST * nlist)
    if train_size < num_items:
        rows = torch.randperm(num_items, generator=torch.Generator().manual_seed(seed))[:train_size].sort().values
        index.train(xb[rows.numpy()])
    else:
        index.train(xb)
    index.add(xb)
    return index


def topk_cosine_ivf(
    queries: torch.Tensor,
    bank: torch.Tensor,
    k: int,
    nlist: int | None = None,
    nprobe: int = 32,
    train_size: int | None = None,
    chunk_size: int = 65536,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Approximate top-k cosine similarity through a faiss IVF-Flat index (inner product on L2-normalised rows).

    The bank is clustered by k-means into `nlist` inverted lists; each query scans the `nprobe` lists whose
    centroids are nearest to it. Scores are exact cosines of the items found; an item outside the probed lists can
    be missed. A query whose probed lists hold fewer than `k` items is searched exactly instead.

    Args:
        queries (`torch.Tensor`): `(num_queries, dim)`.
        bank (`torch.Tensor`): `(num_items, dim)`.
        k (`int`): neighbours per query, `1 <= k <= num_items`.
        nlist (`int`, *optional*): inverted lists; default [`default_nlist`] of the bank size.
        nprobe (`int`): lists scanned per query (more: higher recall, slower); `nprobe >= nlist` is exact.
        train_size (`int`, *optional*): bank rows the k-means trains on; default `TRAIN_POINTS_PER_LIST * nlist`.
        chunk_size (`int`): query rows per faiss search call (bounds the result buffers).
        seed (`int`): seeds the k-means initialisation (results are deterministic for a given seed).

    Returns:
        `(indices, scores)`: `(num_queries, k)` int64 bank rows and float32 cosines, best first.
    """
    if queries.ndim != 2 or bank.ndim != 2 or queries.shape[1] != bank.shape[1]:
        raise ValueError(
            f"`queries` {tuple(queries.shape)} and `bank` {tuple(bank.shape)} must be 2-D with the same width (dim)."
        )
    if not 1 <= k <= bank.shape[0]:
        raise ValueError(f"`k` must be in [1, {bank.shape[0]}] (the bank size), got {k}.")
    if nprobe <= 0 or chunk_size <= 0 or (nlist is not None and nlist <= 0):
        raise ValueError(f"`nlist`, `nprobe` and `chunk_size` must be positive, got {nlist}, {nprobe}, {chunk_size}.")
    index = build_ivf_index(bank, nlist=nlist, train_size=train_size, seed=seed)
    index.nprobe = min(nprobe, index.nlist)
    return search_ivf(index, queries, bank, k, chunk_size=chunk_size)


def search_ivf(
    index, queries: torch.Tensor, bank: torch.Tensor, k: int, chunk_size: int = 65536
) -> tuple[torch.Tensor, torch.Tensor]:
    """Search a built [`build_ivf_index`] of `bank` (its `nprobe` set) with `queries`; queries whose probed lists
    hold fewer than `k` items are searched exactly. Returns as [`topk_cosine_ivf`]."""
    num = queries.shape[0]
    indices = torch.empty(num, k, dtype=torch.long)
    scores = torch.empty(num, k, dtype=torch.float32)
    for start in range(0, num, chunk_size):
        xq = torch.nn.functional.normalize(queries[start : start + chunk_size].detach().float().cpu(), dim=1)
        s, i = index.search(xq.numpy(), k)
        s, i = torch.from_numpy(s), torch.from_numpy(i)
        short = (i < 0).any(dim=1)  # fewer than k items in the probed lists: search those queries exactly
        if short.any():
            i[short], s[short] = topk_cosine(xq[short], bank.detach().float().cpu(), k)
        indices[start : start + len(xq)] = i
        scores[start : start + len(xq)] = s
    return indices.to(queries.device), scores.to(queries.device)


class TopKSearch:
    """Top-k cosine search of one bank through the builder's `retrieval_backend`, for queries that arrive in
    chunks: `auto` is resolved once on the total query count and a faiss index is built once, so searching the
    chunks one by one returns what one [`search_topk`] call over all queries returns.

    Args:
        bank (`torch.Tensor`): `(num_items, dim)`.
        k (`int`): neighbours per query.
        backend (`str`): `exact` ([`topk_cosine`]), `faiss-ivf` ([`topk_cosine_ivf`]) or `auto` (faiss IVF from
            [`AUTO_FAISS_MIN_PAIRS`] query x bank pairs on, where it is faster; exact below, or when faiss is not
            installed).
        num_queries (`int`): how many queries will be searched in all (decides `auto`).
        chunk_size (`int`): query rows per exact score block.
        nlist, nprobe: the faiss index's inverted lists and lists scanned per query.
    """

    def __init__(
        self,
        bank: torch.Tensor,
        k: int,
        backend: str = "exact",
        num_queries: int = 0,
        chunk_size: int = 4096,
        nlist: int | None = None,
        nprobe: int = 32,
    ):
        if backend not in RETRIEVAL_BACKENDS:
            raise ValueError(f"`retrieval_backend` must be one of {RETRIEVAL_BACKENDS}, got {backend!r}.")
        if backend == "auto":
            large = num_queries * bank.shape[0] >= AUTO_FAISS_MIN_PAIRS
            if large and not faiss_available():
                logger.warning(
                    "%d queries x %d clips: faiss is not installed, so retrieval stays exact (slow at this size); "
                    "`pip install 'diffusers-sonify[faiss]'` for the approximate index.",
                    num_queries,
                    bank.shape[0],
                )
            backend = "faiss-ivf" if large and faiss_available() else "exact"
        self.bank, self.k, self.backend, self.chunk_size = bank, k, backend, chunk_size
        self.index = None
        if backend == "faiss-ivf":
            if not 1 <= k <= bank.shape[0]:
                raise ValueError(f"`k` must be in [1, {bank.shape[0]}] (the bank size), got {k}.")
            self.index = build_ivf_index(bank, nlist=nlist)
            self.index.nprobe = min(nprobe, self.index.nlist)

    def __call__(self, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.index is not None:
            if queries.ndim != 2 or queries.shape[1] != self.bank.shape[1]:
                raise ValueError(f"`queries` {tuple(queries.shape)} must be 2-D with the bank's width.")
            return search_ivf(self.index, queries, self.bank, self.k)
        # bank chunks keep the score block at <= 2^28 floats (1 GiB) when a large bank meets a query chunk
        chunk = self.chunk_size
        bank_chunk = None if chunk * self.bank.shape[0] <= 2**28 else max(1, 2**28 // chunk)
        return topk_cosine(queries, self.bank, self.k, chunk_size=chunk, bank_chunk_size=bank_chunk)


def search_topk(
    queries: torch.Tensor,
    bank: torch.Tensor,
    k: int,
    backend: str = "exact",
    chunk_size: int = 4096,
    nlist: int | None = None,
    nprobe: int = 32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k cosine search of all `queries` at once through the builder's `retrieval_backend` (see
    [`TopKSearch`]). Same arguments and returns as [`topk_cosine`]."""
    return TopKSearch(bank, k, backend, queries.shape[0], chunk_size, nlist, nprobe)(queries)


def assign_clips(
    candidates: list[list[list[tuple[int, float]]]], min_score: float, max_uses: int = 0, uses: dict | None = None
) -> tuple[list[list[tuple[int, float] | None]], dict[int, int]]:
    """Choose one clip per source, in dataset order, under a threshold and a reuse cap.

    Args:
        candidates: per row, per source, `(bank_row, score)` pairs best first (after any re-ranking).
        min_score (`float`): candidates scoring below are rejected.
        max_uses (`int`): a clip is chosen at most this often over the whole dataset; 0 disables the cap.
        uses (`dict`, *optional*): use counts of earlier rows, updated in place: the dataset's rows can be passed
            in consecutive chunks, each with the `uses` the previous chunk returned.

    Returns:
        `(choices, uses)`: per row, per source, the chosen `(bank_row, score)` or `None` (nothing above the
        threshold or every good clip at its cap); and the use count of each chosen clip. The pass is sequential
        and depends only on the candidate order, so reruns choose the same clips.
    """
    uses = {} if uses is None else uses
    choices = []
    for row in candidates:
        row_choice = []
        for cands in row:
            chosen = None
            for clip, score in cands:
                if score < min_score:
                    continue
                if max_uses and uses.get(clip, 0) >= max_uses:
                    continue
                chosen = (int(clip), float(score))
                uses[chosen[0]] = uses.get(chosen[0], 0) + 1
                break
            row_choice.append(chosen)
        choices.append(row_choice)
    return choices, uses


class VLMReranker:
    """Re-ranks the top-k candidate clips of a source by asking a VLM which one fits the image.

    The model sees the image and a numbered list of candidate clip texts and answers with a number; an answer that
    is not one of the numbers keeps the cosine order (recorded as not re-ranked).
    """

    PROMPT = (
        "The picture contains: {name}. Which recording best matches the sound of {name} in this picture? "
        "Answer with the number only.\n{options}"
    )

    def __init__(
        self,
        model_id: str,
        device: str = "cpu",
        max_new_tokens: int = 4,
        torch_dtype: str = "auto",
        trust_remote_code: bool = False,
    ):
        from .describe import load_vlm

        self.model_id = model_id
        # the describer's cached loader: the same VLM is loaded once for describing and re-ranking
        self.processor, self.model = load_vlm(model_id, str(device), torch_dtype, trust_remote_code)
        self.device, self.max_new_tokens = device, max_new_tokens

    @classmethod
    def from_config(cls, config, device: str = "cpu") -> "VLMReranker":
        """`rerank_model` (default `vlm_model`) with the config's dtype and remote-code setting."""
        return cls(
            config.rerank_model or config.vlm_model,
            device=device,
            torch_dtype=config.torch_dtype,
            trust_remote_code=config.trust_remote_code,
        )

    def choose(self, image, name: str, options: list[str]) -> int | None:
        """Index into `options` of the model's choice, or `None` when its answer is not a valid number."""
        from .describe import image_prompt

        listing = "\n".join(f"{i + 1}. {text}" for i, text in enumerate(options))
        text = image_prompt(self.processor, self.PROMPT.format(name=name, options=listing))
        inputs = self.processor(images=[image], text=[text], return_tensors="pt").to(self.device)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        answer = self.processor.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)[0]
        return parse_choice(answer, len(options))


def parse_choice(answer: str, num_options: int) -> int | None:
    """First integer in `answer` as a 0-based option index, `None` if absent or out of range."""
    match = re.search(r"\d+", answer or "")
    if not match:
        return None
    value = int(match.group()) - 1
    return value if 0 <= value < num_options else None


def rerank(candidates: list[tuple[int, float]], choice: int | None) -> list[tuple[int, float]]:
    """Move the chosen candidate to the front; keep the rest in cosine order."""
    if choice is None:
        return candidates
    return [candidates[choice]] + [c for i, c in enumerate(candidates) if i != choice]
