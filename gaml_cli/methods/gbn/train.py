"""Training the (generalized) GBN: an explicit loop (setup / train / save).

Per step: draw a minibatch of training documents, one reparameterised top-down Weibull draw
per layer, one Adam step (cosine-decayed learning rate) on -ELBO (loss.py, (E1)) for the
generative model and the inference network jointly. Checkpoints (model, optimizer, batch generator, step) go to a folder every N
steps and on Ctrl-C / SIGTERM; `--resume` continues from the last one and reproduces the
uninterrupted run bit for bit (same device, same thread count).

A step takes up to 256 documents (--batch-size), the whole corpus when it is smaller. On the
newsgroups subset (159 training posts) steps of 64 posts left the topics undertrained after
2,000 steps (training ELBO -2.74 per word vs -2.24 with all 159 per step; held-out perplexity
1302 vs 1244 on the development split, seed 7): Adam sees a rare word's gradient only in the
batches that hold it, and its per-coordinate normalisation then moves that word slowly.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...core import console
from ...core.checkpoint import CheckpointDir, StepLoop
from ...core.runtime import require_finite
from ...core.errors import UsageError
from .loss import elbo, loss
from .model import GBN, default_config
from .vocab import Bow


@dataclass
class FitConfig:
    layers: tuple[int, ...] = (128, 64, 32)
    linear: bool = False
    hidden: int = 256
    steps: int = 2000
    batch_size: int = 256  # the whole corpus when it is smaller (newsgroups subset: 159 documents)
    lr: float = 3e-3
    lr_final: float = 0.05  # cosine decay of the learning rate to lr * lr_final at the last step
    eta: float = 1.0
    kl_warmup: int = 0
    # "nmf": the best of init_restarts Poisson factorisations (init_topics_nmf; recovers
    # synthetic GBN topics as well as LDA does, the corpus start did not: issue 30);
    # "corpus": corpus word frequencies + noise; "random": near-uniform
    init: str = "nmf"
    init_restarts: int = 5
    link: str = "gate"
    # how the upper layer's prior shape enters q (model.py, (I2)): "input" (gaml's) or "shape" (WHAI's)
    prior_in: str = "input"
    grad_clip: float = 10.0
    checkpoint_every: int = 500
    seed: int = 0


def _lr(step: int, fc: FitConfig) -> float:
    """Cosine decay from lr to lr * lr_final: late minibatch noise in Phi averages out."""
    import math

    t = min(step / max(fc.steps - 1, 1), 1.0)
    return fc.lr * (fc.lr_final + (1 - fc.lr_final) * 0.5 * (1 + math.cos(math.pi * t)))


def _batch(bow: Bow, rows: np.ndarray, idx: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(bow.dense(rows[idx.numpy()]))


@torch.no_grad()
def init_topics_from_data(model: GBN, bow: Bow, rows: np.ndarray, gen: torch.Generator) -> None:
    """Start the first-layer topics at the corpus's word frequencies, each perturbed by unit
    Gaussian noise on its logits. From a near-uniform start a few topics win early and the
    rest receive little gradient (component collapse: 6-8 of 16 topics used on the
    newsgroups subset); this start keeps all of them in use and recovers synthetic topics
    better (matched cosine 0.99 vs 0.87 on tests/test_topic_recovery.py's corpus). Seeding
    topics from single documents was tried and memorised them (0.70)."""
    K1 = model.Ks[0]
    corpus = np.zeros(bow.vocab_size, dtype=np.float64)
    nz = np.concatenate([np.arange(bow.indptr[r], bow.indptr[r + 1]) for r in rows])
    np.add.at(corpus, bow.indices[nz], bow.counts[nz])
    corpus = corpus / corpus.sum()
    noise = torch.randn(bow.vocab_size, K1, generator=gen)
    model.phi_logits[0].copy_(torch.from_numpy(np.log(corpus + 1e-6 / bow.vocab_size)).float()[:, None] + noise)


@torch.no_grad()
def init_topics_nmf(model: GBN, bow: Bow, rows: np.ndarray, gen: torch.Generator, iters: int = 100,
                    max_docs: int = 20000, restarts: int = 1) -> None:
    """Start the first-layer topics at a Poisson (KL) non-negative factorisation of the training
    counts, X ~ Pois(Theta Phi_1^T) with per-document Theta: `iters` rounds of the multiplicative
    (EM) updates of Lee and Seung (2001), i.e. PLSA's EM, from the corpus start of
    init_topics_from_data. A gradient step moves Phi_1 through the amortised network's theta,
    a slow coupling: started from corpus frequencies, topics that begin alike stay merged
    (component sharing), and 2,000 steps recovered synthetic GBN topics worse than
    scikit-learn's LDA (development diary, bench/results/topic-development.md). The EM rounds
    separate the topics first; the GBN then refines them. At most `max_docs` training
    documents (drawn with `gen`) enter the factorisation."""
    import scipy.sparse as sp

    init_topics_from_data(model, bow, rows, gen)
    K = model.Ks[0]
    if len(rows) > max_docs:
        rows = np.sort(rows[torch.randperm(len(rows), generator=gen)[:max_docs].numpy()])
    ind = [np.arange(bow.indptr[r], bow.indptr[r + 1]) for r in rows]
    lens = np.array([len(i) for i in ind])
    nz = np.concatenate(ind) if ind else np.zeros(0, dtype=np.int64)
    d_idx = np.repeat(np.arange(len(rows)), lens)
    v_idx = bow.indices[nz]
    x = bow.counts[nz].astype(np.float64)
    phi = model.phi(0).double().numpy()                                  # V x K, columns sum to 1
    doc_len = np.bincount(d_idx, weights=x, minlength=len(rows))
    theta = np.tile((doc_len / K)[:, None], (1, K)) * np.exp(
        0.1 * torch.randn(len(rows), K, generator=gen).double().numpy())  # D x K
    shape = (len(rows), bow.vocab_size)

    def factorise(phi, theta):
        for _ in range(iters):
            pred = np.einsum("nk,nk->n", theta[d_idx], phi[v_idx]) + 1e-12
            R = sp.csr_matrix((x / pred, (d_idx, v_idx)), shape=shape)
            theta = theta * (R @ phi)                                    # sum_v phi_vk = 1
            pred = np.einsum("nk,nk->n", theta[d_idx], phi[v_idx]) + 1e-12
            R = sp.csr_matrix((x / pred, (d_idx, v_idx)), shape=shape)
            phi = phi * (R.T @ theta)
            phi = phi / np.maximum(phi.sum(0, keepdims=True), 1e-300)
        pred = np.einsum("nk,nk->n", theta[d_idx], phi[v_idx]) + 1e-12
        # Poisson log-likelihood up to a constant (sum of the rates = sum of theta, phi's columns sum to 1)
        return float((x * np.log(pred)).sum() - theta.sum()), phi

    # restart 0 starts from init_topics_from_data's topics, restart r > 0 from the corpus
    # frequencies under fresh unit noise on the logits; the factorisation of the highest
    # likelihood wins
    corpus = np.bincount(v_idx, weights=x, minlength=bow.vocab_size) / max(x.sum(), 1.0)
    log_corpus = torch.from_numpy(np.log(corpus + 1e-6 / bow.vocab_size))[:, None]
    best = None
    for r in range(max(restarts, 1)):
        if r > 0:
            phi = torch.softmax(log_corpus + torch.randn(phi.shape, generator=gen, dtype=torch.float64), 0).numpy()
            theta = np.tile((doc_len / K)[:, None], (1, K))
        ll, fitted = factorise(phi, theta)
        if best is None or ll > best[0]:
            best = (ll, fitted)
    phi = best[1]
    model.phi_logits[0].copy_(torch.from_numpy(np.log(phi + 1e-6 / bow.vocab_size)).float())


def fit(bow: Bow, rows: np.ndarray, fc: FitConfig, ckpt_dir: Path, resume: bool = False,
        resume_from: Path | None = None) -> tuple[GBN, dict[str, Any]]:
    """Returns (model, training report)."""
    # ---- setup
    torch.manual_seed(fc.seed)
    mcfg = default_config(bow.vocab_size, list(fc.layers), linear=fc.linear, hidden=fc.hidden, link=fc.link,
                          prior_in=fc.prior_in)
    model = GBN(mcfg)
    opt = torch.optim.Adam(model.parameters(), lr=fc.lr)
    gen = torch.Generator().manual_seed(fc.seed)
    n = len(rows)
    bs = min(fc.batch_size, n)
    ckpt = CheckpointDir(ckpt_dir, keep=2)
    run_cfg = {"model": mcfg, "fit": asdict(fc), "vocab_sha256": bow.config.get("vocab_sha256"), "n_train": n}
    start, seconds, history = 0, 0.0, []
    if resume or resume_from is not None:
        step, state, saved = ckpt.load(resume_from, device="cpu")
        if saved.get("model") != mcfg or saved.get("vocab_sha256") != run_cfg["vocab_sha256"] or saved.get("n_train") != n:
            raise UsageError(f"{ckpt_dir}: the checkpoint was made for another model, vocabulary or corpus")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"])
        start, seconds = step, float(state.get("seconds", 0.0))
        history = [list(map(float, h)) for h in state.get("history", [])]
        console.log(f"resumed from {resume_from or ckpt.latest()} at step {start}")
    elif fc.init == "corpus":
        init_topics_from_data(model, bow, rows, gen)
    elif fc.init == "nmf":
        init_topics_nmf(model, bow, rows, gen, restarts=fc.init_restarts)

    def save_ckpt(step: int) -> None:
        ckpt.save(step, {"model": model.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(),
                         "seconds": seconds + time.perf_counter() - t0, "history": history},
                  config=run_cfg, seed=fc.seed)

    # ---- train
    kind = "linear GBN (WHAI)" if fc.linear else "generalized GBN"
    console.log(f"fitting a {kind} with layers {list(fc.layers)} on {n} documents x {bow.vocab_size} words: "
                f"{fc.steps} steps of {bs}")
    t0 = time.perf_counter()
    loop = StepLoop(start, fc.steps, save_ckpt, ckpt, every=fc.checkpoint_every, save_at_end=bool(fc.checkpoint_every))
    with loop, console.progress(fc.steps, "fit", completed=start) as bar:
        for step in loop:
            idx = torch.randperm(n, generator=gen)[:bs]
            x = _batch(bow, rows, idx)
            for g in opt.param_groups:
                g["lr"] = _lr(step, fc)
            kl_w = min(1.0, (step + 1) / fc.kl_warmup) if fc.kl_warmup > 0 else 1.0
            obj, stats = loss(model, x, generator=gen, eta=fc.eta, n_docs=n, kl_weight=kl_w)
            require_finite(step, loss=obj)
            opt.zero_grad(set_to_none=True)
            obj.backward()
            if fc.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), fc.grad_clip)
            opt.step()
            history.append([step + 1, stats["elbo_per_word"]])
            bar.update(1, elbo=stats["elbo_per_word"])
    seconds += time.perf_counter() - t0
    if start >= fc.steps:
        console.warn(f"the checkpoint is already at step {start} >= --steps {fc.steps}; saving it as it is")
    model.eval()
    train_elbo = evaluate_elbo(model, bow, rows, seed=fc.seed)
    report = {"steps": max(start, fc.steps), "train_seconds": round(seconds, 2), "train_docs": n,
              "train_elbo_per_word": train_elbo, "history_tail": history[-1:] if history else []}
    return model, report


@torch.no_grad()
def evaluate_elbo(model: GBN, bow: Bow, rows: np.ndarray, seed: int = 0, batch: int = 512) -> float:
    """ELBO per word on the given documents (one seeded Monte Carlo draw)."""
    gen = torch.Generator().manual_seed(seed + 12345)
    total, words = 0.0, 0.0
    for a in range(0, len(rows), batch):
        x = torch.from_numpy(bow.dense(rows[a:a + batch]))
        total += float(elbo(model, x, gen)["elbo"].sum())
        words += float(x.sum())
    return total / max(words, 1.0)
