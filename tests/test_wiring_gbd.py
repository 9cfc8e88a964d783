"""Wiring of GBD's training loss, training step and reverse sampler: which inputs the denoiser
gets, what reaches the loss and its gradient, and the order of a sampler step's arguments.
Expected values are computed here from the paper's formulas (PAPERS.md, GBD), not with the
helpers under test; each test was seen to fail on a plausible slip in the wiring."""

from __future__ import annotations

import json
import math

import networkx as nx
import numpy as np
import pytest
import torch
from scipy.special import digamma, polygamma

from gaml_cli.graphs.io import from_networkx

SMALL = {"layers": 1, "dx": 8, "de": 4, "dy": 8, "heads": 2, "ffx": 8, "ffe": 4}
SCALE, SHIFT = 0.9, 0.09
ETAS = (1000.0, 30.0, 10.0)


def _graphs():
    # 5, 5 and 4 nodes: the path is padded; degrees 2..4 give all three concentration bands
    return [from_networkx(nx.star_graph(4)), from_networkx(nx.cycle_graph(5)), from_networkx(nx.path_graph(4))]


def _alpha(t):
    """alpha_t = sigmoid(10 - 23 t) (PAPERS.md: start 10, end -13, power 1)."""
    return 1.0 / (1.0 + np.exp(-(10.0 - 23.0 * np.asarray(t, dtype=np.float64))))


def _eta_by_hand(nd: np.ndarray):
    """Node eta by normalised degree (> 0.8, (0.4, 0.8], <= 0.4) and edge eta of the higher-degree end."""
    eta_n = np.where(nd > 0.8, ETAS[0], np.where(nd > 0.4, ETAS[1], ETAS[2]))
    di, dj = nd[:, :, None], nd[:, None, :]
    eta_e = np.where(di >= dj, eta_n[:, :, None], eta_n[:, None, :])
    return eta_n, eta_e


def _logit_moments(alpha, eta, p):
    """Mean and std of logit z_t for x0 in {SHIFT, SHIFT + SCALE} with P(high) = p (law of total variance)."""
    out = []
    for x in (SHIFT, SHIFT + SCALE):
        a = eta * alpha * x
        b = eta - a
        out.append((digamma(a) - digamma(b), polygamma(1, a) + polygamma(1, b)))
    (m0, v0), (m1, v1) = out
    mean = (1 - p) * m0 + p * m1
    return mean, np.sqrt((1 - p) * v0 + p * v1 + p * (1 - p) * (m1 - m0) ** 2)


class SpyNet(torch.nn.Module):
    """Records its inputs and returns learnable logits, so the loss's gradient can be followed."""

    def __init__(self, B, N, D):
        super().__init__()
        g = torch.Generator().manual_seed(11)
        self.ox = torch.nn.Parameter(torch.randn(B, N, D, generator=g))
        oe = torch.randn(B, N, N, 1, generator=g)
        self.oe = torch.nn.Parameter(oe + oe.transpose(1, 2))
        self.calls = []

    def forward(self, X, E, t, node_mask, y):
        self.calls.append((X.detach().clone(), E.detach().clone(), t.clone(), node_mask.clone(), y.clone()))
        return self.ox, self.oe


def _setup(**overrides):
    from gaml_cli.methods.gbd.gbd import GBD
    from gaml_cli.methods.gbd.train import prepare

    cfg, tens, p_x, p_e = prepare(_graphs(), {"net": SMALL, **overrides})
    return cfg, tens, p_x, p_e, GBD(cfg, p_x, p_e)


def _draws(cfg, B, seed=0):
    g = torch.Generator().manual_seed(seed)
    N = cfg.max_nodes
    lz_x = torch.randn(B, N, cfg.D, generator=g) * 3
    lz_e = torch.randn(B, N, N, generator=g) * 3
    return lz_x, torch.triu(lz_e, 1) + torch.triu(lz_e, 1).transpose(1, 2)


