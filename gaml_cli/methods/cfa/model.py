"""The networks of `gaml embed cfa | simclr | ncl`: one small CNN encoder and projector for all
three, and the heads that make them SimCLR, NCL or (non-negative) CFA.

    encoder   x -> h: three conv stages (GroupNorm, SiLU; strides 1, 2, 2), global average pool
    projector h -> Linear(width*4, width*4) SiLU Linear(width*4, out)
    simclr    z = projector(h)                                   (out = dim)
    ncl       z = ReLU(projector(h))                             (out = dim; loss.rep_relu)
    cfa       mu, ln sigma = projector(h) split in two           (out = 2 dim; Gaussian posterior)
    cfa --nonneg  k = clamp(softplus(.), k_min, k_max), m = softplus(.), lambda = m / Gamma(1 + 1/k)
                                                                 (Weibull posterior with mean m, as in
                                                                  gaml's topic model, methods/gbn)

GroupNorm, not BatchNorm: a row's embedding does not depend on the other rows of its batch.
A RECONSTRUCTION for CFA (no public code): the heads and their parametrisation are gaml's choice.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..gbn.distributions import kl_weibull_gamma, weibull_mean, weibull_rsample
from .loss import gaussian_entropy, kl_gaussian, rep_relu, scaled_entropy, weibull_entropy

METHODS = ("simclr", "ncl", "cfa")


class Encoder(nn.Module):
    def __init__(self, channels: int, width: int):
        super().__init__()

        def block(cin, cout, stride):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(min(8, cout), cout), nn.SiLU())

        self.body = nn.Sequential(block(channels, width, 1), block(width, 2 * width, 2), block(2 * width, 4 * width, 2))
        self.out_dim = 4 * width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean(dim=(2, 3))


class ContrastiveNet(nn.Module):
    """config: method (simclr|ncl|cfa), channels, width, dim, nonneg, relu_grad, prior_std,
    prior_shape, prior_rate, k_min, k_max, representation (encoder|factors)."""

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        self.config = dict(config)
        self.method = config["method"]
        self.nonneg = bool(config.get("nonneg", False))
        self.dim = int(config["dim"])
        self.encoder = Encoder(int(config["channels"]), int(config["width"]))
        h = self.encoder.out_dim
        out = 2 * self.dim if self.method == "cfa" else self.dim
        self.projector = nn.Sequential(nn.Linear(h, h), nn.SiLU(), nn.Linear(h, out))
        if self.method == "cfa":
            # start with a narrow posterior (sigma_init / k_init): a wide one hides the contrastive
            # signal under the draw's noise (non-negative CFA at k = 1 did not learn at all)
            last = self.projector[-1]
            with torch.no_grad():
                if self.nonneg:
                    k0 = float(config.get("k_init", 3.0))
                    last.bias[: self.dim].fill_(math.log(math.expm1(k0)))  # softplus^-1(k_init)
                else:
                    last.bias[self.dim:].fill_(math.log(float(config.get("sigma_init", 0.1))))

    # ---------------------------------------------------------------- posterior (CFA)
    def posterior(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """CFA: (mu, ln sigma) or, nonneg, Weibull (k, lambda)."""
        a, b = self.projector(h).chunk(2, dim=1)
        if not self.nonneg:
            return a, b.clamp(-7.0, 5.0)
        k = F.softplus(a).clamp(float(self.config.get("k_min", 0.1)), float(self.config.get("k_max", 10.0)))
        m = F.softplus(b) + 1e-6
        return k, m / torch.exp(torch.lgamma(1.0 + 1.0 / k))

    def draw(self, p1: torch.Tensor, p2: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        """A reparameterised draw from the posterior (differentiable in its parameters)."""
        if not self.nonneg:
            eps = torch.randn(p1.shape, generator=gen).to(p1.device)
            return p1 + torch.exp(p2) * eps
        return weibull_rsample(p1, p2, gen)

    def kl(self, p1: torch.Tensor, p2: torch.Tensor) -> torch.Tensor:
        """Elementwise KL of the posterior to the prior: (C3) or gbn's (W3)."""
        if not self.nonneg:
            return kl_gaussian(p1, p2, float(self.config.get("prior_std", 1.0)))
        a0 = torch.full_like(p2, float(self.config.get("prior_shape", 1.0)))
        b0 = torch.full_like(p2, float(self.config.get("prior_rate", 1.0)))
        return kl_weibull_gamma(p1, p2, a0, b0)

    def mean(self, p1: torch.Tensor, p2: torch.Tensor) -> torch.Tensor:
        return p1 if not self.nonneg else weibull_mean(p1, p2)

    def entropy(self, p1: torch.Tensor, p2: torch.Tensor) -> torch.Tensor:
        return gaussian_entropy(p2) if not self.nonneg else weibull_entropy(p1, p2)

    # ---------------------------------------------------------------- features
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """SimCLR / NCL: the projector's output (NCL: after the ReLU)."""
        z = self.projector(self.encoder(x))
        return rep_relu(z, self.config.get("relu_grad", "gelu")) if self.method == "ncl" else z

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Rows of `embeddings` (the configured representation: the posterior mean / the projector
        output, or the encoder output) and, for CFA, `uncertainty` (the posterior entropy)."""
        h = self.encoder(x)
        out: dict[str, torch.Tensor] = {}
        if self.method == "cfa":
            p1, p2 = self.posterior(h)
            z = self.mean(p1, p2)
            h_z = self.entropy(p1, p2)
            out["uncertainty"] = scaled_entropy(h_z, z) if self.config.get("uncertainty", "entropy") == "scaled" else h_z
        else:
            z = self.projector(h)
            z = z.clamp_min(0) if self.method == "ncl" else z
        out["embeddings"] = h if self.config.get("representation", "factors") == "encoder" else z
        return out
