"""On documents drawn from a known two-layer GBN, the fitted first-layer topics are the true
ones (Hungarian-matched cosine >= 0.8). A small honest version of bench/topic.py --synthetic."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from gaml_cli.methods.gbn.synthetic import matched_cosine, two_layer_gbn  # noqa: E402


def test_matched_cosine_is_one_for_permuted_truth_and_low_for_noise():
    rng = np.random.default_rng(0)
    phi = rng.dirichlet(np.full(40, 0.1), size=5).T
    assert matched_cosine(phi, phi[:, [3, 1, 4, 0, 2]]) == pytest.approx(1.0)
    assert matched_cosine(phi, rng.dirichlet(np.ones(40), size=5).T) < 0.6


def test_generalized_gbn_recovers_first_layer_topics(tmp_path):
    from gaml_cli.methods.gbn.train import FitConfig, fit

    torch.set_num_threads(1)
    bow, phi1, _ = two_layer_gbn(n_docs=1000)
    rows = np.arange(bow.n_docs)
    model, _ = fit(bow, rows, FitConfig(layers=(6, 3), hidden=64, steps=800, batch_size=100, lr=1e-2,
                                        checkpoint_every=0, seed=0), tmp_path / "ck")
    with torch.no_grad():
        fitted = model.phi(0).numpy()
    # a random start scores about 0.5 here (the topics share a sparse background)
    torch.manual_seed(0)
    from gaml_cli.methods.gbn.model import GBN

    untrained = GBN(model.config)
    with torch.no_grad():
        assert matched_cosine(phi1, untrained.phi(0).numpy()) < 0.7
    score = matched_cosine(phi1, fitted)
    assert score >= 0.8, score
