"""EDM (Karras, Aittala, Aila, Laine 2022, "Elucidating the Design Space of Diffusion-Based
Generative Models", arXiv 2206.00364) in plain torch.

Notation follows the paper: data x0 with std sigma_data, noisy x = x0 + sigma * n, the
denoiser D(x; sigma) estimates E[x0 | x]. Every model gaml samples from (its own teachers,
one-step generators, Stable Diffusion through an adapter) exposes that one interface:

    denoiser(x, sigma, cond) -> D(x; sigma, cond)      sigma: tensor of shape [B]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

Denoiser = Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]


@dataclass(frozen=True)
class EDMPrecond:
    """Preconditioning of Table 1 ("Ours" column):

        c_skip = sigma_data^2 / (sigma^2 + sigma_data^2)
        c_out  = sigma * sigma_data / sqrt(sigma^2 + sigma_data^2)
        c_in   = 1 / sqrt(sigma^2 + sigma_data^2)
        c_noise = ln(sigma) / 4
        D(x; sigma) = c_skip x + c_out F(c_in x; c_noise)          (Eq. 7)
    """

    sigma_data: float = 0.5

    def c_skip(self, sigma: torch.Tensor) -> torch.Tensor:
        return self.sigma_data**2 / (sigma**2 + self.sigma_data**2)

    def c_out(self, sigma: torch.Tensor) -> torch.Tensor:
        return sigma * self.sigma_data / (sigma**2 + self.sigma_data**2).sqrt()

    def c_in(self, sigma: torch.Tensor) -> torch.Tensor:
        return 1.0 / (sigma**2 + self.sigma_data**2).sqrt()

    def c_noise(self, sigma: torch.Tensor) -> torch.Tensor:
        return sigma.log() / 4

    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        """lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma * sigma_data)^2 (Table 1)."""
        return (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2

    def denoise(self, F: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor,
                sigma: torch.Tensor) -> torch.Tensor:
        """Eq. 7 with F(x_in, c_noise) the raw network."""
        s = _bcast(sigma, x)
        return self.c_skip(s) * x + self.c_out(s) * F(self.c_in(s) * x, self.c_noise(sigma))


def _bcast(sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return sigma.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)


def sample_sigma_train(n: int, p_mean: float = -1.2, p_std: float = 1.2, generator=None,
                       device="cpu") -> torch.Tensor:
    """Training noise levels: ln(sigma) ~ N(P_mean, P_std^2) (Table 1, Sec. 5)."""
    return (torch.randn(n, generator=generator, device=device) * p_std + p_mean).exp()


def edm_loss(D: Denoiser, x0: torch.Tensor, cond: Any, sigma: torch.Tensor, noise: torch.Tensor,
             precond: EDMPrecond = EDMPrecond()) -> torch.Tensor:
    """Per-sample EDM loss (Eq. 8 with the weight of Table 1):
    lambda(sigma) * || D(x0 + sigma n; sigma) - x0 ||^2, averaged over pixels."""
    x = x0 + _bcast(sigma, x0) * noise
    err = (D(x, sigma, cond) - x0) ** 2
    return precond.loss_weight(sigma) * err.flatten(1).mean(1)


def karras_sigmas(steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0,
                  device="cpu") -> torch.Tensor:
    """Time steps of Eq. 5: sigma_i = (smax^(1/rho) + i/(N-1) (smin^(1/rho) - smax^(1/rho)))^rho,
    i = 0..N-1, followed by sigma_N = 0. With N = 1 the single level is sigma_max."""
    if steps < 1:
        raise ValueError("steps must be >= 1")
    if steps == 1:
        s = torch.tensor([sigma_max], dtype=torch.float64)
    else:
        i = torch.arange(steps, dtype=torch.float64)
        s = (sigma_max ** (1 / rho) + i / (steps - 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([s, torch.zeros(1, dtype=torch.float64)]).to(device=device, dtype=torch.float32)


def cfg_denoiser(D: Denoiser, uncond: Any, w: float, cat: Callable[[Any, Any], Any] | None = None) -> Denoiser:
    """Classifier-free guidance (Ho & Salimans 2022) on the denoiser:
    D_w(x; c) = D(x; null) + w (D(x; c) - D(x; null)); w = 1 is the conditional model and
    w = 0 the unconditional one. Conditional and null rows share one batched call."""
    if w == 1.0:
        return D
    cat = cat or _cat_cond

    def guided(x, sigma, cond):
        both = D(torch.cat([x, x]), torch.cat([sigma, sigma]), cat(cond, uncond))
        d_c, d_u = both.chunk(2)
        return d_u + w * (d_c - d_u)

    return guided


def _cat_cond(a, b):
    if isinstance(a, torch.Tensor):
        return torch.cat([a, b])
    if isinstance(a, dict):
        return {k: _cat_cond(a[k], b[k]) for k in a}
    if isinstance(a, (tuple, list)):
        return type(a)(_cat_cond(x, y) for x, y in zip(a, b))
    raise TypeError(f"cannot batch conditions of type {type(a).__name__}")


@torch.no_grad()
def sample_euler(D: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, cond: Any = None,
                 callback: Callable[[int], None] | None = None) -> torch.Tensor:
    """Euler steps on the probability-flow ODE dx/dsigma = (x - D(x; sigma)) / sigma (Eq. 3
    with sigma(t) = t). One function evaluation per step; x starts at sigma_0 * noise."""
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        d = (x - D(x, s.expand(len(x)), cond)) / s
        x = x + (s_next - s) * d
        if callback:
            callback(1)
    return x


@torch.no_grad()
def sample_heun(D: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, cond: Any = None,
                callback: Callable[[int], None] | None = None) -> torch.Tensor:
    """EDM Algorithm 1 (deterministic 2nd-order Heun): an Euler step, then the trapezoidal
    correction unless the next sigma is 0. N steps cost 2N - 1 function evaluations."""
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        d = (x - D(x, s.expand(len(x)), cond)) / s
        x_next = x + (s_next - s) * d
        if s_next > 0:
            d2 = (x_next - D(x_next, s_next.expand(len(x)), cond)) / s_next
            x_next = x + (s_next - s) * (0.5 * d + 0.5 * d2)
            if callback:
                callback(2)
        elif callback:
            callback(1)
        x = x_next
    return x


SAMPLERS = {"heun": sample_heun, "euler": sample_euler}


def nfe(sampler: str, steps: int) -> int:
    """Function evaluations per sample (before the 2x of batched guidance)."""
    return 2 * steps - 1 if sampler == "heun" else steps


def steps_for_nfe(target: int) -> tuple[str, int]:
    """(sampler, steps) spending exactly `target` evaluations: Heun for odd counts > 1
    (2N - 1), Euler otherwise."""
    if target > 1 and target % 2 == 1:
        return "heun", (target + 1) // 2
    return "euler", target


def gaussian_denoiser(mu: float, s: float) -> Denoiser:
    """The exact D(x; sigma) = E[x0 | x] for x0 ~ N(mu, s^2) per coordinate (for tests and
    sanity checks): mu + s^2 / (s^2 + sigma^2) (x - mu)."""
    def D(x, sigma, cond=None):
        sg = _bcast(sigma, x)
        return mu + s**2 / (s**2 + sg**2) * (x - mu)

    return D


