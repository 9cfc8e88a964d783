"""The evaluation metrics of graphgen, topic and boost by hand: each kernel with its own width
and ground distance, histogram edge bins, quantile-bin and interval ends, and the commands
reporting exactly these numbers. Every expected value is worked out in the comments."""

from __future__ import annotations

import json
import math

import networkx as nx
import numpy as np
import pytest

from gaml_cli.graphs import mmd
from gaml_cli.graphs.io import from_networkx


def _one_hot(width, i, mass=1.0):
    v = np.zeros(width)
    v[i] = mass
    return v


# --------------------------------------------------------------------------- graph MMD


@pytest.mark.parametrize("stat,kernel,x,y,k", [
    # degree, EMD: unit masses 2 bins apart at ground distance 1: W = 2, sigma 1 -> exp(-4 / 2)
    ("degree", "emd", _one_hot(4, 1, 3.0), _one_hot(4, 3, 5.0), math.exp(-2.0)),
    # degree, TV: sum |x - y| / 2 = 1, sigma 1 -> exp(-1 / 2)
    ("degree", "tv", _one_hot(4, 1, 3.0), _one_hot(4, 3, 5.0), math.exp(-0.5)),
    # clustering, EMD: 20 bins apart at ground distance 1/100: W = 0.2, sigma 0.1 -> exp(-0.04 / 0.02)
    ("clustering", "emd", _one_hot(100, 10, 4.0), _one_hot(100, 30, 2.0), math.exp(-2.0)),
    # clustering, TV: 1, sigma 0.1 -> exp(-1 / 0.02)
    ("clustering", "tv", _one_hot(100, 10, 4.0), _one_hot(100, 30, 2.0), math.exp(-50.0)),
    # orbit counts are not normalised: Euclidean distance 60, sigma 30 -> exp(-3600 / 1800)
    ("orbit", "emd", _one_hot(15, 0, 60.0), np.zeros(15), math.exp(-2.0)),
    # orbit, TV: 60 / 2 = 30, sigma 30 -> exp(-900 / 1800)
    ("orbit", "tv", _one_hot(15, 0, 60.0), np.zeros(15), math.exp(-0.5)),
])
def test_each_statistic_has_its_kernel_width_and_ground_distance(stat, kernel, x, y, k):
    # one graph a side: MMD^2 = k(x, x) + k(y, y) - 2 k(x, y) = 2 - 2 k
    assert mmd.mmd([x], [y], stat, kernel) == pytest.approx(2 - 2 * k, rel=1e-9, abs=1e-15)


def test_shorter_histograms_are_padded_and_both_sides_enter_the_estimator():
    # {[1, 0], [0, 0, 1]} vs {[0, 1]} on degrees (EMD, sigma 1): x1-x2 W = 2, x1-y W = 1, x2-y W = 1
    k1, k2 = math.exp(-0.5), math.exp(-2.0)
    xx = (1 + 1 + 2 * k2) / 4
    want = xx + 1 - 2 * k1
    assert mmd.mmd([np.array([1.0, 0]), np.array([0, 0, 1.0])], [np.array([0.0, 1])], "degree") == pytest.approx(want)


def test_clustering_histogram_edge_bins():
    # hub 0 on 1..4 with the rim 1-2, 2-3, 3-4 and a pendant 5 on 1: coefficients
    # 0: 3 of 6 pairs = 1/2; 1: (0, 2) of 3 pairs = 1/3; 2, 3: 2/3; 4: 1; 5: 0
    G = nx.Graph([(0, 1), (0, 2), (0, 3), (0, 4), (1, 2), (2, 3), (3, 4), (1, 5)])
    h = mmd.clustering_histogram(from_networkx(G))
    want = np.zeros(100)
    want[[0, 33, 50, 66, 99]] = [1, 1, 1, 2, 1]   # 0 in the first bin, 1/2 on a left edge, 1 in the last (closed)
    assert np.array_equal(h, want)
    # an isolated node has degree 0: bin 0 of the degree histogram
    G.add_node(6)
    assert np.array_equal(mmd.degree_histogram(from_networkx(G)), [1, 1, 1, 3, 1])   # degrees 0, 1, 2, 3 (x3), 4


