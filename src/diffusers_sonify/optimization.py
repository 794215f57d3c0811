"""Muon for the weight matrices of the models trained here, AdamW for everything else.

Muon (Jordan et al. 2024, "Muon: An optimizer for hidden layers in neural networks") replaces each weight matrix's
momentum update by the nearest semi-orthogonal matrix, computed with a few Newton-Schulz iterations. A convolution
kernel `(out, in, k, k)` is treated as the matrix `(out, in * k * k)`. The update of a matrix of shape `(A, B)` is
scaled by `0.2 * sqrt(max(A, B))` (Liu et al. 2025, "Muon is Scalable for LLM Training"), which gives it about
AdamW's update RMS, so one learning rate (and one schedule) serves both kinds of parameter.

Which parameters Muon takes ([`muon_parameter_split`]): the `weight` of every `nn.Linear` and `nn.Conv2d`, except
the layers that read the input and write the output (`EDGE_LAYER_NAMES`: a UNet's `conv_in` and `conv_out`, a vision
tower's `patch_embedding`, a language model's `lm_head`) and LoRA factors. Biases, norms, embeddings, learned
tokens, the first and last layers and LoRA factors get AdamW. In the toy world, Muon reaches AdamW's final training
loss in about half the steps (RECIPE.md, "Muon").
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from .training_config import OPTIMIZERS

# Newton-Schulz quintic coefficients (a, b, c) from Jordan et al. 2024: they push every singular value of the
# normalised update into roughly [0.7, 1.2] in five iterations.
NEWTON_SCHULZ_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
# layers that read the model's input or write its output (a UNet's, a vision tower's patch embedding, a language
# model's head): AdamW, as the Muon authors advise
EDGE_LAYER_NAMES = ("conv_in", "conv_out", "patch_embedding", "lm_head")
# the Gram form of the iteration ([`orthogonalize`]) from this many columns per row: 1.6-2.6x faster for the toy UNet's
# 3 x 3 convolutions (64 x 576: 2.8 against 5.6 ms for 14 matrices), no faster at 64 x 128 (toyworld/RECIPE.md, d38)
GRAM_FORM_MIN_ASPECT = 4


def orthogonalize(matrices: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """Approximately the nearest semi-orthogonal matrix (`U V^T` of the SVD) of each matrix in a `(n, A, B)` batch.

    Runs the Newton-Schulz iteration in float32 on the wide orientation (fewer rows than columns), batched over `n`.
    A matrix at least `GRAM_FORM_MIN_ASPECT` times wider than tall (a 3 x 3 convolution's `(out, 9 in)`) runs it in
    the Gram form: every iterate is `x_k = M_k x_0` with `M_k` a polynomial in `G_0 = x_0 x_0^T`, so
    `G_k = M_k G_0 M_k` and `M_{k+1} = (a I + b G_k + c G_k^2) M_k` take only rows x rows products and the wide
    matrix is multiplied twice instead of twice per iteration: the same polynomial to float rounding.
    """
    if matrices.ndim != 3:
        raise ValueError(f"`matrices` must be a batch of matrices (n, rows, cols), got shape {tuple(matrices.shape)}.")
    x = matrices.float()
    tall = x.shape[1] > x.shape[2]
    if tall:
        x = x.transpose(1, 2)
    x = x / (torch.linalg.matrix_norm(x, keepdim=True) + eps)  # spectral norm <= Frobenius norm <= 1
    a, b, c = NEWTON_SCHULZ_COEFFICIENTS
    if steps > 0 and x.shape[2] >= GRAM_FORM_MIN_ASPECT * x.shape[1]:
        gram_0 = torch.bmm(x, x.transpose(1, 2))
        gram, poly = gram_0, None
        for step in range(steps):
            factor = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)  # b G + c G G, then + a I on the diagonal
            factor.diagonal(dim1=1, dim2=2).add_(a)
            poly = factor if poly is None else torch.bmm(factor, poly)
            if step + 1 < steps:
                gram = torch.bmm(poly, torch.bmm(gram_0, poly))
        x = torch.bmm(poly, x)
    else:
        for _ in range(steps):  # x <- a x + (b G + c G G) x with G = x x^T, as two fused `baddbmm` products
            gram = torch.bmm(x, x.transpose(1, 2))
            x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.transpose(1, 2) if tall else x


def orthogonalize_shared(matrices: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """[`orthogonalize`] split over the processes of a data-parallel run: each process orthogonalizes its share of
    the `(n, A, B)` batch and gathers the others' (`torch.distributed.all_gather`), so every process gets the whole
    result while each computes about `1 / world_size` of it. Every process must call it with the same matrices, as
    it does after data-parallel training has averaged the gradients. Without an initialised process group of more
    than one process it is [`orthogonalize`].

    Every process ends with the same tensors, and they are [`orthogonalize`]'s result: the iteration treats each
    matrix of the batch on its own, so only the batched products' rounding may differ (on the 2-core Xeon of
    toyworld/RECIPE.md, d31, not in one bit); the shares are padded with zero matrices to one size, which stay zero."""
    import torch.distributed as dist

    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    if world == 1:
        return orthogonalize(matrices, steps)
    n, per = matrices.shape[0], -(-matrices.shape[0] // world)
    padded = torch.cat([matrices, matrices.new_zeros(per * world - n, *matrices.shape[1:])])
    start = dist.get_rank() * per
    mine = orthogonalize(padded[start : start + per], steps).contiguous()
    shares = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(shares, mine)
    return torch.cat(shares)[:n]


def muon_parameter_split(modules: dict[str, nn.Module | None]) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """The trainable parameters of `modules` as `(muon, adamw)` lists (see the module docstring for the rule)."""
    muon_ids: set[int] = set()
    for module in modules.values():
        if module is None:
            continue
        for name, layer in module.named_modules():
            leaf = name.rsplit(".", 1)[-1]
            if leaf in EDGE_LAYER_NAMES or "lora_" in name:
                continue
            if isinstance(layer, (nn.Linear, nn.Conv2d)) and layer.weight.requires_grad:
                shape = layer.weight.shape
                if shape[0] > 1 and math.prod(shape[1:]) > 1:
                    muon_ids.add(id(layer.weight))
    muon, adamw, seen = [], [], set()
    for module in modules.values():
        if module is None:
            continue
        for p in module.parameters():
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            (muon if id(p) in muon_ids else adamw).append(p)
    return muon, adamw


def make_optimizer(
    name: str,
    modules: dict[str, nn.Module | None],
    params: list[nn.Parameter],
    *,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum: float = 0.95,
) -> torch.optim.Optimizer:
    """The optimizer `name` (one of `OPTIMIZERS`) over `params`, the trainable parameters of `modules`: AdamW, or
    [`MuonAdamW`] with Muon on the weight matrices among `params` ([`muon_parameter_split`]) and AdamW on the rest."""
    if name not in OPTIMIZERS:
        raise ValueError(f"`optimizer` must be one of {OPTIMIZERS}, got {name!r}.")
    adam = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}
    if name == "adamw":
        return torch.optim.AdamW(params, **adam)
    matrices = {id(p) for p in muon_parameter_split(modules)[0]}
    muon = [p for p in params if id(p) in matrices]
    rest = [p for p in params if id(p) not in matrices]
    return MuonAdamW(muon, rest, momentum=momentum, **adam)


class MuonAdamW(torch.optim.Optimizer):
    """Muon on the `muon_params`, AdamW on the `adamw_params`, one learning rate (two param groups; schedulers scale
    both).

    Args:
        muon_params: weight matrices (2-D, or conv kernels flattened to 2-D).
        adamw_params: everything else.
        lr: learning rate of both groups (Muon's is rescaled per matrix to AdamW's update size).
        momentum: Muon's momentum (Nesterov form).
        betas, eps: AdamW's.
        weight_decay: decoupled weight decay of both groups.
        ns_steps: Newton-Schulz iterations.

    In a data-parallel run (an initialised `torch.distributed` process group) the processes share the Newton-Schulz
    work ([`orthogonalize_shared`]); every process must then step with the same gradients, as DDP's averaged ones
    are (sharded gradients, as FSDP's, are not supported).
    """

    def __init__(
        self,
        muon_params: Iterable[nn.Parameter],
        adamw_params: Iterable[nn.Parameter],
        lr: float = 1e-3,
        momentum: float = 0.95,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        ns_steps: int = 5,
    ):
        if not 0 <= momentum < 1:
            raise ValueError(f"`momentum`={momentum} must be in [0, 1).")
        groups = [
            {"params": list(muon_params), "use_muon": True},
            {"params": list(adamw_params), "use_muon": False},
        ]
        for p in groups[0]["params"]:
            if p.ndim < 2:
                raise ValueError(
                    f"Muon takes weight matrices or conv kernels; got a parameter of shape {tuple(p.shape)}."
                )
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "ns_steps": ns_steps,
        }
        super().__init__([g for g in groups if g["params"]], defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                (self._muon_step if group["use_muon"] else self._adamw_step)(group, params)
        return loss

    def _muon_step(self, group: dict, params: list[nn.Parameter]) -> None:
        lr, momentum = group["lr"], group["momentum"]
        by_shape: dict[tuple[int, int], list[tuple[nn.Parameter, torch.Tensor]]] = {}
        for p in params:
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p)
            buf = state["momentum_buffer"]
            buf.mul_(momentum).add_(p.grad)
            update = p.grad.add(buf, alpha=momentum).reshape(p.shape[0], -1)
            by_shape.setdefault(tuple(update.shape), []).append((p, update))
        for (rows, cols), items in by_shape.items():  # one batched iteration per matrix shape, split over processes
            ortho = orthogonalize_shared(torch.stack([u for _, u in items]), group["ns_steps"])
            scale = 0.2 * math.sqrt(max(rows, cols))
            for (p, _), o in zip(items, ortho):
                if group["weight_decay"]:
                    p.mul_(1 - lr * group["weight_decay"])
                p.add_(o.reshape(p.shape).to(p.dtype), alpha=-lr * scale)

    def _adamw_step(self, group: dict, params: list[nn.Parameter]) -> None:
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        for p in params:
            state = self.state[p]
            if "step" not in state:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
            state["step"] += 1
        grads = [p.grad for p in params]
        exp_avg = [self.state[p]["exp_avg"] for p in params]
        exp_avg_sq = [self.state[p]["exp_avg_sq"] for p in params]
        torch._foreach_lerp_(exp_avg, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sq, beta2)
        torch._foreach_addcmul_(exp_avg_sq, grads, grads, value=1 - beta2)
        if group["weight_decay"]:
            torch._foreach_mul_(params, 1 - lr * group["weight_decay"])
        for p, m, v in zip(params, exp_avg, exp_avg_sq):  # per parameter: its step count sets the bias correction
            step = self.state[p]["step"]
            denom = (v / (1 - beta2**step)).sqrt_().add_(eps)
            p.addcdiv_(m, denom, value=-lr / (1 - beta1**step))
