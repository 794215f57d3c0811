"""Unit tests of diffusers_sonify.training_utils on tiny real components."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from train_helpers import sound, wav_bytes

from diffusers_sonify import training_utils as tu
from diffusers_sonify.models import AudioProjectionModel
from diffusers_sonify.tiny import tiny_pipeline_components


@pytest.fixture(scope="module")
def components():
    return tiny_pipeline_components(seed=0)


def test_audio_dropout_uses_the_adapters_null_tokens_and_trains_them():
    adapter = AudioProjectionModel(
        cross_attention_dim=8, pooled_dim=4, hidden_dim=6, num_pooled_tokens=2, num_hidden_tokens=3
    )
    embeds = adapter(pooled=torch.randn(5, 4), hidden_states=torch.randn(5, 7, 6))
    all_dropped, mask = tu.drop_audio_condition(embeds, adapter, 1.0, torch.Generator().manual_seed(0))
    assert mask.all() and torch.equal(all_dropped, adapter.get_null_audio_embeds(5))
    kept, mask = tu.drop_audio_condition(embeds, adapter, 0.0, torch.Generator().manual_seed(0))
    assert not mask.any() and torch.equal(kept, embeds)
    some, mask = tu.drop_audio_condition(embeds, adapter, 0.5, torch.Generator().manual_seed(1))  # 3 of 5 dropped
    assert 0 < mask.sum() < 5
    assert torch.equal(some[mask], adapter.get_null_audio_embeds(int(mask.sum()))) and torch.equal(
        some[~mask], embeds[~mask]
    )
    some.sum().backward()
    assert adapter.null_audio_embeds.grad.abs().sum() > 0  # the null tokens are learned through the dropout
    with pytest.raises(ValueError, match="audio_drop_prob"):
        tu.drop_audio_condition(embeds, adapter, 1.5, torch.Generator())


def test_text_dropout_replaces_rows_by_the_empty_prompt():
    text, null = torch.randn(4, 6, 8), torch.randn(1, 6, 8)
    out, mask = tu.drop_text_condition(text, null, 1.0, torch.Generator().manual_seed(0))
    assert mask.all() and torch.equal(out, null.expand(4, -1, -1))
    with pytest.raises(ValueError, match="text_drop_prob"):
        tu.drop_text_condition(text, null, -0.1, torch.Generator())


def test_training_noise_offset_shifts_each_image_and_channel():
    shape = (256, 3, 16, 16)
    plain = tu.training_noise(shape, torch.Generator().manual_seed(0))
    assert torch.equal(plain, torch.randn(shape, generator=torch.Generator().manual_seed(0)))  # offset 0: plain noise
    offset = tu.training_noise(shape, torch.Generator().manual_seed(0), offset=0.5)
    # the per-(image, channel) means of plain noise scatter by 1/16; the offset adds a N(0, 0.5^2) shift to each
    assert plain.mean(dim=(2, 3)).std() < 0.1
    assert 0.4 < offset.mean(dim=(2, 3)).std() < 0.6
    assert torch.allclose(
        offset - offset.mean(dim=(2, 3), keepdim=True), plain - plain.mean(dim=(2, 3), keepdim=True), atol=1e-5
    )
    with pytest.raises(ValueError, match="noise_offset"):
        tu.training_noise(shape, torch.Generator(), offset=-0.1)


def test_timestep_sampling_uniform_is_the_old_stream_and_logit_normal_favours_the_middle():
    num = 1000
    uniform = tu.sample_timesteps(64, num, torch.Generator().manual_seed(3))
    # the default draws exactly what the trainer drew before the option existed: recorded runs stay reproducible
    assert torch.equal(uniform, torch.randint(0, num, (64,), generator=torch.Generator().manual_seed(3)))
    t = tu.sample_timesteps(200_000, num, torch.Generator().manual_seed(0), "logit_normal")
    assert t.dtype == torch.long and t.min() >= 0 and t.max() <= num - 1
    # t / T = sigmoid(N(0, 1)): quartiles at T * sigmoid(-+0.674) = 338 / 662, the median at 500
    quartiles = torch.quantile(t.float(), torch.tensor([0.25, 0.5, 0.75]))
    assert torch.allclose(quartiles, torch.tensor([337.6, 499.5, 662.4]), atol=4)
    assert (t < 100).float().mean() < 0.02  # uniform: 0.10
    shifted = tu.sample_timesteps(200_000, num, torch.Generator().manual_seed(0), "logit_normal", logit_mean=1.0)
    assert abs(torch.quantile(shifted.float(), 0.5).item() - num * torch.sigmoid(torch.tensor(1.0)).item()) < 4
    with pytest.raises(ValueError, match="timestep_sampling"):
        tu.sample_timesteps(4, num, torch.Generator(), "cosine")
    with pytest.raises(ValueError, match="timestep_logit_std"):
        tu.sample_timesteps(4, num, torch.Generator(), "logit_normal", logit_std=0.0)
    with pytest.raises(ValueError, match="`timestep_logit_mean` and `timestep_logit_std` must be finite.*got nan"):
        tu.sample_timesteps(4, num, torch.Generator(), "logit_normal", logit_mean=float("nan"))


def test_loss_min_snr_weighting_and_targets():
    sched = DDPMScheduler(num_train_timesteps=1000)
    pred, target = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    t = torch.tensor([1, 100, 500, 999])
    assert torch.allclose(tu.diffusion_loss(pred, target, t, sched), torch.nn.functional.mse_loss(pred, target))
    # epsilon: weight min(SNR, gamma) / SNR with SNR = alpha_bar / (1 - alpha_bar)
    a = sched.alphas_cumprod[t]
    snr = a / (1 - a)
    per_sample = ((pred - target) ** 2).mean(dim=(1, 2, 3))
    expected = (per_sample * torch.clamp(snr, max=5.0) / snr).mean()
    assert torch.allclose(tu.diffusion_loss(pred, target, t, sched, snr_gamma=5.0), expected, rtol=1e-5)
    assert (torch.clamp(snr, max=5.0) / snr < 1).any()  # the weighting actually changes something here
    with pytest.raises(ValueError, match="snr_gamma"):
        tu.diffusion_loss(pred, target, t, sched, snr_gamma=0.0)
    latents, noise = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    assert tu.training_target(sched, latents, noise, t) is noise
    v = DDPMScheduler(num_train_timesteps=1000, prediction_type="v_prediction")
    expected_v = a.sqrt().view(-1, 1, 1, 1) * noise - (1 - a).sqrt().view(-1, 1, 1, 1) * latents
    assert torch.allclose(tu.training_target(v, latents, noise, t), expected_v, atol=1e-6)


def test_loss_types_regress_to_the_mean_the_median_or_between():
    sched = DDPMScheduler(num_train_timesteps=1000)
    # one pixel, five training targets: 0, 0, 0, 1, 1 -> mean 0.4, median 0
    target = torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0]).view(5, 1, 1, 1)
    t = torch.full((5,), 500)
    candidates = torch.linspace(0, 1, 101)

    def best(**kwargs):
        losses = [tu.diffusion_loss(torch.full_like(target, float(p)), target, t, sched, **kwargs) for p in candidates]
        return float(candidates[int(torch.argmin(torch.stack(losses)))])

    assert best() == pytest.approx(0.4)
    assert best(loss_type="l1") == 0.0
    assert best(loss_type="huber", huber_c=10.0) == pytest.approx(0.4)  # errors << c: MSE
    assert best(loss_type="huber", huber_c=0.01) < 0.05  # errors >> c: close to the median
    # pseudo-Huber is d^2 for small differences and about 2 c |d| for large ones
    pred, target = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    small = tu.diffusion_loss(target + 1e-3 * pred, target, t[:2], sched, loss_type="huber", huber_c=1.0)
    assert small == pytest.approx(float((1e-3 * pred).square().mean()), rel=1e-3)
    large = tu.diffusion_loss(target + 1e3 * pred, target, t[:2], sched, loss_type="huber", huber_c=0.5)
    assert large == pytest.approx(float((1e3 * pred).abs().mean()), rel=1e-2)
    # min-SNR weights apply per sample whatever the loss
    t = torch.tensor([1, 999])
    a = sched.alphas_cumprod[t]
    snr = a / (1 - a)
    expected = ((pred - target).abs().mean(dim=(1, 2, 3)) * torch.clamp(snr, max=5.0) / snr).mean()
    weighted = tu.diffusion_loss(pred, target, t, sched, snr_gamma=5.0, loss_type="l1")
    assert torch.allclose(weighted, expected, rtol=1e-5)
    with pytest.raises(ValueError, match=r"`loss_type` must be one of \('mse', 'rms', 'l1', 'huber'\), got 'l2'"):
        tu.diffusion_loss(pred, target, t, sched, loss_type="l2")
    with pytest.raises(ValueError, match="`huber_c` must be positive, got -1"):
        tu.diffusion_loss(pred, target, t, sched, loss_type="huber", huber_c=-1)


def test_rms_loss_gives_every_sample_the_same_pull_and_regresses_to_the_geometric_median():
    sched = DDPMScheduler(num_train_timesteps=1000)
    target = torch.randn(2, 3, 4, 4)
    noise = torch.randn(1, 3, 4, 4)  # the same error pattern in both samples, at two scales
    t = torch.tensor([10, 990])
    gradient_norms = {}
    for loss_type in ("mse", "rms"):
        # the second sample's error is 1,000 times the first's
        pred = (target + noise * torch.tensor([0.01, 10.0]).view(2, 1, 1, 1)).requires_grad_(True)
        loss = tu.diffusion_loss(pred, target, t, sched, loss_type=loss_type)
        loss.backward()
        gradient_norms[loss_type] = pred.grad.flatten(1).norm(dim=1)
        if loss_type == "rms":  # its value: the mean of the samples' RMS errors
            rms = (pred - target).detach().square().mean(dim=(1, 2, 3)).sqrt()
            assert loss.item() == pytest.approx(float(rms.mean()), rel=1e-5)
    ratio = gradient_norms["mse"][1] / gradient_norms["mse"][0]
    assert ratio == pytest.approx(1000, rel=1e-3)
    assert gradient_norms["rms"][1] == pytest.approx(float(gradient_norms["rms"][0]), rel=1e-4)
    # three two-pixel images (0, 0), (1, 0), (0, 1): the best constant prediction (p, p) is the mean under mse
    # (p = 1/3), the per-pixel median under l1 (p = 0) and the geometric median under rms (the Fermat point of the
    # triangle, p = (3 - sqrt(3)) / 6 = 0.211)
    images = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]).view(3, 1, 1, 2)
    t = torch.full((3,), 500)
    candidates = torch.linspace(0, 1, 1001)

    def best(loss_type):
        losses = [
            tu.diffusion_loss(torch.full_like(images, float(p)), images, t, sched, loss_type=loss_type)
            for p in candidates
        ]
        return float(candidates[int(torch.argmin(torch.stack(losses)))])

    assert best("mse") == pytest.approx(1 / 3, abs=1e-3)
    assert best("l1") == 0.0
    assert best("rms") == pytest.approx((3 - 3**0.5) / 6, abs=1e-3)


def test_rms_max_timestep_keeps_mse_pull_for_the_noisiest_samples():
    sched = DDPMScheduler(num_train_timesteps=1000)
    target = torch.randn(4, 3, 4, 4)
    noise = torch.randn(1, 3, 4, 4)
    # two samples below the threshold and two at or above it, each pair with errors 1,000 times apart
    scales = torch.tensor([0.01, 10.0, 0.01, 10.0]).view(4, 1, 1, 1)
    t = torch.tensor([10, 799, 800, 990])
    pred = (target + noise * scales).requires_grad_(True)
    loss = tu.diffusion_loss(pred, target, t, sched, loss_type="rms", rms_max_timestep=800)
    loss.backward()
    norms = pred.grad.flatten(1).norm(dim=1)
    assert norms[1] == pytest.approx(float(norms[0]), rel=1e-4)  # below: the same pull
    assert norms[3] / norms[2] == pytest.approx(1000, rel=1e-3)  # at or above: MSE's, growing with the error
    # the noisiest samples' squared errors over the batch's mean RMS error, the others' RMS errors
    squared = (pred - target).detach().square().mean(dim=(1, 2, 3))
    expected = torch.cat([squared[:2].sqrt(), squared[2:] / squared.sqrt().mean()]).mean()
    assert loss.item() == pytest.approx(float(expected), rel=1e-5)
    # a threshold above every timestep is the plain rms loss
    plain = tu.diffusion_loss(pred, target, t, sched, loss_type="rms")
    assert torch.equal(tu.diffusion_loss(pred, target, t, sched, loss_type="rms", rms_max_timestep=1000), plain)
    with pytest.raises(ValueError, match="`rms_max_timestep` applies to `loss_type: rms` only"):
        tu.diffusion_loss(pred, target, t, sched, rms_max_timestep=800)


def test_trainable_sets_lora_and_real_clipping():
    from accelerate import Accelerator

    c = tiny_pipeline_components(seed=0)
    modules = {k: c[k] for k in ("unet", "audio_projection", "audio_encoder", "vae")}
    params = tu.configure_trainable_parameters(modules, lora_rank=4)
    assert isinstance(params, list)
    unet_trainable = [n for n, p in c["unet"].named_parameters() if p.requires_grad]
    assert unet_trainable and all("lora_" in n for n in unet_trainable)
    assert all(p.requires_grad for p in c["audio_projection"].parameters())
    assert tu.count_parameters(c["audio_encoder"])[0] == tu.count_parameters(c["vae"])[0] == 0
    assert "audio_projection" in tu.trainable_summary(modules)
    with pytest.raises(ValueError, match="exclusive"):
        tu.configure_trainable_parameters(dict(modules), lora_rank=4, train_unet=True)

    optimizer = torch.optim.AdamW(params, lr=1e-3)
    assert {id(p) for p in optimizer.param_groups[0]["params"]} == {id(p) for p in params}
    accelerator = Accelerator(cpu=True)
    embeds = c["audio_projection"](pooled=torch.randn(2, 16), hidden_states=torch.randn(2, 10, 32))
    out = c["unet"](torch.randn(2, 4, 16, 16), torch.tensor([10, 500]), encoder_hidden_states=embeds).sample
    (out**2).mean().backward()
    pre = accelerator.clip_grad_norm_(params, 1e-4)
    post = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None]))
    assert pre > 1e-4 and post == pytest.approx(1e-4, rel=1e-3)
    lora_grads = [p.grad for n, p in c["unet"].named_parameters() if "lora_" in n]
    assert all(g is not None for g in lora_grads)


def test_trainable_state_dict_round_trip_and_mismatch(components):
    adapter = AudioProjectionModel(cross_attention_dim=8, pooled_dim=4, hidden_dim=6)
    adapter.requires_grad_(True)
    state = tu.trainable_state_dict(adapter)
    fresh = AudioProjectionModel(cross_attention_dim=8, pooled_dim=4, hidden_dim=6)
    tu.load_trainable_state_dict(fresh, state)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in state.items())
    state.pop("null_audio_embeds")
    with pytest.raises(ValueError, match="missing \\['null_audio_embeds'\\]"):
        tu.load_trainable_state_dict(fresh, state)


def test_augmentation_keeps_loudness_and_is_deterministic():
    wave = sound(2, seconds=3.0) * np.linspace(0.5, 1.0, 48000, dtype=np.float32)
    window = 16000
    a = tu.augment_waveform(wave, window, torch.Generator().manual_seed(0), max_gain_db=1.0)
    b = tu.augment_waveform(wave, window, torch.Generator().manual_seed(0), max_gain_db=1.0)
    assert len(a) == window and np.array_equal(a, b)
    outs = [tu.augment_waveform(wave, window, torch.Generator().manual_seed(s)) for s in range(20)]
    assert len({o[:50].tobytes() for o in outs}) > 1
    rms = lambda x: np.sqrt(np.mean(x**2))  # noqa: E731
    for out in outs:  # loudness within +-1 dB (gain) of the matching window (the 0.5..1 ramp adds < 2 dB more)
        assert abs(20 * np.log10(rms(out) / rms(wave))) < 1.0 + 2.0
    short = sound(1, seconds=0.5)
    out = tu.augment_waveform(short, window, torch.Generator().manual_seed(1), max_gain_db=0.0)
    assert len(out) == len(short) and np.allclose(np.abs(out), np.abs(short))  # only polarity may change


def test_decode_audio_cells():
    wave = sound(0, seconds=0.5)
    array, sr = tu.decode_audio({"bytes": wav_bytes(wave), "path": None})
    assert sr == 16000 and array.shape == (1, 8000) and np.allclose(array[0], wave, atol=1e-6)
    array, sr = tu.decode_audio({"array": wave, "sampling_rate": 16000})
    assert sr == 16000 and np.allclose(array[0], wave)
    resampled = tu.load_training_audio({"bytes": wav_bytes(wave), "path": None}, target_sr=8000, max_seconds=None)
    assert resampled.shape == (4000,)
    with pytest.raises(TypeError, match="audio_column"):
        tu.decode_audio(3.0)


def test_feature_cache_is_keyed_and_reused(tmp_path):
    calls = []

    def compute(idx):
        calls.append(idx)
        return {"pooled": torch.tensor(idx, dtype=torch.float32)[:, None].repeat(1, 3)}

    path = tu.feature_cache_path(tmp_path, "audio", "fp-a", "model1")
    first = tu.cached_features(path, compute, 5, batch_size=2)
    assert len(calls) == 3 and path.is_file() and first["pooled"].shape == (5, 3)
    again = tu.cached_features(path, compute, 5, batch_size=2)
    assert len(calls) == 3 and torch.equal(first["pooled"], again["pooled"])
    other = tu.feature_cache_path(tmp_path, "audio", "fp-b", "model1")
    assert other != path and not other.exists()
    adapter = AudioProjectionModel(cross_attention_dim=8, pooled_dim=4, hidden_dim=6)
    key = tu.model_fingerprint(adapter, extra={"sr": 16000})
    assert (
        key == tu.model_fingerprint(adapter, extra={"sr": 16000}) != tu.model_fingerprint(adapter, extra={"sr": 8000})
    )
    with torch.no_grad():
        adapter.null_audio_embeds.add_(1.0)
    assert tu.model_fingerprint(adapter, extra={"sr": 16000}) != key


def test_sampler_and_step_generator_are_position_keyed():
    s = tu.EpochShuffleSampler(10, seed=3)
    first = list(s)
    assert sorted(first) == list(range(10)) and list(s) == first
    s.set_epoch(1)
    assert list(s) != first
    draw = lambda *k: torch.rand(3, generator=tu.step_generator(*k))  # noqa: E731
    assert torch.equal(draw(0, 5, 0, 0), draw(0, 5, 0, 0))
    assert not torch.equal(draw(0, 5, 0, 0), draw(0, 5, 0, 1)) and not torch.equal(draw(0, 5, 0, 0), draw(0, 6, 0, 0))


def test_dataset_rows_collate_and_bad_columns(tiny_dataset_dir):
    ds = tu.load_training_dataset(tiny_dataset_dir)
    with pytest.raises(ValueError, match="`image_column`='picture'"):
        tu.load_training_dataset(tiny_dataset_dir, image_column="picture")
    rows = tu.SonifiedImageAudioDataset(ds, 32, 16000, 1.0, caption_column="caption")
    batch = tu.collate_examples([rows[0], rows[3]])
    assert batch["pixel_values"].shape == (2, 3, 32, 32) and batch["pixel_values"].abs().max() <= 1.0
    assert batch["index"].tolist() == [0, 3] and batch["caption"] == ["scene 0", "scene 3"]
    assert len(batch["waveform"]) == 2 and batch["waveform"][0].shape == (24000,)  # 1.5 s <= 2 x 1 s window
    every = torch.cat(list(tu.image_batches(rows, 3)))  # the rows' images in order, in batches of 3, 3 and 2
    assert every.shape == (8, 3, 32, 32) and torch.equal(every[[0, 3]], batch["pixel_values"])
    caches = tu.FeatureCaches(audio={"pooled": torch.randn(8, 4)}, latents={"latent_moments": torch.randn(8, 8, 4, 4)})
    cached = tu.collate_examples([tu.SonifiedImageAudioDataset(ds, 32, 16000, 1.0, caches=caches)[i] for i in (1, 2)])
    assert set(cached) == {"index", "caption", "pooled", "latent_moments"}
    assert torch.equal(cached["pooled"], caches.audio["pooled"][[1, 2]])
    with pytest.raises(ValueError, match="cached VAE latents"):
        tu.SonifiedImageAudioDataset(ds, 32, 16000, 1.0, caches=caches).pixel_values(0)


def test_random_hflip_flips_per_image_reproducibly_and_says_which():
    images = torch.arange(2 * 1 * 2 * 3, dtype=torch.float32).reshape(2, 1, 2, 3)
    all_flipped, mask = tu.random_hflip(images, torch.Generator().manual_seed(0), p=1.0)
    torch.testing.assert_close(all_flipped, images.flip(-1))
    assert mask.tolist() == [True, True]
    torch.testing.assert_close(tu.random_hflip(images, torch.Generator().manual_seed(0), p=0.0)[0], images)
    many = torch.randn(400, 3, 4, 4)
    out, mask = tu.random_hflip(many, torch.Generator().manual_seed(1))
    flipped = torch.tensor([torch.equal(o, m.flip(-1)) for o, m in zip(out, many)])
    unchanged = torch.tensor([torch.equal(o, m) for o, m in zip(out, many)])
    assert bool((flipped | unchanged).all()) and 150 < int(flipped.sum()) < 250
    assert torch.equal(mask, flipped)  # the mask names exactly the flipped images
    torch.testing.assert_close(out, tu.random_hflip(many, torch.Generator().manual_seed(1))[0])


def test_checkpoint_listing_rotation_and_resume(tmp_path):
    for step in (10, 2, 30):
        (tmp_path / f"checkpoint-{step}").mkdir()
    (tmp_path / "checkpoint-final").mkdir()  # not a step: ignored
    (tmp_path / ".checkpoint-40.tmp").mkdir()  # a save that was killed: never resumed from
    assert [p.name for p in tu.list_checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-10", "checkpoint-30"]
    assert tu.resolve_resume_checkpoint(tmp_path, "latest").name == "checkpoint-30"
    assert tu.resolve_resume_checkpoint(tmp_path / "empty", "latest") is None  # nothing yet: a fresh start
    assert tu.resolve_resume_checkpoint(tmp_path, None) is None
    with pytest.raises(FileNotFoundError, match="checkpoint-<step>"):
        tu.resolve_resume_checkpoint(tmp_path, str(tmp_path / "checkpoint-final"))
    removed = tu.rotate_checkpoints(tmp_path, total_limit=2)  # room for one more under the limit of 2
    assert [p.name for p in removed] == ["checkpoint-2", "checkpoint-10"]
    assert [p.name for p in tu.list_checkpoints(tmp_path)] == ["checkpoint-30"]
    assert tu.rotate_checkpoints(tmp_path, total_limit=None) == []
    assert tu.checkpoint_step(tmp_path / "checkpoint-30") == 30


def test_truncate_train_log_drops_steps_after_the_checkpoint(tmp_path):
    log = tmp_path / "train_log.jsonl"
    log.write_text("".join(f'{{"step": {s}, "loss": 0.5}}\n' for s in (1, 2, 3, 4, 5)))
    assert tu.truncate_train_log(log, 3) == 3
    assert [int(line.split(":")[1].split(",")[0]) for line in log.read_text().splitlines()] == [1, 2, 3]
    assert tu.truncate_train_log(tmp_path / "absent.jsonl", 3) == 0


def test_validation_leaves_modes_batchnorm_stats_and_rng_untouched(tmp_path):
    """A pipeline from freshly built components (training mode: CLAP dropout on, BatchNorm updating), as the
    trainer validates with --train_audio_encoder: generation must not change modes, weights, buffers or RNG."""
    import random

    from diffusers_sonify import AudioToImagePipeline

    c = tiny_pipeline_components(seed=0)
    modules = {k: c[k] for k in ("unet", "audio_projection", "audio_encoder", "vae")}
    tu.configure_trainable_parameters(modules, train_audio_encoder=True)
    for name, module in modules.items():
        module.train(name in ("audio_projection", "audio_encoder"))
    c["audio_encoder"].audio_model.audio_encoder.layers[0].eval()  # a mixed-mode submodule must come back as it was
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in c["audio_encoder"].modules())
    modes = {n: m.training for n, m in c["audio_encoder"].named_modules()}
    states = {k: {n: t.clone() for n, t in c[k].state_dict().items()} for k in modules}
    torch.manual_seed(123), np.random.seed(5), random.seed(7)
    rng = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    pipe = AudioToImagePipeline(**c)
    audio = [tmp_path / "a.wav", tmp_path / "b.wav"]
    for path, i in zip(audio, (0, 3)):
        path.write_bytes(wav_bytes(sound(i)))
    audio = [str(p) for p in audio]
    first = tu.generate_validation_images(pipe, audio, 2, 2.0, seed=0)
    assert torch.equal(torch.get_rng_state(), rng[0]) and np.array_equal(np.random.get_state()[1], rng[1])
    assert random.getstate() == rng[2]
    assert {n: m.training for n, m in c["audio_encoder"].named_modules()} == modes
    assert c["audio_projection"].training and not c["unet"].training
    for k in modules:
        after = c[k].state_dict()
        assert all(torch.equal(after[n], t) for n, t in states[k].items()), f"{k} changed (BatchNorm statistics?)"
    second = tu.generate_validation_images(pipe, audio, 2, 2.0, seed=0)
    assert [np.asarray(i).tobytes() for i in first] == [np.asarray(i).tobytes() for i in second]  # no dropout noise
    assert tu.image_grid(first).size == (2 * first[0].width, first[0].height)


def test_bad_rows_are_found_with_row_and_column(tmp_path, caplog):
    import io

    from datasets import Audio, Dataset, Features, Image, Value
    from train_helpers import scene

    def jpeg(i):
        buf = io.BytesIO()
        scene(i).save(buf, format="JPEG")
        return buf.getvalue()

    nan_wave = sound(1).copy()
    nan_wave[100:200] = np.nan
    images = [jpeg(0), jpeg(1)[:200], jpeg(2), jpeg(3)]  # row 1: a truncated JPEG
    audio = [wav_bytes(sound(0)), wav_bytes(sound(1)), wav_bytes(nan_wave), wav_bytes(sound(3))]  # row 2: NaN
    ds = Dataset.from_dict(
        {
            "image": [{"bytes": b, "path": None} for b in images],
            "audio": [{"bytes": b, "path": None} for b in audio],
            "caption": ["a", "b", "c", "d"],
        },
        features=Features({"image": Image(), "audio": Audio(), "caption": Value("string")}),
    )
    with caplog.at_level("WARNING", logger="diffusers_sonify.training_utils"):
        bad = tu.find_bad_rows(ds, "image", "audio", dataset_name="my/data")
    assert [(b["row"], b["column"]) for b in bad] == [(1, "image"), (2, "audio")]
    assert "truncated" in bad[0]["reason"].lower() and "NaN" in bad[1]["reason"]
    assert "my/data row 1 column image" in caplog.text and "my/data row 2 column audio" in caplog.text
    assert tu.find_bad_rows(ds.select([0, 3]), "image", "audio") == []


def test_attention_processor_changes_how_attention_is_computed_not_the_model():
    """The toy recipe's `attention_processor: AttnProcessor`: every attention layer gets diffusers' matrix-product
    processor instead of the default fused one; the weights are untouched, the output and the gradients agree."""
    from diffusers import UNet2DConditionModel
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    from diffusers_sonify.toyworld.components import UNET_CONFIG

    torch.manual_seed(0)
    fused = UNet2DConditionModel(**UNET_CONFIG)
    products = UNet2DConditionModel(**UNET_CONFIG)
    products.load_state_dict(fused.state_dict())
    tu.set_attention_processor(products, "AttnProcessor")
    assert {type(p) for p in fused.attn_processors.values()} == {AttnProcessor2_0}
    assert {type(p) for p in products.attn_processors.values()} == {AttnProcessor}
    assert len(products.attn_processors) == len(fused.attn_processors) > 0
    a, b = fused.state_dict(), products.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    sample, tokens = torch.randn(2, 3, 32, 32), torch.randn(2, 12, UNET_CONFIG["cross_attention_dim"])
    outs = [m(sample, torch.tensor([10, 900]), encoder_hidden_states=tokens).sample for m in (fused, products)]
    torch.testing.assert_close(outs[1], outs[0], atol=1e-4, rtol=1e-4)
    for out in outs:
        out.square().mean().backward()
    grads = [dict((n, p.grad) for n, p in m.named_parameters() if "attn" in n) for m in (fused, products)]
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 0
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-4, rtol=1e-3)
