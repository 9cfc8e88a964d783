"""DiGGR (methods/diggr, a reconstruction): the Bernoulli-Poisson edge likelihood by hand on a
3-node graph and against the dense sum, batched graphs, the factor split, the gradient paths of
the joint loss, and `gaml embed diggr` end to end (factors, assignment, NMI in the probe)."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch

pytest.importorskip("torch_geometric")

from gaml_cli.methods.diggr.model import DiGGR, edge_loglik  # noqa: E402


def cfg(**kw):
    return {"encoder": "gat", "in_dim": 5, "hidden": 16, "heads": 4, "layers": 1, "latent_layers": 1, "factors": 3,
            "prior_shape": 1.0, "prior_rate": 1.0, "edge_split": "edge", "factor_encoder": "shared",
            "mask_rate": 0.5, "replace_rate": 0.0, "alpha": 2.0, "factor_weight": 1.0, "latent_weight": 1.0,
            "representation": "concat", **kw}


def test_bernoulli_poisson_edge_likelihood_by_hand_on_three_nodes():
    z = torch.tensor([[1.0, 0.0], [0.5, 2.0], [0.0, 1.0]])
    g = torch.tensor([2.0, 0.5])
    edges = torch.tensor([[0], [1]])  # one edge 0-1; 0-2 and 1-2 absent
    r01 = 2.0 * 1.0 * 0.5 + 0.5 * 0.0 * 2.0  # = 1.0
    r02 = 0.0
    r12 = 2.0 * 0.5 * 0.0 + 0.5 * 2.0 * 1.0  # = 1.0
    want = math.log(1 - math.exp(-r01)) - r02 - r12
    assert float(edge_loglik(z, g, edges)) == pytest.approx(want, rel=1e-6)


def test_edge_likelihood_equals_the_dense_sum_and_adds_over_graphs():
    gen = torch.Generator().manual_seed(0)
    n, k = 9, 3
    z = torch.rand(n, k, generator=gen) + 0.1
    g = torch.rand(k, generator=gen) + 0.5
    pairs = list(itertools.combinations(range(n), 2))
    on = [p for p in pairs if torch.rand(1, generator=gen) < 0.4]
    edges = torch.tensor(on).T
    dense = 0.0
    for u, v in pairs:
        r = float((z[u] * z[v] * g).sum())
        dense += math.log(1 - math.exp(-r)) if (u, v) in on else -r
    assert float(edge_loglik(z, g, edges)) == pytest.approx(dense, rel=1e-5)
    # two graphs in one batch: the sum of the two, no pairs across graphs
    z2 = torch.rand(4, k, generator=gen) + 0.1
    e2 = torch.tensor([[0, 2], [1, 3]])
    both = edge_loglik(torch.cat([z, z2]), g, torch.cat([edges, e2 + n], 1),
                       torch.tensor([0] * n + [1] * 4), num_graphs=2)
    assert float(both) == pytest.approx(float(edge_loglik(z, g, edges) + edge_loglik(z2, g, e2)), rel=1e-5)


def _graph(n=20, m=50, seed=0):
    gen = torch.Generator().manual_seed(seed)
    e = torch.randint(n, (2, m), generator=gen)
    e = e[:, e[0] < e[1]].unique(dim=1)
    return torch.randn(n, 5, generator=gen), torch.cat([e, e.flip(0)], 1), e


@pytest.mark.parametrize("split", ["edge", "node"])
def test_the_factor_split(split):
    torch.manual_seed(0)
    model = DiGGR(cfg(edge_split=split))
    x, ei, _ = _graph()
    s = torch.rand(20, 3, generator=torch.Generator().manual_seed(1))
    node_f, sub = model.split(s, ei)
    assert torch.equal(node_f, s.argmax(1))
    got = torch.cat(sub, 1)
    if split == "edge":  # every edge in exactly one factor subgraph: argmax_k g_k s_uk s_vk
        assert got.shape[1] == ei.shape[1]
        g = torch.nn.functional.softplus(model.log_g.detach())
        for f, e in enumerate(sub):
            assert ((s[e[0]] * s[e[1]] * g).argmax(1) == f).all()
    else:  # only edges inside one factor, each in its own
        for f, e in enumerate(sub):
            assert (node_f[e[0]] == f).all() and (node_f[e[1]] == f).all()


def test_the_joint_loss_reaches_every_part():
    """The latent factor model gets its gradient from the ELBO, the whole-graph and factor
    autoencoders from their reconstruction errors; a weight of 0 cuts its part off."""
    torch.manual_seed(0)
    x, ei, e = _graph(30, 90)

    def grads(**kw):
        model = DiGGR(cfg(**kw))
        loss, _ = model.loss(x, ei, e, gen=torch.Generator().manual_seed(0))
        loss.backward()
        return {name: (p.grad is not None and float(p.grad.abs().sum()) > 0) for name, p in model.named_parameters()}

    g = grads()
    for part in ("latent.", "to_k.", "to_lam.", "log_g", "encoder.", "factor_encoders.0.", "factor_decoder.",
                 "decoder.", "mask_token"):
        assert any(v for k, v in g.items() if k.startswith(part)), part
    g0 = grads(latent_weight=0.0)
    assert not any(v for k, v in g0.items() if k.startswith(("latent.", "to_k.", "to_lam.", "log_g")))
    g1 = grads(factor_weight=0.0)
    assert not any(v for k, v in g1.items() if k.startswith(("factor_encoders.", "factor_decoder.")))


def test_separate_factor_encoders_and_representations():
    torch.manual_seed(0)
    x, ei, _ = _graph()
    sep = DiGGR(cfg(factor_encoder="separate"))
    assert len(sep.factor_encoders) == 3
    h, s, a = sep.embed(x, ei)
    assert h.shape == (20, 32) and s.shape == (20, 3) and torch.equal(a, s.argmax(1))
    h, _, _ = DiGGR(cfg(representation="graph")).embed(x, ei)
    assert h.shape == (20, 16)


def test_embed_diggr_cli_end_to_end(gaml, tmp_path):
    from gaml_cli.core.artifacts import load_artifact

    d = tmp_path / "pl"
    assert gaml("graphgen", "data", "--name", "planted", "--out", d, "-q").code == 0
    emb = tmp_path / "d.safetensors"
    res = gaml("embed", "diggr", "--graphs", d / "graph.jsonl", "--out", emb, "--steps", "3", "--hidden", "16",
               "--factors", "4", "--device", "cpu", "-f", "json", "-q")
    assert res.code == 0, res.err
    s = json.loads(res.out)
    assert s["rows"] == 400 and s["dim"] == 32 and {"sce", "factor_sce", "latent"} <= set(s)
    art = load_artifact(emb)
    assert art["factors"].shape == (400, 4) and art["assignment"].shape == (400,)
    assert np.array_equal(art["assignment"], art["factors"].argmax(1))
    assert art.config["reconstruction"] is True and art.config["model"]["factors"] == 4
    res = gaml("embed", "probe", "--embeddings", emb, "--seeds", "2", "-f", "json")
    assert res.code == 0, res.err
    p = json.loads(res.out)
    assert 0.0 <= p["nmi"] <= 1.0 and "accuracy" in p
    out = tmp_path / "t.safetensors"
    assert gaml("embed", "transform", "--model", emb, "--graphs", d / "graph.jsonl", "--out", out, "-q").code == 0
    assert np.allclose(load_artifact(out)["embeddings"], art["embeddings"], atol=1e-5)
    assert np.array_equal(load_artifact(out)["assignment"], art["assignment"])
    res = gaml("embed", "diggr", "--graphs", d / "graph.jsonl", "--out", tmp_path / "x.safetensors", "--factors", "1")
    assert res.code == 2 and not (tmp_path / "x.safetensors").exists()


def test_each_factor_autoencoder_gets_its_own_subgraph():
    """Wiring of DiGGR's joint loss: the whole-graph autoencoder gets every edge, factor k's gets
    exactly the edges the split gives factor k (from the strengths of this step's posterior)."""
    torch.manual_seed(0)
    model = DiGGR(cfg())
    x, ei, e = _graph(30, 90)
    calls = []
    real = model._mae
    model._mae = lambda enc, dec, xx, edge_index, gen: calls.append((enc, dec, edge_index)) or real(enc, dec, xx,
                                                                                                    edge_index, gen)
    model.loss(x, ei, e, gen=torch.Generator().manual_seed(0))
    (enc0, dec0, e0), *factor_calls = calls
    assert enc0 is model.encoder and dec0 is model.decoder and torch.equal(e0, ei)
    with torch.no_grad():
        k, lam = model.posterior(x, ei)
    from gaml_cli.methods.gbn.distributions import weibull_mean

    _, sub = model.split(weibull_mean(k, lam), ei)
    assert len(factor_calls) == 3
    for f, (enc, dec, ef) in enumerate(factor_calls):
        assert enc is model.factor_encoders[0] and dec is model.factor_decoder
        assert torch.equal(ef, sub[f])