def test_the_denoiser_receives_the_preconditioned_state_concentrations_time_and_size():
    cfg, tens, p_x, p_e, gbd = _setup(degree_input=True)
    B, N, D = 3, cfg.max_nodes, cfg.D
    lz_x, lz_e = _draws(cfg, B)
    t = torch.tensor([0.2, 0.5, 0.8])
    mask, nd = tens.node_mask, tens.norm_deg
    eta_n, eta_e = gbd.concentrations(nd)
    n_frac = torch.tensor([1.0, 1.0, 0.8])
    net = SpyNet(B, N, D)
    xh, eh = gbd.predict_x0(net, lz_x, lz_e, t, gbd.sched.alpha(t), eta_n, eta_e, mask, n_frac, nd)
    (X, E, t_in, m_in, y_in), = net.calls

    en, ee = _eta_by_hand(nd.numpy().astype(np.float64))
    assert np.array_equal(eta_n.numpy(), en) and np.array_equal(eta_e.numpy(), ee)
    a = _alpha(t.numpy())[:, None, None]
    mk = mask.numpy()
    off = (mk[:, :, None] & mk[:, None, :]) & ~np.eye(N, dtype=bool)
    mx, sx = _logit_moments(a, en[..., None], p_x.numpy().astype(np.float64))
    me, se = _logit_moments(a, ee, float(p_e))
    want_x = np.clip((lz_x.numpy() - mx) / sx, -30, 30) * mk[..., None]
    want_e = np.clip((lz_e.numpy() - me) / se, -30, 30) * off
    assert X.shape == (B, N, D + 2) and E.shape == (B, N, N, 2)
    assert np.allclose(X[..., :D].numpy(), want_x, atol=2e-4)
    assert np.allclose(X[..., D].numpy(), np.log(en) / math.log(1000.0) * mk, atol=1e-6)
    assert np.allclose(X[..., D + 1].numpy(), nd.numpy() * mk)          # --degree-input: the profile itself
    assert np.allclose(E[..., 0].numpy(), want_e, atol=2e-4)
    assert np.allclose(E[..., 1].numpy(), np.log(ee) / math.log(1000.0) * off, atol=1e-6)
    assert torch.equal(t_in, t) and torch.equal(m_in, mask)               # the time, not alpha_t
    assert torch.equal(y_in, n_frac.unsqueeze(1))
    # the output: sigmoid, then the data map x -> 0.9 x + 0.09
    assert torch.allclose(xh, torch.sigmoid(net.ox) * SCALE + SHIFT)
    assert torch.allclose(eh, torch.sigmoid(net.oe[..., 0]) * SCALE + SHIFT)


def _beta_kl(a1, b1, a0, b0):
    from torch.distributions import Beta, kl_divergence

    return kl_divergence(Beta(a1, b1), Beta(a0, b0))


def _kl_gamma_offset(x, y, o):
    x, y = x + o, y + o
    return (x - y) * torch.digamma(x) - torch.lgamma(x) + torch.lgamma(y)


def _loss_by_hand(net, tens, t, lambda_e, omega=0.99, per=None, fixed_eta=None, offset=0.0, per_node=False):
    """KLUB_X + lambda_e KLUB_E from the network's logits, with torch's Beta KL, in float64.
    fixed_eta / offset / per_node: GBD's released loss (the KLUB at one concentration, 0.01 on
    every gamma shape, KLUB_X summed over a node's features and averaged over nodes)."""
    mask = tens.node_mask
    D = tens.onehot.shape[-1]
    N = mask.shape[1]
    en, ee = (torch.from_numpy(v) for v in _eta_by_hand(tens.norm_deg.numpy().astype(np.float64)))
    at = torch.from_numpy(_alpha(t.numpy()))[:, None, None]
    as_ = torch.from_numpy(_alpha(0.95 * t.numpy()))[:, None, None]
    xh = torch.sigmoid(net.ox.double()) * SCALE + SHIFT
    eh = torch.sigmoid(net.oe[..., 0].double()) * SCALE + SHIFT
    x0 = tens.onehot.double() * SCALE + SHIFT
    e0 = tens.A.double() * SCALE + SHIFT

    if fixed_eta is not None:
        en, ee = torch.full_like(en, fixed_eta), torch.full_like(ee, fixed_eta)

    def kl(a1, b1, a0, b0):
        if not offset:
            return _beta_kl(a1, b1, a0, b0)
        return (_kl_gamma_offset(a1, a0, offset) + _kl_gamma_offset(b1, b0, offset)
                - _kl_gamma_offset(a1 + b1, a0 + b0, offset))

    def klub(h, x, eta):
        samp = kl(eta * (as_ - at) * h, eta * (1 - as_ * h), eta * (as_ - at) * x, eta * (1 - as_ * x))
        marg = kl(eta * at * h, eta * (1 - at * h), eta * at * x, eta * (1 - at * x))
        return omega * samp + (1 - omega) * marg

    kx = klub(xh, x0, en.unsqueeze(-1)) * mask.unsqueeze(-1)
    off = (mask.unsqueeze(2) & mask.unsqueeze(1)) & ~torch.eye(N, dtype=torch.bool)
    ke = klub(eh, e0, ee) * off
    nx_, ne = (float(mask.sum()) * D, float(off.sum())) if per is None else per
    if per_node:
        nx_ = nx_ / D   # the released code: sum over a node's D degree features, mean over nodes
    lx, le = kx.sum() / nx_, ke.sum() / ne
    return lx + lambda_e * le, float(lx.detach()), float(le.detach())


