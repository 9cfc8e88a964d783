"""Graph Beta Diffusion: KLUB, forward process, reverse step, preconditioning, concentration,
the denoiser's equivariance, per-sample seeding; MMD and graph statistics."""

from __future__ import annotations

import math
import re

import networkx as nx
import numpy as np
import pytest
import torch

from gaml_cli.graphs import mmd
from gaml_cli.graphs.io import Graph, from_networkx, graph_from_record, to_networkx
from gaml_cli.methods.gbd import diffusion as bd


def _beta_params(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = 0.09 + 0.9 * torch.rand(n, generator=g, dtype=torch.float64)
    xh = 0.09 + 0.9 * torch.rand(n, generator=g, dtype=torch.float64)
    t = 0.05 + 0.9 * torch.rand(n, generator=g, dtype=torch.float64)
    eta = torch.tensor([10.0, 30.0, 1000.0], dtype=torch.float64)[torch.randint(3, (n,), generator=g)]
    return x0, xh, t, eta


def test_klub_equals_the_beta_kl_of_torch_distributions():
    from torch.distributions import Beta, kl_divergence

    x0, xh, t, eta = _beta_params()
    sch = bd.Schedule()
    at, as_ = sch.alpha(t), sch.alpha(sch.s_ratio * t)
    got = bd.klub_sampling(xh, x0, as_, at, eta)
    want = kl_divergence(Beta(eta * (as_ - at) * xh, eta * (1 - as_ * xh)), Beta(eta * (as_ - at) * x0, eta * (1 - as_ * x0)))
    assert torch.allclose(got, want, rtol=1e-6, atol=1e-8)
    got_m = bd.klub_marginal(xh, x0, at, eta)
    want_m = kl_divergence(Beta(eta * at * xh, eta * (1 - at * xh)), Beta(eta * at * x0, eta * (1 - at * x0)))
    assert torch.allclose(got_m, want_m, rtol=1e-6, atol=1e-8)
    mix = bd.klub(xh, x0, as_, at, eta, omega=0.99)
    assert torch.allclose(mix, 0.99 * want + 0.01 * want_m, rtol=1e-6, atol=1e-8)
    assert (mix > 0).all()


def test_klub_is_zero_when_the_prediction_is_exact():
    x0, _, t, eta = _beta_params()
    sch = bd.Schedule()
    at, as_ = sch.alpha(t), sch.alpha(sch.s_ratio * t)
    assert torch.allclose(bd.klub(x0, x0, as_, at, eta), torch.zeros_like(x0), atol=1e-9)


def test_klub_with_the_released_codes_shape_offset_by_hand():
    """GBD's released code (metrics/abstract_metrics.py, KLUBs.KL_gamma) adds 0.01 to both shapes of
    each of the three gamma KLs. By hand with scipy at a_hat 0.5, b_hat 2, a 0.2, b 3:
    KL_g(x, y) = (x - y) psi(x) - ln Gamma(x) + ln Gamma(y) at x + 0.01, y + 0.01."""
    from scipy.special import digamma, gammaln

    def klg(x, y, o):
        x, y = x + o, y + o
        return (x - y) * digamma(x) - gammaln(x) + gammaln(y)

    ah, bh, a, b = 0.5, 2.0, 0.2, 3.0
    T = lambda v: torch.tensor([v], dtype=torch.float64)  # noqa: E731
    assert float(bd.kl_gamma(T(ah), T(a), 0.01)) == pytest.approx(klg(ah, a, 0.01), rel=1e-12)
    want = klg(ah, a, 0.01) + klg(bh, b, 0.01) - klg(ah + bh, a + b, 0.01)
    assert float(bd.kl_beta(T(ah), T(bh), T(a), T(b), 0.01)) == pytest.approx(want, rel=1e-12)
    # not the plain Beta KL any more (which is what offset 0 gives)
    plain = klg(ah, a, 0) + klg(bh, b, 0) - klg(ah + bh, a + b, 0)
    assert float(bd.kl_beta(T(ah), T(bh), T(a), T(b))) == pytest.approx(plain, rel=1e-12)
    assert abs(want - plain) > 1e-3
    # klub() hands the offset to both of its KLUBs: at eta 10,000 as the released code
    x0, xh, t, _ = _beta_params(8)
    sch = bd.Schedule()
    at, as_ = sch.alpha(t), sch.alpha(0.95 * t)
    e = torch.full_like(x0, 10000.0)
    samp = bd.kl_beta(e * (as_ - at) * xh, e * (1 - as_ * xh), e * (as_ - at) * x0, e * (1 - as_ * x0), 0.01)
    marg = bd.kl_beta(e * at * xh, e * (1 - at * xh), e * at * x0, e * (1 - at * x0), 0.01)
    assert torch.allclose(bd.klub(xh, x0, as_, at, e, 0.99, offset=0.01), 0.99 * samp + 0.01 * marg, rtol=1e-12)


def test_schedule_constants_are_the_papers():
    """alpha_t = sigmoid(10 - 23 t), the loss's s = 0.95 t, t from 1e-5 (PAPERS.md, GBD)."""
    sch = bd.Schedule()
    assert (sch.start, sch.end, sch.power, sch.s_ratio, sch.t_min) == (10.0, -13.0, 1.0, 0.95, 1e-5)
    t = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64)
    assert torch.allclose(sch.alpha(t), torch.sigmoid(10 - 23 * t), rtol=1e-12)


