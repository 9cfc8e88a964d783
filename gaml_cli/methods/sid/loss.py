"""The SiD / SiD-LSG objectives, one small function per equation.

Notation (SiD, Zhou et al. 2024, arXiv 2404.04057, Sec. 3-4): the generator draws
x_g = G_theta(z, c); the noisy view is x_t = x_g + sigma_t n, n ~ N(0, I); the frozen
teacher's denoiser is f_phi(x_t, t, c) (an estimate of E[x_0 | x_t] for the data) and the
fake score network f_psi(x_t, t, c) estimates E[x_0 | x_t] for the generator's own
distribution. Both are x0-predictors (EDM denoisers), so Stable Diffusion's epsilon UNet
enters through gaml's adapter D(x; sigma) = x - sigma * eps (diffusion/sd.py).

Long and short guidance (SiD-LSG, arXiv 2406.01561, Sec. 3) puts classifier-free guidance
on both networks: kappa1 on f_psi inside its own loss, kappa2 = kappa3 on f_psi inside the
generator loss, kappa4 on the teacher inside the generator loss. Guidance is applied to the
x0 predictions, which is the same as applying it to epsilon: x0 = x_t - sigma * eps is
affine in eps with the same x_t and sigma. The guided evaluation is diffusion/edm.py's
cfg_denoiser: f^kappa = f(null) + kappa (f(c) - f(null)).
"""

from __future__ import annotations

import torch


def sigma_of_t(t: torch.Tensor, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> torch.Tensor:
    """The noise level of the generator loss for t in [0, 1] (SiD Sec. 4, EDM Eq. 5 made continuous):

        sigma(t) = (sigma_max^(1/rho) + (1 - t) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho

    t = 1 is sigma_max and t = 0 is sigma_min; SiD draws t ~ U[0, t_max/1000] with t_max = 800,
    i.e. sigma in [0.002, 24.4] for EDM's range."""
    a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return (a + (1 - t) * (b - a)) ** rho


def edm_weight(sigma: torch.Tensor, sigma_data: float = 0.5) -> torch.Tensor:
    """lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 (EDM Table 1): the fake
    score's loss weight for EDM teachers (SiD trains f_psi with the teacher's own loss)."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def eps_weight(sigma: torch.Tensor) -> torch.Tensor:
    """1 / sigma^2: the epsilon-MSE ||eps_psi - n||^2 written on x0 predictions, because
    eps = (x_t - x0) / sigma. Stable Diffusion's fake score uses this unweighted epsilon loss
    (SiD-LSG); the SNR-weighted v loss of v-prediction models, ||v_psi - v||^2 snr / (snr + 1),
    comes to the same 1 / sigma^2 weight on x0 (1 - abar = sigma^2 / (1 + sigma^2))."""
    return 1.0 / sigma**2


def fake_score_loss(f_psi_xt: torch.Tensor, x_g: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Per-sample denoising score matching of f_psi on the generator's (stop-gradient) samples
    (SiD Algorithm 1, the fake-score update):  weight(sigma) * sum_pixels (f_psi(x_t) - x_g)^2."""
    w = weight.reshape(-1, *([1] * (x_g.ndim - 1)))
    return (w * (f_psi_xt - x_g) ** 2).flatten(1).sum(1)


@torch.no_grad()
def sid_normaliser(x_g: torch.Tensor, f_phi_xt: torch.Tensor, floor: float = 1e-5) -> torch.Tensor:
    """Per-sample weight of the generator loss (SiD Sec. 4): w = mean_pixels |x_g - f_phi(x_t)|,
    clipped below at 1e-5 and held constant (no gradient). Shape (B, 1, ..., 1)."""
    w = (x_g.float() - f_phi_xt.float()).abs().flatten(1).mean(1).clamp_min(floor)
    return w.reshape(-1, *([1] * (x_g.ndim - 1)))


def sid_generator_loss(x_g: torch.Tensor, f_phi_xt: torch.Tensor, f_psi_xt: torch.Tensor,
                       alpha: float = 1.2) -> torch.Tensor:
    """The SiD generator loss per sample (SiD Sec. 4 and Algorithm 1, the "L2 - alpha L1" form):

        L_theta = sum_pixels (f_phi(x_t) - f_psi(x_t)) * [(f_phi(x_t) - x_g) - alpha (f_phi(x_t) - f_psi(x_t))] / w

    with w from `sid_normaliser`. Gradients reach theta through x_g and through x_t = x_g +
    sigma n inside both score networks; their parameters are not updated by this loss.
    alpha = 1 gives the simpler (f_phi - f_psi) * (f_psi - x_g). When f_psi = f_phi the loss
    and its gradient vanish: the generator matches the teacher."""
    w = sid_normaliser(x_g, f_phi_xt)
    diff = f_phi_xt - f_psi_xt
    return (diff * ((f_phi_xt - x_g) - alpha * diff) / w).flatten(1).sum(1)


def finite_rows(*tensors: torch.Tensor) -> torch.Tensor:
    """Mask of samples without NaN/inf in any of the tensors (SiD drops such samples)."""
    ok = torch.ones(len(tensors[0]), dtype=torch.bool, device=tensors[0].device)
    for t in tensors:
        ok &= torch.isfinite(t).flatten(1).all(1)
    return ok


# --------------------------------------------------------------------------- SiDA


def discriminator_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """SiDA's discriminator loss per sample (arXiv 2410.14919, Sec. 3; the reference code's
    fake-score/discriminator step): the logistic loss of the fake score network's encoder
    logits, real images labelled 1 and generator samples 0, each averaged over the batch and
    the logit map (the batch normalisation, per device), times the fake score's EDM weight of
    the sample's noise level:

        L_D = lambda(sigma) * [BCE(D(x_real + sigma n), 1) + BCE(D(x_g + sigma n), 0)] / 2

    It is added to f_psi's denoising loss; the real images enter nothing else."""
    import torch.nn.functional as F

    real = F.binary_cross_entropy_with_logits(logits_real, torch.ones_like(logits_real))
    fake = F.binary_cross_entropy_with_logits(logits_fake, torch.zeros_like(logits_fake))
    return weight * (real + fake) / 2


def adversarial_generator_loss(logits_fake: torch.Tensor, w: torch.Tensor, n_pixels: int) -> torch.Tensor:
    """SiDA's adversarial term of the generator loss per sample: the non-saturating GAN loss on
    the encoder logits of the generator's noisy sample x_t = x_g + sigma n (the same x_t as the
    SiD term), logits clipped to [-10, 10], averaged over the batch and the logit map, divided
    by SiD's normaliser w and scaled by the pixel count so it is on the SiD term's per-sample
    (sum over pixels) scale:

        L_adv = n_pixels * BCE(D(x_t), 1) / w

    Minimising it raises D on generator samples: the generator moves towards what the
    discriminator calls real."""
    import torch.nn.functional as F

    bce = F.binary_cross_entropy_with_logits(logits_fake.clamp(-10, 10), torch.ones_like(logits_fake))
    return n_pixels * bce / w.reshape(-1)