@pytest.mark.parametrize("lambda_e,per", [(5.0, None), (2.5, (70.0, 90.0))])
def test_the_loss_and_its_gradient_are_klub_x_plus_lambda_klub_e(lambda_e, per):
    from gaml_cli.methods.gbd.train import model_overrides

    over = model_overrides(1, (8, 4, 8), 2, ETAS, lambda_e, False, False, False, (0.0, 0.4, 0.85))
    cfg, tens, p_x, p_e, gbd = _setup(**{k: v for k, v in over.items() if k != "net"})
    assert cfg.lambda_e == lambda_e                                      # --lambda-e reaches the config
    B, N, D = 3, cfg.max_nodes, cfg.D
    lz_x, lz_e = _draws(cfg, B)
    t = torch.tensor([0.3, 0.45, 0.6])
    net = SpyNet(B, N, D)
    loss, lx, le = gbd.loss_at(net, tens.A, tens.onehot, tens.node_mask, tens.norm_deg, t, lz_x, lz_e, per)
    want, wx, we = _loss_by_hand(net, tens, t, lambda_e, per=per)
    assert lx == pytest.approx(float(wx), rel=1e-5) and le == pytest.approx(float(we), rel=1e-5)
    assert float(loss.detach()) == pytest.approx(float(want.detach()), rel=1e-5)
    g = torch.autograd.grad(loss, [net.ox, net.oe])
    gw = torch.autograd.grad(want, [net.ox, net.oe])
    for a, b in zip(g, gw):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-9)
    assert float(gw[1].abs().max()) > 0 and float(gw[0].abs().max()) > 0
    # the times the loss gives the denoiser are the drawn t
    assert torch.equal(net.calls[0][2], t)


def test_the_loss_draws_z_t_from_the_forward_process_of_each_entry():
    """GBD.loss: t from the generator, then z_t ~ Beta(eta alpha_t x0, eta (1 - alpha_t x0)) per node
    feature and per node pair (one draw per unordered pair), handed to the denoiser."""
    from gaml_cli.methods.gbd import diffusion as bd

    cfg, tens, p_x, p_e, gbd = _setup(t_focus=(0.0, 0.4, 0.85))
    B = 3
    seen = {}

    def spy(net, A, onehot, node_mask, norm_deg, t, lz_x, lz_e, per=None):
        seen.update(t=t, lz_x=lz_x, lz_e=lz_e)
        return torch.zeros(()), 0.0, 0.0

    gbd.loss_at = spy
    gbd.loss(None, tens.A, tens.onehot, tens.node_mask, tens.norm_deg, torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)
    u = torch.rand(B, generator=g)
    t = 1e-5 + (1 - 1e-5) * u
    assert torch.allclose(seen["t"], t)
    en, ee = (torch.from_numpy(v).float() for v in _eta_by_hand(tens.norm_deg.numpy().astype(np.float64)))
    a = torch.from_numpy(_alpha(t.numpy())).float()[:, None, None]
    ax = en.unsqueeze(-1) * a * (tens.onehot * SCALE + SHIFT)
    want_x = bd.logit_beta(ax, en.unsqueeze(-1) - ax, g)
    ae = ee * a * (tens.A * SCALE + SHIFT)
    want_e = bd.logit_beta(ae, ee - ae, g)
    want_e = torch.triu(want_e, 1) + torch.triu(want_e, 1).transpose(1, 2)
    assert torch.allclose(seen["lz_x"], want_x) and torch.allclose(seen["lz_e"], want_e)


def _flat_views(vec, params):
    from gaml_cli.core.flat import _offsets

    offs, _ = _offsets(params)
    return [vec[o: o + p.numel()].view_as(p) for o, p in zip(offs, params)]


