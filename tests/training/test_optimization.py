"""Muon (diffusers_sonify.optimization): the orthogonalisation, which parameters it takes, its step, and a resume."""

from __future__ import annotations

import copy

import pytest
import torch
from diffusers import UNet2DConditionModel

from diffusers_sonify import training_utils as tu
from diffusers_sonify.models import AudioProjectionModel
from diffusers_sonify.optimization import (
    GRAM_FORM_MIN_ASPECT,
    NEWTON_SCHULZ_COEFFICIENTS,
    MuonAdamW,
    make_optimizer,
    muon_parameter_split,
    orthogonalize,
    orthogonalize_shared,
)
from diffusers_sonify.toyworld.components import ADAPTER_CONFIG, UNET_CONFIG
from diffusers_sonify.training_config import TrainingConfig


def polar(matrix: torch.Tensor) -> torch.Tensor:
    """U V^T of the SVD: the exact nearest semi-orthogonal matrix."""
    u, _, vh = torch.linalg.svd(matrix, full_matrices=False)
    return u @ vh


@pytest.mark.parametrize("shape", [(3, 8, 40), (2, 40, 8), (1, 16, 16)])
def test_orthogonalize_approximates_the_polar_factor_at_any_scale(shape):
    gen = torch.Generator().manual_seed(0)
    for scale in (1e-4, 1.0, 1e4):
        g = torch.randn(shape, generator=gen) * scale
        out = orthogonalize(g)
        assert out.shape == g.shape
        singular = torch.linalg.svdvals(out)
        assert singular.min() > 0.6 and singular.max() < 1.2, singular  # Newton-Schulz lands in about [0.7, 1.1]
        for o, m in zip(out, g):
            assert torch.nn.functional.cosine_similarity(o.flatten(), polar(m).flatten(), dim=0) > 0.97
    with pytest.raises(ValueError, match="batch of matrices"):
        orthogonalize(torch.randn(8, 8))


@pytest.mark.parametrize("rows, cols, rank, gram_form", [(24, 56, None, False), (8, 72, None, True), (6, 40, 2, True)])
def test_orthogonalize_is_the_quintic_iteration_written_out(rows, cols, rank, gram_form):
    """Both forms (fused products below `GRAM_FORM_MIN_ASPECT` columns per row, the Gram form from there on) compute
    the Newton-Schulz polynomial of Jordan et al. term by term (to float rounding), for full-rank and rank-deficient
    updates alike, in either orientation."""
    assert (cols >= GRAM_FORM_MIN_ASPECT * rows) == gram_form  # each case takes the form it is meant to test
    a, b, c = NEWTON_SCHULZ_COEFFICIENTS
    gen = torch.Generator().manual_seed(3)
    if rank is None:
        g = torch.randn(4, rows, cols, generator=gen)
    else:
        g = torch.randn(4, rows, rank, generator=gen) @ torch.randn(4, rank, cols, generator=gen)
    for matrices in (g, g.transpose(1, 2)):
        x = matrices.transpose(1, 2) if matrices.shape[1] > matrices.shape[2] else matrices
        x = x / (torch.linalg.matrix_norm(x, keepdim=True) + 1e-7)
        for _ in range(5):
            gram = x @ x.transpose(1, 2)
            x = a * x + (b * gram + c * gram @ gram) @ x
        expected = x.transpose(1, 2) if matrices.shape[1] > matrices.shape[2] else x
        out = orthogonalize(matrices)
        if rank is None:
            torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
        else:  # beyond the rank both carry only rounding noise (singular values ~1e-5), amplified differently
            svd = torch.linalg.svdvals
            torch.testing.assert_close(svd(out)[:, :rank], svd(expected)[:, :rank], atol=1e-5, rtol=1e-5)
            assert svd(out)[:, rank:].max() < 1e-4 and svd(expected)[:, rank:].max() < 1e-4
            torch.testing.assert_close(out, expected, atol=5e-4, rtol=0)