@pytest.mark.parametrize("x0,alpha,eta", [(0.99, 0.7, 30.0), (0.09, 0.5, 1000.0), (0.99, 0.01, 10.0), (0.5, 2e-4, 10.0)])
def test_forward_sample_mean_is_alpha_times_x0(x0, alpha, eta):
    g = torch.Generator().manual_seed(1)
    n = 200_000
    lz = bd.q_sample_logit(torch.full((n,), x0), torch.tensor(alpha), torch.tensor(eta), g)
    z = torch.sigmoid(lz.double())
    mean, var = alpha * x0, alpha * x0 * (1 - alpha * x0) / (eta + 1)   # Beta(a, b): a / (a + b), ab / ((a+b)^2 (a+b+1))
    assert abs(float(z.mean()) - mean) < 5 * math.sqrt(var / n) + 1e-12
    assert abs(float(z.var()) - var) < 0.05 * var


def test_log_gamma_is_exact_for_tiny_shapes():
    g = torch.Generator().manual_seed(2)
    a = torch.full((400_000,), 1e-3, dtype=torch.float64)
    lg = bd.log_gamma(a, g).double()
    assert torch.isfinite(lg).all()  # a plain gamma draw underflows to 0 here
    # E[log G] = psi(a), Var[log G] = psi'(a)
    psi, tri = torch.digamma(a[0]), torch.polygamma(1, a[:1])[0]
    assert abs(float(lg.mean() - psi)) < 5 * math.sqrt(float(tri) / len(a))
    assert abs(float(lg.var() / tri) - 1) < 0.03


def test_reverse_step_in_logit_space_is_z_plus_one_minus_z_times_p():
    g = torch.Generator().manual_seed(3)
    z = torch.rand(1000, generator=g, dtype=torch.float64) * 0.98 + 0.01
    p = torch.rand(1000, generator=g, dtype=torch.float64) * 0.98 + 0.01
    got = torch.sigmoid(bd.combine_logits(torch.logit(z), torch.logit(p)))
    assert torch.allclose(got, z + (1 - z) * p, rtol=1e-12)
    # the full step draws p ~ Beta(eta (alpha_s - alpha_t) x0_hat, eta (1 - alpha_s x0_hat)) from the generator
    x0h, eta, at, as_ = torch.full((1000,), 0.8), torch.full((1000,), 30.0), torch.tensor(0.3), torch.tensor(0.6)
    lz = torch.logit(z.float())
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    step = bd.reverse_step_logit(lz, x0h, as_, at, eta, g1)
    lp = bd.logit_beta(eta * (as_ - at) * x0h, eta * (1 - as_ * x0h), g2)
    zz, pp = torch.sigmoid(lz.double()), torch.sigmoid(lp.double())
    assert torch.allclose(torch.sigmoid(step.double()), zz + (1 - zz) * pp, atol=1e-6)
    assert (torch.sigmoid(step.double()) >= zz - 1e-7).all()  # beta diffusion's reverse step only moves up


def test_preconditioning_stats_match_monte_carlo():
    g = torch.Generator().manual_seed(4)
    n, p, lo, hi, eta, alpha = 400_000, 0.3, 0.09, 0.99, torch.tensor(30.0), torch.tensor(0.4)
    x0 = torch.where(torch.rand(n, generator=g) < p, torch.tensor(hi), torch.tensor(lo))
    lz = bd.q_sample_logit(x0, alpha, eta, g).double()
    mean, std = bd.logit_stats(alpha.double(), eta.double(), lo, hi, torch.tensor(p, dtype=torch.float64))
    assert abs(float(lz.mean() - mean)) < 0.01 * float(std)
    assert abs(float(lz.std() / std) - 1) < 0.01


def test_concentration_modulation_by_normalised_degree():
    nd = torch.tensor([[1.0, 0.81, 0.8, 0.5, 0.41, 0.4, 0.1, 0.0]])
    eta = bd.node_eta(nd, (1000.0, 30.0, 10.0))
    assert eta.tolist() == [[1000.0, 1000.0, 30.0, 30.0, 30.0, 10.0, 10.0, 10.0]]
    e = bd.edge_eta(nd, eta)
    assert torch.equal(e, e.transpose(1, 2))
    assert float(e[0, 0, 7]) == 1000.0 and float(e[0, 6, 3]) == 30.0 and float(e[0, 5, 7]) == 10.0


def test_denoiser_is_permutation_equivariant_and_symmetric():
    from gaml_cli.methods.gbd.model import GraphTransformer

    torch.manual_seed(0)
    net = GraphTransformer(fx=4, fe=2, out_x=3, layers=2, dx=16, de=8, dy=8, heads=4, ffx=16, ffe=8).eval()
    B, N = 2, 6
    X = torch.randn(B, N, 4)
    E = torch.randn(B, N, N, 2)
    E = E + E.transpose(1, 2)
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    t, nf = torch.tensor([0.3, 0.8]), torch.tensor([1.0, 0.67])
    ox, oe = net(X, E, t, mask, nf)
    assert torch.allclose(oe, oe.transpose(1, 2), atol=1e-6)
    perm = torch.tensor([2, 0, 3, 1])  # within the 4 real nodes of graph 1 (and of graph 0's first four)
    full = torch.cat([perm, torch.tensor([4, 5])])
    ox2, oe2 = net(X[:, full], E[:, full][:, :, full], t, mask, nf)
    assert torch.allclose(ox2, ox[:, full], atol=1e-5)
    assert torch.allclose(oe2[1, :4, :4], oe[1][full][:, full][:4, :4], atol=1e-5)


