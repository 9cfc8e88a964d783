"""Diffusion-DPO and Diffusion-RPO losses against hand computations (methods/rpo/loss.py)."""

from __future__ import annotations

import math

import pytest
import torch

from gaml_cli.methods.rpo import loss as L

MSE_W = torch.tensor([0.2, 0.5])
MSE_L = torch.tensor([0.3, 0.1])
REF_W = torch.tensor([0.25, 0.4])
REF_L = torch.tensor([0.25, 0.2])
# h = (ref_w - ref_l) - (mse_w - mse_l) = [0 - (-0.1), 0.2 - 0.4] = [0.1, -0.2]


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_margin_by_hand():
    assert torch.allclose(L.dpo_margin(MSE_W, MSE_L, REF_W, REF_L), torch.tensor([0.1, -0.2]))


@pytest.mark.parametrize("beta,convention,s", [(10.0, "original", 5.0), (5.0, "diffusers", 5.0),
                                               (10.0, "diffusers", 10.0), (5000.0, "original", 2500.0)])
def test_dpo_sigmoid_under_both_beta_conventions(beta, convention, s):
    """-log sigmoid(s h) = softplus(-s h), averaged over pairs; original beta 5000 == diffusers 2500."""
    loss, stats = L.diffusion_dpo_loss(MSE_W, MSE_L, REF_W, REF_L, beta, "sigmoid", convention)
    expected = (_softplus(-s * 0.1) + _softplus(-s * -0.2)) / 2
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert float(stats["implicit_accuracy"]) == 0.5
    assert float(stats["mse_w"]) == pytest.approx(0.35) and float(stats["ref_mse_l"]) == pytest.approx(0.225)


def test_original_5000_equals_diffusers_2500():
    a, _ = L.diffusion_dpo_loss(MSE_W, MSE_L, REF_W, REF_L, 5000.0, "sigmoid", "original")
    b, _ = L.diffusion_dpo_loss(MSE_W, MSE_L, REF_W, REF_L, 2500.0, "sigmoid", "diffusers")
    c, _ = L.diffusion_dpo_loss(MSE_W, MSE_L, REF_W, REF_L, 5000.0, "sigmoid", "diffusers")
    assert float(a) == float(b) and float(a) != float(c)


def test_hinge_and_ipo_by_hand():
    s = 5.0
    hinge, _ = L.diffusion_dpo_loss(MSE_W, MSE_L, REF_W, REF_L, 10.0, "hinge", "original")
    assert float(hinge) == pytest.approx((max(0, 1 - s * 0.1) + max(0, 1 - s * -0.2)) / 2)
    ipo, _ = L.diffusion_dpo_loss(MSE_W, MSE_L, REF_W, REF_L, 10.0, "ipo", "original")
    assert float(ipo) == pytest.approx(((0.1 - 1 / (2 * s)) ** 2 + (-0.2 - 1 / (2 * s)) ** 2) / 2)


def test_mean_of_log_sigmoids_not_log_sigmoid_of_the_mean():
    loss, _ = L.diffusion_dpo_loss(MSE_W, MSE_L, REF_W, REF_L, 10.0)
    wrong = _softplus(-5.0 * (0.1 - 0.2) / 2)
    assert abs(float(loss) - wrong) > 1e-3


def test_the_loss_rewards_lowering_the_winners_error():
    """A step of gradient descent on mse_w / mse_l moves them in the preferred direction."""
    mse_w = MSE_W.clone().requires_grad_(True)
    mse_l = MSE_L.clone().requires_grad_(True)
    loss, _ = L.diffusion_dpo_loss(mse_w, mse_l, REF_W, REF_L, 10.0)
    loss.backward()
    assert (mse_w.grad > 0).all() and (mse_l.grad < 0).all()


