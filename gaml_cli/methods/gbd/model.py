"""The denoiser: a graph transformer in the style of DiGress (Vignac et al. 2023), as GBD uses.

Node states X (B, N, dx), edge states E (B, N, N, de) and a global state y (B, dy). Each layer:
attention scores Q_i * K_j (per channel, summed within each head) are modulated by the edge
state (FiLM: score * (1 + E_mul) + E_add), the modulated scores become the new edge state,
softmax over the neighbours j (padding masked) weights V; both node and edge updates are
modulated by y (FiLM), then residual + LayerNorm + feed-forward. y is updated from pooled X and
E. The network is permutation equivariant and its edge output is symmetrised.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _mlp(i: int, h: int, o: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(i, h), nn.ReLU(), nn.Linear(h, o), nn.ReLU())


def time_embedding(t: torch.Tensor, dim: int = 32) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    ang = 1000.0 * t.float().unsqueeze(1) * freqs.unsqueeze(0)  # t in [0, 1] as 0..1000 steps
    return torch.cat([ang.sin(), ang.cos()], dim=1)


class Pool(nn.Module):
    """Mean, min, max and std of node or edge states -> a global vector."""

    def __init__(self, d: int, dy: int):
        super().__init__()
        self.lin = nn.Linear(4 * d, dy)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # h (B, M, d), mask (B, M) bool
        m = mask.unsqueeze(-1).float()
        cnt = m.sum(1).clamp_min(1.0)
        mean = (h * m).sum(1) / cnt
        # padded entries pushed out of the min and max by adding +-big (h + 0 elsewhere is h, to
        # the bit): the same values and gradients as filling them, one full-size pass fewer each
        big = (~mask).unsqueeze(-1).to(h.dtype) * (torch.finfo(h.dtype).max / 4)
        mn = (h + big).amin(1)
        mx = (h - big).amax(1)
        std = (((h - mean.unsqueeze(1)) ** 2 * m).sum(1) / cnt + 1e-8).sqrt()  # eps: finite gradient at 0
        z = torch.cat([mean, mn, mx, std], dim=-1)
        z = torch.where(cnt > 0, z, torch.zeros_like(z))
        return self.lin(z)


class _EdgeFiLM(torch.autograd.Function):
    """S = e_add + (Q_i * K_j) * e_mul1 with [e_mul1, e_add] the two halves of L (B, N, N, 2 dx):
    the layer's edge-modulated scores. Autograd's backward of chunk + addcmul scales both factors
    by addcmul's value (1) and concatenates the halves' gradients, three full-size passes that this
    backward skips by writing L's gradient in place; the gradients are the same to the bit
    (tests/test_gbd.py)."""

    @staticmethod
    def forward(ctx, L, Q, K):
        e_mul1, e_add = L.chunk(2, dim=-1)
        P = Q.unsqueeze(2) * K.unsqueeze(1)
        ctx.save_for_backward(L, P, Q, K)
        return torch.addcmul(e_add, P, e_mul1)

    @staticmethod
    def backward(ctx, gS):
        L, P, Q, K = ctx.saved_tensors
        d = gS.shape[-1]
        gL = gQ = gK = None
        if ctx.needs_input_grad[0]:
            gL = gS.new_empty(L.shape)
            torch.mul(gS, P, out=gL[..., :d])
            gL[..., d:].copy_(gS)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            gP = gS * L[..., :d]
            # as autograd reduces a broadcast product's gradient: sum over the broadcast dimension
            gQ = (gP * K.unsqueeze(1)).sum(2, keepdim=True).squeeze(2) if ctx.needs_input_grad[1] else None
            gK = (gP * Q.unsqueeze(2)).sum(1, keepdim=True).squeeze(1) if ctx.needs_input_grad[2] else None
        return gL, gQ, gK


class GraphTransformerLayer(nn.Module):
    def __init__(self, dx: int, de: int, dy: int, heads: int, ffx: int, ffe: int, dropout: float = 0.0):
        super().__init__()
        assert dx % heads == 0, "dx must be divisible by the number of heads"
        self.heads, self.dh = heads, dx // heads
        self.q, self.k, self.v = nn.Linear(dx, dx), nn.Linear(dx, dx), nn.Linear(dx, dx)
        self.e_mul, self.e_add = nn.Linear(de, dx), nn.Linear(de, dx)
        self.ye_mul, self.ye_add = nn.Linear(dy, dx), nn.Linear(dy, dx)
        self.yx_mul, self.yx_add = nn.Linear(dy, dx), nn.Linear(dy, dx)
        self.x_out, self.e_out = nn.Linear(dx, dx), nn.Linear(dx, de)
        self.y_y, self.y_x, self.y_e = nn.Linear(dy, dy), Pool(dx, dy), Pool(de, dy)
        self.y_out = nn.Sequential(nn.Linear(dy, dy), nn.ReLU(), nn.Linear(dy, dy))
        self.norm_x1, self.norm_e1, self.norm_y1 = nn.LayerNorm(dx), nn.LayerNorm(de), nn.LayerNorm(dy)
        self.norm_x2, self.norm_e2, self.norm_y2 = nn.LayerNorm(dx), nn.LayerNorm(de), nn.LayerNorm(dy)
        self.ff_x = nn.Sequential(nn.Linear(dx, ffx), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffx, dx))
        self.ff_e = nn.Sequential(nn.Linear(de, ffe), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffe, de))
        self.ff_y = nn.Sequential(nn.Linear(dy, dy), nn.ReLU(), nn.Linear(dy, dy))
        self.drop = nn.Dropout(dropout)

    def forward(self, X, E, y, node_mask, update_y: bool = True):
        # update_y=False (the last layer, whose y nothing reads) skips the global update.
        # The same layer as the docstring's, arranged to touch each (B, N, N, dx) tensor as few
        # times as possible (tests/test_gbd.py checks it against the plain formulation):
        # - no masks on the edge FiLM: X and E are zero at padded entries, so padded pairs only
        #   reach outputs that are masked below (padded keys get -1e9 before the softmax);
        # - score * (1 + E_mul) + E_add as one addcmul, both edge maps as one matmul, with a
        #   backward of its own (_EdgeFiLM);
        # - e_out(ye_add + (1 + ye_mul) * S) as S @ (e_out.W * (1 + ye_mul))^T per graph plus
        #   e_out(ye_add), so the y-FiLM of the edge state is folded into the output weights.
        B, N, _ = X.shape
        xm = node_mask.unsqueeze(-1).float()
        em = (node_mask.unsqueeze(2) & node_mask.unsqueeze(1)).unsqueeze(-1).float()
        Q = self.q(X) * (xm / math.sqrt(self.dh))
        K, V = self.k(X) * xm, self.v(X) * xm
        # per-channel scores, scaled per head, modulated by the edge state: (B, N, N, dx)
        w = torch.cat([self.e_mul.weight, self.e_add.weight])
        b = torch.cat([self.e_mul.bias + 1.0, self.e_add.bias])
        S = _EdgeFiLM.apply(torch.nn.functional.linear(E, w, b), Q, K)
        # new edge state from the modulated scores, FiLM by y (folded into e_out)
        w_out = self.e_out.weight.unsqueeze(0) * (self.ye_mul(y) + 1.0).unsqueeze(1)     # (B, de, dx)
        b_out = self.e_out(self.ye_add(y))                                                  # (B, de)
        newE = torch.baddbmm(b_out.unsqueeze(1), S.view(B, N * N, -1), w_out.transpose(1, 2))
        newE = newE.view(B, N, N, -1) * em
        # attention over j within each head
        # padded keys get -1e9 added (S + 0 elsewhere is S, to the bit): their weights are exactly 0
        # for every real query, as with a fill, but the add's backward is no full-size pass.
        # Large and finite, not -inf: a padded query row (all keys masked) must not make NaN gradients
        keybias = ((~node_mask).to(S.dtype) * -1e9)[:, None, :, None, None]
        A = torch.softmax(S.view(B, N, N, self.heads, self.dh) + keybias, dim=2)
        Vh = V.view(B, 1, N, self.heads, self.dh)
        wV = (A * Vh).sum(2).reshape(B, N, -1)
        newX = self.yx_add(y).unsqueeze(1) + (self.yx_mul(y).unsqueeze(1) + 1.0) * wV
        newX = self.x_out(newX) * xm
        # global
        if update_y:
            emask_flat = (node_mask.unsqueeze(2) & node_mask.unsqueeze(1)).view(B, N * N)
            newy = self.y_out(self.y_y(y) + self.y_x(X, node_mask) + self.y_e(E.view(B, N * N, -1), emask_flat))
        # residuals, norms, feed-forward
        X = self.norm_x1(X + self.drop(newX))
        E = self.norm_e1(E + self.drop(newE))
        X = self.norm_x2(X + self.drop(self.ff_x(X))) * xm
        E = self.norm_e2(E + self.drop(self.ff_e(E))) * em
        if update_y:
            y = self.norm_y1(y + self.drop(newy))
            y = self.norm_y2(y + self.ff_y(y))
        return X, E, y


class GraphTransformer(nn.Module):
    """(X_in (B,N,fx), E_in (B,N,N,fe), t (B,), node_mask (B,N), y_in (B,fy)) -> logits of x0 for X and E."""

    def __init__(self, fx: int, fe: int, out_x: int, out_e: int = 1, layers: int = 6, dx: int = 128,
                 de: int = 32, dy: int = 64, heads: int = 8, ffx: int = 256, ffe: int = 64, t_dim: int = 32,
                 fy: int = 1):
        super().__init__()
        self.t_dim = t_dim
        self.in_x = _mlp(fx, 2 * dx, dx)
        self.in_e = _mlp(fe, 2 * de, de)
        self.in_y = _mlp(t_dim + fy, 2 * dy, dy)
        self.layers = nn.ModuleList(GraphTransformerLayer(dx, de, dy, heads, ffx, ffe) for _ in range(layers))
        self.out_x = nn.Sequential(nn.Linear(dx, dx), nn.ReLU(), nn.Linear(dx, out_x))
        self.out_e = nn.Sequential(nn.Linear(de, de), nn.ReLU(), nn.Linear(de, out_e))

    def forward(self, X, E, t, node_mask, y_in):
        B, N, _ = X.shape
        em = (node_mask.unsqueeze(2) & node_mask.unsqueeze(1)).unsqueeze(-1).float()
        xm = node_mask.unsqueeze(-1).float()
        if y_in.dim() == 1:
            y_in = y_in.unsqueeze(1)
        y = self.in_y(torch.cat([time_embedding(t, self.t_dim), y_in], dim=1))
        h_x = self.in_x(X) * xm
        h_e = self.in_e(E)
        h_e = 0.5 * (h_e + h_e.transpose(1, 2)) * em
        for i, layer in enumerate(self.layers):
            h_x, h_e, y = layer(h_x, h_e, y, node_mask, update_y=i < len(self.layers) - 1)
        out_x = self.out_x(h_x)
        out_e = self.out_e(h_e)
        out_e = 0.5 * (out_e + out_e.transpose(1, 2))
        return out_x, out_e


def param_count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())
