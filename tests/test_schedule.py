"""NoiseSchedule: agreement with diffusers, the resolution shift, timesteps, JSON, conversions."""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch

from gambar.errors import CorruptFileError, InvalidInputError
from gambar.samplers import NoiseSchedule

diffusers = pytest.importorskip("diffusers")


def test_cosine_equals_diffusers_squaredcos_cap_v2() -> None:
    ours = NoiseSchedule.cosine(T=1000)
    ref = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    # diffusers keeps float32 (its cumprod drifts ~1e-5 relative by t = 999); ours is float64.
    torch.testing.assert_close(ours.betas.float(), ref.betas, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(ours.alphas_cumprod.float(), ref.alphas_cumprod, rtol=3e-5, atol=0)
    assert ours.betas[-1].item() == pytest.approx(0.999)  # the cap binds on the last step only
    assert ours.alphas_cumprod[-1] < 1e-8  # ~2.4e-9: why eps-prediction breaks down here


def test_linear_equals_diffusers() -> None:
    ours = NoiseSchedule.linear(T=1000, beta_start=1e-4, beta_end=0.02)
    ref = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    torch.testing.assert_close(ours.alphas_cumprod.float(), ref.alphas_cumprod, rtol=3e-5, atol=0)


def test_betas_rebuild_the_schedule() -> None:
    sched = NoiseSchedule.cosine(T=200)
    rebuilt = torch.cumprod(1 - sched.betas, dim=0)
    torch.testing.assert_close(rebuilt, sched.alphas_cumprod, rtol=1e-12, atol=0)


@pytest.mark.parametrize("shift", [0.5, 2.0, 4.0])
def test_shift_moves_log_snr_by_minus_two_log_shift(shift: float) -> None:
    base, shifted = NoiseSchedule.cosine(T=500), NoiseSchedule.cosine(T=500, shift=shift)
    delta = shifted.log_snr - base.log_snr
    torch.testing.assert_close(delta, torch.full_like(delta, -2 * math.log(shift)))
    # shift > 1 is noisier (less signal) at every timestep, as for larger images.
    noisier = shifted.alphas_cumprod < base.alphas_cumprod
    assert bool(noisier.all()) if shift > 1 else not bool(noisier.any())


def test_trailing_timesteps_equal_diffusers() -> None:
    sched = NoiseSchedule.linear(T=1000)
    ref = diffusers.DDPMScheduler(num_train_timesteps=1000, timestep_spacing="trailing")
    mismatched_lengths = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for steps in range(1, 1001):
            ours = sched.timesteps(steps)
            assert ours.dtype == torch.long and len(ours) == steps
            assert ours[0] == 999 and ours[-1] >= 0 and bool((ours[1:] < ours[:-1]).all())
            ref.set_timesteps(steps)
            if len(ref.timesteps) != steps:
                mismatched_lengths.append(steps)  # diffusers' arange round-off; see timesteps()
                ref_ts = ref.timesteps[:steps]
            else:
                ref_ts = ref.timesteps
            assert ours.tolist() == ref_ts.tolist(), steps
    # The quirk we work around: an extra trailing -1 (alphas_cumprod[-1] is the NOISIEST step).
    for steps in mismatched_lengths:
        ref.set_timesteps(steps)
        assert ref.timesteps[-1] == -1
    assert sched.timesteps(10).tolist() == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]


def test_timesteps_out_of_range() -> None:
    sched = NoiseSchedule.cosine(T=100)
    for steps in (0, 101):
        with pytest.raises(InvalidInputError, match="steps must be between 1 and 100"):
            sched.timesteps(steps)


@pytest.mark.parametrize(
    "sched",
    [
        NoiseSchedule.cosine(T=300, shift=2.0),
        NoiseSchedule.linear(T=50, beta_start=1e-3, beta_end=0.03),
        NoiseSchedule(torch.linspace(0.99, 0.01, 20, dtype=torch.float64)),
    ],
    ids=["cosine", "linear", "custom"],
)
def test_json_round_trip(sched: NoiseSchedule) -> None:
    text = json.dumps(sched.to_json())
    for data in (json.loads(text), text):
        back = NoiseSchedule.from_json(data)
        assert back.kind == sched.kind
        torch.testing.assert_close(back.alphas_cumprod, sched.alphas_cumprod, rtol=0, atol=0)


def test_json_describes_the_schedule() -> None:
    assert NoiseSchedule.cosine(T=1000, shift=2.0).to_json() == {
        "kind": "cosine",
        "T": 1000,
        "shift": 2.0,
    }


@pytest.mark.parametrize(
    "data", [{"kind": "sigmoid"}, {"kind": "cosine", "warp": 3}, {"kind": "linear", "T": 1}]
)
def test_bad_json_is_a_corrupt_file(data: dict) -> None:
    with pytest.raises(CorruptFileError):
        NoiseSchedule.from_json(data)


def test_rejects_a_non_decreasing_schedule() -> None:
    with pytest.raises(ValueError, match="strictly decrease"):
        NoiseSchedule(torch.tensor([0.5, 0.6, 0.1], dtype=torch.float64))


def test_conversions_invert_each_other() -> None:
    sched = NoiseSchedule.cosine(T=1000)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(4, 3, 5, 5, generator=g), torch.randn(4, 3, 5, 5, generator=g)
    t = torch.tensor([0, 10, 500, 990])  # not the last: there eps -> x0 is ill-conditioned
    x_t = sched.q_sample(x0, t, noise)
    assert x_t.dtype == torch.float32  # float64 schedule values do not promote the data
    v = sched.v_target(x0, noise, t)
    torch.testing.assert_close(sched.x0_from_v(x_t, v, t), x0, rtol=0, atol=1e-5)
    torch.testing.assert_close(sched.x0_from_eps(x_t, noise, t), x0, rtol=0, atol=1e-3)
    torch.testing.assert_close(sched.eps_from_x0(x_t, x0, t), noise, rtol=0, atol=1e-3)
    alpha, sigma = sched.alpha_sigma(t, x0)
    assert alpha.shape == (4, 1, 1, 1)
    torch.testing.assert_close(alpha**2 + sigma**2, torch.ones_like(alpha))
    alpha, sigma = sched.alpha_sigma(t)  # no `like`: image-shaped, default dtype
    assert alpha.shape == (4, 1, 1, 1) and alpha.dtype == torch.float32
    alpha, sigma = sched.alpha_sigma(999)
    assert alpha.ndim == 0
    assert alpha.item() == pytest.approx(sched.alphas_cumprod[-1].sqrt().item(), rel=1e-6)