@pytest.mark.parametrize("groups,workers", [(1, 1), (2, 2)])
def test_training_steps_are_the_loss_gradient_clipped_then_adamw_then_ema(tmp_path, monkeypatch, groups, workers):
    """gbd/train.py: each step's gradient is the gradient of GBD.loss on the step's batch and draws
    at the current weights (uniform batches: KLUBs averaged over the batch; size groups: divided by
    a uniform batch's expected counts), nothing carried over from the step before, clipped to the
    norm --grad-clip; AdamW's first step moves each weight by lr * sign(g); the EMA after step 0 is
    0.1 * init + 0.9 * trained, after step 1 decays by 2 / 11."""
    from gaml_cli.methods.gbd.gbd import GBD, build_net
    from gaml_cli.methods.gbd.train import TrainConfig, batch_indices, prepare, train

    graphs = _graphs() + [from_networkx(nx.complete_graph(4))]
    over = {"net": SMALL, "lambda_e": 3.0, "t_focus": (0.0, 0.4, 0.85)}
    # cosine over 2 steps: lr, then lr (1 + cos(pi / 2)) / 2 = lr / 2
    tc = TrainConfig(steps=2, batch_size=2, lr=1e-2, checkpoint_every=0, seed=3, size_groups=groups, workers=workers,
                     grad_clip=0.05, lr_schedule="constant" if groups == 1 else "cosine")
    recs = []
    orig = torch.optim.AdamW.step

    def step(self, *a, **k):
        p = self.param_groups[0]["params"][0]
        rec = dict(grad=p.grad.detach().clone(), before=p.detach().clone(), lr=self.param_groups[0]["lr"])
        out = orig(self, *a, **k)
        rec["after"] = p.detach().clone()
        recs.append(rec)
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    ema, cfg, _, _ = train(graphs, tc, tmp_path / "ck", torch.device("cpu"), cfg_overrides=over)
    assert len(recs) == 2
    assert [r["lr"] for r in recs] == ([1e-2, 1e-2] if groups == 1 else [1e-2, pytest.approx(5e-3)])

    # the same steps written out: same init, same generator, the loss applied directly
    torch.manual_seed(3)
    cfg2, tens, p_x, p_e = prepare(graphs, over)
    net = build_net(cfg2)
    params = list(net.parameters())
    init = [p.detach().clone() for p in params]
    gen = torch.Generator().manual_seed(3)
    gbd = GBD(cfg2, p_x, p_e)
    n = tens.n.double()
    per = None if groups == 1 else (2 * float(n.mean()) * cfg2.D, 2 * float((n * (n - 1)).mean()))
    for k, rec in enumerate(recs):
        before = _flat_views(rec["before"], params)
        with torch.no_grad():
            for p, b in zip(params, before):
                p.copy_(b)
        idx = batch_indices(tc, k, tens.n, 2, gen)
        if groups == 1 and k == 0:
            assert torch.equal(idx, torch.randperm(4, generator=torch.Generator().manual_seed(3))[:2])
        m = int(tens.n[idx].max())
        loss, _, _ = gbd.loss(net, tens.A[idx, :m, :m], tens.onehot[idx, :m], tens.node_mask[idx, :m],
                              tens.norm_deg[idx, :m], gen, per=per)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
        norm = float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads)))
        assert norm > 0.05   # so that clipping acts
        got = _flat_views(rec["grad"], params)
        for g, h in zip(grads, got):
            assert torch.allclose(h, g * (0.05 / (norm + 1e-6)), rtol=1e-4, atol=1e-8), k
        if k == 0:
            after = _flat_views(rec["after"], params)
            for p0, b, a, g in zip(init, before, after, got):
                assert torch.equal(p0, b)
                want = b - 1e-2 * g / (g.abs() + 1e-8)       # AdamW's (amsgrad) first step; weight decay 1e-12
                assert torch.allclose(a, want, atol=1e-6)
    a1, a2 = (_flat_views(r["after"], params) for r in recs)
    assert all(torch.equal(x, y) for x, y in zip(a1, _flat_views(recs[1]["before"], params)))
    d1 = 2 / 11
    for pe, p0, x, y in zip(ema.parameters(), init, a1, a2):
        assert torch.allclose(pe, d1 * (0.1 * p0 + 0.9 * x) + (1 - d1) * y, atol=1e-6)


@pytest.mark.parametrize("klub,node_loss,per", [("fixed", "per-node", None), ("fixed", "per-node", (70.0, 90.0)),
                                                ("fixed", "per-feature", None), ("modulated", "per-node", None)])
