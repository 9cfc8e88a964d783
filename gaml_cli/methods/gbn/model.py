"""The (generalized) gamma belief network and its upward-downward Weibull inference network.

Generative model, layers l = 1..L (theta_l: K_l non-negative hidden units of a document):

    (G1)  theta_L       ~ Gamma(r, rate c_{L+1})                       top layer, r = 1
    (G2)  theta_l       ~ Gamma(g_{l+1}(theta_{l+1}), rate c_{l+1})     l = L-1..1
    (G3)  x             ~ Pois(Phi_1 theta_1)                          word counts
    (G4)  Phi_l columns ~ Dir(eta)                                     topics and links (MAP point estimates)
    (G5)  g_{l+1}(theta) >= k_min = 0.1                                the smallest Weibull shape q can take

(G5) is ours. A gamma prior of shape alpha behaves like theta**(alpha - 1) near 0 and a
Weibull(k) posterior like theta**(k - 1), so with k clamped at k_min the posterior of a topic a
document does not use cannot follow a prior sparser than alpha = k_min. Without the floor,
training drove the learned rate c_2 and the shapes of layer 1 down (alpha ~ 0.04 after 3,000
full-batch steps on the newsgroups subset), half the refined posteriors sat at k = k_min, and
held-out perplexity got worse the longer the model trained (seed 7: 1244 after 2,000 steps,
1334 after 3,000); with it, 1230 after 3,000.

Classic (linear) GBN / WHAI: g_{l+1}(theta) = Phi_{l+1} theta. Generalized GBN: the link
is a non-negative non-linear function of theta_{l+1}. The paper's exact form of the link
could not be confirmed (PAPERS.md only says "a non-negative non-linear function"; a search
of stored public pages, code and issue threads in 2026-11 reached the arXiv HTML of
2408.03388 only as far as its abstract and the start of its introduction, and found no
public code); we use the most plausible reading that keeps the
GBN's interpretable connection weights: a non-negative non-linear function built around the
linear GBN term, so `--linear` is the same code with the non-linear part switched off. Two
forms are implemented:

    (G2')  gate (default):  g_{l+1}(theta) = (Phi_{l+1} theta) * 2 sigmoid(W_b softplus(W_a ln(1 + theta) + a) + b)
    (G2'') residual:        g_{l+1}(theta) = Phi_{l+1} theta + softplus(W_b softplus(W_a ln(1 + theta) + a) + b)

The gate starts as exactly the linear GBN (W_b = 0, b = 0) and keeps Phi's links meaningful
(which lower topics a higher topic feeds), the non-linear part modulating their strength
with the whole upper-layer context; in one trial each on the newsgroups subset (16 topics,
before the learning-rate decay was added) they scored alike (perplexity 1376 gate, 1380
residual). Phi_l has columns on the simplex (a softmax over unconstrained logits), so the first-layer topics are Phi_1's columns and the
links between layers are Phi_{l+1}'s columns. The rates c_l are learned point estimates
(one positive scalar per layer; WHAI fixes them at 1).

Inference: an upward-downward Weibull network. Two ways of bringing the upper layer's prior
into layer l's posterior, chosen by `prior_in` (`gaml topic fit --prior-in`), for the linear and
the generalized link alike:

    input (default, gaml's own design): ln(1 + g_{l+1}(theta_{l+1})) is an input of the layer's
          heads beside h_l; the heads learn what to make of the prior's shape.
    shape (WHAI's form, Zhang et al. 2018, its downward Weibull step): the heads see h_l only,
          and the prior's shape is added to the Weibull shape they give:
          k_l = k_l(h_l) + g_{l+1}(theta_{l+1}) (WHAI:
          k_l + Phi_{l+1} theta_{l+1}, i.e. the linear link). PyDPM's WHAI (BoChenGroup/PyDPM,
          _model/_whai.py, encoder_right) takes Phi and theta as arguments but does not use them,
          so its layers are inferred upward only; gaml follows the paper here.

Measured against each other on the topic bench (newsgroups splits 0 and 1, two synthetic GBN
corpora): no difference beyond 0.3% in held-out perplexity, the same recovered topics; the
default stays `input` (docs/topic.md, bench/results/topic-development.md).

    (I1)  upward:   h_1 = softplus(U_1 ln(1 + x)),  h_l = softplus(U_l h_{l-1})
    (I2)  downward, top first: q(theta_L | x) = Weibull(k_L, lambda_L) from h_L;
          q(theta_l | theta_{l+1}, x) = Weibull(k_l, lambda_l) with
            input: k_l = clamp(softplus(A_l [h_l, ln(1 + g_{l+1})]), 0.1, 10), m_l = softplus(B_l [h_l, ln(1 + g_{l+1})])
            shape: k_l = clamp(softplus(A_l h_l) + g_{l+1}, 0.1, 10),           m_l = softplus(B_l h_l)
          lambda = m / Gamma(1 + 1/k), m the Weibull's mean (for layer 1 times the document's
          length / K_1: our choice, it spares the network learning the scale of theta_1). The
          clamp at 10 holds in both forms, so under `shape` a prior shape above 10 saturates k.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .distributions import kl_weibull_gamma, poisson_loglik, weibull_from_uniform, weibull_mean, weibull_rsample

K_MIN, K_MAX = 0.1, 10.0
EPS = 1e-10


PRIOR_IN = ("input", "shape")


def default_config(vocab_size: int, layers: list[int], linear: bool = False, hidden: int = 256,
                   link: str = "gate", prior_in: str = "input") -> dict[str, Any]:
    return {"arch": "gbn", "vocab_size": int(vocab_size), "layers": [int(k) for k in layers],
            "linear": bool(linear), "hidden": int(hidden), "top_shape": 1.0, "link": link, "shape_min": K_MIN,
            "prior_in": prior_in}


class GBN(nn.Module):
    def __init__(self, config: dict[str, Any]):
        super().__init__()
        self.config = dict(config)
        V, Ks, H = config["vocab_size"], list(config["layers"]), config["hidden"]
        self.V, self.Ks, self.L, self.linear = V, Ks, len(Ks), bool(config["linear"])
        self.link_form = config.get("link", "gate")
        # (G5): floor of the gamma shapes g_{l+1}(theta_{l+1}); artifacts made before it existed had none
        self.shape_min = float(config.get("shape_min", 0.0))
        if self.link_form not in ("gate", "residual"):
            raise ValueError(f"unknown link {self.link_form!r}")
        # (I2): how the upper layer's prior shape enters q; artifacts made before the choice are "input"
        self.prior_in = config.get("prior_in", "input")
        if self.prior_in not in PRIOR_IN:
            raise ValueError(f"unknown prior_in {self.prior_in!r}")
        dims = [V] + Ks
        # Phi_l: (K_{l-1} x K_l) logits; columns are softmaxed onto the simplex
        self.phi_logits = nn.ParameterList([nn.Parameter(0.1 * torch.randn(dims[l], dims[l + 1])) for l in range(self.L)])
        # ln c_{l+1}: the rate of layer l's gamma prior (l = 1..L)
        self.log_c = nn.Parameter(torch.zeros(self.L))
        # the non-linear part of the generalized link (G2') / (G2''), one per link l+1 -> l
        if not self.linear:
            self.link_a = nn.ModuleList([nn.Linear(Ks[l + 1], H) for l in range(self.L - 1)])
            self.link_b = nn.ModuleList([nn.Linear(H, Ks[l]) for l in range(self.L - 1)])
            for lin in self.link_b:
                nn.init.zeros_(lin.weight)
                # the gate starts at exactly 1 (the linear GBN); the residual at softplus(-3) ~ 0.05
                nn.init.constant_(lin.bias, 0.0 if self.link_form == "gate" else -3.0)
        # inference network (I1)-(I2)
        self.up = nn.ModuleList([nn.Linear(V if l == 0 else H, H) for l in range(self.L)])
        width = [H if (l == self.L - 1 or self.prior_in == "shape") else H + Ks[l] for l in range(self.L)]
        self.head_k = nn.ModuleList([nn.Linear(width[l], Ks[l]) for l in range(self.L)])
        self.head_m = nn.ModuleList([nn.Linear(width[l], Ks[l]) for l in range(self.L)])
        for lin in self.head_k:
            nn.init.constant_(lin.bias, 0.5)

    # ------------------------------------------------------------------ generative pieces
    def phi(self, l: int) -> torch.Tensor:
        """Phi_{l+1} (0-based l): columns on the simplex."""
        return torch.softmax(self.phi_logits[l], dim=0)

    def log_prior_phi(self, eta: float) -> torch.Tensor:
        """(G4): sum_l ln Dir(Phi_l columns | eta), up to a constant: (eta - 1) sum ln Phi_l.
        Phi is a point estimate; eta > 1 smooths the topics, as LDA's topic-word prior does."""
        if eta == 1.0:
            return torch.zeros(())
        return (eta - 1.0) * sum(torch.log_softmax(p, dim=0).sum() for p in self.phi_logits)

    def rate(self, l: int) -> torch.Tensor:
        return torch.exp(self.log_c[l])

    def link(self, l: int, theta_up: torch.Tensor) -> torch.Tensor:
        """(G2)/(G2'): the gamma shape of layer l (0-based) given theta of layer l+1, batch-first."""
        shape = theta_up @ self.phi(l + 1).T
        if not self.linear:
            hid = F.softplus(self.link_a[l](torch.log1p(theta_up)))
            if self.link_form == "gate":
                shape = shape * 2 * torch.sigmoid(self.link_b[l](hid))
            else:
                shape = shape + F.softplus(self.link_b[l](hid))
        return shape.clamp_min(self.shape_min)  # (G5)

    def top_shape(self, like: torch.Tensor) -> torch.Tensor:
        return torch.full_like(like, float(self.config.get("top_shape", 1.0)))

    # ------------------------------------------------------------------ inference network
    def upward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(I1)."""
        hs, h = [], torch.log1p(x)
        for lin in self.up:
            h = F.softplus(lin(h))
            hs.append(h)
        return hs

    def weibull_params(self, l: int, h: torch.Tensor, prior_shape: torch.Tensor | None,
                       length: torch.Tensor | None = None):
        if prior_shape is None or self.prior_in == "shape":
            inp = h
        else:  # input: the prior's shape is an input of the heads
            inp = torch.cat([h, torch.log1p(prior_shape)], dim=1)
        k = F.softplus(self.head_k[l](inp))
        if prior_shape is not None and self.prior_in == "shape":
            k = k + prior_shape  # WHAI: the prior's shape is added to the network's
        k = k.clamp(K_MIN, K_MAX)
        m = F.softplus(self.head_m[l](inp)) + 1e-6
        if l == 0 and length is not None:
            # layer 1's mean in units of the document's length / K_1: sum_k theta_1k is the
            # document's expected word count under (G3), so the network need not learn the scale
            m = m * (length / self.Ks[0])
        lam = m / torch.exp(torch.lgamma(1.0 + 1.0 / k))
        return k, lam

    def downward(self, x: torch.Tensor, sample: bool = True, generator: torch.Generator | None = None):
        """(I2): returns per layer (theta, k, lambda, prior shape, prior rate), layer 1 first."""
        hs = self.upward(x)
        length = x.sum(1, keepdim=True).clamp_min(1.0)
        out: list[Any] = [None] * self.L
        theta_up = None
        for l in reversed(range(self.L)):
            if l == self.L - 1:
                k, lam = self.weibull_params(l, hs[l], None, length if l == 0 else None)
                alpha = self.top_shape(lam)
            else:
                alpha = self.link(l, theta_up)
                k, lam = self.weibull_params(l, hs[l], alpha, length if l == 0 else None)
            theta = weibull_rsample(k, lam, generator) if sample else weibull_mean(k, lam)
            theta = theta.clamp_min(EPS)
            out[l] = (theta, k, lam, alpha.clamp_min(1e-6), self.rate(l).expand_as(lam))
            theta_up = theta
        return out

    # ------------------------------------------------------------------ ELBO
    def elbo_terms(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Per-document Poisson log-likelihood (P1) and per-layer KL (W3), one Monte Carlo sample."""
        layers = self.downward(x, sample=True, generator=generator)
        theta1 = layers[0][0]
        rate = theta1 @ self.phi(0).T + EPS
        loglik = poisson_loglik(x, rate).sum(1)
        kls = [kl_weibull_gamma(k, lam, alpha, beta).sum(1) for (_, k, lam, alpha, beta) in layers]
        return {"loglik": loglik, "kl": torch.stack(kls, 1)}

    def _local_elbo(self, x, log_k, log_lam, u: torch.Tensor):
        """(E1) with free per-document Weibull parameters instead of the network's outputs,
        averaged over the Monte Carlo draws given by the uniforms u (documents x draws x sum_l K_l)."""
        total = 0.0
        samples = u.shape[1]
        cuts = [0]
        for K in self.Ks:
            cuts.append(cuts[-1] + K)
        for s in range(samples):
            theta_up, kl = None, 0.0
            thetas = [None] * self.L
            for l in reversed(range(self.L)):
                k = log_k[l].exp().clamp(K_MIN, K_MAX)
                lam = log_lam[l].exp()
                alpha = self.top_shape(lam) if l == self.L - 1 else self.link(l, theta_up)
                theta = weibull_from_uniform(k, lam, u[:, s, cuts[l]:cuts[l + 1]]).clamp_min(EPS)
                kl = kl + kl_weibull_gamma(k, lam, alpha.clamp_min(1e-6), self.rate(l).expand_as(lam)).sum(1)
                thetas[l] = theta_up = theta
            rate = thetas[0] @ self.phi(0).T + EPS
            total = total + poisson_loglik(x, rate).sum(1) - kl
        return total / samples

    def infer(self, x: torch.Tensor, refine_steps: int = 0, lr: float = 0.05, samples: int = 4,
              seed: int = 0, offset: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer (k, lambda) of q(theta | x), layer 1 first: the inference network's answer
        (one upward-downward pass with posterior means), then, with refine_steps > 0, that many
        Adam steps on each document's own Weibull parameters to raise its ELBO (E1) with the
        generative model fixed (semi-amortised inference; closes the amortisation gap on
        documents the network was not trained on, as LDA's per-document E-step does).

        Each document's Monte Carlo draws come from its own generator (DocNoise: seeded by
        `seed` and its position `offset + i` among the documents scored), and Adam acts
        elementwise, so a document's answer does not depend on which documents share its
        batch: scoring a corpus in chunks gives the same numbers as scoring it at once."""
        with torch.no_grad():
            init = [(t[1], t[2]) for t in self.downward(x, sample=False)]
        if refine_steps <= 0:
            return init
        noise = DocNoise(len(x), seed, offset)
        log_k = [k.log().clone().requires_grad_(True) for k, _ in init]
        log_lam = [lam.log().clone().requires_grad_(True) for _, lam in init]
        opt = torch.optim.Adam(log_k + log_lam, lr=lr)
        frozen = [p.requires_grad for p in self.parameters()]
        for p in self.parameters():
            p.requires_grad_(False)
        try:
            with torch.enable_grad():
                for _ in range(refine_steps):
                    # sum over documents: each document's parameters get its own ELBO's gradient
                    obj = -self._local_elbo(x, log_k, log_lam, noise.rand(samples, sum(self.Ks))).sum()
                    opt.zero_grad(set_to_none=True)
                    obj.backward()
                    opt.step()
        finally:
            for p, f in zip(self.parameters(), frozen):
                p.requires_grad_(f)
        return [(lk.detach().exp().clamp(K_MIN, K_MAX), ll.detach().exp()) for lk, ll in zip(log_k, log_lam)]

    @torch.no_grad()
    def transform(self, x: torch.Tensor, refine_steps: int = 0, seed: int = 0, offset: int = 0) -> list[torch.Tensor]:
        """Posterior-mean theta per layer (layer 1 first)."""
        return [weibull_mean(k, lam) for k, lam in self.infer(x, refine_steps, seed=seed, offset=offset)]

    @torch.no_grad()
    def word_probs(self, x: torch.Tensor, refine_steps: int = 0, seed: int = 0, offset: int = 0) -> torch.Tensor:
        """Each document's predictive word distribution Phi_1 theta_1 / sum (document completion)."""
        theta1 = self.transform(x, refine_steps, seed=seed, offset=offset)[0]
        rate = theta1 @ self.phi(0).T + EPS
        return rate / rate.sum(1, keepdim=True)


class DocNoise:
    """Uniform draws per document from the document's own generator, seeded by (seed, offset + i)
    for the i-th document of the batch: the draws do not depend on the batch's other documents."""

    def __init__(self, n: int, seed: int, offset: int = 0):
        self.gens = [torch.Generator().manual_seed((int(seed) << 32) + int(offset) + i) for i in range(n)]

    def rand(self, *shape: int) -> torch.Tensor:
        """(documents, *shape) uniforms on [0, 1)."""
        return torch.stack([torch.rand(shape, generator=g) for g in self.gens])
