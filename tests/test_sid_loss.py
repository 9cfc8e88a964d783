"""SiD / SiD-LSG losses against hand-computed values and independent routes."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from gaml_cli.methods.sid.loss import (  # noqa: E402
    edm_weight, eps_weight, fake_score_loss, finite_rows, sid_generator_loss, sid_normaliser, sigma_of_t)


def test_generator_loss_by_hand():
    # one sample of 4 pixels; every term written out
    x_g = torch.tensor([[[[0.0, 1.0], [2.0, -1.0]]]])
    y_real = torch.tensor([[[[0.5, 1.0], [1.0, 0.0]]]])
    y_fake = torch.tensor([[[[0.0, 2.0], [1.0, 1.0]]]])
    alpha = 1.2
    w = (0.5 + 0.0 + 1.0 + 1.0) / 4  # mean |x_g - y_real|
    terms = []
    for xg, yr, yf in zip([0.0, 1.0, 2.0, -1.0], [0.5, 1.0, 1.0, 0.0], [0.0, 2.0, 1.0, 1.0]):
        terms.append((yr - yf) * ((yr - xg) - alpha * (yr - yf)) / w)
    expected = sum(terms)  # = (0.5*(0.5-0.6) + (-1)*(0+1.2) + 0 + (-1)*(1+1.2)) / 0.625
    got = sid_generator_loss(x_g, y_real, y_fake, alpha)
    assert got.shape == (1,)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx((0.5 * (0.5 - 0.6) - 1.2 - 2.2) / 0.625)


def test_generator_loss_alpha_one_is_the_simple_form():
    g = torch.Generator().manual_seed(0)
    x_g, y_r, y_f = (torch.randn(3, 2, 4, 4, generator=g) for _ in range(3))
    w = sid_normaliser(x_g, y_r)
    simple = ((y_r - y_f) * (y_f - x_g) / w).flatten(1).sum(1)
    assert torch.allclose(sid_generator_loss(x_g, y_r, y_f, 1.0), simple, atol=1e-5)


def test_normaliser_is_per_sample_clipped_and_constant():
    x = torch.zeros(2, 1, 2, 2, requires_grad=True)
    y = torch.stack([torch.full((1, 2, 2), 3.0), torch.zeros(1, 2, 2)])
    w = sid_normaliser(x, y)
    assert w.flatten().tolist() == pytest.approx([3.0, 1e-5])
    assert not w.requires_grad


def _linear_denoiser(a: float, b: float):
    """An affine stand-in for a score network: D(x; sigma) = a x / (1 + sigma^2) + b."""
    return lambda x, s: a * x / (1 + s.view(-1, 1, 1, 1) ** 2) + b


def test_generator_gradient_vanishes_when_fake_equals_teacher():
    g = torch.Generator().manual_seed(1)
    theta = torch.randn(4, 3, 5, 5, generator=g, requires_grad=True)  # x_g = theta (a free generator)
    sigma = torch.tensor([0.3, 1.0, 2.0, 5.0])
    n = torch.randn(theta.shape, generator=g)
    f_phi = _linear_denoiser(0.9, 0.1)
    x_t = theta + sigma.view(-1, 1, 1, 1) * n
    loss = sid_generator_loss(theta, f_phi(x_t, sigma), f_phi(x_t, sigma), 1.2).sum()
    loss.backward()
    assert loss.item() == 0.0
    assert theta.grad.abs().max().item() == 0.0
    # ... and does not vanish when the fake score differs
    theta.grad = None
    f_psi = _linear_denoiser(0.7, -0.2)
    x_t = theta + sigma.view(-1, 1, 1, 1) * n
    sid_generator_loss(theta, f_phi(x_t, sigma), f_psi(x_t, sigma), 1.2).sum().backward()
    assert theta.grad.abs().max().item() > 1e-3


def test_generator_gradient_matches_finite_differences():
    """Gradients reach x_g directly and through x_t inside both networks (w held constant)."""
    g = torch.Generator().manual_seed(2)
    theta = torch.randn(2, 1, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    sigma = torch.tensor([0.5, 2.0], dtype=torch.float64)
    n = torch.randn(theta.shape, generator=g, dtype=torch.float64)
    f_phi, f_psi = _linear_denoiser(0.9, 0.1), _linear_denoiser(0.6, -0.3)

    def L(th, w=None):
        x_t = th + sigma.view(-1, 1, 1, 1) * n
        yr, yf = f_phi(x_t, sigma), f_psi(x_t, sigma)
        if w is None:
            return sid_generator_loss(th, yr, yf, 1.2).sum()
        d = yr - yf
        return (d * ((yr - th) - 1.2 * d) / w).sum()

    L(theta).backward()
    with torch.no_grad():
        w = sid_normaliser(theta, f_phi(theta + sigma.view(-1, 1, 1, 1) * n, sigma))
        eps = 1e-6
        for idx in [(0, 0, 0, 0), (1, 0, 2, 1), (1, 0, 1, 1)]:
            e = torch.zeros_like(theta)
            e[idx] = eps
            fd = (L(theta + e, w) - L(theta - e, w)) / (2 * eps)
            assert theta.grad[idx].item() == pytest.approx(fd.item(), rel=1e-5, abs=1e-8)


def test_fake_score_loss_by_hand():
    x_g = torch.tensor([[[[1.0, 0.0]]], [[[0.0, 0.0]]]])
    pred = torch.tensor([[[[0.0, 0.0]]], [[[1.0, 1.0]]]])
    weight = torch.tensor([2.0, 0.5])
    assert fake_score_loss(pred, x_g, weight).tolist() == pytest.approx([2.0 * 1.0, 0.5 * 2.0])


def test_edm_weight_is_table_1():
    s = torch.tensor([0.5, 2.0])
    assert edm_weight(s, 0.5).tolist() == pytest.approx([(0.25 + 0.25) / 0.0625, (4 + 0.25) / 1.0])


def test_eps_and_v_losses_are_x0_losses_with_weight_one_over_sigma_squared():
    """SD's fake-score losses, computed the diffusers way, equal eps_weight * ||D - x0||^2."""
    g = torch.Generator().manual_seed(3)
    abar = torch.tensor([0.9, 0.5, 0.05], dtype=torch.float64)
    x0 = torch.randn(3, 4, 2, 2, generator=g, dtype=torch.float64)
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    out = torch.randn(x0.shape, generator=g, dtype=torch.float64)  # a network's raw output
    a, s_vp = abar.sqrt().view(-1, 1, 1, 1), (1 - abar).sqrt().view(-1, 1, 1, 1)
    x_vp = a * x0 + s_vp * noise
    sigma = ((1 - abar) / abar).sqrt()
    # epsilon prediction: x0_hat = (x_vp - s_vp eps) / a
    eps_loss = ((out - noise) ** 2).flatten(1).sum(1)
    x0_hat = (x_vp - s_vp * out) / a
    assert torch.allclose(eps_loss, fake_score_loss(x0_hat, x0, eps_weight(sigma)))
    # v prediction with the SNR weight snr / (snr + 1): x0_hat = a x_vp - s_vp v
    v = a * noise - s_vp * x0
    snr = abar / (1 - abar)
    v_loss = (snr / (snr + 1)) * ((out - v) ** 2).flatten(1).sum(1)
    x0_hat = a * x_vp - s_vp * out
    assert torch.allclose(v_loss, fake_score_loss(x0_hat, x0, eps_weight(sigma)))


