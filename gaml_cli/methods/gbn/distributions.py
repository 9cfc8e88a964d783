"""Weibull and gamma pieces of the (generalized) gamma belief network, one function per equation.

Equation numbers below are this module's own (the WHAI paper, Zhang et al. ICLR 2018, and
the generalized GBN, arXiv 2408.03388, state the same facts; their exact numbering was not
available offline, so we do not quote it):

    (W1)  theta = lambda * (-ln(1 - u))**(1/k),  u ~ U(0, 1)           Weibull(k, lambda) reparameterisation
    (W2)  E[theta] = lambda * Gamma(1 + 1/k)                           Weibull mean
    (W3)  KL(Weibull(k, lambda) || Gamma(alpha, rate beta))
            = gamma_e * alpha / k - alpha * ln(lambda) + ln(k) + beta * lambda * Gamma(1 + 1/k)
              - gamma_e - 1 - alpha * ln(beta) + lnGamma(alpha)          (gamma_e: Euler's constant)
    (P1)  ln Pois(x | rate) = x ln(rate) - rate - lnGamma(x + 1)

The Weibull is used as the variational posterior because it is reparameterisable, close in
shape to the gamma, and has the closed-form KL (W3) to a gamma prior.
"""

from __future__ import annotations

import torch

EULER_GAMMA = 0.5772156649015329
_U_EPS = 1e-7


def weibull_rsample(k: torch.Tensor, lam: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """(W1): a reparameterised Weibull(k, lambda) draw (differentiable in k and lambda)."""
    u = torch.rand(lam.shape, generator=generator, dtype=lam.dtype, device="cpu").to(lam.device)
    return weibull_from_uniform(k, lam, u)


def weibull_from_uniform(k: torch.Tensor, lam: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """(W1) for given uniforms u (the inverse CDF): lambda * (-ln(1 - u))**(1/k)."""
    u = u.clamp(_U_EPS, 1 - _U_EPS)
    return lam * (-torch.log1p(-u)) ** (1.0 / k)


def weibull_mean(k: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """(W2): lambda * Gamma(1 + 1/k)."""
    return lam * torch.exp(torch.lgamma(1.0 + 1.0 / k))


def kl_weibull_gamma(k: torch.Tensor, lam: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """(W3): KL(Weibull(k, lambda) || Gamma(shape alpha, rate beta)), elementwise, in closed form."""
    return (EULER_GAMMA * alpha / k - alpha * torch.log(lam) + torch.log(k)
            + beta * lam * torch.exp(torch.lgamma(1.0 + 1.0 / k))
            - EULER_GAMMA - 1.0 - alpha * torch.log(beta) + torch.lgamma(alpha))


def poisson_loglik(x: torch.Tensor, rate: torch.Tensor) -> torch.Tensor:
    """(P1): elementwise Poisson log-likelihood of counts x under `rate` (> 0)."""
    return x * torch.log(rate) - rate - torch.lgamma(x + 1.0)


def gamma_logpdf(theta: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """ln Gamma(theta | shape alpha, rate beta) (used by the Monte Carlo check of (W3))."""
    return alpha * torch.log(beta) - torch.lgamma(alpha) + (alpha - 1) * torch.log(theta) - beta * theta


def weibull_logpdf(theta: torch.Tensor, k: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """ln Weibull(theta | k, lambda) (used by the Monte Carlo check of (W3))."""
    z = theta / lam
    return torch.log(k) - torch.log(lam) + (k - 1) * torch.log(z) - z ** k