def _plain_layer_forward(layer, X, E, y, node_mask):
    """GraphTransformerLayer written out step by step, as the model's docstring states it, with
    every intermediate masked (the form the layer had before it was rearranged for speed)."""
    B, N, _ = X.shape
    xm = node_mask.unsqueeze(-1).float()
    em = (node_mask.unsqueeze(2) & node_mask.unsqueeze(1)).unsqueeze(-1).float()
    Q, K, V = layer.q(X) * xm, layer.k(X) * xm, layer.v(X) * xm
    S = Q.unsqueeze(2) * K.unsqueeze(1) / math.sqrt(layer.dh)
    S = S * (layer.e_mul(E) * em + 1.0) + layer.e_add(E) * em
    newE = layer.ye_add(y)[:, None, None] + (layer.ye_mul(y)[:, None, None] + 1.0) * S
    newE = layer.e_out(newE) * em
    Sh = S.view(B, N, N, layer.heads, layer.dh).masked_fill(~node_mask[:, None, :, None, None], float("-inf"))
    A = torch.softmax(Sh, dim=2).nan_to_num(0.0)
    wV = (A * V.view(B, 1, N, layer.heads, layer.dh)).sum(2).reshape(B, N, -1)
    newX = layer.x_out(layer.yx_add(y).unsqueeze(1) + (layer.yx_mul(y).unsqueeze(1) + 1.0) * wV) * xm
    emf = (node_mask.unsqueeze(2) & node_mask.unsqueeze(1)).view(B, N * N)
    newy = layer.y_out(layer.y_y(y) + layer.y_x(X, node_mask) + layer.y_e(E.view(B, N * N, -1), emf))
    X = layer.norm_x1(X + newX)
    E = layer.norm_e1(E + newE)
    y = layer.norm_y1(y + newy)
    return layer.norm_x2(X + layer.ff_x(X)) * xm, layer.norm_e2(E + layer.ff_e(E)) * em, layer.norm_y2(y + layer.ff_y(y))


def test_denoiser_layer_equals_its_plain_formulation():
    from gaml_cli.methods.gbd.model import GraphTransformerLayer

    torch.manual_seed(0)
    layer = GraphTransformerLayer(dx=16, de=8, dy=8, heads=4, ffx=32, ffe=16).double()
    for p in layer.parameters():  # nonzero biases everywhere, so a dropped mask would show
        torch.nn.init.normal_(p, std=0.5)
    B, N = 3, 7
    mask = torch.arange(N).unsqueeze(0) < torch.tensor([[7], [5], [2]])
    em = (mask.unsqueeze(2) & mask.unsqueeze(1)).unsqueeze(-1)
    X = torch.randn(B, N, 16, dtype=torch.float64) * mask.unsqueeze(-1)   # zero at padding, as the net keeps it
    E = torch.randn(B, N, N, 8, dtype=torch.float64)
    E = (E + E.transpose(1, 2)) * em
    y = torch.randn(B, 8, dtype=torch.float64)
    outs = []
    for fn in (layer, lambda *a: _plain_layer_forward(layer, *a)):
        layer.zero_grad()
        Xg, Eg, yg = (v.clone().requires_grad_(True) for v in (X, E, y))
        o = fn(Xg, Eg, yg, mask)
        sum((w * v).sum() for w, v in zip((1.0, 0.7, 1.3), o)).backward()
        # parameter and input gradients (the edge FiLM has its own backward: model._EdgeFiLM)
        outs.append((o, [p.grad.clone() for p in layer.parameters()] + [Xg.grad, Eg.grad, yg.grad]))
    (fast, g_fast), (plain, g_plain) = outs
    for a, b in zip(fast, plain):
        assert torch.allclose(a, b, atol=1e-10)
    for a, b in zip(g_fast, g_plain):
        assert torch.allclose(a, b, atol=1e-9)
    assert fast[0][1, 5:].abs().max() == 0 and fast[1][2, 2:].abs().max() == 0


def test_denoiser_called_by_size_equals_one_padded_call():
    from gaml_cli.methods.gbd.gbd import call_by_size
    from gaml_cli.methods.gbd.model import GraphTransformer

    torch.manual_seed(0)
    net = GraphTransformer(fx=4, fe=2, out_x=3, layers=2, dx=16, de=8, dy=8, heads=4, ffx=16, ffe=8, fy=2).double()
    counts = torch.tensor([9, 3, 5, 9, 3, 4])
    B, N = len(counts), 12
    mask = torch.arange(N).unsqueeze(0) < counts.unsqueeze(1)
    em = (mask.unsqueeze(2) & mask.unsqueeze(1)).unsqueeze(-1)
    X = torch.randn(B, N, 4, dtype=torch.float64) * mask.unsqueeze(-1)
    E = torch.randn(B, N, N, 2, dtype=torch.float64)
    E = (E + E.transpose(1, 2)) * em
    t, y = torch.rand(B, dtype=torch.float64), torch.rand(B, 2, dtype=torch.float64)
    res = []
    for fn in (net, lambda *a: call_by_size(net, *a)):
        net.zero_grad()
        ox, oe = fn(X, E, t, mask, y)
        ox, oe = ox * mask.unsqueeze(-1), oe * em
        (ox.square().sum() + oe.sum()).backward()
        res.append((ox, oe, [p.grad.clone() for p in net.parameters() if p.grad is not None]))
    assert len({len(r[2]) for r in res}) == 1
    for ox, oe, g in res[1:]:
        assert torch.allclose(ox, res[0][0], atol=1e-10) and torch.allclose(oe, res[0][1], atol=1e-10)
        assert all(torch.allclose(a, b, atol=1e-9) for a, b in zip(g, res[0][2]))


