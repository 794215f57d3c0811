"""Retrieve stage: per sound source, the best clips of the audio corpus by cosine similarity.

Exact search with plain chunked tensor math ([`topk_cosine`]), then a score threshold and a reuse cap applied in
one deterministic pass over the dataset ([`assign_clips`]), optionally after VLM re-ranking ([`VLMReranker`]).
"""

from __future__ import annotations

import logging
import re

import torch

logger = logging.getLogger(__name__)


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


def assign_clips(
    candidates: list[list[list[tuple[int, float]]]], min_score: float, max_uses: int = 0
) -> tuple[list[list[tuple[int, float] | None]], dict[int, int]]:
    """Choose one clip per source, in dataset order, under a threshold and a reuse cap.

    Args:
        candidates: per row, per source, `(bank_row, score)` pairs best first (after any re-ranking).
        min_score (`float`): candidates scoring below are rejected.
        max_uses (`int`): a clip is chosen at most this often over the whole dataset; 0 disables the cap.

    Returns:
        `(choices, uses)`: per row, per source, the chosen `(bank_row, score)` or `None` (nothing above the
        threshold or every good clip at its cap); and the use count of each chosen clip. The pass is sequential
        and depends only on the candidate order, so reruns choose the same clips.
    """
    uses: dict[int, int] = {}
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
        listing = "\n".join(f"{i + 1}. {text}" for i, text in enumerate(options))
        messages = [
            {
                "role": "user",
                "content": [
                    {"type": "image"},
                    {"type": "text", "text": self.PROMPT.format(name=name, options=listing)},
                ],
            }
        ]
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True)
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
