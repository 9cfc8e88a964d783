"""The preference losses of Diffusion-DPO and Diffusion-RPO, one small function per equation.

Notation (Diffusion-DPO, Wallace et al. 2023, Eq. 14 and its code): a pair (x_w, x_l) of a
preferred ("winner") and a rejected ("loser") image for one prompt c is noised with ONE noise
and ONE timestep, and each network's denoising error is measured per sample,

    mse_w = || pred_theta(x_w,t) - target_w ||^2     (mean over pixels)     likewise mse_l,
    ref_w, ref_l: the same errors of the frozen reference model.

The implicit reward of an image is how much the model lowered its error below the reference's,

    s_w = -(mse_w - ref_w),    s_l = -(mse_l - ref_l),

and Diffusion-DPO's logit is the margin

    h = s_w - s_l = (ref_w - ref_l) - (mse_w - mse_l).

Diffusion-DPO's loss (Eq. 14): -log sigmoid(-1/2 beta T omega(lambda_t) (model_diff - ref_diff));
its reference code writes the scale as 0.5 * beta with beta = 5000 (SD1.5, SDXL), the diffusers
example as beta = 2500 without the 1/2. `beta_scale` maps both conventions to the one number that
multiplies h:

    original:  s = beta / 2        (beta 5000 -> 2500)
    diffusers: s = beta            (beta 2500 -> 2500)

Losses of the margin (a choice, `kind`):
    sigmoid  -log sigmoid(s h)                     (DPO)
    hinge    max(0, 1 - s h)                       (SLiC-style)
    ipo      (h - 1 / (2 s))^2                     (IPO, Azar et al. 2023, with tau = s)

Diffusion-RPO (a reconstruction: no code is public). A batch of M pairs gives the M x M matrix of
margins between the winner of pair i and the loser of pair j,

    logits_ij = s_w(i) - s_l(j)                      (its diagonal is DPO's h_i)

weighted by how related the two pairs' prompts (or images) are,

    w_ij = softmax_j( -(1 - cos(e_i, e_j)) / tau )

(e: embeddings of the prompts, the images, or both; tau 0.5 in the authors' LLM code), and

    inside  (the authors' LLM code):   loss_i = mean_j  l( s * w_ij * logits_ij )
    outside (a weighted mean):         loss_i = sum_j  w_ij * l( s * logits_ij )

With w = I, "outside" is exactly Diffusion-DPO; "inside" is DPO / M plus a constant
((M - 1) / M * log 2 for the sigmoid loss): the same gradient scaled by 1 / M.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

BETA_CONVENTIONS = ("original", "diffusers")
LOSS_KINDS = ("sigmoid", "hinge", "ipo")
WEIGHT_PLACEMENTS = ("inside", "outside")


def per_sample_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """mean over all but the batch dimension of (pred - target)^2, times a per-sample weight
    (e.g. EDM's lambda(sigma) or 1/sigma^2 to turn an x0 error into an epsilon error)."""
    err = (pred.float() - target.float()).pow(2).flatten(1).mean(1)
    return err if weight is None else err * weight.float()


def beta_scale(beta: float, convention: str = "original") -> float:
    """The number s that multiplies the margin h (see the module docstring)."""
    if convention == "original":
        return 0.5 * beta
    if convention == "diffusers":
        return float(beta)
    raise ValueError(f"unknown beta convention {convention!r} (original or diffusers)")


def implicit_rewards(mse_w, mse_l, ref_w, ref_l) -> tuple[torch.Tensor, torch.Tensor]:
    """s_w = -(mse_w - ref_w), s_l = -(mse_l - ref_l): how much the model beats the reference."""
    return ref_w - mse_w, ref_l - mse_l


def dpo_margin(mse_w, mse_l, ref_w, ref_l) -> torch.Tensor:
    """h = (ref_w - ref_l) - (mse_w - mse_l) = s_w - s_l (Diffusion-DPO's logit before the scale)."""
    s_w, s_l = implicit_rewards(mse_w, mse_l, ref_w, ref_l)
    return s_w - s_l


def margin_loss(scaled: torch.Tensor, kind: str = "sigmoid", h: torch.Tensor | None = None,
                s: float | None = None) -> torch.Tensor:
    """Elementwise loss of a scaled margin s*h. IPO needs the unscaled h and s."""
    if kind == "sigmoid":
        return -F.logsigmoid(scaled)
    if kind == "hinge":
        return torch.relu(1.0 - scaled)
    if kind == "ipo":
        if h is None or s is None:
            raise ValueError("the ipo loss needs the margin h and the scale s")
        return (h - 1.0 / (2.0 * s)) ** 2
    raise ValueError(f"unknown loss {kind!r} ({', '.join(LOSS_KINDS)})")


def diffusion_dpo_loss(mse_w, mse_l, ref_w, ref_l, beta: float, kind: str = "sigmoid",
                       convention: str = "original") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Diffusion-DPO (Eq. 14): the mean over pairs of the loss of s*h (the mean of the per-pair
    log-sigmoids, not the log-sigmoid of a mean). Returns (loss, stats) with the implicit
    accuracy (share of pairs with h > 0) and the four MSE means."""
    s = beta_scale(beta, convention)
    h = dpo_margin(mse_w, mse_l, ref_w, ref_l)
    loss = margin_loss(s * h, kind, h=h, s=s).mean()
    return loss, _stats(h, mse_w, mse_l, ref_w, ref_l)


def rpo_weights(e: torch.Tensor, tau: float) -> torch.Tensor:
    """w_ij = softmax_j(-(1 - cos(e_i, e_j)) / tau) for embeddings e of shape [M, D].
    tau = 0 gives the identity (each pair weighs only itself) when the rows are distinct."""
    e = F.normalize(e.float(), dim=-1)
    cos = e @ e.T
    if tau == 0:
        return torch.eye(len(e), dtype=cos.dtype, device=cos.device)
    return torch.softmax(-(1.0 - cos) / tau, dim=1)


def combine_similarity(*embeddings: torch.Tensor) -> torch.Tensor:
    """Embeddings of several modalities (prompt, image) joined so that the cosine of the joined
    rows is the mean of the per-modality cosines: each normalised, scaled by 1/sqrt(k), concatenated."""
    k = len(embeddings)
    return torch.cat([F.normalize(e.float(), dim=-1) / math.sqrt(k) for e in embeddings], dim=-1)


def rpo_loss(mse_w, mse_l, ref_w, ref_l, weights: torch.Tensor, beta: float, kind: str = "sigmoid",
             convention: str = "original", placement: str = "inside") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Diffusion-RPO over a batch of M pairs with the M x M weights w (rows sum to 1)."""
    s = beta_scale(beta, convention)
    s_w, s_l = implicit_rewards(mse_w, mse_l, ref_w, ref_l)
    logits = s_w[:, None] - s_l[None, :]  # [i, j]: winner of pair i against loser of pair j
    w = weights.to(logits.dtype)
    if placement == "inside":
        per = margin_loss(s * w * logits, kind, h=w * logits, s=s).mean(1)
    elif placement == "outside":
        per = (w * margin_loss(s * logits, kind, h=logits, s=s)).sum(1)
    else:
        raise ValueError(f"unknown weight placement {placement!r} (inside or outside)")
    h = torch.diagonal(logits)
    stats = _stats(h, mse_w, mse_l, ref_w, ref_l)
    stats["weight_diagonal"] = torch.diagonal(w).mean().detach()
    return per.mean(), stats


def _stats(h, mse_w, mse_l, ref_w, ref_l) -> dict[str, torch.Tensor]:
    return {"implicit_accuracy": (h > 0).float().mean().detach(), "margin": h.mean().detach(),
            "mse_w": mse_w.mean().detach(), "mse_l": mse_l.mean().detach(),
            "ref_mse_w": ref_w.mean().detach(), "ref_mse_l": ref_l.mean().detach()}