def test_sampling_is_per_graph_seeded(tmp_path):
    from gaml_cli.methods.gbd.sample import sample
    from gaml_cli.methods.gbd.train import prepare
    from gaml_cli.methods.gbd.gbd import build_net

    graphs = [from_networkx(nx.cycle_graph(5)), from_networkx(nx.path_graph(4)), from_networkx(nx.star_graph(4))]
    # with the structural features, whose eigenvectors must not depend on the batch either
    cfg, tens, p_x, p_e = prepare(graphs, {"net": {"layers": 1, "dx": 8, "de": 4, "dy": 8, "heads": 2, "ffx": 8, "ffe": 4},
                                           "extra_features": True, "degree_input": True})
    torch.manual_seed(0)
    net = build_net(cfg).eval()
    prof = {"profile_n": tens.n, "profile_norm_deg": tens.norm_deg, "p_x": p_x, "p_e": torch.tensor([p_e])}
    a = [g.to_record() for g in sample(net, cfg, prof, 5, seed=7, steps=6, batch_size=5)]
    b = [g.to_record() for g in sample(net, cfg, prof, 5, seed=7, steps=6, batch_size=2)]
    c = [g.to_record() for g in sample(net, cfg, prof, 3, seed=7, steps=6, batch_size=1)]
    threads = torch.get_num_threads()
    d = [g.to_record() for g in sample(net, cfg, prof, 5, seed=7, steps=6, batch_size=5, workers=2)]
    e = [g.to_record() for g in sample(net, cfg, prof, 5, seed=7, steps=6, batch_size=1, workers=3)]
    assert a == b == d == e and a[:3] == c
    assert torch.get_num_threads() == threads   # the workers' share of the intra-op threads is undone
    assert {r["num_nodes"] for r in a} <= {4, 5}


# --------------------------------------------------------------------------- MMD and statistics


def _g(G) -> Graph:
    return from_networkx(G)


def test_mmd_of_a_set_with_itself_is_zero():
    graphs = [_g(nx.gnp_random_graph(12, 0.3, seed=s)) for s in range(6)]
    for kernel in mmd.KERNELS:
        for stat, vals in mmd.statistics(graphs).items():
            assert abs(mmd.mmd(vals, vals, stat, kernel)) < 1e-12


def test_degree_mmd_by_hand():
    # P3 degree histogram [0, 2, 1] -> [0, 2/3, 1/3]; K3 [0, 0, 3] -> [0, 0, 1].
    # EMD = sum |CDF differences| = |0-0| + |2/3-0| + |1-1| = 2/3, k = exp(-(2/3)^2 / 2).
    p3, k3 = _g(nx.path_graph(3)), _g(nx.complete_graph(3))
    k = math.exp(-(2 / 3) ** 2 / 2)
    s = mmd.statistics([p3, k3], ["degree"])["degree"]
    assert mmd.mmd([s[0]], [s[1]], "degree", "emd") == pytest.approx(2 - 2 * k, rel=1e-12)
    # {P3, K3} vs {K3}: mean k(X,X') = (1 + 1 + 2k) / 4, k(Y,Y) = 1, mean k(X,Y) = (k + 1) / 2
    got = mmd.mmd(s, [s[1]], "degree", "emd")
    assert got == pytest.approx((2 + 2 * k) / 4 + 1 - (k + 1), rel=1e-12)
    # TV: sum |x - y| / 2 = (2/3 + 2/3) / 2 = 2/3 as well for this pair
    assert mmd.mmd([s[0]], [s[1]], "degree", "tv") == pytest.approx(2 - 2 * k, rel=1e-12)


def test_orbit_counts_agree_with_networkx():
    G = nx.gnp_random_graph(15, 0.35, seed=3)
    counts = mmd.orbit_counts(_g(G)) * G.number_of_nodes()
    deg = np.array([d for _, d in G.degree()])
    tri = np.array(list(nx.triangles(G).values()))
    assert counts[0] == deg.sum()        # orbit 0: an end of an edge
    assert counts[3] == tri.sum()        # orbit 3: a corner of a triangle
    k4 = sum(1 for c in nx.enumerate_all_cliques(G) if len(c) == 4)
    assert counts[14] == 4 * k4          # orbit 14: a node of a 4-clique


def test_clustering_histogram():
    G = nx.complete_graph(4)
    h = mmd.clustering_histogram(_g(G))
    assert h.sum() == 4 and h[-1] == 4   # all coefficients 1.0 -> last bin


def test_validity_statistics():
    a, b = _g(nx.cycle_graph(5)), _g(nx.relabel_nodes(nx.cycle_graph(5), {0: 3, 3: 0}))
    split = _g(nx.disjoint_union(nx.path_graph(2), nx.path_graph(2)))
    v = mmd.validity([a, b, split], train=[_g(nx.cycle_graph(5))])
    assert v == {"connected": pytest.approx(2 / 3), "unique": pytest.approx(2 / 3), "novel": pytest.approx(1 / 3)}


def test_graph_records_and_converters():
    g = graph_from_record({"num_nodes": 4, "edges": [[1, 0], [0, 1], [2, 3]], "label": 1})
    assert g.edges.tolist() == [[0, 1], [2, 3]] and g.label == 1
    for bad, msg in [({"num_nodes": 3, "edges": [[0, 3]]}, "out of range"), ({"num_nodes": 3, "edges": [[1, 1]]}, "self-loop"),
                     ({"edges": []}, "num_nodes"), ({"num_nodes": 2, "edges": [[0]]}, "expected [u, v]")]:
        with pytest.raises(ValueError, match=re.escape(msg)):
            graph_from_record(bad)
    G = to_networkx(g)
    assert sorted(G.edges()) == [(0, 1), (2, 3)] and from_networkx(G).edges.tolist() == g.edges.tolist()
    pytest.importorskip("torch_geometric")
    from gaml_cli.graphs.io import from_pyg, to_pyg

    d = to_pyg(g)
    assert d.edge_index.shape == (2, 4) and d.num_nodes == 4
    assert from_pyg(d).edges.tolist() == g.edges.tolist()