def test_the_released_codes_loss_form_by_hand(klub, node_loss, per):
    """--klub fixed: the KLUB at concentration 10,000 everywhere with 0.01 on every gamma shape;
    --node-loss per-node: KLUB_X summed over a node's degree features and averaged over nodes
    (D times the per-feature mean); the edge term and lambda_e as before."""
    from gaml_cli.methods.gbd.train import model_overrides

    over = model_overrides(1, (8, 4, 8), 2, ETAS, 5.0, False, False, False, (0.0, 0.4, 0.85), klub, node_loss)
    cfg, tens, p_x, p_e, gbd = _setup(**{k: v for k, v in over.items() if k != "net"})
    fixed = klub == "fixed"
    assert (cfg.klub_eta, cfg.klub_shape_offset) == ((10000.0, 0.01) if fixed else (0.0, 0.0))
    assert cfg.node_loss == node_loss
    B, N, D = 3, cfg.max_nodes, cfg.D
    assert D > 1   # so the two node normalisations differ
    lz_x, lz_e = _draws(cfg, B)
    t = torch.tensor([0.3, 0.45, 0.6])
    net = SpyNet(B, N, D)
    loss, lx, le = gbd.loss_at(net, tens.A, tens.onehot, tens.node_mask, tens.norm_deg, t, lz_x, lz_e, per)
    want, wx, we = _loss_by_hand(net, tens, t, 5.0, per=per, fixed_eta=10000.0 if fixed else None,
                                 offset=0.01 if fixed else 0.0, per_node=node_loss == "per-node")
    assert lx == pytest.approx(wx, rel=1e-6) and le == pytest.approx(we, rel=1e-6)
    assert float(loss.detach()) == pytest.approx(float(want.detach()), rel=1e-6)
    g = torch.autograd.grad(loss, [net.ox, net.oe])
    gw = torch.autograd.grad(want, [net.ox, net.oe])
    for a, b in zip(g, gw):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-9)
    # and the gaml default differs from it (in both terms when the KLUB is fixed)
    base, bx, be = _loss_by_hand(net, tens, t, 5.0, per=per)
    assert abs(lx - bx) > 1e-3 * abs(bx)
    assert (abs(le - be) > 1e-3 * abs(be)) == fixed
    # the forward process and the network's inputs keep the modulated concentrations
    en, ee = _eta_by_hand(tens.norm_deg.numpy().astype(np.float64))
    X = net.calls[0][0]
    mk = tens.node_mask.numpy()
    assert np.allclose(X[..., D].numpy(), np.log(en) / math.log(1000.0) * mk, atol=1e-6)


