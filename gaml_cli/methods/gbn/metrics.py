"""Topic-model metrics shared by `gaml topic` and bench/topic.py, model-agnostic (numpy in/out).

- Document-completion perplexity: each held-out document's word tokens are split at random
  (seeded) into an observed part (`observed` share, default 0.8) and a held-out part; a model
  infers the document's topic proportions from the observed part only and predicts the
  held-out tokens with its word distribution p_d:
      perplexity = exp( - sum_d sum_{w in held-out_d} ln p_d(w) / #held-out tokens ).
  Every method is scored on the very same split.
- NPMI coherence of each topic's top words (document co-occurrence in a reference corpus):
      NPMI(w_i, w_j) = ln[P(w_i, w_j) / (P(w_i) P(w_j))] / -ln P(w_i, w_j),  -1 when they never co-occur.
- Sparsity: share of document-topic proportions below 1e-3 (each document's proportions sum to 1).
"""

from __future__ import annotations

import numpy as np


def completion_split(x: np.ndarray, observed: float = 0.8, seed: int = 0,
                     rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Split each row's tokens into (observed counts, held-out counts), token by token. The
    rows are split in order from one random stream, so passing the same `rng` to successive
    chunks of a corpus splits it exactly as one call on the whole corpus with its seed would."""
    rng = np.random.default_rng(seed) if rng is None else rng
    obs = np.zeros_like(x)
    held = np.zeros_like(x)
    for d in range(len(x)):
        ids = np.flatnonzero(x[d])
        tokens = np.repeat(ids, x[d, ids].astype(np.int64))
        if len(tokens) == 0:
            continue
        perm = rng.permutation(len(tokens))
        m = int(round(observed * len(tokens)))
        m = min(max(m, 1), len(tokens) - 1) if len(tokens) > 1 else len(tokens)
        np.add.at(obs[d], tokens[perm[:m]], 1)
        np.add.at(held[d], tokens[perm[m:]], 1)
    return obs, held


def heldout_loglik(word_probs: np.ndarray, held: np.ndarray) -> float:
    """sum held * ln p: the held-out words' log-probability under predictive word distributions."""
    return float((held * np.log(np.clip(word_probs, 1e-300, None))).sum())


def perplexity_from(loglik: float, words: float) -> float:
    """exp(-loglik / words); NaN without held-out words."""
    return float(np.exp(-loglik / words)) if words > 0 else float("nan")


def perplexity(word_probs: np.ndarray, held: np.ndarray) -> float:
    """exp(-sum held * ln p / sum held) for predictive word distributions (rows sum to 1)."""
    return perplexity_from(heldout_loglik(word_probs, held), float(held.sum()))


def npmi(topics_top: list[list[int]], x: np.ndarray) -> float:
    """Mean NPMI over topics of their top words (indices), by document co-occurrence in x."""
    occ = x > 0
    n = len(occ)
    if n == 0:
        return float("nan")
    scores = []
    for top in topics_top:
        vals = []
        for a in range(len(top)):
            for b in range(a + 1, len(top)):
                i, j = top[a], top[b]
                pi, pj = occ[:, i].mean(), occ[:, j].mean()
                pij = (occ[:, i] & occ[:, j]).mean()
                if pij <= 0:
                    vals.append(-1.0)
                elif pij >= 1.0:
                    vals.append(1.0)
                else:
                    vals.append(float(np.log(pij / (pi * pj)) / -np.log(pij)))
        if vals:
            scores.append(np.mean(vals))
    return float(np.mean(scores)) if scores else float("nan")


def top_words(topic_word: np.ndarray, n: int = 10) -> list[list[int]]:
    """topic_word: (topics x vocabulary) weights -> each topic's n heaviest word indices."""
    return [list(np.argsort(-row, kind="stable")[:n]) for row in topic_word]


def proportions(theta: np.ndarray) -> np.ndarray:
    s = theta.sum(1, keepdims=True)
    return np.where(s > 0, theta / np.where(s > 0, s, 1), 1.0 / theta.shape[1])


def sparsity(theta: np.ndarray, tol: float = 1e-3) -> float:
    return float((proportions(theta) < tol).mean())


def probe_accuracy(theta_train: np.ndarray, y_train: np.ndarray, theta_test: np.ndarray, y_test: np.ndarray,
                   seed: int = 0) -> float | None:
    """Accuracy of a logistic regression on topic proportions (train split -> test split)."""
    if len(np.unique(y_train)) < 2 or len(y_test) == 0:
        return None
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    sc = StandardScaler().fit(proportions(theta_train))
    clf = LogisticRegression(max_iter=2000, random_state=seed)
    clf.fit(sc.transform(proportions(theta_train)), y_train)
    return float((clf.predict(sc.transform(proportions(theta_test))) == y_test).mean())