def test_structural_features_of_a_clean_graph():
    from gaml_cli.methods.gbd.gbd import structural_features

    # two triangles {0,1,2} and {3,4,5} joined by the bridge 2-3, padded to 8 nodes
    G = nx.Graph([(0, 1), (1, 2), (0, 2), (3, 4), (4, 5), (3, 5), (2, 3)])
    A = torch.zeros(1, 8, 8)
    for u, v in G.edges():
        A[0, u, v] = A[0, v, u] = 1.0
    shift, scale = 0.09, 0.9
    z = (scale * A + shift).clamp(1e-6, 1 - 1e-6)   # alpha_t = 1: z_t is the scaled graph itself
    mask = torch.arange(8).unsqueeze(0) < 6
    fx, fy = structural_features(torch.logit(z), torch.ones(1), mask, shift, scale)
    deg = torch.tensor([2, 2, 3, 3, 2, 2, 0, 0], dtype=torch.float32)
    assert torch.allclose(fx[0, :, 0], deg / 8)
    assert torch.allclose(fx[0, :, 1], torch.tensor([1, 1, 1, 1, 1, 1, 0, 0.0]) / 8)
    fiedler = fx[0, :6, 2]
    assert (torch.sign(fiedler[:3]) == torch.sign(fiedler[0])).all() and (torch.sign(fiedler[3:]) == -torch.sign(fiedler[0])).all()
    assert float(fy[0, 0]) == pytest.approx(0.0, abs=1e-5) and float(fy[0, -1]) == pytest.approx(1 / 6)  # one component


def test_a_laplacian_single_precision_eigh_cannot_solve_is_solved_in_double(monkeypatch):
    """LAPACK's float32 eigh failed to converge on an sbm Laplacian during training (error code
    18822); the features then come from the same matrix in float64, and matrices that converge in
    float32 keep exactly their float32 answer."""
    from gaml_cli.methods.gbd import gbd

    G = nx.Graph([(0, 1), (1, 2), (0, 2), (3, 4), (4, 5), (3, 5), (2, 3)])
    A = torch.zeros(1, 8, 8)
    for u, v in G.edges():
        A[0, u, v] = A[0, v, u] = 1.0
    shift, scale = 0.09, 0.9
    lz = torch.logit((scale * A + shift).clamp(1e-6, 1 - 1e-6))
    mask = torch.arange(8).unsqueeze(0) < 6
    want = gbd.structural_features(lz, torch.ones(1), mask, shift, scale)
    real = torch.linalg.eigh
    seen = []

    def single_fails(m):
        seen.append(m.dtype)
        if m.dtype == torch.float32:
            raise torch.linalg.LinAlgError("linalg.eigh: The algorithm failed to converge")
        return real(m)

    monkeypatch.setattr(torch.linalg, "eigh", single_fails)
    got = gbd.structural_features(lz, torch.ones(1), mask, shift, scale)
    assert seen == [torch.float32, torch.float64]
    assert got[0].dtype == want[0].dtype == torch.float32
    # same eigenvalues, degrees, triangles and Fiedler vector (up to its sign); the next eigenvector
    # spans a repeated eigenvalue of this symmetric graph, whose basis each solver picks its own way
    assert torch.allclose(got[1], want[1], atol=1e-5)
    assert torch.allclose(got[0][..., :3].abs(), want[0][..., :3].abs(), atol=1e-5)
    w, v = gbd._eigh(torch.diag_embed(A[0].sum(-1)) - A[0])
    assert torch.allclose(v @ torch.diag(w) @ v.T, torch.diag_embed(A[0].sum(-1)) - A[0], atol=1e-5)


def test_the_sbm_laplacian_that_stopped_training_is_decomposed():
    """The matrix on which LAPACK's float32 eigh failed during `gaml graphgen train` on sbm (a noisy
    state of 119 nodes and 20 edges, padded to 166: about a hundred zero eigenvalues). With one
    thread this LAPACK fails on it in float32 every time; gbd._eigh answers in float64."""
    from gaml_cli.methods.gbd import gbd

    edges = [(0, 65), (1, 114), (3, 114), (5, 102), (6, 40), (6, 99), (7, 42), (7, 86), (10, 24), (14, 36),
             (14, 42), (14, 64), (15, 38), (17, 62), (18, 78), (19, 111), (21, 38), (21, 117), (22, 82), (75, 114)]
    N, n = 166, 119
    A = torch.zeros(N, N)
    for u, v in edges:
        A[u, v] = A[v, u] = 1.0
    mask = torch.arange(N) < n
    L = torch.diag(A.sum(-1) + (~mask).float() * 4 * N) - A
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        w, v = gbd._eigh(L)
    finally:
        torch.set_num_threads(threads)
    assert w.dtype == torch.float32 and torch.isfinite(w).all()
    assert torch.allclose(v @ torch.diag(w) @ v.T, L, atol=1e-3)
    G = nx.Graph(edges)
    G.add_nodes_from(range(n))
    assert int((w.abs() < 1e-3).sum()) == nx.number_connected_components(G) == 99  # one zero eigenvalue a component


def test_random_walk_features_by_hand():
    from gaml_cli.methods.gbd.gbd import random_walk_features

    # path 0 - 1 - 2 plus an isolated node 3: P = [[0, 1, 0], [1/2, 0, 1/2], [0, 1, 0]] on the path
    A = torch.zeros(1, 4, 4)
    A[0, 0, 1] = A[0, 1, 0] = A[0, 1, 2] = A[0, 2, 1] = 1.0
    fx, fe = random_walk_features(A, steps=3)
    assert fe.shape == (1, 4, 4, 3) and fx.shape == (1, 4, 2)
    assert torch.allclose(fe[0, :, :, 0], A[0] / torch.tensor([1.0, 2.0, 1.0, 1.0]).unsqueeze(1))
    # two steps: back home with 1/2 from an end, 1 from the middle; end to end with 1/2
    assert torch.allclose(fx[0, :, 0], torch.tensor([0.5, 1.0, 0.5, 0.0]))
    assert float(fe[0, 0, 2, 1]) == pytest.approx(0.5)
    # three steps on a bipartite path never return
    assert torch.allclose(fx[0, :, 1], torch.zeros(4))
    assert float(fe[0, 0, 1, 2]) == pytest.approx(1.0) and float(fe[0, 3].abs().sum()) == 0.0