def test_a_sampler_step_hands_the_reverse_step_its_arguments_in_order(monkeypatch):
    """gbd/sample.py: per graph a training profile from its own generator, z_1 from the forward
    process of an all-low graph, then for k = K..1 the prediction at t = k/K and, but after the
    last, z_{(k-1)/K} = reverse step(z, x0_hat, alpha_{(k-1)/K}, alpha_{k/K}, eta); the graph is
    the last edge prediction mapped back and cut at 0.5."""
    from gaml_cli.core.runtime import sample_seed
    from gaml_cli.methods.gbd import diffusion as bd
    from gaml_cli.methods.gbd import sample as S
    from gaml_cli.methods.gbd.gbd import GBD, build_net

    cfg, tens, p_x, p_e, _ = _setup()
    prof = {"profile_n": tens.n, "profile_norm_deg": tens.norm_deg, "p_x": p_x, "p_e": torch.tensor([p_e])}
    N, D, K, seed, idx = cfg.max_nodes, cfg.D, 4, 5, [0, 1, 2, 3]
    pred_calls, steps = [], []
    g = torch.Generator().manual_seed(0)

    def fake_predict(self, net, lz_x, lz_e, t, alpha_t, eta_n, eta_e, node_mask, n_frac, norm_deg=None, by_size=False):
        B = lz_x.shape[0]
        xh = torch.rand(B, N, D, generator=g) * SCALE + SHIFT
        e = torch.rand(B, N, N, generator=g)
        eh = (e + e.transpose(1, 2)) / 2 * SCALE + SHIFT
        pred_calls.append(dict(lz_x=lz_x.clone(), lz_e=lz_e.clone(), t=t.clone(), alpha_t=alpha_t.clone(),
                               eta_n=eta_n.clone(), eta_e=eta_e.clone(), mask=node_mask.clone(), n_frac=n_frac.clone(),
                               norm_deg=norm_deg.clone(), xh=xh, eh=eh))
        return xh, eh

    real_step = bd.reverse_step_logit

    def spy_step(logit_z, x0_hat, alpha_s, alpha_t, eta, generator=None):
        out = real_step(logit_z, x0_hat, alpha_s, alpha_t, eta, generator)
        steps.append(dict(z=logit_z.clone(), x0=x0_hat.clone(), a_s=alpha_s.clone(), a_t=alpha_t.clone(), eta=eta.clone(),
                          out=out.clone()))
        return out

    monkeypatch.setattr(GBD, "predict_x0", fake_predict)
    monkeypatch.setattr(bd, "reverse_step_logit", spy_step)
    graphs = S.sample_batch(build_net(cfg).eval(), cfg, prof, idx, seed, K)

    # the profiles and the starting state, drawn per graph from its own generator
    gens = [torch.Generator().manual_seed(sample_seed(seed, i)) for i in idx]
    pick = [int(torch.randint(3, (1,), generator=gg)) for gg in gens]
    n = tens.n[pick]
    nd = tens.norm_deg[pick]
    en, ee = (torch.from_numpy(v).float() for v in _eta_by_hand(nd.numpy().astype(np.float64)))
    a1 = float(_alpha(1.0))
    low = 0.01 * SCALE + SHIFT
    z0x, z0e = [], []
    for b, gg in enumerate(gens):
        ax = en[b].unsqueeze(-1) * a1 * low * torch.ones(N, D)
        z0x.append(bd.logit_beta(ax, en[b].unsqueeze(-1) - ax, gg))
        ae = ee[b] * a1 * low
        up = torch.triu(bd.logit_beta(ae, ee[b] - ae, gg), 1)
        z0e.append(up + up.T)
    first = pred_calls[0]
    assert torch.allclose(first["lz_x"], torch.stack(z0x)) and torch.allclose(first["lz_e"], torch.stack(z0e))

    assert len(pred_calls) == K and len(steps) == 2 * len(idx) * (K - 1)
    for j, call in enumerate(pred_calls):
        k = K - j
        assert torch.allclose(call["t"], torch.full((4,), k / K))
        assert torch.allclose(call["alpha_t"].double(), torch.full((4,), float(_alpha(k / K)), dtype=torch.float64))
        assert torch.equal(call["eta_n"], en) and torch.equal(call["eta_e"], ee)
        assert torch.equal(call["mask"], torch.arange(N).unsqueeze(0) < n.unsqueeze(1))
        assert torch.allclose(call["n_frac"], n.float() / N) and torch.equal(call["norm_deg"], nd)
        if k == 1:
            break
        # the node steps of all graphs, then the edge steps
        node, edge = steps[2 * len(idx) * j: 2 * len(idx) * j + 4], steps[2 * len(idx) * j + 4: 2 * len(idx) * (j + 1)]
        nxt = pred_calls[j + 1]
        for b in range(4):
            for st, z, x0, eta in ((node[b], call["lz_x"][b], call["xh"][b], en[b].unsqueeze(-1)),
                                   (edge[b], call["lz_e"][b], call["eh"][b], ee[b])):
                assert torch.equal(st["z"], z) and torch.equal(st["x0"], x0) and torch.equal(st["eta"], eta)
                assert float(st["a_s"]) == pytest.approx(float(_alpha((k - 1) / K)), rel=1e-6)   # the earlier time
                assert float(st["a_t"]) == pytest.approx(float(_alpha(k / K)), rel=1e-6)
            assert torch.equal(nxt["lz_x"][b], node[b]["out"])
            up = torch.triu(edge[b]["out"], 1)
            assert torch.equal(nxt["lz_e"][b], up + up.T)
    last = pred_calls[-1]["eh"]
    for b, gr in enumerate(graphs):
        k = int(n[b])
        want = ((last[b, :k, :k] - SHIFT) / SCALE > 0.5).numpy()
        got = np.zeros((k, k), dtype=bool)
        for u, v in gr.edges:
            got[u, v] = got[v, u] = True
        assert gr.num_nodes == k and np.array_equal(got, want & ~np.eye(k, dtype=bool))


