"""The losses of SAPO's two variants, on summed or averaged log-probabilities of the responses.

  log pi(y|x) = sum_t log pi(y_t | x, y_<t)   over the response tokens only (prompt and padding
                                             masked out), as DPO and TRL's DPOTrainer sum them
  DPO (Rafailov et al. 2023, eq. 7):
      u = beta * [(log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x))]
      sigmoid: -log sigmoid(u);  hinge (SLiC): max(0, 1 - u)          (mean over the batch)
  ORPO (Hong et al. 2024, eqs. 4-7), no reference:
      log p = mean_t log pi(y_t | x, y_<t)   (the token mean, ORPO's and SAPO's choice)
      log odds(y) = log p - log(1 - p)
      L = NLL(y_w) + lambda * -log sigmoid(log odds(y_w) - log odds(y_l))
      NLL over the chosen response tokens only, averaged over the batch's response tokens (the
      SAPO code also counted prompt and padding tokens: a fault not copied).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DPO_LOSSES = ("dpo", "hinge")
LOSSES = ("dpo", "hinge", "orpo")
DEFAULT_BETA = {"dpo": 0.1, "hinge": 0.1, "orpo": 0.05}


def token_logps(logits: torch.Tensor, input_ids: torch.Tensor, response_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log pi(y_t | y_<t) of the next tokens, and the mask of those that are response
    tokens. logits (B, T, V) from input_ids (B, T); response_mask (B, T) marks response positions."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    target = input_ids[:, 1:]
    per_token = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    mask = response_mask[:, 1:].to(per_token.dtype)
    return per_token * mask, mask


def sequence_logps(logits, input_ids, response_mask) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of the response's token log-probs, number of response tokens) per sequence."""
    per_token, mask = token_logps(logits, input_ids, response_mask)
    return per_token.sum(-1), mask.sum(-1)


def dpo_logits(pi_w, pi_l, ref_w, ref_l, beta: float) -> torch.Tensor:
    """u = beta * ((pi_w - ref_w) - (pi_l - ref_l)), from summed log-probs."""
    return beta * ((pi_w - ref_w) - (pi_l - ref_l))


def dpo_loss(pi_w, pi_l, ref_w, ref_l, beta: float, kind: str = "dpo") -> tuple[torch.Tensor, dict]:
    """DPO's sigmoid loss (kind 'dpo') or the hinge loss, averaged over the batch, and statistics."""
    u = dpo_logits(pi_w, pi_l, ref_w, ref_l, beta)
    if kind == "dpo":
        losses = -F.logsigmoid(u)
    elif kind == "hinge":
        losses = torch.relu(1 - u)
    else:
        raise ValueError(f"unknown DPO loss {kind!r}")
    stats = {"margin": u.detach().mean(), "accuracy": (u.detach() > 0).float().mean(),
             "reward_chosen": (beta * (pi_w - ref_w)).detach().mean(),
             "reward_rejected": (beta * (pi_l - ref_l)).detach().mean()}
    return losses.mean(), stats


def log_odds(mean_logp: torch.Tensor) -> torch.Tensor:
    """log(p / (1 - p)) from log p (p < 1), stably: log p - log(1 - exp(log p))."""
    return mean_logp - torch.log1p(-torch.exp(mean_logp).clamp(max=1 - 1e-7))


def orpo_loss(mean_w, mean_l, nll_w, lam: float) -> tuple[torch.Tensor, dict]:
    """ORPO: nll_w + lam * mean(-log sigmoid(log odds(y_w) - log odds(y_l))). mean_w / mean_l are
    the token-mean log-probs per sequence; nll_w the (already averaged) NLL of the chosen tokens."""
    ratio = log_odds(mean_w) - log_odds(mean_l)
    l_or = -F.logsigmoid(ratio)
    loss = nll_w + lam * l_or.mean()
    stats = {"nll": nll_w.detach(), "log_odds_ratio": ratio.detach().mean(),
             "accuracy": (ratio.detach() > 0).float().mean(), "margin": ratio.detach().mean()}
    return loss, stats