def test_degree_input_reaches_the_denoiser():
    from gaml_cli.methods.gbd.gbd import GBD, build_net
    from gaml_cli.methods.gbd.train import prepare

    graphs = [from_networkx(nx.cycle_graph(5)), from_networkx(nx.star_graph(4))]
    small = {"layers": 1, "dx": 8, "de": 4, "dy": 8, "heads": 2, "ffx": 8, "ffe": 4}
    for flags, changes in (({"degree_input": True, "rw_features": True}, True), ({}, False)):
        cfg, tens, p_x, p_e = prepare(graphs, {"net": small, **flags})
        torch.manual_seed(0)
        net = build_net(cfg).eval()
        gbd = GBD(cfg, p_x, p_e)
        B, N = 2, cfg.max_nodes
        mask = tens.node_mask
        eta_n, eta_e = gbd.concentrations(tens.norm_deg)
        lz_x, lz_e = torch.randn(B, N, cfg.D), torch.randn(B, N, N)
        lz_e = lz_e + lz_e.transpose(1, 2)
        t = torch.full((B,), 0.5)
        args = (net, lz_x, lz_e, t, gbd.sched.alpha(t), eta_n, eta_e, mask, torch.ones(B))
        with torch.no_grad():
            a = gbd.predict_x0(*args, tens.norm_deg)[1]
            b = gbd.predict_x0(*args, tens.norm_deg.flip(1) * mask)[1]
        assert (not torch.allclose(a, b)) == changes


def test_t_focus_draws_the_stated_share_from_the_band():
    from gaml_cli.methods.gbd.gbd import GBD, build_net
    from gaml_cli.methods.gbd.train import prepare

    graphs = [from_networkx(nx.cycle_graph(5)), from_networkx(nx.star_graph(4))]
    small = {"layers": 1, "dx": 8, "de": 4, "dy": 8, "heads": 2, "ffx": 8, "ffe": 4}
    cfg, tens, p_x, p_e = prepare(graphs, {"net": small, "t_focus": (0.5, 0.4, 0.6)})
    gbd = GBD(cfg, p_x, p_e)
    seen = []

    def spy(net, lz_x, lz_e, t, *rest):
        seen.append(t)
        return gbd.scale_shift(torch.zeros_like(lz_x)), gbd.scale_shift(torch.zeros_like(lz_e))

    gbd.predict_x0 = spy
    gen = torch.Generator().manual_seed(0)
    B = 4000
    idx = torch.arange(B) % 2
    gbd.loss(None, tens.A[idx], tens.onehot[idx], tens.node_mask[idx], tens.norm_deg[idx], gen)
    t = seen[0]
    # half uniform on (0, 1) + half uniform on (0.4, 0.6): P(0.4 < t < 0.6) = 0.5 * 0.2 + 0.5 = 0.6
    inside = float(((t > 0.4) & (t < 0.6)).float().mean())
    assert inside == pytest.approx(0.6, abs=0.03)
    assert float(t.min()) >= cfg.schedule["t_min"] and float(t.max()) <= 1.0
    assert float((t < 0.4).float().mean()) == pytest.approx(0.2, abs=0.03)


def test_cosine_learning_rate_by_hand_and_in_the_loop(tmp_path):
    from gaml_cli.core.checkpoint import CheckpointDir
    from gaml_cli.methods.gbd.train import TrainConfig, lr_at, train

    tc = TrainConfig(steps=4, batch_size=2, lr=1e-3, lr_schedule="cosine", checkpoint_every=0)
    # lr (1 + cos(pi k / K)) / 2 for K = 4: 1e-3, 8.5355e-4, 5e-4, 1.4645e-4
    assert [round(lr_at(tc, k), 8) for k in range(4)] == [1e-3, 8.5355e-4, 5e-4, 1.4645e-4]
    assert lr_at(TrainConfig(lr=2e-3), 1234) == 2e-3
    graphs = [from_networkx(nx.cycle_graph(5)), from_networkx(nx.star_graph(4))]
    small = {"layers": 1, "dx": 8, "de": 4, "dy": 8, "heads": 2, "ffx": 8, "ffe": 4}
    train(graphs, tc, tmp_path / "ck", torch.device("cpu"), cfg_overrides={"net": small})
    _, state, _ = CheckpointDir(tmp_path / "ck").load(device="cpu")
    # the optimizer's last step (k = 3) ran at the schedule's rate
    assert state["opt"]["param_groups"][0]["lr"] == pytest.approx(1.4645e-4, rel=1e-4)


def test_ema_update_moves_every_parameter_by_the_decay():
    from gaml_cli.core.ema import ema_update

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))
    ema = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))
    before = [p.detach().clone() for p in ema.parameters()]
    ema_update(ema, model, 0.9)
    for pe, b, pm in zip(ema.parameters(), before, model.parameters()):
        assert torch.allclose(pe, 0.9 * b + 0.1 * pm, atol=1e-7)
        # the same bits as the per-tensor update it replaced
        assert torch.equal(pe, b.clone().lerp_(pm, 0.1))


