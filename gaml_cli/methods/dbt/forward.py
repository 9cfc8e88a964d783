"""CARD's diffusion around a mean model f(x), one small function per equation.

Notation follows CARD (Han, Zheng & Zhou 2022, arXiv 2206.07275, Sec. 2) as DBT (arXiv
2406.01813, Sec. 3) reuses it: beta_t is the noise schedule, alpha_t = 1 - beta_t,
abar_t = prod_{s<=t} alpha_s, and f(x) is the pre-trained mean model ("f_phi(x)").

    step     q(y_t | y_{t-1}, f) = N(sqrt(alpha_t) y_{t-1} + (1 - sqrt(alpha_t)) f, beta_t)   CARD Eq. (1)
    marginal q(y_t | y_0, f)     = N(sqrt(abar_t) y_0 + (1 - sqrt(abar_t)) f, 1 - abar_t)  CARD Eq. (2)
    prior    p(y_T | x)          = N(f(x), I)
    posterior q(y_{t-1} | y_t, y_0, f) = N(g0 y_0 + g1 y_t + g2 f, beta_tilde_t)           CARD Eq. (3)-(4)

Timesteps are 1-based (t = 1..T); arrays below are indexed by t, entry 0 stands for
"t = 0" (abar_0 = 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Schedule:
    """beta_1..beta_T with the derived products; index t holds timestep t (0 = no noise)."""

    betas: np.ndarray  # (T + 1,), betas[0] = 0

    @property
    def T(self) -> int:
        return len(self.betas) - 1

    @property
    def alphas(self) -> np.ndarray:
        return 1.0 - self.betas

    @property
    def abar(self) -> np.ndarray:
        return np.cumprod(self.alphas)  # abar[0] = 1


def linear_schedule(T: int, beta_1: float = 1e-4, beta_T: float = 0.02) -> Schedule:
    """CARD's regression schedule: beta linear from 1e-4 to 0.02 over T = 1000 steps.

    For another T the two ends are scaled by 1000 / T (as improved-DDPM does), so that
    abar_T stays near 0 and y_T is close to the prior N(f(x), 1) at any T; T = 1000 is
    exactly CARD's schedule."""
    if T < 1:
        raise ValueError("T must be >= 1")
    scale = 1000.0 / T
    b = np.linspace(beta_1 * scale, min(beta_T * scale, 0.999), T, dtype=np.float64)
    return Schedule(np.concatenate([[0.0], b]))


def forward_step(y_prev, f, t: int, s: Schedule, eps):
    """One forward step y_{t-1} -> y_t (CARD Eq. 1), with eps ~ N(0, 1)."""
    a = s.alphas[t]
    return np.sqrt(a) * y_prev + (1.0 - np.sqrt(a)) * f + np.sqrt(s.betas[t]) * eps


def marginal_mean_std(y0, f, t: int, s: Schedule):
    """Mean and std of q(y_t | y_0, f) (CARD Eq. 2)."""
    ab = s.abar[t]
    return np.sqrt(ab) * y0 + (1.0 - np.sqrt(ab)) * f, np.sqrt(1.0 - ab)


def q_sample(y0, f, t: int, s: Schedule, eps):
    """y_t in closed form (CARD Eq. 2): sqrt(abar_t) y0 + (1 - sqrt(abar_t)) f + sqrt(1 - abar_t) eps."""
    m, sd = marginal_mean_std(y0, f, t, s)
    return m + sd * eps


def posterior_coefficients(t: int, s: Schedule) -> tuple[float, float, float, float]:
    """(gamma_0, gamma_1, gamma_2, beta_tilde_t) of q(y_{t-1} | y_t, y_0, f) (CARD Eq. 3-4):

        gamma_0 = beta_t sqrt(abar_{t-1}) / (1 - abar_t)
        gamma_1 = (1 - abar_{t-1}) sqrt(alpha_t) / (1 - abar_t)
        gamma_2 = 1 + (sqrt(abar_t) - 1)(sqrt(alpha_t) + sqrt(abar_{t-1})) / (1 - abar_t)
        beta_tilde_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t
    """
    if not 1 <= t <= s.T:
        raise ValueError(f"t must be in 1..{s.T}")
    b, a, ab, ab_prev = s.betas[t], s.alphas[t], s.abar[t], s.abar[t - 1]
    g0 = b * np.sqrt(ab_prev) / (1.0 - ab)
    g1 = (1.0 - ab_prev) * np.sqrt(a) / (1.0 - ab)
    g2 = 1.0 + (np.sqrt(ab) - 1.0) * (np.sqrt(a) + np.sqrt(ab_prev)) / (1.0 - ab)
    var = (1.0 - ab_prev) / (1.0 - ab) * b
    return float(g0), float(g1), float(g2), float(var)


def reverse_step(y_t, y0_hat, f, t: int, s: Schedule, z):
    """One ancestral step y_t -> y_{t-1} (CARD Algorithm 2 with a y_0-predicting denoiser):
    the posterior mean at y_0 = y0_hat plus sqrt(beta_tilde_t) z. At t = 1 the sampler
    returns y0_hat itself (CARD's last step), so `z` is ignored there."""
    g0, g1, g2, var = posterior_coefficients(t, s)
    if t == 1:
        return y0_hat
    return g0 * y0_hat + g1 * y_t + g2 * f + np.sqrt(var) * z


def y0_from_eps(y_t, eps_hat, f, t: int, s: Schedule):
    """Invert Eq. 2 for y_0 given a noise estimate (CARD's y0 reparameterisation)."""
    ab = s.abar[t]
    return (y_t - (1.0 - np.sqrt(ab)) * f - np.sqrt(1.0 - ab) * eps_hat) / np.sqrt(ab)
