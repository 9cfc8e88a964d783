"""The SFD objective as a weighting of SiD's per-sample losses (arXiv 2409.11219, Sec. 3, Eq. 8-9).

Each batch holds retained rows (condition c drawn from the retained set) and forget rows
(condition c_f). Both networks see c_f on the forget rows; only the teacher is asked about the
override c_s there, so the generator loss of a forget row is SiD's loss with f_phi(x_t, c_s):

    L_f = sum_pixels (f_phi(x_t, c_s) - f_psi(x_t, c_f)) * [(f_phi(x_t, c_s) - x_g) - alpha (f_phi(x_t, c_s) - f_psi(x_t, c_f))] / w

(`sid_generator_loss` with those inputs). The batch objective of either network is the mean of
the retained rows plus the forgetting weight times the mean of the forget rows,

    L = mean_{retained} L_r + lambda_f mean_{forget} L_f,

as the reference implementation sums its remain and forget losses with coefficients 1 and
lambda_f (0.01 on CIFAR-10). Without forget rows this is exactly SiD's batch mean.
"""

from __future__ import annotations

import torch


def remain_forget_sum(per_sample: torch.Tensor, is_forget: torch.Tensor, n_remain: int, n_forget: int,
                      forget_weight: float) -> torch.Tensor:
    """sum_{retained rows} l_i / n_remain + forget_weight * sum_{forget rows} l_i / n_forget.

    n_remain / n_forget are the rows of the whole per-process batch, so micro-batches add up to
    the batch objective."""
    loss = per_sample[~is_forget].sum() / max(n_remain, 1)
    if n_forget and bool(is_forget.any()):
        loss = loss + forget_weight * per_sample[is_forget].sum() / n_forget
    return loss
