"""Loudness, reverb, looping, mixing and limiting in diffusers_sonify.audio."""

import math

import pytest
import torch
import torchaudio

from diffusers_sonify.audio import (
    TRUE_PEAK_OVERSAMPLING,
    apply_reverb,
    estimate_rt60,
    fit_to_duration,
    gain_to_lufs,
    limit_peaks,
    measure_loudness,
    mix,
    synthetic_impulse_response,
    torch_threads,
    true_peak,
)

SR = 16_000


def _signals():
    g = torch.Generator().manual_seed(0)
    t = torch.arange(2 * SR) / SR
    return {
        "noise": 0.1 * torch.randn(2 * SR, generator=g),
        "tone": 0.5 * torch.sin(2 * math.pi * 440 * t),
        "bursts": torch.randn(2 * SR, generator=g) * (torch.sin(2 * math.pi * 2 * t) > 0.6),
    }


@pytest.mark.parametrize("target", [-14.0, -23.0, -40.0])
@pytest.mark.parametrize("name", ["noise", "tone", "bursts"])
def test_gain_to_lufs_hits_target(name, target):
    out, measured = gain_to_lufs(_signals()[name], SR, target)
    assert abs(measured - target) <= 0.1
    assert abs(measure_loudness(out, SR) - target) <= 0.1


def test_loudness_is_6db_per_doubling_and_silence_is_minus_inf():
    x = _signals()["noise"]
    assert measure_loudness(2 * x, SR) - measure_loudness(x, SR) == pytest.approx(20 * math.log10(2), abs=0.05)
    assert measure_loudness(torch.zeros(SR), SR) == float("-inf")
    with pytest.raises(ValueError, match="silent"):
        gain_to_lufs(torch.zeros(SR), SR, -23.0)


@pytest.mark.parametrize("sr", [16_000, 48_000])
@pytest.mark.parametrize("rt60", [0.15, 0.4, 0.8, 1.8])
def test_rt60_measured_back_within_20_percent(rt60, sr):
    for drr in (10.0, -3.0):
        ir = synthetic_impulse_response(rt60, sr, seed=3, direct_to_reverb_db=drr)
        assert abs(estimate_rt60(ir, sr) - rt60) / rt60 < 0.2


def test_reverb_keeps_length_lengthens_decay_and_rejects_bad_rt60():
    click = torch.zeros(SR)
    click[100] = 1.0
    ir = synthetic_impulse_response(0.5, SR, seed=0, direct_to_reverb_db=0.0)
    wet = apply_reverb(click, ir)
    assert wet.shape == click.shape
    assert wet[100] == pytest.approx(1.0) and wet[100 + 4000 :].abs().sum() > 0  # tail after 0.25 s
    assert estimate_rt60(wet[100:], SR) == pytest.approx(0.5, rel=0.2)
    with pytest.raises(ValueError, match="rt60"):
        synthetic_impulse_response(0.0, SR)


def test_fit_to_duration_loops_and_trims():
    x = torch.arange(1, 6, dtype=torch.float32)
    assert torch.equal(fit_to_duration(x, 12), torch.cat([x, x, x[:2]]))
    assert torch.equal(fit_to_duration(x, 3), x[:3])
    with pytest.raises(ValueError, match="empty"):
        fit_to_duration(torch.zeros(0), 4)


def test_mix_and_limit_peaks():
    s = _signals()
    assert torch.allclose(mix([s["noise"], torch.zeros_like(s["noise"])]), s["noise"])
    with pytest.raises(ValueError, match="different lengths"):
        mix([s["noise"], s["noise"][:10]])
    loud = s["noise"] * 4.0
    loud[::3000] = 3.0  # sparse spikes
    limited = limit_peaks(loud, SR, ceiling_dbfs=-1.0)
    assert float(limited.abs().max()) <= 10 ** (-1 / 20) + 1e-6
    # only the neighbourhood of peaks is attenuated: the loudness barely moves
    assert abs(measure_loudness(limited, SR) - measure_loudness(loud, SR)) < 3.0
    quiet = s["noise"]
    assert torch.equal(limit_peaks(quiet, SR), quiet)


def test_torch_threads_sets_and_restores_the_thread_count_even_on_error():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError, match="boom"), torch_threads(1):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before


