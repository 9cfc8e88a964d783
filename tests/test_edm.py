"""EDM core checked against the paper and against exact answers."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from gaml_cli.diffusion import edm  # noqa: E402


def test_preconditioning_matches_table_1():
    p = edm.EDMPrecond(sigma_data=0.5)
    for s in (0.002, 0.1, 0.5, 1.0, 2.5, 80.0):
        sig = torch.tensor(s, dtype=torch.float64)
        sd = 0.5
        assert p.c_skip(sig).item() == pytest.approx(sd**2 / (s**2 + sd**2))
        assert p.c_out(sig).item() == pytest.approx(s * sd / math.sqrt(s**2 + sd**2))
        assert p.c_in(sig).item() == pytest.approx(1 / math.sqrt(s**2 + sd**2))
        assert p.c_noise(sig).item() == pytest.approx(math.log(s) / 4)
        assert p.loss_weight(sig).item() == pytest.approx((s**2 + sd**2) / (s * sd) ** 2)
    # the weight makes the effective target of F have unit variance: lambda * c_out^2 = 1
    sig = torch.tensor([0.3, 3.0], dtype=torch.float64)
    assert torch.allclose(p.loss_weight(sig) * p.c_out(sig) ** 2, torch.ones(2, dtype=torch.float64))


def test_denoise_is_eq_7():
    p = edm.EDMPrecond(0.5)
    x = torch.randn(3, 2, 4, 4)
    sigma = torch.tensor([0.1, 1.0, 10.0])
    seen = {}

    def F(x_in, c_noise):
        seen["x_in"], seen["c_noise"] = x_in, c_noise
        return torch.ones_like(x_in)

    out = p.denoise(F, x, sigma)
    s = sigma.view(-1, 1, 1, 1)
    assert torch.allclose(seen["x_in"], x / (s**2 + 0.25).sqrt())
    assert torch.allclose(seen["c_noise"], sigma.log() / 4)
    assert torch.allclose(out, 0.25 / (s**2 + 0.25) * x + s * 0.5 / (s**2 + 0.25).sqrt())


def test_edm_loss_by_hand():
    x0 = torch.tensor([[[[1.0, -1.0]]]])
    noise = torch.tensor([[[[0.5, 0.5]]]])
    sigma = torch.tensor([2.0])
    D = lambda x, s, c: torch.zeros_like(x)  # noqa: E731  predicts 0: error = x0
    loss = edm.edm_loss(D, x0, None, sigma, noise)
    assert loss.item() == pytest.approx((4 + 0.25) / (2 * 0.5) ** 2 * 1.0)
    exact = edm.gaussian_denoiser(0.0, 1.0)
    # with data exactly N(0,1) the exact denoiser's expected loss equals lambda * posterior variance
    x0 = torch.randn(200_000, 1)
    noise = torch.randn(200_000, 1)
    s = torch.full((200_000,), 1.5)
    post_var = 1 * 1.5**2 / (1 + 1.5**2)
    assert edm.edm_loss(exact, x0, None, s, noise).mean().item() == pytest.approx(
        (1.5**2 + 0.25) / (1.5 * 0.5) ** 2 * post_var, rel=0.02)


def test_karras_schedule():
    s = edm.karras_sigmas(18)
    assert len(s) == 19 and s[-1] == 0
    assert s[0].item() == pytest.approx(80.0) and s[-2].item() == pytest.approx(0.002, rel=1e-4)
    assert (s[:-1][1:] < s[:-1][:-1]).all()
    rho = 7
    i = 5
    expected = (80 ** (1 / rho) + i / 17 * (0.002 ** (1 / rho) - 80 ** (1 / rho))) ** rho
    assert s[i].item() == pytest.approx(expected, rel=1e-5)
    assert edm.karras_sigmas(1).tolist() == [80.0, 0.0]


def test_nfe_accounting():
    assert edm.nfe("heun", 18) == 35 and edm.nfe("euler", 10) == 10
    for target in (1, 3, 10, 35, 79):
        sampler, steps = edm.steps_for_nfe(target)
        assert edm.nfe(sampler, steps) == target
    calls = []

    def D(x, s, c):
        calls.append(1)
        return torch.zeros_like(x)

    edm.sample_heun(D, torch.randn(2, 1), edm.karras_sigmas(6))
    assert len(calls) == 11


@pytest.mark.parametrize("sampler,steps,tol", [("heun", 64, 0.01), ("euler", 400, 0.02)])
def test_sampler_with_exact_denoiser_recovers_gaussian(sampler, steps, tol):
    mu, s = 0.7, 0.3
    D = edm.gaussian_denoiser(mu, s)
    g = torch.Generator().manual_seed(0)
    sig = edm.karras_sigmas(steps)
    x = torch.randn(40_000, 1, generator=g, dtype=torch.float64) * math.sqrt(80.0**2 + s**2) + mu
    out = edm.SAMPLERS[sampler](D, x, sig.double())
    assert out.mean().item() == pytest.approx(mu, abs=0.01)
    assert out.std().item() == pytest.approx(s, rel=tol)


def test_probability_flow_is_deterministic_map_of_noise():
    """The exact ODE maps x_T to mu + s/sqrt(s^2 + T^2) (x_T - mu); Heun with many steps hits it."""
    mu, s = -0.2, 0.5
    D = edm.gaussian_denoiser(mu, s)
    xT = torch.linspace(-160, 160, 9, dtype=torch.float64).view(-1, 1)
    out = edm.sample_heun(D, xT, edm.karras_sigmas(80).double())
    expected = mu + s / math.sqrt(s**2 + 80.0**2) * (xT - mu)
    assert torch.allclose(out, expected, atol=4e-3)  # Heun error at 80 steps scales with |x_T|


def test_guidance_w1_is_conditional_and_w0_unconditional():
    def D(x, sigma, cond):
        return x * 0 + cond.view(-1, 1).float()

    x = torch.randn(4, 1)
    sigma = torch.ones(4)
    cond = torch.tensor([1, 2, 3, 4])
    null = torch.full((4,), 10)
    assert torch.equal(edm.cfg_denoiser(D, null, 1.0)(x, sigma, cond), D(x, sigma, cond))
    assert torch.equal(edm.cfg_denoiser(D, null, 0.0)(x, sigma, cond), D(x, sigma, null))
    w = 3.0
    expected = 10 + w * (cond.float() - 10)
    assert torch.allclose(edm.cfg_denoiser(D, null, w)(x, sigma, cond).view(-1), expected)


@pytest.mark.parametrize("sampler,low,high", [("heun", 3.3, 6.0), ("euler", 1.6, 2.6)])
def test_convergence_order(sampler, low, high):
    """Doubling the steps divides the error by ~4 for Heun (2nd order), ~2 for Euler."""
    mu, s = -0.2, 0.5
    D = edm.gaussian_denoiser(mu, s)
    xT = torch.tensor([[80.0], [-40.0]], dtype=torch.float64)
    exact = mu + s / math.sqrt(s**2 + 80.0**2) * (xT - mu)
    err = [(edm.SAMPLERS[sampler](D, xT, edm.karras_sigmas(n).double()) - exact).abs().max().item()
           for n in (18, 36, 72)]
    for a, b in zip(err, err[1:]):
        assert low < a / b < high, err
