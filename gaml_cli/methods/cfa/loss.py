"""Losses of contrastive factor analysis (CFA, arXiv 2407.21740) and of its baselines, one
function per equation.

**A reconstruction.** The CFA paper released no code; the equations below follow its
description (PAPERS.md: contrastive learning read as factorising the augmentation co-occurrence
matrix, a prior on the factors, an amortised variational posterior, a contrastive likelihood on
posterior draws of two augmented views, minus the KL). The paper's own equation numbers were not
available offline, so the numbers are this module's:

    (C1)  InfoNCE / NT-Xent (SimCLR, Chen et al. 2020) of N pairs (z_i, z'_i), s = cos / tau:
            L = 1/(2N) sum_i [ -s(z_i, z'_i) + log sum_{j != i} exp s(z_i, u_j) ] + (the same from z'_i)
          with u the 2N rows of both views (the positive among the 2N - 1 candidates).
    (C2)  spectral contrastive loss (HaoChen et al. 2021; the co-occurrence factorisation CFA starts
          from):  L = -2 E[f(x)^T f(x+)] + E[(f(x)^T f(x-))^2]
    (C3)  Gaussian CFA:  q(z|x) = N(mu(x), diag sigma(x)^2),  p(z) = N(0, s0^2 I)
            KL = sum_d [ ln(s0 / sigma_d) + (sigma_d^2 + mu_d^2) / (2 s0^2) - 1/2 ]
    (C4)  non-negative CFA (CNFA):  q(z|x) = Weibull(k(x), lambda(x)),  p(z) = Gamma(a0, rate b0)
            KL: methods/gbn/distributions.py (W3), gaml's shared closed form (not rewritten here)
    (C5)  objective (negative ELBO per pair, averaged over the S Monte Carlo draws and the batch):
            L = (1/S) sum_s L_contrast(z^(s), z'^(s)) + beta * 1/2 [ KL(q(z|x) || p) + KL(q(z|x') || p) ]
          with beta = --kl-weight (1: the plain ELBO with the contrastive loss as the negative
          log-likelihood; the weight is an open choice, as in a beta-VAE).
    (H1)  Gaussian entropy:  H = sum_d 1/2 ln(2 pi e sigma_d^2)
    (H2)  Weibull entropy:   H = sum_d [ gamma_e (1 - 1/k_d) + ln(lambda_d / k_d) + 1 ]
    (H3)  scaled entropy (gaml's default uncertainty with the cosine likelihood): the entropy of the
          posterior of z / ||E[z]||, H(z) - D ln ||E[z]|| (the entropy of a scaled variable shifts
          by D ln of the scale). The cosine InfoNCE sees only the direction of z, so the absolute
          entropy (H1, H2) also measures the mean's norm, which the likelihood leaves free; the
          scaled one measures the spread that the likelihood sees.
    (R1)  NCL (non-negative contrastive learning, PKU-ML/non_neg): z = ReLU(projector output);
          their `rep_relu` passes the gradient of GELU backwards (`relu_grad="gelu"`).
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from ..gbn.distributions import EULER_GAMMA, kl_weibull_gamma

__all__ = ["info_nce", "spectral_loss", "kl_gaussian", "kl_weibull_gamma", "gaussian_entropy", "weibull_entropy", "scaled_entropy",
           "contrast", "cfa_objective", "rep_relu"]


def info_nce(z1: torch.Tensor, z2: torch.Tensor, temperature: float, similarity: str = "cosine") -> torch.Tensor:
    """(C1): NT-Xent of the pairs (z1[i], z2[i]) with the other 2N - 2 rows as negatives;
    similarity 'cosine' (SimCLR) or 'dot' (the plain inner product f(x)^T f(x'), as in (C2))."""
    n = z1.shape[0]
    u = torch.cat([z1, z2])
    if similarity == "cosine":
        u = F.normalize(u, dim=1)
    s = u @ u.T / temperature
    s = s.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=s.device), float("-inf"))
    pos = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(s.device)
    return F.cross_entropy(s, pos)


def spectral_loss(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """(C2): -2 mean_i z1_i^T z2_i + mean_{i != j} (z1_i^T z2_j)^2 (the other rows as x-)."""
    n = z1.shape[0]
    g = z1 @ z2.T
    pos = g.diagonal().mean()
    off = ~torch.eye(n, dtype=torch.bool, device=g.device)
    return -2.0 * pos + (g[off] ** 2).mean()


def contrast(z1: torch.Tensor, z2: torch.Tensor, temperature: float, likelihood: str = "infonce",
             similarity: str = "cosine") -> torch.Tensor:
    """The contrastive term (the negative log-likelihood of CFA): (C1) or (C2)."""
    if likelihood == "infonce":
        return info_nce(z1, z2, temperature, similarity)
    if likelihood == "spectral":
        return spectral_loss(z1, z2)
    raise ValueError(f"unknown likelihood {likelihood!r}")


def kl_gaussian(mu: torch.Tensor, log_sigma: torch.Tensor, prior_std: float) -> torch.Tensor:
    """(C3): KL(N(mu, sigma^2) || N(0, s0^2)) elementwise."""
    s0 = float(prior_std)
    return math.log(s0) - log_sigma + (torch.exp(2 * log_sigma) + mu ** 2) / (2 * s0 ** 2) - 0.5


def gaussian_entropy(log_sigma: torch.Tensor) -> torch.Tensor:
    """(H1) per row: sum_d 1/2 ln(2 pi e sigma_d^2)."""
    return (0.5 * math.log(2 * math.pi * math.e) + log_sigma).sum(-1)


def weibull_entropy(k: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """(H2) per row: sum_d gamma_e (1 - 1/k) + ln(lambda / k) + 1."""
    return (EULER_GAMMA * (1 - 1 / k) + torch.log(lam / k) + 1).sum(-1)


def scaled_entropy(entropy: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """(H3): H(z / ||E[z]||) = H(z) - D ln ||E[z]|| per row."""
    return entropy - mean.shape[-1] * torch.log(mean.norm(dim=-1).clamp_min(1e-12))


def cfa_objective(draws1: list[torch.Tensor], draws2: list[torch.Tensor], kl1: torch.Tensor, kl2: torch.Tensor,
                  temperature: float, kl_weight: float, likelihood: str = "infonce",
                  similarity: str = "cosine") -> tuple[torch.Tensor, dict]:
    """(C5): mean contrastive term over the S draws + kl_weight * the mean per-row KL of both views.
    kl1, kl2: (N, D) elementwise KL terms."""
    nll = torch.stack([contrast(a, b, temperature, likelihood, similarity) for a, b in zip(draws1, draws2)]).mean()
    kl = 0.5 * (kl1.sum(-1).mean() + kl2.sum(-1).mean())
    return nll + kl_weight * kl, {"contrast": float(nll.detach()), "kl": float(kl.detach())}


class _ReLUGeluGrad(torch.autograd.Function):
    """ReLU forwards, the gradient of GELU backwards (PKU-ML/non_neg's `rep_relu`)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            xx = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(F.gelu(xx), xx, g)
        return grad


def rep_relu(x: torch.Tensor, relu_grad: str = "gelu") -> torch.Tensor:
    """(R1): non-negative features; relu_grad 'gelu' (NCL's code) or 'relu' (the plain gradient)."""
    return _ReLUGeluGrad.apply(x) if relu_grad == "gelu" else F.relu(x)
