"""A corpus drawn from a known two-layer GBN, and the Hungarian-matched cosine of topics
(used by tests/test_topic_recovery.py and bench/topic.py --synthetic)."""

from __future__ import annotations

import numpy as np

from .vocab import Bow, vocab_sha


def bow_from_dense(x: np.ndarray, vocab: list[str] | None = None, split: np.ndarray | None = None) -> Bow:
    indptr, indices, counts = [0], [], []
    for row in x:
        nz = np.flatnonzero(row)
        indices.extend(nz)
        counts.extend(row[nz])
        indptr.append(len(indices))
    n = len(x)
    vocab = vocab or [f"w{i:03d}" for i in range(x.shape[1])]
    return Bow(np.array(indptr, dtype=np.int64), np.array(indices, dtype=np.int64), np.array(counts, dtype=np.float32),
               np.full(n, -1), np.zeros(n, dtype=np.uint8) if split is None else split, np.arange(1, n + 1), vocab,
               None, {"vocab_sha256": vocab_sha(vocab)})


def two_layer_gbn(n_docs: int = 500, V: int = 60, K1: int = 6, K2: int = 3, words_per_doc: int = 90,
                  seed: int = 0) -> tuple[Bow, np.ndarray, np.ndarray]:
    """x ~ Pois(Phi1 theta1), theta1 ~ Gamma(Phi2 theta2, scale s), theta2 ~ Gamma(1, 1).

    Phi1's topics each put most of their mass on their own block of V/K1 words plus a sparse
    Dirichlet(0.05) spread over all words; Phi2 ~ Dirichlet(0.3). Returns (bow, Phi1, Phi2)."""
    rng = np.random.default_rng(seed)
    block = V // K1
    phi1 = np.zeros((V, K1))
    for k in range(K1):
        phi1[:, k] = rng.dirichlet(np.full(V, 0.05))
        phi1[k * block:(k + 1) * block, k] += rng.dirichlet(np.ones(block)) * 4
    phi1 /= phi1.sum(0)
    phi2 = rng.dirichlet(np.full(K1, 0.3), size=K2).T  # K1 x K2
    theta2 = rng.gamma(1.0, 1.0, size=(n_docs, K2))
    theta1 = rng.gamma(theta2 @ phi2.T + 1e-3, words_per_doc / K2)
    x = rng.poisson(theta1 @ phi1.T).astype(np.float32)
    x = x[x.sum(1) > 0]
    return bow_from_dense(x), phi1, phi2


def matched_cosine(true_phi: np.ndarray, fit_phi: np.ndarray) -> float:
    """Mean cosine of true and fitted topic columns (words x topics) after Hungarian matching."""
    from scipy.optimize import linear_sum_assignment

    a = true_phi / np.linalg.norm(true_phi, axis=0, keepdims=True)
    b = fit_phi / np.linalg.norm(fit_phi, axis=0, keepdims=True)
    cos = a.T @ b
    r, c = linear_sum_assignment(-cos)
    return float(cos[r, c].mean())