def test_power_function_ema_weights_by_hand():
    from gaml_cli.core.ema import ema_decay, ema_update, power_ema_gamma

    g = power_ema_gamma(0.2)
    # after T updates the EMA is sum_k theta_k (k^(g+1) - (k-1)^(g+1)) / T^(g+1) (the products telescope)
    T = 50
    theta = torch.randn(T, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ema, model = torch.nn.Linear(1, 1, bias=False).double(), torch.nn.Linear(1, 1, bias=False).double()
    for step in range(T):
        model.weight.data.fill_(float(theta[step]))
        ema_update(ema, model, ema_decay(step, 0.999, power_std=0.2))
    k = torch.arange(1, T + 1, dtype=torch.float64)
    w = (k ** (g + 1) - (k - 1) ** (g + 1)) / T ** (g + 1)
    assert float(ema.weight.detach()) == pytest.approx(float((w * theta).sum()), rel=1e-9)
    # the weight profile over k / T has relative standard deviation 0.2 (EDM2's sigma_rel)
    T = 20000
    k = torch.arange(1, T + 1, dtype=torch.float64)
    w = (k ** (g + 1) - (k - 1) ** (g + 1)) / T ** (g + 1)
    x = k / T
    mean = float((w * x).sum())
    assert float((w * (x - mean) ** 2).sum()) ** 0.5 == pytest.approx(0.2, rel=1e-3)
    # the classic EMA: capped by (1 + k) / (10 + k), then the set decay
    assert ema_decay(0, 0.999) == pytest.approx(0.1)
    assert ema_decay(20000, 0.999) == 0.999


def test_size_grouped_batches_cover_each_draw_once_sorted_by_size():
    from gaml_cli.methods.gbd.train import TrainConfig, batch_indices, size_groups

    n = torch.from_numpy(np.random.default_rng(0).integers(5, 30, size=50))
    tc, bs = TrainConfig(size_groups=3, seed=4), 8
    assert size_groups(tc, 50, bs) == 3 and size_groups(tc, 20, bs) == 2 and size_groups(tc, 12, bs) == 1
    counts = np.zeros(50, dtype=int)
    for draw in range(200):
        # the generator is not used: any state gives the same batches (resume at any step)
        batches = [batch_indices(tc, 3 * draw + j, n, bs, torch.Generator().manual_seed(draw * 7 + j))
                   for j in range(3)]
        flat = torch.cat(batches).numpy()
        assert all(len(b) == bs for b in batches) and len(set(flat.tolist())) == 3 * bs  # without replacement
        spans = sorted((int(n[b].min()), int(n[b].max())) for b in batches)
        assert all(hi <= lo for (_, hi), (lo, _) in zip(spans, spans[1:]))  # cut from one sorted draw
        counts[flat] += 1
    # every graph comes up as often as with uniform batches: Binomial(200, 24 / 50), mean 96, sd 7
    assert counts.min() > 60 and counts.max() < 135
    # the draws differ between steps of different draws and between seeds
    assert not torch.equal(batch_indices(tc, 0, n, bs, None), batch_indices(tc, 3, n, bs, None))
    assert not torch.equal(batch_indices(tc, 0, n, bs, None),
                           batch_indices(TrainConfig(size_groups=3, seed=5), 0, n, bs, None))
    # one group: uniform batches from the run's generator
    one = TrainConfig(size_groups=1)
    a = batch_indices(one, 0, n, bs, torch.Generator().manual_seed(1))
    assert torch.equal(a, torch.randperm(50, generator=torch.Generator().manual_seed(1))[:bs])


def test_a_batch_padded_to_its_largest_graph_predicts_as_one_padded_to_the_model():
    from gaml_cli.methods.gbd.gbd import GBD, build_net
    from gaml_cli.methods.gbd.train import prepare

    graphs = [from_networkx(g) for g in (nx.cycle_graph(5), nx.star_graph(4), nx.path_graph(9), nx.complete_graph(4))]
    small = {"layers": 2, "dx": 8, "de": 4, "dy": 8, "heads": 2, "ffx": 8, "ffe": 4}
    cfg, tens, p_x, p_e = prepare(graphs, {"net": small, "extra_features": True, "degree_input": True,
                                           "rw_features": True})
    torch.manual_seed(0)
    net = build_net(cfg).eval()
    gbd = GBD(cfg, p_x, p_e)
    idx = torch.tensor([0, 1, 3])      # graphs of 5, 5 and 4 nodes: padded to 5 instead of 10
    m, N = 5, cfg.max_nodes
    mask, nd = tens.node_mask[idx], tens.norm_deg[idx]
    eta_n, eta_e = gbd.concentrations(nd)
    gen = torch.Generator().manual_seed(1)
    lz_x, lz_e = torch.randn(3, N, cfg.D, generator=gen), torch.randn(3, N, N, generator=gen) * 4
    lz_e = lz_e + lz_e.transpose(1, 2)
    t = torch.tensor([0.3, 0.6, 0.9])
    # the structural features are the padded batch's, to the bit (LAPACK may pick other signs or
    # bases of the eigenvectors for a smaller matrix, so they are computed at the model's width)
    from gaml_cli.methods.gbd.gbd import structural_features

    fx, fy = structural_features(lz_e, gbd.sched.alpha(t), mask, cfg.shift, cfg.scale)
    fx_m, fy_m = structural_features(lz_e[:, :m, :m], gbd.sched.alpha(t), mask[:, :m], cfg.shift, cfg.scale, N)
    assert torch.equal(fx[:, :m], fx_m) and torch.equal(fy, fy_m)
    with torch.no_grad():
        full = gbd.predict_x0(net, lz_x, lz_e, t, gbd.sched.alpha(t), eta_n, eta_e, mask, torch.ones(3), nd)
        trim = gbd.predict_x0(net, lz_x[:, :m], lz_e[:, :m, :m], t, gbd.sched.alpha(t), eta_n[:, :m],
                              eta_e[:, :m, :m], mask[:, :m], torch.ones(3), nd[:, :m])
    em = mask[:, :m].unsqueeze(2) & mask[:, :m].unsqueeze(1)
    assert torch.allclose(full[0][:, :m] * mask[:, :m, None], trim[0] * mask[:, :m, None], atol=1e-5)
    assert torch.allclose(full[1][:, :m, :m] * em, trim[1] * em, atol=1e-5)


def test_loss_with_fixed_counts_divides_by_them():
    from gaml_cli.methods.gbd.gbd import GBD, build_net
    from gaml_cli.methods.gbd.train import prepare

    graphs = [from_networkx(nx.cycle_graph(5)), from_networkx(nx.star_graph(6))]
    small = {"layers": 1, "dx": 8, "de": 4, "dy": 8, "heads": 2, "ffx": 8, "ffe": 4}
    cfg, tens, p_x, p_e = prepare(graphs, {"net": small})
    torch.manual_seed(0)
    net = build_net(cfg)
    gbd = GBD(cfg, p_x, p_e)
    batch = (net, tens.A, tens.onehot, tens.node_mask, tens.norm_deg)
    t = torch.tensor([0.5, 0.7])
    own = float(tens.node_mask.sum()) * cfg.D, float(5 * 4 + 7 * 6)   # node features, ordered off-diagonal pairs
    runs = [gbd.loss(*batch, torch.Generator().manual_seed(3), t=t, per=per)
            for per in (None, own, (2 * own[0], 4 * own[1]))]
    assert runs[1][1] == pytest.approx(runs[0][1], rel=1e-6) and runs[1][2] == pytest.approx(runs[0][2], rel=1e-6)
    assert runs[2][1] == pytest.approx(runs[0][1] / 2, rel=1e-6) and runs[2][2] == pytest.approx(runs[0][2] / 4, rel=1e-6)


@pytest.mark.parametrize("per", [None, (300.0, 400.0)])
def test_a_batch_split_over_threads_gives_the_one_call_loss_and_gradient(per):
    from concurrent.futures import ThreadPoolExecutor

    from gaml_cli.methods.gbd.gbd import GBD, build_net
    from gaml_cli.methods.gbd.train import prepare, split_backward

    graphs = [from_networkx(g) for g in (nx.cycle_graph(5), nx.star_graph(4), nx.path_graph(9),
                                         nx.complete_graph(4), nx.wheel_graph(7))]
    small = {"layers": 2, "dx": 8, "de": 4, "dy": 8, "heads": 2, "ffx": 8, "ffe": 4}
    cfg, tens, p_x, p_e = prepare(graphs, {"net": small, "extra_features": True, "degree_input": True,
                                           "t_focus": (0.9, 0.55, 1.0)})
    torch.manual_seed(0)
    net = build_net(cfg)
    gbd = GBD(cfg, p_x, p_e)
    batch = (tens.A, tens.onehot, tens.node_mask, tens.norm_deg)

    def grads():
        out = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in net.parameters()])
        net.zero_grad(set_to_none=True)
        return out

    gen = torch.Generator().manual_seed(5)
    loss, lx, le = gbd.loss(net, *batch, gen, per=per)
    loss.backward()
    g_one, state_one = grads(), gen.get_state()
    results = []
    for parts in (2, 3):
        gen = torch.Generator().manual_seed(5)
        with ThreadPoolExecutor(parts - 1) as pool:
            results.append((split_backward(gbd, net, *batch, gen, per, pool, parts), grads()))
        assert torch.equal(gen.get_state(), state_one)   # the same draws, so resume stays exact
    for (loss_s, lx_s, le_s), g in results:
        assert float(loss_s) == pytest.approx(float(loss), rel=1e-6)
        assert lx_s == pytest.approx(lx, rel=1e-6) and le_s == pytest.approx(le, rel=1e-6)
        assert torch.allclose(g, g_one, rtol=1e-5, atol=1e-6)
    assert g_one.abs().max() > 0


