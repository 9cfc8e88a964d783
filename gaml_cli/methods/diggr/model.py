"""DiGGR, reconstructed from the paper (arXiv 2408.13471; no public code).

The latent factor model of a graph with N nodes and K factors:

    z_uk ~ Gamma(a0, rate b0)                        node-factor strengths (prior)
    M_uv ~ Poisson(r_uv),  r_uv = sum_k g_k z_uk z_vk, g_k > 0 learnt
    A_uv = 1(M_uv > 0)                               Bernoulli-Poisson edges:
    p(A_uv = 1) = 1 - exp(-r_uv)

with the variational posterior q(z_uk) = Weibull(k_uk, lambda_uk) from a GNN over the node
features (reparameterised draws; the closed-form Weibull-gamma KL of methods/gbn). The edge
log-likelihood over all node pairs u < v of a graph is computed without the N x N matrix:

    sum_{u<v} log p(A_uv) = sum_{(u,v) in E} [log(1 - exp(-r_uv)) + r_uv] - sum_{u<v} r_uv,
    sum_{u<v} r_uv = 1/2 sum_k g_k [(sum_u z_uk)^2 - sum_u z_uk^2].

Each node's factor is argmax_k of its posterior mean (the paper's assignment; marked
unconfirmed in our notes), each edge's factor argmax_k g_k z_uk z_vk (`edge_split="edge"`) or,
with `edge_split="node"`, the common factor of its two ends (edges between factors are then
dropped from the factor subgraphs). The disentangled masked autoencoder: GraphMAE's masking,
encoder, re-mask and scaled cosine error on the whole graph and on each factor subgraph (the
factor encoder shared across factors, `factor_encoder="shared"`, or one per factor,
"separate"); all parts train jointly in one loss:

    loss = SCE(whole graph) + factor_weight * mean_k SCE(factor k)
           + latent_weight * (KL - edge log-likelihood) / N

A node's representation is the whole-graph embedding joined with the embedding from its own
factor's subgraph (`representation="concat"`) or the whole-graph one alone ("graph").

Open choices of the paper, as options: the number of factors, the prior (a0, b0), the edge
split, shared or separate factor encoders, the weights of the three terms, the representation.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..gbn.distributions import kl_weibull_gamma, weibull_mean, weibull_rsample
from ..graphmae.model import Encoder, mask_features, sce

K_MIN, K_MAX = 0.1, 10.0  # the Weibull shape's range (keeps Gamma(1 + 1/k) finite)


def edge_loglik(z: torch.Tensor, g: torch.Tensor, edges: torch.Tensor, batch: torch.Tensor | None = None,
                num_graphs: int = 1) -> torch.Tensor:
    """sum over node pairs u < v within each graph of log p(A_uv) under the Bernoulli-Poisson
    model (module docstring). z: (N, K) strengths; g: (K,); edges: (2, E) with u < v once each."""
    u, v = edges
    r_e = (z[u] * z[v] * g).sum(-1)
    on_edges = (torch.log(-torch.expm1(-r_e.clamp(min=1e-10))) + r_e).sum()
    if batch is None:
        batch = torch.zeros(z.shape[0], dtype=torch.long, device=z.device)
    s = torch.zeros(num_graphs, z.shape[1], dtype=z.dtype, device=z.device).index_add_(0, batch, z)
    s2 = torch.zeros(num_graphs, z.shape[1], dtype=z.dtype, device=z.device).index_add_(0, batch, z * z)
    all_pairs = 0.5 * ((s * s - s2) * g).sum()
    return on_edges - all_pairs


class DiGGR(nn.Module):
    def __init__(self, config: dict[str, Any]):
        super().__init__()
        c = self.config = config
        kind = c["encoder"]
        hidden = c["hidden"] if kind == "gin" else c["hidden"] - c["hidden"] % c["heads"]
        self.hidden, self.K = hidden, c["factors"]
        # latent factor encoder: node features -> Weibull (k, lambda) per factor
        self.latent = Encoder(kind, c["in_dim"], hidden, c["latent_layers"], c["heads"])
        self.to_k = nn.Linear(hidden, self.K)
        self.to_lam = nn.Linear(hidden, self.K)
        self.log_g = nn.Parameter(torch.zeros(self.K))
        # masked autoencoders: the whole graph, and the factor subgraphs
        self.encoder = Encoder(kind, c["in_dim"], hidden, c["layers"], c["heads"])
        n_fac = 1 if c["factor_encoder"] == "shared" else self.K
        self.factor_encoders = nn.ModuleList(Encoder(kind, c["in_dim"], hidden, c["layers"], c["heads"])
                                             for _ in range(n_fac))
        self.enc_to_dec = nn.Linear(hidden, hidden, bias=False)
        self.decoder = Encoder(kind, hidden, hidden, 1, 1, out_dim=c["in_dim"], last_activation=False)
        self.factor_decoder = Encoder(kind, hidden, hidden, 1, 1, out_dim=c["in_dim"], last_activation=False)
        self.mask_token = nn.Parameter(torch.zeros(1, c["in_dim"]))

    # -- the latent factor model ---------------------------------------------------------------
    def latent_parameters(self) -> list[nn.Parameter]:
        return [*self.latent.parameters(), *self.to_k.parameters(), *self.to_lam.parameters(), self.log_g]

    def posterior(self, x: torch.Tensor, edge_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.latent(x, edge_index)
        k = (F.softplus(self.to_k(h)) + K_MIN).clamp(max=K_MAX)
        lam = F.softplus(self.to_lam(h)) + 1e-4
        return k, lam

    def strengths(self, x, edge_index) -> torch.Tensor:
        """Posterior means E[z_uk] (N, K)."""
        k, lam = self.posterior(x, edge_index)
        return weibull_mean(k, lam)

    def latent_loss(self, x, edge_index, edges, batch=None, num_graphs=1, gen=None):
        """(KL - edge log-likelihood, the draws z)."""
        k, lam = self.posterior(x, edge_index)
        z = weibull_rsample(k, lam, gen)
        a0 = torch.tensor(self.config["prior_shape"], dtype=z.dtype, device=z.device)
        b0 = torch.tensor(self.config["prior_rate"], dtype=z.dtype, device=z.device)
        kl = kl_weibull_gamma(k, lam, a0, b0).sum()
        return kl - edge_loglik(z, F.softplus(self.log_g), edges, batch, num_graphs), weibull_mean(k, lam)

    # -- factor subgraphs ---------------------------------------------------------------------
    def split(self, strengths: torch.Tensor, edge_index: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(each node's factor, the edge_index of each factor subgraph)."""
        node_f = strengths.argmax(1)
        u, v = edge_index
        if self.config["edge_split"] == "edge":
            edge_f = (strengths[u] * strengths[v] * F.softplus(self.log_g)).argmax(1)
            keep = torch.ones_like(u, dtype=torch.bool)
        else:
            edge_f = node_f[u]
            keep = node_f[u] == node_f[v]
        return node_f, [edge_index[:, keep & (edge_f == f)] for f in range(self.K)]

    def _factor_encoder(self, f: int) -> nn.Module:
        return self.factor_encoders[0 if len(self.factor_encoders) == 1 else f]

    # -- embeddings and the joint loss ----------------------------------------------------------
    @torch.no_grad()
    def embed(self, x, edge_index) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(node representations, strengths E[z], assignment)."""
        s = self.strengths(x, edge_index)
        node_f, sub = self.split(s, edge_index)
        h = self.encoder(x, edge_index)
        if self.config["representation"] == "graph":
            return h, s, node_f
        hf = torch.zeros_like(h)
        for f in range(self.K):
            rows = node_f == f
            if rows.any():
                hf[rows] = self._factor_encoder(f)(x, sub[f])[rows]
        return torch.cat([h, hf], 1), s, node_f

    def _mae(self, encoder, decoder, x, edge_index, gen) -> torch.Tensor:
        c = self.config
        x_masked, masked = mask_features(x, self.mask_token, c["mask_rate"], c["replace_rate"], gen)
        r = self.enc_to_dec(encoder(x_masked, edge_index)).clone()
        r[masked] = 0.0
        z = decoder(r, edge_index)
        return sce(x[masked], z[masked], c["alpha"])

    def loss(self, x, edge_index, edges, batch=None, num_graphs=1, gen=None) -> tuple[torch.Tensor, dict]:
        c = self.config
        lat, s = self.latent_loss(x, edge_index, edges, batch, num_graphs, gen)
        whole = self._mae(self.encoder, self.decoder, x, edge_index, gen)
        _, sub = self.split(s.detach(), edge_index)
        fac = torch.stack([self._mae(self._factor_encoder(f), self.factor_decoder, x, sub[f], gen)
                           for f in range(self.K)]).mean()
        n = x.shape[0]
        total = whole + c["factor_weight"] * fac + c["latent_weight"] * lat / n
        return total, {"sce": float(whole.detach()), "factor_sce": float(fac.detach()),
                       "latent": float(lat.detach()) / n}
