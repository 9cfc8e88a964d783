"""Exponential moving averages of network weights, shared by the training loops.

Two decay rules: the classic one (the set decay, capped by (1 + k) / (10 + k) at step k so the
early average is not the initialisation) and EDM2's power function (Karras et al. 2024, Eq. 3-4):
after step k the decay is (1 - 1/(k + 1))^(gamma + 1), which makes the EMA a weighted average of
all iterates with weights growing as k^gamma, gamma set by the profile's relative width.
"""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=8)
def power_ema_gamma(sigma_rel: float) -> float:
    """The exponent gamma whose averaging profile has relative standard deviation sigma_rel: the
    largest real root of (gamma + 2)^2 (gamma + 3) = (gamma + 1) / sigma_rel^2."""
    import numpy as np

    t = sigma_rel ** -2
    roots = np.roots([1.0, 7.0, 16.0 - t, 12.0 - t])
    return float(max(r.real for r in roots if abs(r.imag) < 1e-9))


def ema_decay(step: int, decay: float, power_std: float = 0.0) -> float:
    """The decay applied after optimizer step `step` (0-based): the power function when
    power_std > 0, else `decay` capped by (1 + step) / (10 + step)."""
    if power_std > 0:
        return (1.0 - 1.0 / (step + 1)) ** (power_ema_gamma(power_std) + 1.0)
    return min(decay, (1 + step) / (10 + step))


def ema_update(ema, model, d: float) -> None:
    """ema <- d * ema + (1 - d) * model for the parameters; buffers are copied."""
    import torch

    with torch.no_grad():
        # one foreach call instead of a lerp_ per tensor: the same result bit for bit (checked on
        # the GBD network), a few hundred fewer Python-level calls a step
        pe, pm = list(ema.parameters()), list(model.parameters())
        if pe:
            torch._foreach_lerp_(pe, pm, 1 - d)
    copy_buffers(ema, model)


def copy_buffers(ema, model) -> None:
    """The EMA copy's buffers (running statistics and the like) follow the model's as they are."""
    import torch

    with torch.no_grad():
        for be, bm in zip(ema.buffers(), model.buffers()):
            be.copy_(bm)