P3_K3 = {
    # K3 degrees [0, 0, 3] -> [0, 0, 1]; P3 [0, 2, 1] -> [0, 2/3, 1/3]: EMD = TV = 2/3
    ("degree", "emd"): 2 - 2 * math.exp(-(2 / 3) ** 2 / 2),
    ("degree", "tv"): 2 - 2 * math.exp(-(2 / 3) ** 2 / 2),
    # clustering: all 1 (bin 99) vs all 0 (bin 0): EMD 0.99 (sigma 0.1), TV 1
    ("clustering", "emd"): 2 - 2 * math.exp(-0.99 ** 2 / 0.02),
    ("clustering", "tv"): 2 - 2 * math.exp(-1 / 0.02),
    # orbits per node: K3 [2, 0, 0, 1, 0...] (edge end, triangle corner); P3 [4/3, 2/3, 1/3, 0...]
    # (edge ends; path ends; path middle): squared distance 4/9 + 4/9 + 1/9 + 1 = 2, L1 = 8/3
    ("orbit", "emd"): 2 - 2 * math.exp(-2 / 1800),
    ("orbit", "tv"): 2 - 2 * math.exp(-(4 / 3) ** 2 / 1800),
}


@pytest.mark.parametrize("kernel", ["emd", "tv"])
def test_graphgen_eval_reports_the_hand_computed_mmds(tmp_path, gaml, kernel):
    k3, p3 = tmp_path / "k3.jsonl", tmp_path / "p3.jsonl"
    k3.write_text(json.dumps(from_networkx(nx.complete_graph(3)).to_record()) + "\n")
    p3.write_text(json.dumps(from_networkx(nx.path_graph(3)).to_record()) + "\n")
    res = gaml("graphgen", "eval", p3, "--ref", k3, "--kernel", kernel, "-f", "json")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    for stat in mmd.STATS:
        assert out[stat] == pytest.approx(P3_K3[stat, kernel], abs=1e-6), stat
    assert out["kernel"] == kernel and out["n"] == 1 and out["connected"] == 1.0


# --------------------------------------------------------------------------- DBT (CARD's metrics)


def test_qice_counts_points_outside_the_sample_range_in_the_end_bins():
    from gaml_cli.methods.dbt import metrics

    s = np.tile(np.arange(10.0), (4, 1))          # quantiles 0, 2.25, 4.5, 6.75, 9 with 4 bins
    # below the minimum joins the first bin: bins (2, 2, 0, 0) / 4 -> mean |share - 1/4| = 0.25
    assert metrics.qice(s, np.array([-5.0, 1, 3, 3]), n_bins=4) == pytest.approx(0.25)
    # above the maximum joins the last: bins (0, 0, 2, 2) -> 0.25 (were it the first: (1, 0, 2, 1) -> 0.125)
    assert metrics.qice(s, np.array([20.0, 8, 5, 5]), n_bins=4) == pytest.approx(0.25)
    # one point per bin: 0
    assert metrics.qice(s, np.array([1.0, 3, 5, 8]), n_bins=4) == pytest.approx(0.0, abs=1e-12)


def test_picp_interval_is_the_closed_2_5_to_97_5_percentile_range():
    from gaml_cli.methods.dbt import metrics

    s = np.tile(np.arange(41.0), (5, 1))          # 2.5th percentile 0.025 * 40 = 1, 97.5th 39
    y = np.array([1.0, 39.0, 0.5, 39.5, 20.0])   # both ends in, just outside out
    assert metrics.picp(s, y) == pytest.approx(3 / 5)


def test_rmse_nll_crps_by_hand_and_in_the_report():
    from gaml_cli.methods.dbt import metrics

    s = np.array([[0.0, 2.0], [4.0, 6.0]])
    y = np.array([3.0, 5.0])
    # sample means 1, 5: errors 2, 0 -> RMSE sqrt(2)
    # NLL with the samples' (population) std 1: point 1: ln sqrt(2 pi) + 2; point 2: ln sqrt(2 pi)
    # CRPS: E|Y - y| = (3 + 1) / 2 = 2 and 1; E|Y - Y'| = (0 + 2 + 2 + 0) / 4 = 1: 2 - 0.5, 1 - 0.5
    want = {"rmse": math.sqrt(2), "nll_gaussian": 0.5 * math.log(2 * math.pi) + 1.0, "crps": 1.0}
    rep = metrics.regression_report(s, y)
    for k, v in want.items():
        assert rep[k] == pytest.approx(v), k
        assert getattr(metrics, k)(s, y) == pytest.approx(v), k
    # four draws 0..3 around y = 1.5: E|Y - y| = 1, E|Y - Y'| = 20 / 16: CRPS 1 - 0.625
    assert metrics.crps(np.arange(4.0)[None], np.array([1.5])) == pytest.approx(0.375)


