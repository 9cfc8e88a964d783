"""Contrastive factor analysis (methods/cfa, a reconstruction of arXiv 2407.21740) with its SimCLR
and NCL baselines, and the image probes (embeddings/probe.py): entropies against Monte Carlo, the
KL terms and InfoNCE by hand, augmentations that keep a digit a digit and are seeded per sample,
wiring (one encoder for both views, the KL weight in the loss, gradients through the draw), and
`gaml embed cfa | simclr | ncl | transform | probe` end to end with bad input refused in one line."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from gaml_cli.methods.cfa import loss as L
from gaml_cli.methods.cfa.augment import AugmentConfig, augment, preset_for, view_seeds
from gaml_cli.methods.cfa.model import ContrastiveNet
from gaml_cli.methods.cfa.train import step_loss
from gaml_cli.methods.gbn import distributions as D


def net(method="cfa", nonneg=False, **kw):
    torch.manual_seed(0)
    cfg = {"method": method, "channels": 1, "width": 4, "dim": 6, "nonneg": nonneg, "temperature": 0.5,
           "kl_weight": 0.1, "draws": 1, "prior_std": 1.0, "prior_shape": 1.0, "prior_rate": 1.0, **kw}
    return ContrastiveNet(cfg)


# ------------------------------------------------------------------------- the equations


def test_gaussian_entropy_matches_monte_carlo():
    g = torch.Generator().manual_seed(0)
    mu = torch.tensor([[0.3, -1.0, 2.0]], dtype=torch.float64)
    log_sigma = torch.tensor([[-1.0, 0.2, 0.7]], dtype=torch.float64)
    z = mu + torch.exp(log_sigma) * torch.randn((200_000, 3), generator=g, dtype=torch.float64)
    logq = torch.distributions.Normal(mu, torch.exp(log_sigma)).log_prob(z).sum(1)
    assert float(L.gaussian_entropy(log_sigma)[0]) == pytest.approx(float(-logq.mean()), abs=0.01)


@pytest.mark.parametrize("k,lam", [(0.5, 1.0), (1.0, 2.0), (3.0, 0.4), (8.0, 1.5)])
def test_weibull_entropy_matches_monte_carlo(k, lam):
    g = torch.Generator().manual_seed(1)
    kk = torch.full((200_000, 1), k, dtype=torch.float64)
    ll = torch.full((200_000, 1), lam, dtype=torch.float64)
    theta = D.weibull_rsample(kk, ll, g)
    mc = -float(D.weibull_logpdf(theta, kk, ll).mean())
    closed = float(L.weibull_entropy(kk[:1], ll[:1])[0])
    assert closed == pytest.approx(mc, abs=0.02 * max(1.0, abs(mc)))


def test_gaussian_kl_by_hand_and_zero_at_the_prior():
    # KL(N(1, 0.5^2) || N(0, 2^2)) = ln(2 / 0.5) + (0.25 + 1) / 8 - 1/2
    kl = L.kl_gaussian(torch.tensor(1.0), torch.tensor(math.log(0.5)), 2.0)
    assert float(kl) == pytest.approx(math.log(4) + 1.25 / 8 - 0.5, rel=1e-6)
    assert float(L.kl_gaussian(torch.tensor(0.0), torch.tensor(math.log(3.0)), 3.0)) == pytest.approx(0, abs=1e-6)


def test_nonneg_kl_is_gbns_weibull_gamma_kl_with_the_prior_given():
    # gbn's closed form (checked against Monte Carlo in test_topic_math.py) with the prior of the
    # config; by hand: Weibull(k=1, lambda=2) is the exponential of mean 2 = Gamma(1, rate 0.5): KL 0
    m = net(nonneg=True, prior_shape=1.0, prior_rate=0.5)
    k, lam = torch.tensor([[1.0, 2.0]]), torch.tensor([[2.0, 0.7]])
    kl = m.kl(k, lam)
    assert float(kl[0, 0]) == pytest.approx(0.0, abs=1e-6)
    want = D.kl_weibull_gamma(k, lam, torch.full_like(k, 1.0), torch.full_like(k, 0.5))
    assert torch.allclose(kl, want)
    m2 = net(nonneg=True, prior_shape=2.0, prior_rate=0.5)
    assert not torch.allclose(m2.kl(k, lam), want)  # the prior's parameters reach the KL


def _info_nce_by_hand(z1, z2, tau):
    rows = [list(map(float, r)) for r in list(z1) + list(z2)]
    n = len(z1)

    def cos(a, b):
        return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))

    total = 0.0
    for i in range(2 * n):
        pos = (i + n) % (2 * n)
        denom = sum(math.exp(cos(rows[i], rows[j]) / tau) for j in range(2 * n) if j != i)
        total += -math.log(math.exp(cos(rows[i], rows[pos]) / tau) / denom)
    return total / (2 * n)


def test_info_nce_by_hand_on_three_pairs():
    z1 = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    z2 = torch.tensor([[2.0, 0.1], [0.5, 1.0], [1.0, -1.0]])
    for tau in (0.5, 0.1):
        assert float(L.info_nce(z1, z2, tau)) == pytest.approx(_info_nce_by_hand(z1, z2, tau), rel=1e-5)
    # one number worked out fully: identical orthogonal pairs (e1, e1), (e2, e2) at tau = 1:
    # each row: positive cos 1, negatives cos 0, 0 -> -ln(e / (e + 2))
    e = torch.eye(2)
    assert float(L.info_nce(e, e, 1.0)) == pytest.approx(-math.log(math.e / (math.e + 2)), rel=1e-6)
    # the dot similarity keeps the scale: (2 e_i, e_i) pairs, positive 2, negatives 0
    assert float(L.info_nce(2 * e, e, 1.0, "dot")) == pytest.approx(-math.log(math.e ** 2 / (math.e ** 2 + 2)), rel=1e-6)
    assert float(L.info_nce(2 * e, e, 1.0, "cosine")) == pytest.approx(-math.log(math.e / (math.e + 2)), rel=1e-6)


def test_spectral_loss_by_hand():
    z1 = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    z2 = torch.tensor([[1.0, 1.0], [3.0, 0.0]])
    # positives: z1_0.z2_0 = 1, z1_1.z2_1 = 0 -> mean 0.5; negatives: z1_0.z2_1 = 3, z1_1.z2_0 = 2 -> (9 + 4) / 2
    assert float(L.spectral_loss(z1, z2)) == pytest.approx(-2 * 0.5 + 6.5)


def test_scaled_entropy_is_the_entropy_of_z_over_the_norm_of_its_mean():
    # H(z / c) = H(z) - D ln c; by Monte Carlo for a Gaussian: scale the draws and re-estimate
    mu = torch.tensor([[3.0, 4.0]], dtype=torch.float64)  # ||mu|| = 5
    ls = torch.tensor([[-0.5, 0.1]], dtype=torch.float64)
    h = L.gaussian_entropy(ls)
    assert float(L.scaled_entropy(h, mu)[0]) == pytest.approx(float(h[0]) - 2 * math.log(5.0))
    assert float(L.scaled_entropy(h, mu)[0]) == pytest.approx(float(L.gaussian_entropy(ls - math.log(5.0))[0]))


def test_rep_relu_is_relu_forward_and_gelu_backward():
    x = torch.tensor([-2.0, -0.3, 0.0, 0.4, 3.0], requires_grad=True)
    y = L.rep_relu(x, "gelu")
    assert torch.equal(y.detach(), torch.relu(x.detach()))
    y.sum().backward()
    xx = x.detach().clone().requires_grad_(True)
    torch.nn.functional.gelu(xx).sum().backward()
    assert torch.allclose(x.grad, xx.grad) and x.grad[0] != 0  # a dead unit still learns


# ------------------------------------------------------------------------- augmentations


def test_augmented_digits_are_still_digits(digits_artifact):
    from gaml_cli.core.artifacts import load_artifact
    from gaml_cli.diffusion.eval import load_classifier

    art = load_artifact(digits_artifact, "images")
    test = art["split"] == 1
    x, y = torch.from_numpy(art["images"][test]), art["labels"][test]
    clf, _ = load_classifier("digits-classifier", "digits", {})
    cfg = preset_for(1)
    with torch.no_grad():
        clean = (clf(x)["label"].argmax(1).numpy() == y).mean()
        xa = augment(x, view_seeds(0, 0, torch.arange(len(x)), 0), cfg)
        aug = (clf(xa)["label"].argmax(1).numpy() == y).mean()
        noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
        junk = (clf(noise)["label"].argmax(1).numpy() == y).mean()
    assert not torch.allclose(xa, x)  # it did change the images
    assert clean > 0.95 and aug > 0.85 and junk < 0.3, (clean, aug, junk)


def test_augmentations_are_seeded_per_sample():
    g = torch.Generator().manual_seed(0)
    x = torch.rand((6, 3, 12, 12), generator=g) * 2 - 1
    cfg = preset_for(3)
    idx = torch.arange(6)
    a = augment(x, view_seeds(7, 3, idx, 0), cfg)
    # a sample's view does not depend on its batch
    b = augment(x[[4, 1]], view_seeds(7, 3, idx[[4, 1]], 0), cfg)
    assert torch.allclose(a[[4, 1]], b, atol=1e-6)
    # and differs by view, step and seed
    for other in (view_seeds(7, 3, idx, 1), view_seeds(7, 4, idx, 0), view_seeds(8, 3, idx, 0)):
        assert not torch.allclose(augment(x, other, cfg), a)
    assert float(a.min()) >= -1 and float(a.max()) <= 1
    # no augmentation at all leaves the image alone
    none = AugmentConfig(crop_min=1.0, shift=0.0, flip=False, jitter=0.0, noise=0.0)
    assert torch.allclose(augment(x, view_seeds(0, 0, idx, 0), none), x, atol=1e-5)


# ------------------------------------------------------------------------- wiring


def _views(n=8, c=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, c, 8, 8), generator=g) * 2 - 1, torch.rand((n, c, 8, 8), generator=g) * 2 - 1


@pytest.mark.parametrize("method,nonneg", [("cfa", False), ("cfa", True), ("simclr", False), ("ncl", False)])
def test_both_views_go_through_the_same_encoder(method, nonneg):
    m = net(method, nonneg)
    seen = []
    m.encoder.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].detach()))
    x1, x2 = _views()
    step_loss(m, x1, x2, torch.Generator().manual_seed(0))
    rows = torch.cat(seen)
    for v in (x1, x2):
        assert any(torch.equal(rows[i:i + len(v)], v) for i in range(0, len(rows) - len(v) + 1, len(v)))


def test_the_similarity_option_reaches_the_loss():
    m = net("cfa", False)
    x1, x2 = _views()
    losses = []
    for sim in ("cosine", "dot"):
        m.config["similarity"] = sim
        losses.append(float(step_loss(m, x1, x2, torch.Generator().manual_seed(5))[1]["contrast"]))
    assert losses[0] != pytest.approx(losses[1], rel=1e-3)


@pytest.mark.parametrize("nonneg", [False, True])
def test_the_kl_weight_reaches_the_loss(nonneg):
    m = net("cfa", nonneg)
    x1, x2 = _views()
    out = {}
    for w in (0.0, 0.3):
        m.config["kl_weight"] = w
        loss, stats = step_loss(m, x1, x2, torch.Generator().manual_seed(5))
        out[w] = (float(loss.detach()), stats)
    assert out[0.3][1]["kl"] > 0
    assert out[0.3][0] - out[0.0][0] == pytest.approx(0.3 * out[0.3][1]["kl"], rel=1e-4)


@pytest.mark.parametrize("nonneg", [False, True])
def test_gradient_reaches_the_posterior_spread_through_the_reparameterised_draw(nonneg):
    # with no KL the spread (Gaussian ln sigma, Weibull k) only enters the loss through the draw
    m = net("cfa", nonneg, kl_weight=0.0)
    x1, x2 = _views()
    loss, _ = step_loss(m, x1, x2, torch.Generator().manual_seed(0))
    loss.backward()
    bias = m.projector[-1].bias.grad
    spread = bias[6:] if not nonneg else bias[:6]
    assert float(spread.abs().sum()) > 0
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in m.encoder.parameters())


def test_the_draws_and_embeddings():
    m = net("cfa", True)
    x1, _ = _views()
    out = m.embed(x1)
    assert (out["embeddings"] >= 0).all() and out["uncertainty"].shape == (8,)
    k, lam = m.posterior(m.encoder(x1))
    assert torch.allclose(out["embeddings"], D.weibull_mean(k, lam))
    assert torch.allclose(out["uncertainty"], L.weibull_entropy(k, lam))
    g = net("cfa", False)
    mu, ls = g.posterior(g.encoder(x1))
    assert torch.allclose(g.embed(x1)["embeddings"], mu)
    assert torch.allclose(g.embed(x1)["uncertainty"], L.gaussian_entropy(ls))
    n = net("ncl")
    assert (n.embed(x1)["embeddings"] >= 0).all() and "uncertainty" not in n.embed(x1)
    s = net("simclr", representation="encoder")
    assert s.embed(x1)["embeddings"].shape == (8, 16)  # the encoder's 4 x width


# ------------------------------------------------------------------------- probes


def test_image_probe_metrics_by_hand():
    from gaml_cli.embeddings.probe import expected_calibration_error, image_probe, sparsity

    prob = np.array([[0.9, 0.1], [0.62, 0.38], [0.3, 0.7], [0.45, 0.55]])
    y = np.array([0, 1, 1, 1])
    # bins of width 1/15: 0.9 (correct), 0.62 (wrong), 0.7 (correct), 0.55 (correct) in four bins
    want = (abs(1 - 0.9) + abs(0 - 0.62) + abs(1 - 0.7) + abs(1 - 0.55)) / 4
    assert expected_calibration_error(prob, y) == pytest.approx(want)
    s = sparsity(np.array([[0.0, 1.0, 0.0], [0.0, 2.0, 0.0005]]))
    assert s["sparsity"] == pytest.approx(4 / 6) and s["active_dims"] == 1 and s["nonnegative"]
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 100)
    x = rng.normal(size=(200, 4)) + 1.5 * y[:, None]
    split = np.tile([0, 0, 0, 1], 50)
    unc = -np.abs(x[:, 0] - 0.75)  # rows near the boundary are the uncertain ones
    out = image_probe(x, y, split, k=5, uncertainty=unc, ood_uncertainty=np.full(20, 10.0))
    assert 0.8 < out["accuracy"] < 1 and out["test_rows"] == 50
    assert out["uncertainty_auroc_errors"] > 0.6 and out["ood_auroc"] == 1.0
    out2 = image_probe(x, y, split, k=5, uncertainty=-unc)
    assert out2["uncertainty_auroc_errors"] < 0.4


# ------------------------------------------------------------------------- the commands


def test_embed_images_cli_end_to_end_and_bad_input(gaml, tmp_path, digits_artifact):
    from gaml_cli.core.artifacts import load_artifact

    small = ["--steps", "4", "--batch-size", "16", "--width", "4", "--dim", "8", "--device", "cpu", "-q"]
    outs = {}
    for name, extra in [("cfa", []), ("cnfa", ["--nonneg"]), ("simclr", []), ("ncl", [])]:
        cmd = "cfa" if name == "cnfa" else name
        o = tmp_path / f"{name}.safetensors"
        res = gaml("embed", cmd, "--data", digits_artifact, "--out", o, *small, *extra, "-f", "json")
        assert res.code == 0, res.err
        outs[name] = (o, json.loads(res.out))
    a = load_artifact(outs["cnfa"][0])
    assert a.config["model"]["similarity"] == "cosine" and a.config["model"]["uncertainty"] == "scaled"
    assert load_artifact(outs["cfa"][0]).config["model"]["similarity"] == "dot"
    assert (a["embeddings"] >= 0).all() and "zero_share" in outs["cnfa"][1] and outs["cnfa"][1]["nonnegative"]
    assert a["uncertainty"].shape == (1797,) and a["labels"].shape == (1797,) and a["model.encoder.body.0.0.weight"].ndim == 4
    assert "uncertainty" not in load_artifact(outs["simclr"][0]).tensors
    emb = tmp_path / "e.safetensors"
    res = gaml("embed", "transform", "--model", outs["cfa"][0], "--data", digits_artifact, "--out", emb, "-q")
    assert res.code == 0, res.err
    e, m = load_artifact(emb), load_artifact(outs["cfa"][0])
    assert np.allclose(e["embeddings"], m["embeddings"], atol=1e-5) and np.array_equal(e["split"], m["split"])
    res = gaml("embed", "probe", "--embeddings", emb, "--uncertainty", "--ood", outs["cnfa"][0], "-f", "json")
    assert res.code == 0, res.err
    p = json.loads(res.out)
    assert p["test_rows"] == 359 and {"accuracy", "knn_accuracy", "ece", "uncertainty_auroc_errors", "ood_auroc",
                                      "sparsity", "active_dims"} <= set(p)
    res = gaml("embed", "probe", "--embeddings", emb, "--split", "random", "-f", "json")
    assert res.code == 0 and json.loads(res.out)["split"].startswith("stratified")
    # resume: the same run continued gives the same model as straight through
    base = ["embed", "cfa", "--data", digits_artifact, *small[2:], "--checkpoint-every", "2"]
    r1, r2 = tmp_path / "r1.safetensors", tmp_path / "r2.safetensors"
    assert gaml(*base, "--out", r1, "--steps", "4").code == 0
    assert gaml(*base, "--out", r2, "--steps", "2").code == 0
    assert gaml(*base, "--out", r2, "--steps", "4", "--resume").code == 0
    assert np.allclose(load_artifact(r1)["embeddings"], load_artifact(r2)["embeddings"], atol=1e-6)
    # bad input: one line, exit 2, nothing written
    x = tmp_path / "x.safetensors"
    for args, msg in [
        (["embed", "cfa", "--data", emb, "--out", x, *small], "holds no images"),
        (["embed", "cfa", "--data", digits_artifact, "--out", x, *small, "--temperature", "0"], "--temperature"),
        (["embed", "cfa", "--data", digits_artifact, "--out", x, *small, "--nonneg", "--k-init", "50"], "--k-init"),
        (["embed", "cfa", "--data", digits_artifact, "--out", x, *small, "--crop-min", "1.5"], "--crop-min"),
        (["embed", "simclr", "--data", digits_artifact, "--out", x, *small, "--jitter", "nan"], "--jitter"),
        (["embed", "transform", "--model", outs["cfa"][0], "--graphs", "karate", "--out", x, "-q"], "image model"),
    ]:
        res = gaml(*args)
        assert res.code == 2 and len(res.err_lines) == 1 and msg in res.err, (args, res.err)
        assert not x.exists()
    labels = tmp_path / "labels.jsonl"
    labels.write_text('{"label": 0}\n{"label": 1}\n')
    res = gaml("embed", "probe", "--embeddings", emb, "--labels", labels)
    assert res.code == 2 and len(res.err_lines) == 1 and "2 labels for 1797" in res.err
    res = gaml("embed", "probe", "--embeddings", outs["simclr"][0], "--uncertainty")
    assert res.code == 2 and "no uncertainty" in res.err
    res = gaml("embed", "probe", "--embeddings", emb, "--labels", "attr:shape")
    assert res.code == 2 and "no attribute" in res.err


def test_shapes_labels_from_an_attribute_and_fitted_out_of_distribution_images(gaml, tmp_path, digits_artifact):
    from gaml_cli.core.artifacts import load_artifact

    shapes = tmp_path / "shapes.safetensors"
    assert gaml("dataset", "shapes", "-n", "60", "--size", "16", "--out", shapes, "-q").code == 0
    m = tmp_path / "m.safetensors"
    res = gaml("embed", "cfa", "--data", shapes, "--out", m, "--steps", "2", "--batch-size", "8", "--width", "4",
               "--dim", "4", "--device", "cpu", "-q")
    assert res.code == 0, res.err
    res = gaml("embed", "probe", "--embeddings", m, "--labels", "attr:shape", "--k", "3", "-f", "json")
    assert res.code == 0, res.err
    assert json.loads(res.out)["classes"] == 4
    res = gaml("embed", "probe", "--embeddings", m)
    assert res.code == 2 and "attr:shape" in res.err
    # shapes through a digits model: refused unless converted
    d = tmp_path / "d.safetensors"
    assert gaml("embed", "cfa", "--data", digits_artifact, "--out", d, "--steps", "1", "--batch-size", "8",
                "--width", "4", "--dim", "4", "--device", "cpu", "-q").code == 0
    o = tmp_path / "o.safetensors"
    res = gaml("embed", "transform", "--model", d, "--data", shapes, "--out", o, "-q")
    assert res.code == 2 and "--fit-images" in res.err and not o.exists()
    assert gaml("embed", "transform", "--model", d, "--data", shapes, "--out", o, "--fit-images", "-q").code == 0
    assert load_artifact(o)["embeddings"].shape == (60, 4)


def test_sigterm_saves_a_checkpoint_that_resumes(gaml, tmp_path, digits_artifact, monkeypatch):
    """Preemption mid-training (SIGTERM raised in this process at the third step): exit 130, a
    checkpoint of the whole steps in OUT.ckpt/, no model; --resume finishes the run."""
    import signal

    from gaml_cli.methods.cfa import train as T

    calls = []
    real = T.step_loss

    def step_then_signal(*a, **kw):
        calls.append(1)
        if len(calls) == 3:
            signal.raise_signal(signal.SIGTERM)
        return real(*a, **kw)

    monkeypatch.setattr(T, "step_loss", step_then_signal)
    out = tmp_path / "c.safetensors"
    args = ["embed", "cfa", "--data", digits_artifact, "--out", out, "--batch-size", "8", "--width", "4",
            "--dim", "4", "--checkpoint-every", "0", "--device", "cpu", "-q"]
    res = gaml(*args, "--steps", 100)
    assert res.code == 130, res.err
    assert not out.exists()
    assert json.loads((tmp_path / "c.ckpt" / "latest.json").read_text())["step"] == 3
    monkeypatch.setattr(T, "step_loss", real)
    res = gaml(*args, "--steps", 5, "--resume", "-f", "json")
    assert res.code == 0, res.err
    assert json.loads(res.out)["steps"] == 5 and out.exists()
