"""Wiring of the (generalized) GBN: the upward-downward pass written out by hand (which layer
gets which hidden state, prior shape and rate, in which order the Weibull draws are taken),
the ELBO's terms, the loss's KL weight / Dirichlet prior / corpus size, what the training loop
hands the loss at each step (KL warm-up, eta, learning rate, batch) and its gradient, and the
perplexity command's observed / held-out split."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from scipy.special import gammaln  # noqa: E402
from scipy.stats import poisson  # noqa: E402

from gaml_cli.methods.gbn.model import GBN, default_config  # noqa: E402

EULER = 0.5772156649015329


def _model(linear=False, link="gate", seed=0, prior_in="input"):
    torch.manual_seed(seed)
    m = GBN(default_config(10, [4, 3, 2], linear=linear, hidden=6, link=link, prior_in=prior_in)).double()
    with torch.no_grad():
        for p in m.parameters():     # nonzero gates and rates everywhere, so a wrong wire shows
            p.add_(0.3 * torch.randn(p.shape, dtype=p.dtype))
    return m


def _x():
    g = torch.Generator().manual_seed(1)
    return torch.poisson(torch.rand(3, 10, generator=g, dtype=torch.float64) * 3, generator=g)


def _by_hand(m, x, gen):
    """(theta, k, lambda, prior shape, prior rate) per layer, layer 1 first, by the model card's
    equations (I1), (I2), (G1), (G2'), (W1), with the uniforms drawn top layer first."""
    def lin(mod, v):
        return v @ mod.weight.T + mod.bias

    hs, h = [], torch.log1p(x)
    for up in m.up:
        h = F.softplus(lin(up, h))
        hs.append(h)
    length = x.sum(1, keepdim=True).clamp_min(1.0)
    out = [None] * 3
    theta_up = None
    for l in (2, 1, 0):
        if l == 2:
            inp, alpha = hs[2], torch.ones(x.shape[0], 2, dtype=x.dtype)
        else:
            phi = torch.softmax(m.phi_logits[l + 1], dim=0)          # Phi_{l+2}: K_{l+1} x K_{l+2}
            alpha = theta_up @ phi.T
            if not m.linear:
                hid = F.softplus(lin(m.link_a[l], torch.log1p(theta_up)))
                if m.link_form == "gate":
                    alpha = alpha * 2 * torch.sigmoid(lin(m.link_b[l], hid))
                else:
                    alpha = alpha + F.softplus(lin(m.link_b[l], hid))
            alpha = alpha.clamp_min(0.1)
            # input (gaml's): ln(1 + alpha) beside h_l; shape (WHAI's): h_l alone, alpha added to k below
            inp = hs[l] if m.prior_in == "shape" else torch.cat([hs[l], torch.log1p(alpha)], 1)
        k = F.softplus(lin(m.head_k[l], inp))
        if l < 2 and m.prior_in == "shape":
            k = k + alpha
        k = k.clamp(0.1, 10.0)
        mean = F.softplus(lin(m.head_m[l], inp)) + 1e-6
        if l == 0:
            mean = mean * length / 4
        lam = mean / torch.exp(torch.lgamma(1 + 1 / k))
        u = torch.rand(lam.shape, generator=gen, dtype=lam.dtype).clamp(1e-7, 1 - 1e-7)
        theta = (lam * (-torch.log(1 - u)) ** (1 / k)).clamp_min(1e-10)
        out[l] = (theta, k, lam, alpha, torch.exp(m.log_c[l]).expand_as(lam))
        theta_up = theta
    return out


@pytest.mark.parametrize("linear,link,prior_in", [(False, "gate", "input"), (False, "residual", "input"),
                                                  (True, "gate", "input"), (False, "gate", "shape"),
                                                  (True, "gate", "shape")])
def test_the_upward_downward_pass_by_hand(linear, link, prior_in):
    m = _model(linear, link, prior_in=prior_in)
    x = _x()
    got = m.downward(x, generator=torch.Generator().manual_seed(5))
    want = _by_hand(m, x, torch.Generator().manual_seed(5))
    for l in range(3):
        for a, b, name in zip(got[l], want[l], ("theta", "k", "lambda", "shape", "rate")):
            assert torch.allclose(a, b, rtol=1e-6, atol=1e-10), (l, name)
    # and the gradients reach the same parameters by the same paths
    params = list(m.parameters())

    def scalar(layers):
        return sum((th * (l + 1)).sum() + sh.sum() + r.sum() for l, (th, _, _, sh, r) in enumerate(layers))

    if prior_in == "shape":  # WHAI's form: the lower layers' Weibull shapes move with the prior's shape
        k_got = sum(layer[1].sum() for layer in got[:2])
        assert torch.autograd.grad(k_got, m.phi_logits[1], retain_graph=True)[0].abs().sum() > 0
    ga = torch.autograd.grad(scalar(got), params, allow_unused=True)
    gb = torch.autograd.grad(scalar(want), params, allow_unused=True)
    for p, a, b in zip(params, ga, gb):
        a = torch.zeros_like(p) if a is None else a
        b = torch.zeros_like(p) if b is None else b
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-10)