def _true_peak_fft_db(x: torch.Tensor, factor: int = 4) -> float:
    """Independent of the library: ideal band-limited (FFT zero-padding) 4x oversampling, in dBTP."""
    x = torch.nn.functional.pad(x.to(torch.float64), (1024, 1024))
    spectrum = torch.fft.rfft(x)
    padded = torch.zeros(factor * x.shape[-1] // 2 + 1, dtype=spectrum.dtype)
    padded[: spectrum.shape[-1]] = spectrum
    return 20 * math.log10(float((torch.fft.irfft(padded, factor * x.shape[-1]) * factor).abs().max()))


def test_true_peak_limiter_holds_minus_one_dbtp_where_sample_peak_limiting_does_not():
    """EBU R128's -1 dBTP: a sine at fs/4 sampled 45 degrees off its crests has sample peaks 3 dB below its true
    peak; an impulsive band-limited click train overshoots between samples."""
    sr = 48_000
    t = torch.arange(sr, dtype=torch.float64) / sr
    offset_sine = torch.sin(2 * math.pi * (sr / 4) * t + math.pi / 4).float()
    g = torch.Generator().manual_seed(0)
    clicks = torch.zeros(sr)
    clicks[::4800] = 3.0
    clicks = torchaudio.functional.lowpass_biquad(clicks + 0.05 * torch.randn(sr, generator=g), sr, 16_000)
    for signal in (offset_sine, clicks):
        assert _true_peak_fft_db(signal) > -0.5
        sample_limited = limit_peaks(signal, sr, ceiling_dbfs=-1.0)
        true_limited = limit_peaks(signal, sr, ceiling_dbfs=-1.0, oversampling=TRUE_PEAK_OVERSAMPLING)
        assert _true_peak_fft_db(true_limited) <= -1.0 + 0.01
        assert 20 * math.log10(true_peak(true_limited)) <= -1.0 + 1e-4
        assert float(true_limited.abs().max()) <= 10 ** (-1 / 20)
    assert _true_peak_fft_db(sample_limited) > -0.5  # the old promise broken by sample-peak limiting
    # a sine with its crests on samples: the estimate equals the amplitude
    assert true_peak(0.5 * torch.sin(2 * math.pi * 1000 * t[: sr // 10]).float()) == pytest.approx(0.5, rel=1e-3)


def test_loudness_agrees_with_pyloudnorm():
    pyloudnorm = pytest.importorskip("pyloudnorm")
    meter = pyloudnorm.Meter(SR)
    for name, x in _signals().items():
        reference = meter.integrated_loudness(x.double().numpy())
        assert measure_loudness(x, SR) == pytest.approx(reference, abs=0.1), name


@pytest.mark.parametrize("sr", [16_000, 44_100, 48_000])
def test_loudness_agrees_with_torchaudio_at_any_rate_and_channel_count(sr):
    g = torch.Generator().manual_seed(sr)
    t = torch.arange(3 * sr) / sr
    stereo = torch.stack([0.1 * torch.randn(3 * sr, generator=g), 0.2 * torch.sin(2 * math.pi * 3000 * t)])
    quiet_tail = torch.cat([0.2 * torch.randn(sr, generator=g), 1e-4 * torch.randn(2 * sr, generator=g)])
    for x in (stereo, stereo[0], quiet_tail):  # quiet_tail: most blocks fall under the relative gate
        # torchaudio's filters clamp to [-1, 1]: give it the signal at peak 0.25 and add the gain back
        scale = 0.25 / float(x.abs().max())
        reference = float(torchaudio.functional.loudness((x if x.ndim == 2 else x[None]).double() * scale, sr))
        assert measure_loudness(x, sr) == pytest.approx(reference - 20 * math.log10(scale), abs=1e-6)


def test_gain_to_lufs_reports_the_loudness_of_what_it_returns():
    # the loudness of each trial gain comes from the unscaled signal's block powers: check it against a fresh
    # measurement of the returned waveform, including a clip whose blocks straddle the -70 LUFS absolute gate
    g = torch.Generator().manual_seed(1)
    straddling = torch.cat([0.3 * torch.randn(SR, generator=g), 3e-4 * torch.randn(SR, generator=g)])
    for x in [*_signals().values(), straddling]:
        for target in (-10.0, -30.0, -55.0):
            out, measured = gain_to_lufs(x, SR, target)
            assert measured == pytest.approx(measure_loudness(out, SR), abs=1e-6)
            assert abs(measured - target) < 0.05


def test_loudness_rejects_more_channels_than_bs1770_weights():
    with pytest.raises(ValueError, match="up to 5 channels"):
        measure_loudness(torch.randn(6, SR), SR)


def test_reverb_pads_its_fft_to_a_fast_length_and_matches_plain_convolution():
    from diffusers_sonify.audio import apply_reverb, fast_fft_length

    def five_smooth(m):
        for q in (2, 3, 5):
            while m % q == 0:
                m //= q
        return m == 1

    for n in (1, 7, 97, 12_345, 1_000_003):
        length = fast_fft_length(n)
        assert length >= n and five_smooth(length)
        assert not any(five_smooth(k) for k in range(n, length))  # the smallest such length
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4001, generator=g)
    ir = torch.randn(1009, generator=g) * torch.exp(-torch.arange(1009) / 200.0)  # 4001 + 1009 - 1 = 5009, a prime
    expected = torchaudio.functional.convolve(x, ir)[: x.shape[-1]]  # direct convolution, no FFT
    torch.testing.assert_close(apply_reverb(x, ir), expected, atol=1e-4, rtol=1e-4)