def test_the_reverse_step_moves_z_up_by_a_beta_draw_of_the_stated_parameters():
    """z_s = z_t + (1 - z_t) p with p ~ Beta(eta (alpha_s - alpha_t) x0_hat, eta (1 - alpha_s x0_hat)),
    checked on the mean of many draws: E[z_s] = z_t + (1 - z_t) a / (a + b)."""
    from gaml_cli.methods.gbd import diffusion as bd

    n = 200_000
    z, x0h, eta = 0.2, 0.8, 30.0
    a_s, a_t = 0.7, 0.3
    lz = torch.full((n,), math.log(z / (1 - z)))
    out = torch.sigmoid(bd.reverse_step_logit(lz, torch.full((n,), x0h), torch.tensor(a_s), torch.tensor(a_t),
                                              torch.full((n,), eta), torch.Generator().manual_seed(0)).double())
    a, b = eta * (a_s - a_t) * x0h, eta * (1 - a_s * x0h)
    mean_p = a / (a + b)
    sd_p = math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
    assert float(out.mean()) == pytest.approx(z + (1 - z) * mean_p, abs=5 * (1 - z) * sd_p / math.sqrt(n))
    assert float(out.std()) == pytest.approx((1 - z) * sd_p, rel=0.02)


def test_graphs_smaller_than_the_eigenvalue_features_are_padded_like_any_small_graph(tmp_path):
    """--extra-features takes the 5 lowest Laplacian eigenvalues: a data set whose largest graph
    has fewer than 5 nodes is padded to 5 for these features, as a small graph in a wider batch
    is (padded nodes' eigenvalues sit above the real ones), so it trains and samples."""
    from gaml_cli.methods.gbd.gbd import N_EIGVAL, structural_features
    from gaml_cli.methods.gbd.sample import sample
    from gaml_cli.methods.gbd.train import TrainConfig, train

    def logits(edges, N):   # alpha_t = 1: logit +-10 is an edge / no edge of the noisy graph
        lz = torch.full((N, N), -10.0)
        for u, v in edges:
            lz[u, v] = lz[v, u] = 10.0
        return lz.unsqueeze(0)

    path = [(0, 1), (1, 2)]
    small = structural_features(logits(path, 3), torch.ones(1), torch.ones(1, 3, dtype=torch.bool), SHIFT, SCALE, 3)
    wide = structural_features(logits(path, N_EIGVAL), torch.ones(1), torch.arange(N_EIGVAL).unsqueeze(0) < 3, SHIFT, SCALE)
    assert small[1].shape == (1, N_EIGVAL + 1) and torch.equal(small[1], wide[1])
    assert torch.equal(small[0], wide[0][:, :3])
    # the path's Laplacian eigenvalues 0, 1, 3 (/ 5), then the two padded nodes' 4 N (/ N = 5); one component of 3
    assert torch.allclose(small[1][0], torch.tensor([0, 1 / 5, 3 / 5, 4, 4, 1 / 3]), atol=1e-5)

    graphs = [from_networkx(nx.path_graph(4)), from_networkx(nx.path_graph(3))]
    tc = TrainConfig(steps=1, batch_size=2, checkpoint_every=0, workers=1)
    net, cfg, prof, _ = train(graphs, tc, tmp_path / "ck", torch.device("cpu"),
                              cfg_overrides={"net": SMALL, "extra_features": True, "degree_input": True})
    out = list(sample(net.eval(), cfg, prof, 2, seed=0, steps=2))
    assert len(out) == 2 and all(g.num_nodes in (3, 4) for g in out)