def test_the_elbo_terms_are_the_poisson_likelihood_and_each_layers_weibull_gamma_kl():
    m = _model()
    x = _x()
    terms = m.elbo_terms(x, generator=torch.Generator().manual_seed(5))
    layers = _by_hand(m, x, torch.Generator().manual_seed(5))
    theta1 = layers[0][0].detach().numpy()
    rate = theta1 @ torch.softmax(m.phi_logits[0], 0).detach().numpy().T + 1e-10
    assert np.allclose(terms["loglik"].detach().numpy(), poisson.logpmf(x.numpy(), rate).sum(1), rtol=1e-9)
    for l, (_, k, lam, a, b) in enumerate(layers):
        k, lam, a, b = (v.detach().numpy() for v in (k, lam, a, b))
        # KL(Weibull(k, lam) || Gamma(a, rate b)), closed form (W3)
        kl = (EULER * a / k - a * np.log(lam) + np.log(k) + b * lam * np.exp(gammaln(1 + 1 / k))
              - EULER - 1 - a * np.log(b) + gammaln(a))
        assert np.allclose(terms["kl"][:, l].detach().numpy(), kl.sum(1), rtol=1e-9), l


@pytest.mark.parametrize("kl_weight,eta,n_docs", [(1.0, 1.0, 1), (0.25, 3.0, 40)])
def test_the_loss_weighs_the_kl_adds_the_dirichlet_prior_once_per_corpus(kl_weight, eta, n_docs):
    from gaml_cli.methods.gbn.loss import loss

    m = _model()
    x = _x()
    obj, stats = loss(m, x, torch.Generator().manual_seed(5), eta=eta, n_docs=n_docs, kl_weight=kl_weight)
    terms = m.elbo_terms(x, generator=torch.Generator().manual_seed(5))
    log_prior = (eta - 1) * sum(torch.log(torch.softmax(p, 0)).sum() for p in m.phi_logits)
    want = -((terms["loglik"] - kl_weight * terms["kl"].sum(1)).mean() + log_prior / n_docs)
    assert float(obj.detach()) == pytest.approx(float(want.detach()), rel=1e-9)
    params = list(m.parameters())
    for a, b in zip(torch.autograd.grad(obj, params), torch.autograd.grad(want, params)):
        assert torch.allclose(a, b, rtol=1e-7, atol=1e-12)
    words = float(x.sum())
    # the progress figure is the unweighted ELBO per word
    assert stats["elbo_per_word"] == pytest.approx(float((terms["loglik"] - terms["kl"].sum(1)).sum().detach()) / words)