def test_card_nll_is_the_mixture_by_hand():
    """CARD's NLL (card_regression.py, compute_batch_NLL): for draws (0, 2) and y = 3 the
    unbiased variance is 2, tau = 1/2, and the mixture density is
    1/2 [N(3; 0, 2) + N(3; 2, 2)] = 1/2 (e^{-9/4} + e^{-1/4}) / sqrt(4 pi);
    for draws (4, 6), y = 5: e^{-1/4} / sqrt(4 pi). A one-Gaussian fit, a population
    variance or a missing ln S would each give another number."""
    from gaml_cli.methods.dbt import metrics

    s = np.array([[0.0, 2.0], [4.0, 6.0]])
    y = np.array([3.0, 5.0])
    p1 = 0.5 * (math.exp(-9 / 4) + math.exp(-1 / 4)) / math.sqrt(4 * math.pi)
    p2 = math.exp(-1 / 4) / math.sqrt(4 * math.pi)
    want = -(math.log(p1) + math.log(p2)) / 2
    assert metrics.nll_card(s, y) == pytest.approx(want, rel=1e-12)
    assert metrics.regression_report(s, y)["nll_card"] == pytest.approx(want, rel=1e-12)
    assert abs(metrics.nll_gaussian(s, y) - want) > 0.1
    # three draws: unbiased variance ((-1)^2 + 0 + 1^2) / 2 = 1
    s3, y3 = np.array([[1.0, 2.0, 3.0]]), np.array([2.0])
    p = (2 * math.exp(-0.5) + 1) / 3 / math.sqrt(2 * math.pi)
    assert metrics.nll_card(s3, y3) == pytest.approx(-math.log(p), rel=1e-12)


def test_class_probabilities_and_the_defer_test_by_hand():
    from scipy import stats

    from gaml_cli.methods.dbt import metrics

    # y0 = (1, 0) at temperature 0.1: logits (0, -10)
    p = metrics.sample_probabilities(np.array([1.0, 0.0]), 0.1)
    assert p == pytest.approx([1 / (1 + math.exp(-10)), math.exp(-10) / (1 + math.exp(-10))])
    probs = np.array([[[0.30, 0.10, 0.60], [0.35, 0.05, 0.60], [0.20, 0.10, 0.70], [0.40, 0.10, 0.50]]])
    top, second, pv = metrics.defer_test(probs)
    assert top[0] == 2 and second[0] == 0
    d = np.array([0.30, 0.25, 0.50, 0.10])       # class 2 minus class 0, per sample
    tstat = d.mean() / (d.std(ddof=1) / math.sqrt(4))
    assert pv[0] == pytest.approx(2 * stats.t.sf(tstat, 3), rel=1e-9)
    rep = metrics.defer_report(np.array([True, True, False]), np.array([0.01, 0.2, 0.03]), 0.05)
    # kept at alpha 0.05: p < 0.05 -> rows 0 and 2; deferred: row 1
    assert rep["defer_rate"] == pytest.approx(1 / 3) and rep["accuracy_kept"] == 0.5 and rep["accuracy_deferred"] == 1.0


# --------------------------------------------------------------------------- topic metrics


def test_perplexity_and_the_completion_split_by_hand():
    from gaml_cli.methods.gbn import metrics as M

    # held-out words 2 x w0 (p 1/2) and 1 x w2 (p 1/4): ln p = -4 ln 2 over 3 words -> 2^(4/3)
    probs = np.array([[0.5, 0.25, 0.25]])
    assert M.perplexity(probs, np.array([[2.0, 0, 1]])) == pytest.approx(2 ** (4 / 3))
    x = np.array([[10.0, 0, 0], [0, 1, 0], [1, 0, 1], [0, 3, 0]])
    obs, held = M.completion_split(x, 0.8, seed=0)
    # 10 tokens: 8 observed; 1 token: observed; 2 tokens: round(1.6) = 2 capped at 1; 3: round(2.4) = 2
    assert obs.sum(1).tolist() == [8, 1, 1, 2] and held.sum(1).tolist() == [2, 0, 1, 1]
    assert np.array_equal(obs + held, x)


def test_npmi_and_sparsity_by_hand():
    from gaml_cli.methods.gbn import metrics as M

    x = np.array([[1, 1, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    # topic [0, 1]: P = 1/2, 1/2, joint 1/4: ln(1) = 0; pairs with w2 never co-occur: -1
    assert M.npmi([[0, 1]], x) == pytest.approx(0.0)
    assert M.npmi([[0, 1, 2]], x) == pytest.approx(-2 / 3)
    # in every document together: joint 1 -> 1
    assert M.npmi([[0, 1]], np.array([[1, 1, 0], [1, 1, 0]])) == pytest.approx(1.0)
    w = np.array([[1, 1], [1, 1], [1, 0], [0, 0]])
    # P(w0) = 3/4, P(w1) = 1/2, joint 1/2: ln(0.5 / 0.375) / -ln 0.5
    assert M.npmi([[0, 1]], w) == pytest.approx(math.log(0.5 / 0.375) / math.log(2))
    # proportions below 1e-3 (strictly): 0.0005 and 0 count, 0.001 does not
    theta = np.array([[0.9995, 0.0005, 0.0], [0.998, 0.001, 0.001]])
    assert M.sparsity(theta) == pytest.approx(2 / 6)
