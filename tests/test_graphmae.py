"""GraphMAE (methods/graphmae) and the probes (embeddings/probe.py): the scaled cosine error by
hand, the masking, permutation equivariance of the encoder, graph embeddings independent of
the batch, the training step's direction, and `gaml embed graphmae | transform | probe` end to
end with bad input refused in one line."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

pytest.importorskip("torch_geometric")

from gaml_cli.methods.graphmae.model import GraphMAE, mask_features, sce  # noqa: E402


def cfg(encoder="gat", in_dim=6, **kw):
    return {"encoder": encoder, "in_dim": in_dim, "hidden": 16, "heads": 4, "layers": 2, "mask_rate": 0.5,
            "replace_rate": 0.0, "alpha": 2.0, **kw}


def test_scaled_cosine_error_by_hand():
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    z = torch.tensor([[1.0, 1.0], [0.0, -1.0]])
    # cos: 1/sqrt(2) and -1 -> (1 - 0.7071)^a and 2^a, averaged
    for a in (1.0, 2.0, 3.0):
        want = ((1 - 1 / math.sqrt(2)) ** a + 2.0 ** a) / 2
        assert float(sce(x, z, a)) == pytest.approx(want, rel=1e-6)


def test_masking_keeps_unmasked_rows_and_replaces_the_share_asked():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 5, generator=g) + 10  # no row equals the token or another row
    token = torch.full((1, 5), -7.0)
    out, masked = mask_features(x, token, 0.4, 0.25, torch.Generator().manual_seed(1))
    assert len(masked) == 80 and len(set(masked.tolist())) == 80
    keep = torch.ones(200, dtype=torch.bool)
    keep[masked] = False
    assert torch.equal(out[keep], x[keep])
    is_token = (out[masked] == -7.0).all(1)
    assert int(is_token.sum()) == 80 - 20  # 25% of the masked rows take other nodes' features
    donors = out[masked][~is_token]
    assert all(any(torch.equal(r, x[j]) for j in range(200)) for r in donors)
    out0, masked0 = mask_features(x, token, 0.4, 0.0, torch.Generator().manual_seed(1))
    assert (out0[masked0] == -7.0).all()


def _graph(n=12, m=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    e = torch.randint(n, (2, m), generator=g)
    e = e[:, e[0] != e[1]]
    return torch.randn(n, 6, generator=g), torch.cat([e, e.flip(0)], 1)


@pytest.mark.parametrize("encoder", ["gat", "gin"])
def test_the_encoder_is_permutation_equivariant(encoder):
    torch.manual_seed(0)
    model = GraphMAE(cfg(encoder)).eval()
    x, ei = _graph()
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(3))
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(12)
    with torch.no_grad():
        h = model.embed(x, ei)
        h_p = model.embed(x[perm], inv[ei])
    assert torch.allclose(h_p, h[perm], atol=1e-5)


def test_graph_embeddings_do_not_depend_on_the_batch(tmp_path):
    from gaml_cli.graphs.io import Graph, write_graphs
    from gaml_cli.methods.graphmae import run as R

    rng = np.random.default_rng(0)
    graphs = []
    for i in range(7):
        n = int(rng.integers(4, 9))
        edges = np.array(sorted({(min(u, v), max(u, v)) for u, v in rng.integers(n, size=(12, 2)) if u != v}))
        graphs.append(Graph(n, edges.reshape(-1, 2), i % 2))
    write_graphs(tmp_path / "g.jsonl", graphs)
    write_graphs(tmp_path / "rev.jsonl", graphs[::-1])
    torch.manual_seed(0)
    gs = R.load_graphs(str(tmp_path / "g.jsonl"), "graph", max_degree=8)
    model = GraphMAE({**cfg("gin", gs.features["dim"])}).eval()
    a = R.embed(model, gs, "mean", "cpu", batch_size=3)
    b = R.embed(model, R.load_graphs(str(tmp_path / "rev.jsonl"), "graph", features=gs.features), "mean", "cpu",
                batch_size=7)
    assert np.allclose(a, b[::-1], atol=1e-5)
    one = np.concatenate([R.embed(model, R.GraphSet([d], "graph", None, "", gs.features), "mean", "cpu")
                          for d in gs.data])
    assert np.allclose(a, one, atol=1e-5)


def test_training_lowers_the_reconstruction_error_and_reaches_every_part():
    """The step's wiring: the gradient reaches the encoder, the decoder and the mask token, and
    100 Adam steps lower the masked reconstruction error on fixed masks."""
    torch.manual_seed(0)
    model = GraphMAE(cfg("gat", replace_rate=0.1))
    x, ei = _graph(40, 120)
    loss = model.loss(x, ei, torch.Generator().manual_seed(0))
    loss.backward()
    for name in ("mask_token", "encoder.convs.0", "decoder.convs.0", "enc_to_dec"):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(name)]
        # (GAT's target-side attention vector can get none: a per-target constant inside a softmax)
        assert grads and sum(int(g is not None and g.abs().sum() > 0) for g in grads) >= len(grads) - 1, name
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = float(model.loss(x, ei, torch.Generator().manual_seed(5)).detach())
    for step in range(100):
        opt.zero_grad()
        model.loss(x, ei, torch.Generator().manual_seed(step)).backward()
        opt.step()
    assert float(model.loss(x, ei, torch.Generator().manual_seed(5)).detach()) < 0.7 * before


def test_probes_against_sklearn_by_hand_and_nmi():
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import normalized_mutual_info_score
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    from gaml_cli.core.errors import UsageError
    from gaml_cli.embeddings.probe import linear_probe, nmi, svm_probe

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 40)
    x = rng.normal(size=(120, 4)) + y[:, None] * 1.5
    out = linear_probe(x, y, seeds=3, train_fraction=0.25)
    accs = []
    for s in range(3):
        tr, te = train_test_split(np.arange(120), train_size=30, stratify=y, random_state=s)
        sc = StandardScaler().fit(x[tr])
        c = LogisticRegression(max_iter=2000, random_state=s).fit(sc.transform(x[tr]), y[tr])
        accs.append((c.predict(sc.transform(x[te])) == y[te]).mean())
    assert out["accuracy"] == pytest.approx(np.mean(accs)) and out["accuracy_std"] == pytest.approx(np.std(accs))
    assert svm_probe(x, y, seeds=1)["accuracy"] > 0.8
    noise = rng.normal(size=(120, 4))
    assert svm_probe(noise, y, seeds=1)["accuracy"] < 0.6
    a = rng.integers(3, size=120)
    assert nmi(a, y) == pytest.approx(normalized_mutual_info_score(y, a))
    with pytest.raises(UsageError, match="must match"):
        linear_probe(x[:10], y)


def test_embed_cli_end_to_end_and_bad_input(gaml, tmp_path):
    d = tmp_path / "pl"
    assert gaml("graphgen", "data", "--name", "planted", "--out", d, "-q").code == 0
    rec = json.loads((d / "graph.jsonl").read_text())
    assert rec["num_nodes"] == 400 and len(rec["node_labels"]) == 400 and len(rec["node_features"][0]) == 16
    emb = tmp_path / "emb.safetensors"
    res = gaml("embed", "graphmae", "--graphs", d / "graph.jsonl", "--out", emb, "--steps", "3", "--hidden", "16",
               "--device", "cpu", "-f", "json", "-q")
    assert res.code == 0, res.err
    s = json.loads(res.out)
    assert s["level"] == "node" and s["rows"] == 400 and s["dim"] == 16 and s["labels"]
    res = gaml("embed", "probe", "--embeddings", emb, "--seeds", "2", "-f", "json")
    assert res.code == 0, res.err
    p = json.loads(res.out)
    assert {"accuracy", "accuracy_std"} <= set(p) and p["protocol"] == "linear" and "nmi" not in p
    out = tmp_path / "t.safetensors"
    res = gaml("embed", "transform", "--model", emb, "--graphs", d / "graph.jsonl", "--out", out, "-f", "json", "-q")
    assert res.code == 0, res.err
    from gaml_cli.core.artifacts import load_artifact

    assert np.allclose(load_artifact(out)["embeddings"], load_artifact(emb)["embeddings"], atol=1e-5)
    # resume: the same run continued gives the same result as straight through
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    base = ["embed", "graphmae", "--graphs", "karate", "--hidden", "8", "--device", "cpu", "-q", "--checkpoint-every", "2"]
    assert gaml(*base, "--out", a, "--steps", "4").code == 0
    assert gaml(*base, "--out", b, "--steps", "2").code == 0
    assert gaml(*base, "--out", b, "--steps", "4").code == 2  # checkpoints there: --resume or remove
    assert gaml(*base, "--out", b, "--steps", "4", "--resume").code == 0
    assert np.allclose(load_artifact(a)["embeddings"], load_artifact(b)["embeddings"], atol=1e-6)
    # bad input: one line, exit 2, nothing written
    bad = tmp_path / "bad.jsonl"
    for text, msg in [('{"num_nodes": 3, "edges": [[0, 5]]}\n', "line 1"),
                      ('{"num_nodes": 3, "edges": [], "node_features": [[1], [2]]}\n', "line 1"),
                      ('{"num_nodes": 3, "edges": [[0, 1]]}\n{oops\n', "line 2")]:
        bad.write_text(text)
        res = gaml("embed", "graphmae", "--graphs", bad, "--out", tmp_path / "x.safetensors", "--steps", "1", "-q")
        assert res.code == 2 and len(res.err_lines) == 1 and msg in res.err, res.err
        assert not (tmp_path / "x.safetensors").exists()
    labels = tmp_path / "labels.jsonl"
    labels.write_text('{"label": 0}\n{"label": 1}\n')
    res = gaml("embed", "probe", "--embeddings", emb, "--labels", labels)
    assert res.code == 2 and "2 labels for 400" in res.err


def test_the_encoder_sees_the_masked_features_and_the_decoder_the_re_masked_rows():
    """Wiring of one GraphMAE step: the encoder's input has the [MASK] token on the masked rows and
    the original features elsewhere; the decoder's input is zero on the masked rows; the loss is the
    SCE of the decoder's output against the original features of the masked rows only."""
    torch.manual_seed(0)
    model = GraphMAE(cfg("gat"))
    with torch.no_grad():
        model.mask_token.fill_(-5.0)
    x, ei = _graph(20, 60)
    seen = {}
    def spy(name):
        def hook(module, inp, out):  # returns None: the forward's output is left as it is
            seen[name] = (inp[0].detach().clone(), out.detach().clone())
        return hook

    model.encoder.register_forward_hook(spy("enc"))
    model.decoder.register_forward_hook(spy("dec"))
    loss = model.loss(x, ei, torch.Generator().manual_seed(3))
    _, masked = mask_features(x, model.mask_token, 0.5, 0.0, torch.Generator().manual_seed(3))
    keep = torch.ones(20, dtype=torch.bool)
    keep[masked] = False
    enc_in, dec_in, dec_out = seen["enc"][0], seen["dec"][0], seen["dec"][1]
    assert (enc_in[masked] == -5.0).all() and torch.equal(enc_in[keep], x[keep])
    assert (dec_in[masked] == 0).all() and (dec_in[keep] != 0).any()
    assert float(loss) == pytest.approx(float(sce(x[masked], dec_out[masked], 2.0)), rel=1e-6)