def test_each_fit_step_hands_the_loss_its_warm_up_weight_prior_and_batch(tmp_path, monkeypatch):
    from test_topic_math import _toy_bow

    from gaml_cli.methods.gbn import train as T
    from gaml_cli.methods.gbn.loss import loss as real_loss
    from gaml_cli.methods.gbn.model import GBN as Model

    bow = _toy_bow(n_docs=12)
    rows = np.arange(12)
    fc = T.FitConfig(layers=(4, 2), hidden=8, steps=6, batch_size=5, lr=0.02, lr_final=0.1, eta=2.0, kl_warmup=4,
                     grad_clip=0.5, checkpoint_every=0, seed=2, init="corpus")
    calls, steps = [], []

    def spy(model, x, generator=None, eta=1.0, n_docs=1, kl_weight=1.0):
        calls.append(dict(x=x.clone(), eta=eta, n_docs=n_docs, kl_weight=kl_weight))
        return real_loss(model, x, generator=generator, eta=eta, n_docs=n_docs, kl_weight=kl_weight)

    orig = torch.optim.Adam.step

    def step(self, *a, **k):
        ps = self.param_groups[0]["params"]
        steps.append(dict(lr=self.param_groups[0]["lr"], grads=[p.grad.clone() for p in ps],
                          params=[p.detach().clone() for p in ps]))
        return orig(self, *a, **k)

    monkeypatch.setattr(T, "loss", spy)
    monkeypatch.setattr(torch.optim.Adam, "step", step)
    T.fit(bow, rows, fc, tmp_path / "ck")
    assert [c["kl_weight"] for c in calls] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert all(c["eta"] == 2.0 and c["n_docs"] == 12 and c["x"].shape == (5, bow.vocab_size) for c in calls)
    # cosine from lr to lr * lr_final over the 6 steps: lr (0.1 + 0.9 (1 + cos(pi s / 5)) / 2)
    want_lr = [0.02 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / 5))) for s in range(6)]
    assert [s["lr"] for s in steps] == pytest.approx(want_lr, rel=1e-12)

    # the first two steps written out: same init and generator, the loss applied directly at the
    # step's weights (nothing carried over from the step before), clipped to 0.5
    torch.manual_seed(2)
    model = Model(default_config(bow.vocab_size, [4, 2], hidden=8))
    gen = torch.Generator().manual_seed(2)
    T.init_topics_from_data(model, bow, rows, gen)
    params = list(model.parameters())
    for k in (0, 1):
        if k == 0:   # the same initialisation as the loop's
            assert all(torch.equal(p, q) for p, q in zip(params, steps[0]["params"]))
        with torch.no_grad():
            for p, q in zip(params, steps[k]["params"]):
                p.copy_(q)
        idx = torch.randperm(12, generator=gen)[:5]
        x = torch.from_numpy(bow.dense(rows[idx.numpy()]))
        assert torch.equal(calls[k]["x"], x)
        obj, _ = real_loss(model, x, gen, eta=2.0, n_docs=12, kl_weight=0.25 * (k + 1))
        grads = torch.autograd.grad(obj, params)
        norm = math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads))
        assert norm > 0.5
        for g, h in zip(grads, steps[k]["grads"]):
            assert torch.allclose(h, g * (0.5 / (norm + 1e-6)), rtol=1e-4, atol=1e-7), k