def test_rpo_weights_by_hand_on_three_prompts():
    e = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 2.0]])  # cosines: 0.6, 0.8, 0 (row 3 unnormalised)
    cos = [[1, 0.6, 0], [0.6, 1, 0.8], [0, 0.8, 1]]
    tau = 0.5
    expected = []
    for row in cos:
        z = [math.exp(-(1 - c) / tau) for c in row]
        expected.append([v / sum(z) for v in z])
    w = L.rpo_weights(e, tau)
    assert torch.allclose(w, torch.tensor(expected), atol=1e-6)
    assert torch.allclose(w.sum(1), torch.ones(3))
    assert torch.equal(L.rpo_weights(e, 0.0), torch.eye(3))


def test_rpo_logits_matrix_by_hand():
    """logits_ij = s_w(i) - s_l(j); with weights putting all mass on j = 1 every row uses loser 1."""
    s_w = REF_W - MSE_W  # [0.05, -0.1]
    s_l = REF_L - MSE_L  # [-0.05, 0.1]
    w = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    loss, _ = L.rpo_loss(MSE_W, MSE_L, REF_W, REF_L, w, 10.0, "sigmoid", placement="outside")
    expected = (_softplus(-5 * float(s_w[0] - s_l[1])) + _softplus(-5 * float(s_w[1] - s_l[1]))) / 2
    assert float(loss) == pytest.approx(expected, rel=1e-6)


def test_rpo_with_identity_weights_is_diffusion_dpo():
    torch.manual_seed(0)
    m = 5
    mse_w, mse_l, ref_w, ref_l = (torch.rand(m) for _ in range(4))
    dpo, _ = L.diffusion_dpo_loss(mse_w, mse_l, ref_w, ref_l, 8.0)
    out, _ = L.rpo_loss(mse_w, mse_l, ref_w, ref_l, torch.eye(m), 8.0, placement="outside")
    assert float(out) == pytest.approx(float(dpo), rel=1e-6)
    inside, _ = L.rpo_loss(mse_w, mse_l, ref_w, ref_l, torch.eye(m), 8.0, placement="inside")
    assert float(inside) == pytest.approx(float(dpo) / m + (m - 1) / m * math.log(2), rel=1e-6)
    for kind in ("hinge", "ipo"):
        d, _ = L.diffusion_dpo_loss(mse_w, mse_l, ref_w, ref_l, 8.0, kind)
        o, _ = L.rpo_loss(mse_w, mse_l, ref_w, ref_l, torch.eye(m), 8.0, kind, placement="outside")
        assert float(o) == pytest.approx(float(d), rel=1e-6)


def test_tau_zero_on_distinct_prompts_gives_identity_weights_and_dpo():
    e = torch.randn(4, 8, generator=torch.Generator().manual_seed(1))
    w = L.rpo_weights(e, 1e-4)
    assert torch.allclose(w, torch.eye(4), atol=1e-6)


def test_combined_similarity_is_the_mean_of_the_cosines():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(3, 5, generator=g), torch.randn(3, 7, generator=g)
    j = L.combine_similarity(a, b)
    cos = lambda x: torch.nn.functional.normalize(x, dim=-1) @ torch.nn.functional.normalize(x, dim=-1).T
    assert torch.allclose(j @ j.T, (cos(a) + cos(b)) / 2, atol=1e-6)


def test_per_sample_mse_and_weight():
    pred = torch.zeros(2, 1, 2, 2)
    target = torch.ones(2, 1, 2, 2) * torch.tensor([1.0, 2.0]).view(2, 1, 1, 1)
    assert torch.allclose(L.per_sample_mse(pred, target), torch.tensor([1.0, 4.0]))
    assert torch.allclose(L.per_sample_mse(pred, target, torch.tensor([2.0, 0.5])), torch.tensor([2.0, 2.0]))


def test_bad_choices_are_refused():
    with pytest.raises(ValueError, match="beta convention"):
        L.beta_scale(1.0, "trl")
    with pytest.raises(ValueError, match="unknown loss"):
        L.diffusion_dpo_loss(MSE_W, MSE_L, REF_W, REF_L, 1.0, "kto")
    with pytest.raises(ValueError, match="placement"):
        L.rpo_loss(MSE_W, MSE_L, REF_W, REF_L, torch.eye(2), 1.0, placement="beside")
