"""GraphMAE's pieces, written from the paper and checked against the public code's behaviour:

- mask (`mask_features`): a share `mask_rate` of the nodes is masked; of those, a share
  `replace_rate` takes the features of other random nodes and the rest a learnable [MASK] token
  (the token replaces the features: zero, then + token); unmasked nodes keep theirs.
- encoder: GAT (node level; heads concatenated, ELU between layers) or GIN (graph level; a
  two-layer MLP per layer, batch norm off: a graph-level embedding must not depend on the
  other graphs of a batch) from torch-geometric.
- re-mask: the encoder output passes a bias-free linear map and the masked nodes' rows are set
  to zero before the decoder (one GAT or GIN layer back to the feature dimension).
- loss (`sce`): the scaled cosine error mean over masked nodes of (1 - cos(x_i, z_i))^alpha.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F


def sce(x: torch.Tensor, z: torch.Tensor, alpha: float = 2.0) -> torch.Tensor:
    """Scaled cosine error: mean_i (1 - cos(x_i, z_i))^alpha."""
    cos = (F.normalize(x, dim=-1) * F.normalize(z, dim=-1)).sum(-1)
    return (1 - cos).pow(alpha).mean()


def mask_features(x: torch.Tensor, token: torch.Tensor, mask_rate: float, replace_rate: float,
                  gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(masked features, indices of the masked nodes) as the module docstring says."""
    n = x.shape[0]
    perm = torch.randperm(n, generator=gen)
    num_mask = int(mask_rate * n)
    masked = perm[:num_mask]
    out = x.clone()
    num_noise = int(replace_rate * num_mask)
    if num_noise > 0:
        sub = torch.randperm(num_mask, generator=gen)
        token_nodes = masked[sub[:num_mask - num_noise]]
        noise_nodes = masked[sub[num_mask - num_noise:]]
        donors = torch.randperm(n, generator=gen)[:num_noise]
        out[noise_nodes] = x[donors]
    else:
        token_nodes = masked
    out[token_nodes] = 0.0
    out[token_nodes] = out[token_nodes] + token.to(out.dtype)
    return out, masked


class Encoder(nn.Module):
    def __init__(self, kind: str, in_dim: int, hidden: int, layers: int, heads: int = 4, out_dim: int | None = None,
                 last_activation: bool = True):
        super().__init__()
        from torch_geometric.nn import GATConv, GINConv

        self.kind = kind
        self.convs = nn.ModuleList()
        dims = [in_dim] + [hidden] * layers
        if out_dim is not None:
            dims[-1] = out_dim
        for i in range(layers):
            last = i == layers - 1
            if kind == "gat":
                h = 1 if (last and out_dim is not None) else heads
                self.convs.append(GATConv(dims[i], dims[i + 1] // h, heads=h, concat=True, add_self_loops=True))
            elif kind == "gin":
                mlp = nn.Sequential(nn.Linear(dims[i], dims[i + 1]), nn.PReLU(), nn.Linear(dims[i + 1], dims[i + 1]))
                self.convs.append(GINConv(mlp, train_eps=False))
            else:
                raise ValueError(f"unknown encoder {kind!r} (gat or gin)")
        self.act = nn.ModuleList(nn.PReLU() if kind == "gin" else nn.ELU() for _ in range(layers))
        self.last_activation = last_activation

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        for i, conv in enumerate(self.convs):
            x = conv(x, edge_index)
            if i < len(self.convs) - 1 or self.last_activation:
                x = self.act[i](x)
        return x


class GraphMAE(nn.Module):
    def __init__(self, config: dict[str, Any]):
        super().__init__()
        self.config = config
        c = config
        kind = c["encoder"]
        hidden = c["hidden"] if kind == "gin" else c["hidden"] - c["hidden"] % c["heads"]
        self.encoder = Encoder(kind, c["in_dim"], hidden, c["layers"], c.get("heads", 4))
        self.enc_to_dec = nn.Linear(hidden, hidden, bias=False)
        self.decoder = Encoder(kind, hidden, hidden, 1, 1, out_dim=c["in_dim"], last_activation=False)
        self.mask_token = nn.Parameter(torch.zeros(1, c["in_dim"]))
        self.hidden = hidden

    def embed(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return self.encoder(x, edge_index)

    def loss(self, x: torch.Tensor, edge_index: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        c = self.config
        x_masked, masked = mask_features(x, self.mask_token, c["mask_rate"], c["replace_rate"], gen)
        h = self.encoder(x_masked, edge_index)
        r = self.enc_to_dec(h)
        r = r.clone()
        r[masked] = 0.0  # re-mask
        z = self.decoder(r, edge_index)
        return sce(x[masked], z[masked], c["alpha"])