def test_fit_options_reach_the_fit_and_perplexity_infers_from_the_observed_words_and_scores_the_held_out_ones(tmp_path, gaml):
    from test_topic_cli import corpus_lines

    from gaml_cli.core.artifacts import load_artifact
    from gaml_cli.methods.gbn import metrics as M
    from gaml_cli.methods.gbn.vocab import load_bow

    docs = tmp_path / "docs.jsonl"
    docs.write_text("\n".join(json.dumps({"text": t, "label": g}) for t, g in corpus_lines()) + "\n")
    bow_p, model_p = tmp_path / "bow.safetensors", tmp_path / "m.safetensors"
    assert gaml("topic", "vocab", "--corpus", docs, "--out", bow_p, "--min-df", "1", "-q").code == 0
    assert gaml("topic", "fit", "--corpus", bow_p, "--out", model_p, "--layers", "4,2", "--hidden", "8", "--steps", "5",
                "--eta", "1.5", "--lr", "0.01", "--batch-size", "7", "--link", "residual", "--seed", "4",
                "--checkpoint-every", "0", "--prior-in", "shape", "-q").code == 0
    res = gaml("topic", "perplexity", "--model", model_p, "--corpus", bow_p, "--refine", "0", "--seed", "3",
               "--observed", "0.6", "-f", "json")
    assert res.code == 0, res.err
    got = json.loads(res.out)
    art = load_artifact(str(model_p), "topic-model", framework="pt")
    # the fit options reached the fit (its config is saved with the model)
    fit = art.config["fit"]
    assert (fit["eta"], fit["lr"], fit["batch_size"], fit["link"], fit["seed"], fit["steps"]) == (1.5, 0.01, 7, "residual", 4, 5)
    assert art.config["model"]["link"] == "residual" and art.config["model"]["hidden"] == 8
    assert art.config["model"]["prior_in"] == "shape" and fit["prior_in"] == "shape"
    model = GBN(art.config["model"])
    model.load_state_dict({k: v for k, v in art.tensors.items() if k != "vocab_utf8"})
    model.eval()
    bow = load_bow(str(bow_p))
    x = bow.dense(bow.rows("test"))
    obs, held = M.completion_split(x, 0.6, seed=3)
    with torch.no_grad():
        theta1 = model.transform(torch.from_numpy(obs))[0]
        rate = (theta1 @ torch.softmax(model.phi_logits[0], 0).T).double().numpy() + 1e-10
    p = rate / rate.sum(1, keepdims=True)
    want = math.exp(-(held * np.log(p)).sum() / held.sum())
    assert got["heldout_words"] == int(held.sum()) and got["documents"] == len(x)
    assert got["perplexity"] == pytest.approx(want, rel=1e-5)


def test_the_two_prior_forms_differ_where_they_should():
    """input: the heads of layers below the top see [h_l, ln(1 + alpha_l)]; shape: they see h_l
    only and alpha_l is added to k. With the same weights on h_l the two answers differ by
    exactly that: under `shape`, k minus alpha does not depend on the upper layer's theta."""
    x = _x()
    a = _model(prior_in="input")
    b = _model(prior_in="shape")
    assert a.head_k[0].in_features == 6 + 4 and b.head_k[0].in_features == 6
    assert a.head_k[2].in_features == b.head_k[2].in_features == 6  # the top layer has no prior from above
    hs = b.upward(x)
    lo = torch.full((3, 4), 0.2, dtype=torch.float64)
    hi = torch.full((3, 4), 3.0, dtype=torch.float64)
    # shape: the shape moves one for one with the prior's shape (inside the clamp), the mean does not
    k_lo, lam_lo = b.weibull_params(0, hs[0], lo)
    k_hi, lam_hi = b.weibull_params(0, hs[0], hi)
    inside = (k_lo > 0.1) & (k_hi < 10.0)
    assert inside.any()
    assert torch.allclose((k_hi - k_lo)[inside], torch.full_like(k_hi[inside], 2.8))
    m_lo = lam_lo * torch.exp(torch.lgamma(1 + 1 / k_lo))
    m_hi = lam_hi * torch.exp(torch.lgamma(1 + 1 / k_hi))
    assert torch.allclose(m_lo, m_hi)
    # input: the prior's shape reaches k and the mean through the heads' weights, not by addition
    ha = a.upward(x)
    ka_lo, _ = a.weibull_params(0, ha[0], lo)
    ka_hi, _ = a.weibull_params(0, ha[0], hi)
    assert not torch.allclose(ka_hi - ka_lo, torch.full_like(ka_hi, 2.8))