def test_muon_takes_the_hidden_weight_matrices_and_adamw_the_rest():
    unet, adapter = UNet2DConditionModel(**UNET_CONFIG), AudioProjectionModel(**ADAPTER_CONFIG)
    frozen = torch.nn.Linear(4, 4).requires_grad_(False)
    muon, adamw = muon_parameter_split({"unet": unet, "audio_projection": adapter, "audio_encoder": frozen, "x": None})
    muon_ids, adamw_ids = {id(p) for p in muon}, {id(p) for p in adamw}
    trainable = [p for m in (unet, adapter) for p in m.parameters()]
    assert not muon_ids & adamw_ids and muon_ids | adamw_ids == {id(p) for p in trainable}
    assert len(muon) + len(adamw) == len(trainable)  # each parameter once
    for m in (unet, adapter):
        for name, layer in m.named_modules():
            if isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d)):
                edge = name in ("conv_in", "conv_out")
                assert (id(layer.weight) in muon_ids) != edge, name
                if layer.bias is not None:
                    assert id(layer.bias) in adamw_ids, name
    assert all(p.ndim >= 2 for p in muon)
    assert id(adapter.null_audio_embeds) in adamw_ids  # a learned token, not a weight matrix
    assert id(unet.add_embedding.pool.positional_embedding) in adamw_ids
    assert id(frozen.weight) not in muon_ids | adamw_ids

    unet.requires_grad_(False)
    from peft import LoraConfig

    unet.add_adapter(LoraConfig(r=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    muon, adamw = muon_parameter_split({"unet": unet})
    assert not muon and adamw and all("lora" in n for n, p in unet.named_parameters() if p.requires_grad)


def test_a_step_moves_matrices_by_their_polar_factor_and_the_rest_like_torch_adamw():
    gen = torch.Generator().manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(16, 8, 3, 3, generator=gen))
    bias = torch.nn.Parameter(torch.randn(16, generator=gen))
    reference = torch.nn.Parameter(bias.detach().clone())
    lr, momentum = 1e-2, 0.9
    opt = MuonAdamW([weight], [bias], lr=lr, momentum=momentum, betas=(0.8, 0.99))
    torch_adamw = torch.optim.AdamW([reference], lr=lr, betas=(0.8, 0.99), weight_decay=0.0)
    before = weight.detach().clone()
    for step in range(5):
        grads = torch.randn(16, 8, 3, 3, generator=gen), torch.randn(16, generator=gen)
        weight.grad, bias.grad, reference.grad = grads[0], grads[1], grads[1].clone()
        opt.step()
        torch_adamw.step()
        torch.testing.assert_close(bias, reference)  # the AdamW group is AdamW
        if step == 0:  # first step: momentum buffer = g, Nesterov update = (1 + momentum) g
            delta = (weight.detach() - before).reshape(16, -1)
            scale = lr * 0.2 * 72**0.5  # matched to AdamW's update RMS: 0.2 sqrt(max(16, 8 * 3 * 3))
            singular = torch.linalg.svdvals(delta / scale)
            assert singular.min() > 0.6 and singular.max() < 1.2
            cos = torch.nn.functional.cosine_similarity(-delta.flatten(), polar(grads[0].reshape(16, -1)).flatten(), 0)
            assert cos > 0.97
    decayed = MuonAdamW([weight], [bias], lr=0.1, weight_decay=0.5)
    weight.grad, bias.grad = torch.zeros_like(weight), None
    kept = weight.detach().clone()
    decayed.step()  # a zero gradient: only the decoupled decay moves the weight; no gradient: untouched
    torch.testing.assert_close(weight.detach(), kept * (1 - 0.1 * 0.5))
    with pytest.raises(ValueError, match="weight matrices"):
        MuonAdamW([bias], [])


def test_a_resumed_optimizer_continues_exactly():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.SiLU(), torch.nn.Flatten(), torch.nn.Linear(72, 2))
    x = torch.randn(4, 3, 5, 5)

    def train(m, opt, steps):
        for _ in range(steps):
            opt.zero_grad()
            m(x).square().mean().backward()
            opt.step()

    def make(m):
        return MuonAdamW(*muon_parameter_split({"m": m}), lr=1e-2)

    a = model
    opt_a = make(a)
    train(a, opt_a, 3)
    b = copy.deepcopy(a)
    opt_b = make(b)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))
    train(a, opt_a, 2)
    train(b, opt_b, 2)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert {k for s in opt_b.state.values() for k in s} == {"momentum_buffer", "step", "exp_avg", "exp_avg_sq"}