def test_the_structural_and_random_walk_inputs_are_those_of_the_graph_the_noisy_state_points_to():
    """--extra-features / --rw-features: the denoiser's extra channels come from A_t = 1[(clamp(z_t /
    alpha_t, 0, 1) - shift) / scale > 1/2] (the edges' noisy state at the current time): degree / N,
    triangles / N, Laplacian eigenvalues / N and the share of zero ones; P = D^-1 A_t and its powers."""
    cfg, tens, p_x, p_e, gbd = _setup(extra_features=True, rw_features=True)
    B, N, D = 3, cfg.max_nodes, cfg.D
    mask = tens.node_mask
    g = torch.Generator().manual_seed(3)
    up = torch.triu((torch.rand(B, N, N, generator=g) < 0.5).float(), 1)
    A_true = (up + up.transpose(1, 2)) * (mask.unsqueeze(2) & mask.unsqueeze(1))
    t = torch.tensor([0.2, 0.4, 0.5])
    a = torch.from_numpy(_alpha(t.numpy())).float()[:, None, None]
    z = a * (SCALE * A_true + SHIFT) * torch.exp(-0.05 * torch.randn(B, N, N, generator=g).abs())   # a little under alpha_t x0
    lz_e = torch.logit(z)
    lz_e = torch.triu(lz_e, 1) + torch.triu(lz_e, 1).transpose(1, 2)
    lz_x = torch.randn(B, N, D, generator=g)
    eta_n, eta_e = gbd.concentrations(tens.norm_deg)
    net = SpyNet(B, N, D)
    gbd.predict_x0(net, lz_x, lz_e, t, gbd.sched.alpha(t), eta_n, eta_e, mask, torch.ones(B), tens.norm_deg)
    X, E, _, _, y = net.calls[0]
    assert X.shape[-1] == D + 1 + 4 + 3 and E.shape[-1] == 2 + 4 and y.shape[-1] == 1 + 5 + 1
    A = A_true.numpy().astype(np.float64)
    deg = A.sum(-1)
    tri = np.einsum("bij,bjk,bki->bi", A, A, A) / 2
    assert np.allclose(X[..., D + 1].numpy(), deg / N) and np.allclose(X[..., D + 2].numpy(), tri / N)
    mk = mask.numpy()
    for b in range(B):
        L = np.diag(deg[b] + (~mk[b]) * 4 * N) - A[b]
        ev = np.linalg.eigvalsh(L)
        n = mk[b].sum()
        assert np.allclose(y[b, 1:6].numpy(), ev[:5] / N, atol=1e-5)
        assert y[b, 6].item() == pytest.approx(np.sum(np.abs(ev) < 1e-4) / n)
    P = A / np.maximum(A.sum(-1, keepdims=True), 1)
    P2 = P @ P
    off = (mk[:, :, None] & mk[:, None, :]) & ~np.eye(N, dtype=bool)
    assert np.allclose(E[..., 2].numpy(), P, atol=1e-6) and np.allclose(E[..., 3].numpy(), P2 * off, atol=1e-6)
    assert np.allclose(X[..., D + 5].numpy(), np.einsum("bii->bi", P2) * mk, atol=1e-6)      # return after 2 steps


def test_graphgen_train_and_sample_options_reach_the_model_and_the_sampler(tmp_path, gaml, monkeypatch):
    """--lambda-e, --eta, --t-focus and the feature switches end up in the GBDConfig the loss and
    the sampler read (saved in the artifact), and the widths in the network; graphgen sample's
    -n, --seed, --steps, --batch-size and --workers reach the sampler."""
    from gaml_cli.core.artifacts import read_header

    data = tmp_path / "g.jsonl"
    data.write_text("".join(json.dumps(g.to_record()) + "\n" for g in _graphs()))
    out = tmp_path / "m.safetensors"
    res = gaml("graphgen", "train", "--data", data, "--out", out, "--steps", "1", "--layers", "1", "--hidden", "8,4,6",
               "--heads", "2", "--batch-size", "2", "--lambda-e", "2.5", "--eta", "500,20,5", "--t-focus", "0.5,0.2,0.7",
               "--extra-features", "--no-degree-input", "--rw-features", "--klub", "fixed", "--node-loss", "per-node",
               "--device", "cpu", "-q")
    assert res.code == 0, res.err
    cfg = read_header(out).config["model"]
    assert (cfg["klub_eta"], cfg["klub_shape_offset"], cfg["node_loss"]) == (10000.0, 0.01, "per-node")
    assert cfg["lambda_e"] == 2.5 and cfg["eta"] == [500.0, 20.0, 5.0] and cfg["t_focus"] == [0.5, 0.2, 0.7]
    assert (cfg["extra_features"], cfg["degree_input"], cfg["rw_features"]) == (True, False, True)
    assert cfg["net"] == {"layers": 1, "dx": 8, "de": 4, "dy": 6, "heads": 2, "ffx": 16, "ffe": 8}
    # graphgen sample's options reach the sampler, and its lines are the sampler's graphs
    from gaml_cli.methods.gbd import sample as S

    seen = {}
    real = S.sample

    def spy(net, cfg, prof, n, seed, steps, batch_size=64, device="cpu", progress=None, workers=1):
        seen.update(n=n, seed=seed, steps=steps, batch_size=batch_size, workers=workers)
        return real(net, cfg, prof, n, seed, steps, batch_size, device, progress, workers)

    monkeypatch.setattr(S, "sample", spy)
    res = gaml("graphgen", "sample", "--model", out, "-n", "3", "--steps", "3", "--seed", "5", "--batch-size", "2",
               "--workers", "1", "--device", "cpu", "-q")
    assert res.code == 0, res.err
    assert seen == {"n": 3, "seed": 5, "steps": 3, "batch_size": 2, "workers": 1}
    net, mcfg, prof, _ = S.load_model(out)
    assert [json.loads(l) for l in res.out.splitlines()] == [g.to_record() for g in real(net, mcfg, prof, 3, 5, 3)]
