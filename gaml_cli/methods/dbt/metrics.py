"""Metrics of predictive distributions given by samples (CARD's definitions) plus CRPS.

`samples` is (n, S): S draws for each of n points; `y` is (n,). RMSE of the sample mean,
QICE with 10 quantile bins, PICP of the [2.5, 97.5] percentile interval and `nll_card` follow
CARD's evaluation code (XzwHan/CARD, regression/card_regression.py, `compute_batch_NLL`,
itself MC dropout's Eq. 8): the NLL of y under a mixture of S Gaussians, one at each draw,
all with the precision tau = 1 / (the unbiased variance of the point's draws).
`nll_gaussian` is a different, simpler score that gaml reported as "nll" before: the NLL of y
under one Gaussian with the mean and (population) std of the point's draws. The two agree
for a Gaussian sampler only roughly (the mixture is wider: its variance is 2x the draws');
they are reported under their own names. CRPS is the sample (energy) form
E|Y - y| - 1/2 E|Y - Y'|, averaged over points.
"""

from __future__ import annotations

import math

import numpy as np


def rmse(samples: np.ndarray, y: np.ndarray) -> float:
    return float(np.sqrt(np.mean((samples.mean(axis=1) - y) ** 2)))


def nll_gaussian(samples: np.ndarray, y: np.ndarray, min_std: float = 1e-6) -> float:
    """Mean of -log N(y_i; mean_i, std_i^2) with mean and (population) std of point i's
    samples: one Gaussian fitted to the draws. Not CARD's NLL (see `nll_card`)."""
    mu = samples.mean(axis=1)
    sd = np.maximum(samples.std(axis=1), min_std)
    return float(np.mean(0.5 * math.log(2 * math.pi) + np.log(sd) + 0.5 * ((y - mu) / sd) ** 2))


def nll_card(samples: np.ndarray, y: np.ndarray, min_std: float = 1e-6) -> float:
    """CARD's NLL: mean over points of

        -[ logsumexp_s(-tau_i / 2 (y_i - y_is)^2) - ln S - 1/2 ln(2 pi) + 1/2 ln tau_i ],

    tau_i = 1 / var_unbiased(y_i1 .. y_iS): y_i under the equal-weight mixture of S Gaussians
    N(y_is, 1 / tau_i). CARD's default (no --nll_global_var) takes tau per point from the
    draws, as here; its std is floored at `min_std`."""
    from scipy.special import logsumexp

    S = samples.shape[1]
    var = samples.var(axis=1, ddof=1) if S > 1 else np.zeros(len(samples))
    tau = 1.0 / np.maximum(var, min_std**2)
    ll = (logsumexp(-0.5 * tau[:, None] * (y[:, None] - samples) ** 2, axis=1)
          - math.log(S) - 0.5 * math.log(2 * math.pi) + 0.5 * np.log(tau))
    return float(np.mean(-ll))


def qice(samples: np.ndarray, y: np.ndarray, n_bins: int = 10) -> float:
    """Quantile interval coverage error (CARD Sec. 4.1).

    Each point's samples give the quantiles at 0, 1/n_bins, ..., 1; the bin of y among
    them is counted (below the 0-quantile counts in the first bin, above the 1-quantile in
    the last). QICE = mean over bins of |share of points in the bin - 1/n_bins|; a
    perfectly calibrated sampler scores ~0."""
    q = np.percentile(samples, np.linspace(0, 100, n_bins + 1), axis=1)  # (n_bins + 1, n)
    member = (q - y[None, :] > 0).sum(axis=0)  # 0 .. n_bins + 1
    counts = np.bincount(member, minlength=n_bins + 2).astype(float)
    counts[1] += counts[0]
    counts[-2] += counts[-1]
    ratio = counts[1:-1] / len(y)
    return float(np.mean(np.abs(ratio - 1.0 / n_bins)))


