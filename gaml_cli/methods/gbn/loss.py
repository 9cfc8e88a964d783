"""The objective of the (generalized) GBN: the evidence lower bound, one Monte Carlo sample.

    (E1)  ELBO(x) = E_q[ ln Pois(x | Phi_1 theta_1) ]                         (P1)
                    - sum_{l=1..L} E_q[ KL( Weibull(k_l, lambda_l) || Gamma(g_{l+1}(theta_{l+1}), c_{l+1}) ) ]   (W3)

The expectation over q is one reparameterised Weibull draw per layer (W1), taken top-down, so
each layer's KL is the closed form (W3) given the sampled layer above. Phi is a MAP point
estimate under its Dirichlet prior (G4), added once per corpus:

    (E2)  objective = sum_d ELBO(x_d) + sum_l ln Dir(Phi_l | eta) The loss minimised is
-ELBO per document (mean over the batch); perplexity-style reports divide by word counts.
"""

from __future__ import annotations

import torch

from .model import GBN


def elbo(model: GBN, x: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """(E1) per document: {'elbo', 'loglik', 'kl' (documents x layers)}."""
    terms = model.elbo_terms(x, generator=generator)
    return {"elbo": terms["loglik"] - terms["kl"].sum(1), **terms}


def loss(model: GBN, x: torch.Tensor, generator: torch.Generator | None = None, eta: float = 1.0,
         n_docs: int = 1, kl_weight: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
    """(E2) -[ELBO averaged over the batch + ln p(Phi | eta) / N]: the minibatch estimate of
    -(ELBO of the corpus + log prior of the point-estimated Phi) / N, N = #training documents;
    and per-word figures for the progress bar. kl_weight < 1 (a warm-up: it rises linearly to
    1 over the first steps, see train.py) keeps topics from being switched off early."""
    e = elbo(model, x, generator)
    words = x.sum().clamp_min(1.0)
    with torch.no_grad():
        stats = {"elbo_per_word": float(e["elbo"].sum() / words), "kl_per_word": float(e["kl"].sum() / words)}
    objective = e["loglik"] - kl_weight * e["kl"].sum(1)
    return -(objective.mean() + model.log_prior_phi(eta) / max(n_docs, 1)), stats