def test_a_graphs_structural_features_do_not_depend_on_its_batch():
    from gaml_cli.methods.gbd.gbd import structural_features

    def logits(edges, N=9):   # alpha_t = 1: logit +-10 is an edge / no edge of the noisy graph
        lz = torch.full((N, N), -10.0)
        for u, v in edges:
            lz[u, v] = lz[v, u] = 10.0
        return lz

    # a 5-node graph whose Laplacian repeats the eigenvalue 1 (and the padded block 36): torch's
    # batched eigh gave it eigenvectors 1.39 apart at batch positions 0 and 1
    repeated = [(0, 1), (0, 2), (0, 3), (0, 4), (1, 3)]
    mask = torch.tensor([[True] * 9, [True] * 5 + [False] * 4])
    alone = structural_features(logits(repeated).unsqueeze(0), torch.ones(1), mask[1:], 0.09, 0.9)
    for other in ([(0, 1), (1, 2), (2, 3), (3, 4), (4, 0)], []):
        fx, fy = structural_features(torch.stack([logits(other), logits(repeated)]), torch.ones(2), mask, 0.09, 0.9)
        assert torch.equal(fx[1], alone[0][0]) and torch.equal(fy[1], alone[1][0])


def test_ego_like_graphs_have_edges_among_the_neighbours():
    """An ego network is the ego, its neighbours and the edges among them: the set must not be
    all stars (it was, before 2026-12-05: a Holme-Kim graph with m = 1 is a tree)."""
    nx = pytest.importorskip("networkx")
    from gaml_cli.graphs.datasets import ego_like

    graphs = ego_like(np.random.default_rng(0), count=40, source_nodes=600)
    assert len(graphs) == 40 and all(4 <= G.number_of_nodes() <= 18 for G in graphs)
    # every graph has a node joined to all others (the ego) and is connected
    assert all(max(d for _, d in G.degree) == G.number_of_nodes() - 1 and nx.is_connected(G) for G in graphs)
    stars = sum(G.number_of_edges() == G.number_of_nodes() - 1 for G in graphs)
    assert stars < len(graphs) // 4
    assert np.mean([nx.average_clustering(G) for G in graphs]) > 0.3