def test_training_builds_the_configured_optimizer_and_rejects_unknown_ones(tmp_path):
    unet, adapter = UNet2DConditionModel(**UNET_CONFIG), AudioProjectionModel(**ADAPTER_CONFIG)
    modules = {"unet": unet, "audio_projection": adapter}
    params = [p for m in modules.values() for p in m.parameters()]
    common = dict(dataset_name=str(tmp_path), audio_encoder_name_or_path=str(tmp_path), learning_rate=3e-4)
    adamw = tu.build_optimizer(TrainingConfig(**common), modules, params)
    assert type(adamw) is torch.optim.AdamW and adamw.param_groups[0]["lr"] == 3e-4
    muon = tu.build_optimizer(TrainingConfig(**common, optimizer="muon", muon_momentum=0.9), modules, params)
    assert isinstance(muon, MuonAdamW) and [g["use_muon"] for g in muon.param_groups] == [True, False]
    assert all(g["lr"] == 3e-4 and g["momentum"] == 0.9 for g in muon.param_groups)
    assert sum(len(g["params"]) for g in muon.param_groups) == len(params)
    with pytest.raises(ValueError, match=r"`optimizer` must be one of \('adamw', 'muon'\), got 'sgd'"):
        TrainingConfig(**common, optimizer="sgd")
    with pytest.raises(ValueError, match=r"`optimizer` must be one of \('adamw', 'muon'\), got 'sgd'"):
        make_optimizer("sgd", modules, params, lr=1e-3)  # the toy VLM's path, without a TrainingConfig
    with pytest.raises(ValueError, match="muon_momentum"):
        TrainingConfig(**common, muon_momentum=1.0)


def test_in_a_vlm_muon_takes_the_hidden_linear_weights_only():
    from diffusers_sonify.tiny import tiny_idefics3

    _, model = tiny_idefics3(seed=0)
    muon, adamw = muon_parameter_split({"vlm": model})
    muon_ids = {id(p) for p in muon}
    names = {n for n, p in model.named_parameters() if id(p) in muon_ids}
    assert names and all(n.endswith(".weight") for n in names)
    assert not any("embed" in n or "lm_head" in n or "norm" in n for n in names), names  # incl. patch_embedding
    assert any("vision_model" in n for n in names) and any("connector" in n for n in names)
    assert id(model.lm_head.weight) in {id(p) for p in adamw}
    assert len(muon) + len(adamw) == len([p for p in model.parameters() if p.requires_grad])


SHARED_SHAPES = ((5, 8, 24), (4, 24, 8), (1, 16, 16))  # (n, rows, cols): an odd batch, a tall one, a single matrix
SHARED_WORKER = f"""
import sys
import torch
import torch.distributed as dist
from diffusers_sonify import optimization

rank, rendezvous, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
torch.set_num_threads(1)
dist.init_process_group("gloo", init_method="file://" + rendezvous, rank=rank, world_size=2)
computed = []
plain = optimization.orthogonalize


def counting(matrices, steps=5):
    computed.append(matrices.shape[0])
    return plain(matrices, steps)


optimization.orthogonalize = counting
g = torch.Generator().manual_seed(0)  # the same matrices on both processes, as after averaged gradients
batches = [torch.randn(n, rows, cols, generator=g) for n, rows, cols in {SHARED_SHAPES}]
torch.save({{"shared": [optimization.orthogonalize_shared(b) for b in batches], "computed": computed}}, out)
dist.destroy_process_group()
"""


def test_orthogonalize_shared_splits_the_work_over_processes_and_equals_orthogonalize(tmp_path):
    """Two gloo processes, as in a data-parallel run: each orthogonalizes its share of every batch (an odd batch
    included, and a batch of one matrix, whose second share is padding), and both end with the same result, to the
    last bit (`all_gather` hands both the same tensors), which is `orthogonalize`'s for the whole batch (to float
    rounding: the shares are smaller batched products, which another CPU's kernels need not round alike)."""
    import subprocess
    import sys

    script = tmp_path / "worker.py"
    script.write_text(SHARED_WORKER)
    outs = [tmp_path / f"rank{r}.pt" for r in range(2)]
    procs = [
        subprocess.Popen([sys.executable, str(script), str(r), str(tmp_path / "rendezvous"), str(outs[r])])
        for r in range(2)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(n, rows, cols, generator=g) for n, rows, cols in SHARED_SHAPES]
    results = [torch.load(out) for out in outs]
    for result in results:
        assert result["computed"] == [3, 2, 1]  # ceil(n / 2) matrices each, not n
    for got_0, got_1, batch in zip(results[0]["shared"], results[1]["shared"], batches):
        assert torch.equal(got_0, got_1)
        torch.testing.assert_close(got_0, orthogonalize(batch), atol=1e-5, rtol=1e-5)
    assert orthogonalize_shared(batches[0]).equal(orthogonalize(batches[0]))  # no process group: orthogonalize itself
