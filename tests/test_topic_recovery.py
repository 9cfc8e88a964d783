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


def test_the_nmf_start_separates_the_topics_before_training():
    """--init nmf: the best of a few Poisson factorisations (EM rounds) of the training counts
    starts Phi_1 at the true topics already (matched cosine ~1 here), where the corpus start
    (frequencies under noise) is at ~0.4; the restart kept is the one of highest likelihood."""
    from gaml_cli.methods.gbn.model import GBN, default_config
    from gaml_cli.methods.gbn.train import init_topics_from_data, init_topics_nmf

    torch.set_num_threads(1)
    bow, phi1, _ = two_layer_gbn(n_docs=600)
    rows = np.arange(bow.n_docs)
    starts = {}
    for name, fn in (("corpus", init_topics_from_data), ("nmf", init_topics_nmf)):
        torch.manual_seed(0)
        m = GBN(default_config(bow.vocab_size, [6, 3]))
        fn(m, bow, rows, torch.Generator().manual_seed(0))
        with torch.no_grad():
            starts[name] = matched_cosine(phi1, m.phi(0).numpy())
            assert torch.allclose(m.phi(0).sum(0), torch.ones(6))
    assert starts["corpus"] < 0.6 and starts["nmf"] > 0.97, starts


def test_nmf_rounds_raise_the_poisson_likelihood():
    """Each restart's EM rounds are Lee and Seung's KL-NMF updates: more rounds never lower the
    Poisson likelihood of the counts under the factorisation (a wrong update, e.g. a transposed
    ratio, does)."""
    import scipy.sparse as sp

    from gaml_cli.methods.gbn.model import GBN, default_config
    from gaml_cli.methods.gbn.train import init_topics_nmf

    torch.set_num_threads(1)
    bow, _, _ = two_layer_gbn(n_docs=300, V=40, K1=4, K2=2, seed=3)
    rows = np.arange(bow.n_docs)
    x = sp.csr_matrix((bow.counts, bow.indices, bow.indptr), shape=(bow.n_docs, bow.vocab_size)).toarray()
    lls = []
    for iters in (1, 5, 40):
        torch.manual_seed(0)
        m = GBN(default_config(bow.vocab_size, [4, 2]))
        init_topics_nmf(m, bow, rows, torch.Generator().manual_seed(0), iters=iters, restarts=1)
        phi = m.phi(0).detach().double().numpy()
        # the best theta for this phi: a few multiplicative theta updates from the same start
        theta = np.full((len(x), 4), 1.0)
        for _ in range(200):
            theta = theta * ((x / (theta @ phi.T + 1e-12)) @ phi)
        rate = theta @ phi.T + 1e-12
        lls.append(float((x * np.log(rate) - rate).sum()))
    assert lls[0] < lls[1] < lls[2], lls


def test_topic_fit_init_reaches_the_fit(tmp_path, monkeypatch):
    """`gaml topic fit --init nmf` is FitConfig.init = "nmf", recorded in the artifact."""
    from typer.testing import CliRunner

    from gaml_cli.app import app
    from gaml_cli.core.artifacts import read_header
    from gaml_cli.methods.gbn import train as T

    seen = []
    real = T.init_topics_nmf
    monkeypatch.setattr(T, "init_topics_nmf", lambda *a, **k: (seen.append(k), real(*a, **k))[1])
    docs = tmp_path / "d.txt"
    docs.write_text("".join(f"apple banana cherry {w} date {w}\n" for w in ["egg", "fig", "grape", "kiwi"] * 5))
    bow, out = tmp_path / "bow.safetensors", tmp_path / "m.safetensors"
    r = CliRunner().invoke(app, ["topic", "vocab", "--corpus", str(docs), "--out", str(bow), "--min-df", "1",
                                 "--max-df", "1.0", "-q"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["topic", "fit", "--corpus", str(bow), "--out", str(out), "--layers", "2,1",
                                 "--steps", "2", "--hidden", "4", "--init", "nmf", "-q"])
    assert r.exit_code == 0, r.output
    assert seen == [{"restarts": 5}] and read_header(out).config["fit"]["init"] == "nmf"
