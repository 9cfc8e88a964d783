"""The (generalized) GBN's equations: Weibull reparameterisation, closed-form KL, Poisson
likelihood, and that training raises the ELBO."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from gaml_cli.methods.gbn import distributions as D  # noqa: E402
from gaml_cli.methods.gbn import metrics as M  # noqa: E402


@pytest.mark.parametrize("k,lam", [(0.5, 2.0), (1.0, 1.0), (2.5, 0.3), (8.0, 5.0)])
def test_weibull_rsample_mean(k, lam):
    """(W1): lambda * (-ln(1-u))^(1/k) has mean lambda * Gamma(1 + 1/k) (W2)."""
    gen = torch.Generator().manual_seed(0)
    n = 400_000
    kk = torch.full((n,), k, dtype=torch.float64)
    ll = torch.full((n,), lam, dtype=torch.float64)
    x = D.weibull_rsample(kk, ll, gen)
    expected = lam * math.gamma(1 + 1 / k)
    sd = lam * math.sqrt(math.gamma(1 + 2 / k) - math.gamma(1 + 1 / k) ** 2)
    assert abs(float(x.mean()) - expected) < 5 * sd / math.sqrt(n)
    assert float(D.weibull_mean(kk[:1], ll[:1])) == pytest.approx(expected, rel=1e-9)
    # the draw is differentiable in k and lambda (that is what the reparameterisation is for)
    k_t = torch.tensor(k, dtype=torch.float64, requires_grad=True)
    l_t = torch.tensor(lam, dtype=torch.float64, requires_grad=True)
    D.weibull_rsample(k_t.expand(1000), l_t.expand(1000), gen).mean().backward()
    assert k_t.grad is not None and l_t.grad is not None and float(l_t.grad) > 0


def test_weibull_samples_follow_the_weibull_cdf():
    gen = torch.Generator().manual_seed(1)
    k, lam = 1.7, 2.0
    x = D.weibull_rsample(torch.full((200_000,), k, dtype=torch.float64),
                          torch.full((200_000,), lam, dtype=torch.float64), gen).numpy()
    for q in (0.5, 1.0, 2.0, 4.0):
        assert (x <= q).mean() == pytest.approx(1 - math.exp(-(q / lam) ** k), abs=0.005)


@pytest.mark.parametrize("k,lam,alpha,beta", [
    (1.0, 1.0, 1.0, 1.0),
    (2.0, 3.0, 0.5, 0.7),
    (0.6, 0.2, 2.0, 4.0),
    (5.0, 10.0, 3.0, 0.2),
])
def test_kl_weibull_gamma_matches_monte_carlo(k, lam, alpha, beta):
    """(W3) equals E_q[ln q - ln p] estimated from 400k Weibull draws."""
    t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    closed = float(D.kl_weibull_gamma(t(k), t(lam), t(alpha), t(beta)))
    gen = torch.Generator().manual_seed(2)
    n = 400_000
    x = D.weibull_rsample(t(k).expand(n), t(lam).expand(n), gen).clamp_min(1e-300)
    diff = D.weibull_logpdf(x, t(k), t(lam)) - D.gamma_logpdf(x, t(alpha), t(beta))
    mc, se = float(diff.mean()), float(diff.std()) / math.sqrt(n)
    assert closed >= -1e-9
    assert abs(closed - mc) < 5 * se + 1e-3, (closed, mc, se)


def test_kl_is_zero_only_when_weibull_is_the_gamma():
    """Weibull(k=1, lambda) is Exponential(1/lambda) = Gamma(1, rate 1/lambda): KL 0."""
    t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    assert float(D.kl_weibull_gamma(t(1.0), t(2.0), t(1.0), t(0.5))) == pytest.approx(0.0, abs=1e-12)
    assert float(D.kl_weibull_gamma(t(1.0), t(2.0), t(1.0), t(1.0))) > 0.1


def test_poisson_loglik_matches_scipy():
    from scipy.stats import poisson

    x = torch.tensor([0.0, 1.0, 3.0, 10.0], dtype=torch.float64)
    rate = torch.tensor([0.5, 2.0, 3.0, 7.5], dtype=torch.float64)
    assert np.allclose(D.poisson_loglik(x, rate).numpy(), poisson.logpmf(x.numpy(), rate.numpy()))


def _toy_bow(n_docs=120, seed=0):
    """Documents drawn from 3 well-separated topics over 30 words."""
    from gaml_cli.methods.gbn.vocab import Bow, vocab_sha

    rng = np.random.default_rng(seed)
    V, K = 30, 3
    phi = np.full((V, K), 1e-3)
    for k in range(K):
        phi[k * 10:(k + 1) * 10, k] = 1.0
    phi /= phi.sum(0)
    theta = rng.gamma(0.3, 20.0, size=(n_docs, K))
    x = rng.poisson(theta @ phi.T).astype(np.float32)
    x[x.sum(1) == 0, 0] = 1
    indptr, indices, counts = [0], [], []
    for row in x:
        nz = np.flatnonzero(row)
        indices.extend(nz)
        counts.extend(row[nz])
        indptr.append(len(indices))
    vocab = [f"w{i:02d}" for i in range(V)]
    return Bow(np.array(indptr), np.array(indices), np.array(counts, dtype=np.float32), np.full(n_docs, -1),
               np.zeros(n_docs, dtype=np.uint8), np.arange(n_docs), vocab, None, {"vocab_sha256": vocab_sha(vocab)})


@pytest.mark.parametrize("linear", [False, True])
def test_elbo_increases_on_a_toy_corpus(tmp_path, linear):
    from gaml_cli.methods.gbn.model import GBN, default_config
    from gaml_cli.methods.gbn.train import FitConfig, evaluate_elbo, fit, init_topics_from_data

    torch.set_num_threads(1)
    bow = _toy_bow()
    rows = np.arange(bow.n_docs)
    torch.manual_seed(0)
    start = GBN(default_config(bow.vocab_size, [6, 3], linear=linear, hidden=32))
    init_topics_from_data(start, bow, rows, torch.Generator().manual_seed(0))  # where fit starts
    before = evaluate_elbo(start, bow, rows)
    model, report = fit(bow, rows, FitConfig(layers=(6, 3), linear=linear, hidden=32, steps=300, batch_size=40,
                                             lr=1e-2, checkpoint_every=0, init="corpus"), tmp_path / "ck")
    after = report["train_elbo_per_word"]
    assert after == pytest.approx(evaluate_elbo(model, bow, rows))
    assert after > before + 0.25, (before, after)  # per word


def test_refined_inference_does_not_depend_on_the_batch():
    """A document's refined posterior (Monte Carlo draws from its own generator, Adam
    elementwise) is the same whether it is scored alone, in a chunk or with the whole set;
    the control shows the draws matter (another position's draws give another answer)."""
    from gaml_cli.methods.gbn.model import GBN, default_config

    torch.manual_seed(0)
    bow = _toy_bow(n_docs=10)
    x = torch.from_numpy(bow.dense())
    model = GBN(default_config(bow.vocab_size, [6, 3], hidden=16))
    whole = model.word_probs(x, refine_steps=20, seed=3)
    chunk = model.word_probs(x[4:7], refine_steps=20, seed=3, offset=4)
    assert torch.allclose(chunk, whole[4:7], rtol=1e-5, atol=1e-8)
    thetas = model.transform(x[4:7], refine_steps=20, seed=3, offset=4)
    assert all(torch.allclose(t, w[4:7], rtol=1e-5, atol=1e-8)
               for t, w in zip(thetas, model.transform(x, refine_steps=20, seed=3)))
    shifted = model.word_probs(x[4:7], refine_steps=20, seed=3, offset=0)
    assert not torch.allclose(shifted, whole[4:7], rtol=1e-3, atol=1e-6)


def test_completion_split_in_chunks_matches_one_call():
    rng = np.random.default_rng(1)
    x = rng.poisson(1.0, size=(9, 12)).astype(np.float32)
    obs, held = M.completion_split(x, 0.8, seed=5)
    stream = np.random.default_rng(5)
    parts = [M.completion_split(x[a:a + 4], 0.8, rng=stream) for a in range(0, 9, 4)]
    assert np.array_equal(np.concatenate([p[0] for p in parts]), obs)
    assert np.array_equal(np.concatenate([p[1] for p in parts]), held)
    assert np.array_equal(obs + held, x) and held.sum() > 0


@pytest.mark.parametrize("linear", [False, True])
def test_gamma_shapes_are_floored_at_the_smallest_weibull_shape(linear):
    """(G5): the link's gamma shapes never go below k_min, even for an almost empty upper layer;
    a model config from before the floor (no 'shape_min') keeps the unfloored link."""
    from gaml_cli.methods.gbn.model import GBN, K_MIN, default_config

    torch.manual_seed(0)
    cfg = default_config(20, [5, 3], linear=linear, hidden=8)
    theta_up = torch.full((4, 3), 1e-3)
    with torch.no_grad():
        floored = GBN(cfg).link(0, theta_up)
    assert cfg["shape_min"] == K_MIN and float(floored.min()) == pytest.approx(K_MIN)
    old = {k: v for k, v in cfg.items() if k != "shape_min"}
    torch.manual_seed(0)
    with torch.no_grad():
        assert float(GBN(old).link(0, theta_up).max()) < 0.01