def test_sigma_of_t_endpoints_and_tmax():
    t = torch.tensor([0.0, 1.0, 0.8])
    s = sigma_of_t(t).tolist()
    assert s[0] == pytest.approx(0.002, rel=1e-5)
    assert s[1] == pytest.approx(80.0, rel=1e-5)
    expected = (80 ** (1 / 7) + 0.2 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    assert s[2] == pytest.approx(expected, rel=1e-5) and s[2] == pytest.approx(24.4, abs=0.05)


def test_guidance_one_is_conditional_and_zero_unconditional():
    """The kappas enter through edm.cfg_denoiser; a denoiser that returns its condition shows the mix."""
    from gaml_cli.diffusion.edm import cfg_denoiser

    def D(x, sigma, cond):
        return cond.float().view(-1, 1)

    x, s = torch.zeros(1, 2), torch.ones(1)
    c, u = torch.tensor([3]), torch.tensor([1])

    def guided(kappa):
        return cfg_denoiser(D, u, kappa)(x, s, c)

    assert torch.equal(guided(1.0), D(x, s, c))
    assert torch.equal(guided(0.0), D(x, s, u))
    assert guided(1.5).flatten().tolist() == [1.0 + 1.5 * (3.0 - 1.0)]  # = 4.0


def test_finite_rows_drops_nan_samples():
    a = torch.ones(3, 2)
    a[1, 0] = math.nan
    b = torch.ones(3, 2)
    b[2, 1] = math.inf
    assert finite_rows(a, b).tolist() == [True, False, False]