def picp(samples: np.ndarray, y: np.ndarray, low: float = 2.5, high: float = 97.5) -> float:
    """Prediction interval coverage probability of the [low, high] percentile interval."""
    lo, hi = np.percentile(samples, [low, high], axis=1)
    return float(np.mean((y >= lo) & (y <= hi)))


def crps(samples: np.ndarray, y: np.ndarray) -> float:
    """Mean CRPS from samples: E|Y - y| - 1/2 E|Y - Y'| (Y, Y' independent draws).

    E|Y - Y'| over the empirical distribution of m sorted draws x_(1..m) is
    (2 / m^2) sum_i (2 i - m - 1) x_(i)."""
    x = np.sort(samples, axis=1)
    m = x.shape[1]
    term1 = np.mean(np.abs(x - y[:, None]), axis=1)
    w = 2.0 * np.arange(1, m + 1) - m - 1
    term2 = (2.0 / m**2) * (x * w[None, :]).sum(axis=1)
    return float(np.mean(term1 - 0.5 * term2))


def regression_report(samples: np.ndarray, y: np.ndarray) -> dict:
    samples = np.asarray(samples, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    return {"rmse": rmse(samples, y), "nll_card": nll_card(samples, y),
            "nll_gaussian": nll_gaussian(samples, y), "qice": qice(samples, y),
            "picp": picp(samples, y), "crps": crps(samples, y), "n": int(len(y))}


# --------------------------------------------------------------------------- classification


def sample_probabilities(y0: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Class probabilities of each sample (CARD, classification): softmax over classes of
    -(y0_k - 1)^2 / temperature, i.e. the closer a coordinate is to the one-hot 1, the more
    likely its class. y0: (..., K) -> (..., K)."""
    logits = -((y0 - 1.0) ** 2) / temperature
    logits = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=-1, keepdims=True)


def defer_test(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The confidence rule of CARD / DBT's learning to defer: for each point, a paired
    two-sample t-test between the per-sample probabilities of its two most likely classes.

    probs: (n, S, K) -> (top class index (n,), second class index (n,), p-value (n,)).
    A small p-value means the model is confident that the top class beats the runner-up;
    the caller defers the points whose p-value is >= alpha."""
    from scipy import stats

    mean = probs.mean(axis=1)  # (n, K)
    order = np.argsort(-mean, axis=1, kind="stable")
    top, second = order[:, 0], order[:, 1]
    rows = np.arange(len(probs))
    a = probs[rows, :, top]  # (n, S)
    b = probs[rows, :, second]
    d = a - b
    sd = d.std(axis=1, ddof=1) if d.shape[1] > 1 else np.zeros(len(d))
    import warnings

    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = stats.ttest_rel(a, b, axis=1).pvalue
    # degenerate cases: identical differences in every sample
    const = ~(sd > 0)
    p = np.where(const, np.where(np.abs(d.mean(axis=1)) > 0, 0.0, 1.0), p)
    return top, second, np.asarray(p, dtype=np.float64)


def defer_report(correct: np.ndarray, p_values: np.ndarray, alpha: float,
                 alphas=(0.001, 0.01, 0.05, 0.1, 0.2)) -> dict:
    """Accuracy on the kept points against the deferral rate, at `alpha` and along a sweep."""
    correct = np.asarray(correct, dtype=bool)
    p_values = np.asarray(p_values, dtype=np.float64)

    def at(a: float) -> dict:
        keep = p_values < a
        return {"alpha": a, "defer_rate": float(1 - keep.mean()) if len(keep) else 0.0,
                "accuracy_kept": float(correct[keep].mean()) if keep.any() else None,
                "kept": int(keep.sum())}

    main = at(alpha)
    return {"accuracy": float(correct.mean()), "accuracy_kept": main["accuracy_kept"],
            "defer_rate": main["defer_rate"], "kept": main["kept"], "alpha": alpha,
            "accuracy_deferred": float(correct[~(p_values < alpha)].mean()) if (~(p_values < alpha)).any() else None,
            "curve": [at(a) for a in sorted(set([*alphas, alpha]))], "n": int(len(correct))}
