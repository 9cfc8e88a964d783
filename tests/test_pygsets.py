"""PyG's on-disk data sets for `gaml embed` (graphs/pygsets.py): tiny Planetoid and TU folders in
PyG's raw layout, written here, read by PyG's own loaders; the public split reaches the probe;
a missing folder is refused in one line before anything is written."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

pytest.importorskip("torch_geometric")

from gaml_cli.core.artifacts import load_artifact  # noqa: E402


def write_planetoid(root, name="Cora", n_train=6, n_test=6, extra=500, dim=5, classes=3, seed=0):
    """A planetoid folder in Kipf's format: x/y the labelled training nodes, allx/ally every
    non-test node, tx/ty the test nodes, graph an adjacency dict, test.index the test nodes' ids.
    (PyG's reader takes the 500 nodes after the training ones as the validation split.)"""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    n_all = n_train + extra
    n = n_all + n_test
    y = np.arange(n) % classes
    feats = np.eye(classes)[y] @ rng.normal(size=(classes, dim)) * 3 + rng.normal(size=(n, dim)) * 0.1
    onehot = np.eye(classes)[y]
    raw = root / name / "raw"
    raw.mkdir(parents=True)
    test_index = np.arange(n_all, n)[::-1]  # PyG sorts them back
    parts = {"x": sp.csr_matrix(feats[:n_train]), "allx": sp.csr_matrix(feats[:n_all]),
             "tx": sp.csr_matrix(feats[test_index]), "y": onehot[:n_train], "ally": onehot[:n_all],
             "ty": onehot[test_index]}
    graph = {i: [j for j in range(n) if j != i and y[j] == y[i] and abs(i - j) <= 6] for i in range(n)}
    for key, val in {**parts, "graph": graph}.items():
        with open(raw / f"ind.{name.lower()}.{key}", "wb") as f:
            pickle.dump(val, f)
    (raw / f"ind.{name.lower()}.test.index").write_text("\n".join(str(i) for i in test_index) + "\n")
    return n, y


def write_tu(root, name="TINY", graphs=20, seed=0):
    """A TU folder: graph g has 4 + g % 3 nodes, a cycle (label 1) or a path (label 0)."""
    rng = np.random.default_rng(seed)
    raw = root / name / "raw"
    raw.mkdir(parents=True)
    a, ind, labels, node_labels, base = [], [], [], [], 1
    for g in range(graphs):
        k = 4 + g % 3
        lab = int(rng.integers(2))
        edges = [(i, i + 1) for i in range(k - 1)] + ([(k - 1, 0)] if lab else [])
        for u, v in edges:
            a += [(base + u, base + v), (base + v, base + u)]
        ind += [g + 1] * k
        node_labels += [int(rng.integers(3)) for _ in range(k)]
        labels.append(lab)
        base += k
    (raw / f"{name}_A.txt").write_text("".join(f"{u}, {v}\n" for u, v in a))
    (raw / f"{name}_graph_indicator.txt").write_text("".join(f"{i}\n" for i in ind))
    (raw / f"{name}_graph_labels.txt").write_text("".join(f"{lab}\n" for lab in labels))
    (raw / f"{name}_node_labels.txt").write_text("".join(f"{lab}\n" for lab in node_labels))
    return labels


def test_planetoid_folder_is_read_by_pyg_with_its_public_split(tmp_path, gaml):
    n, y = write_planetoid(tmp_path / "pyg")
    from gaml_cli.graphs import pygsets

    ps = pygsets.load("planetoid:cora", str(tmp_path / "pyg"))
    assert ps.level == "node" and ps.source == "planetoid:Cora" and len(ps.data) == 1
    assert int(ps.data[0].num_nodes) == n and ps.data[0].x.shape[1] == 5
    assert np.array_equal(ps.labels, y)
    assert (ps.split == 0).sum() == 6 and (ps.split == 2).sum() == 6 and set(np.flatnonzero(ps.split == 2)) == set(range(506, 512))
    assert (ps.split == 1).sum() == 500
    emb = tmp_path / "emb.safetensors"
    res = gaml("embed", "graphmae", "--dataset", "planetoid:Cora", "--root", tmp_path / "pyg", "--out", emb,
               "--steps", "2", "--hidden", "8", "--device", "cpu", "-q", "-f", "json")
    assert res.code == 0, res.err
    art = load_artifact(emb)
    assert np.array_equal(art["split"], ps.split) and np.array_equal(art["labels"], y)
    assert art.config["source"] == "planetoid:Cora"
    res = gaml("embed", "probe", "--embeddings", emb, "--seeds", "2", "-f", "json")
    p = json.loads(res.out)
    assert res.code == 0 and p["split"] == "given" and p["train_rows"] == 6 and p["test_rows"] == 6
    res = gaml("embed", "probe", "--embeddings", emb, "--seeds", "2", "--split", "random", "--train-fraction", "0.5",
               "-f", "json")
    p = json.loads(res.out)
    assert res.code == 0 and p["split"] == "random" and p["train_rows"] == 256
    out = tmp_path / "t.safetensors"
    res = gaml("embed", "transform", "--model", emb, "--dataset", "planetoid:Cora", "--root", tmp_path / "pyg",
               "--out", out, "-q")
    assert res.code == 0, res.err
    assert np.allclose(load_artifact(out)["embeddings"], art["embeddings"], atol=1e-5)


def test_tu_folder_is_graph_level_with_node_label_features(tmp_path, gaml):
    labels = write_tu(tmp_path / "pyg")
    from gaml_cli.graphs import pygsets

    ps = pygsets.load("tu:TINY", str(tmp_path / "pyg"))
    assert ps.level == "graph" and len(ps.data) == 20 and list(ps.labels) == labels
    assert ps.data[0].x.shape[1] == 3 and int(ps.data[0].num_nodes) == 4  # one-hot node labels
    emb = tmp_path / "emb.safetensors"
    res = gaml("embed", "diggr", "--dataset", "tu:TINY", "--root", tmp_path / "pyg", "--out", emb, "--steps", "2",
               "--hidden", "8", "--factors", "2", "--device", "cpu", "-q", "-f", "json")
    assert res.code == 0, res.err
    s = json.loads(res.out)
    assert s["level"] == "graph" and s["rows"] == 20
    # graph-level factors: each graph's mean node strengths, its assignment the largest
    from gaml_cli.methods.diggr.run import diggr_method
    from gaml_cli.methods.graphmae.run import load_model

    art = load_artifact(emb)
    model, _, _ = load_model(str(emb), {"diggr": diggr_method()})
    d = ps.data[3]
    want = model.strengths(d.x, d.edge_index).mean(0).detach().numpy()
    assert art["factors"].shape == (20, 2) and np.allclose(art["factors"][3], want, atol=1e-5)
    assert np.array_equal(art["assignment"], art["factors"].argmax(1))
    res = gaml("embed", "probe", "--embeddings", emb, "--protocol", "svm", "--seeds", "1", "-f", "json")
    assert res.code == 2 and "at least 10 graphs" in res.err  # 20 graphs of 2 classes: too few per class


def test_missing_or_bad_dataset_is_one_line_and_writes_nothing(tmp_path, gaml):
    out = tmp_path / "x.safetensors"
    cases = [(["--dataset", "planetoid:Cora", "--root", tmp_path / "nowhere"], "ind.cora.x is missing"),
             (["--dataset", "tu:MUTAG", "--root", tmp_path], "MUTAG_A.txt is missing"),
             (["--dataset", "planetoid:Cora"], "--root"),
             (["--dataset", "planetoid:Reddit", "--root", tmp_path], "Planetoid has"),
             (["--dataset", "ogb:arxiv", "--root", tmp_path], "expected planetoid:NAME"),
             (["--dataset", "karate", "--graphs", "karate"], "one of them"),
             (["--dataset", "karate:club"], "takes no name"),
             ([], "one of them")]
    for args, msg in cases:
        res = gaml("embed", "graphmae", *args, "--out", out, "--steps", "1", "-q")
        assert res.code == 2 and len(res.err_lines) == 1 and msg in res.err, (args, res.err)
        assert not out.exists()
    assert "gaml does not download" in gaml("embed", "graphmae", *cases[0][0], "--out", out).err
    assert not (tmp_path / "nowhere").exists()
    # a corrupt raw file: PyG's parser fails, gaml says so in one line
    write_tu(tmp_path / "pyg", name="BAD")
    (tmp_path / "pyg" / "BAD" / "raw" / "BAD_A.txt").write_text("1, x\n")
    res = gaml("embed", "graphmae", "--dataset", "tu:BAD", "--root", tmp_path / "pyg", "--out", out, "-q")
    assert res.code == 2 and len(res.err_lines) == 1 and "could not read" in res.err, res.err
    assert not out.exists()


def test_planted_separation_scales_the_block_centres(tmp_path, gaml):
    """--separation s: the blocks' feature centres shrink s-fold against the unit noise (the same
    draws otherwise), so the features alone separate the blocks less."""
    from gaml_cli.graphs.embedsets import planted

    a, b = planted(3), planted(3, separation=0.3)
    assert np.array_equal(a.edges, b.edges) and a.extra["node_labels"] == b.extra["node_labels"]
    xa, xb, y = np.asarray(a.node_features), np.asarray(b.node_features), np.asarray(a.extra["node_labels"])
    centre = (xa - xb) / 0.7  # x = separation * centre[block] + noise, the same noise
    for k in range(4):
        assert np.allclose(centre[y == k], centre[y == k][0], atol=1e-4)
    assert np.allclose(xb - 0.3 * centre, xa - centre, atol=1e-4)
    assert np.linalg.norm(centre[y == 0][0] - centre[y == 1][0]) > 1
    assert gaml("graphgen", "data", "--name", "planted", "--separation", "0.3", "--out", tmp_path / "p", "-q").code == 0
    rec = json.loads((tmp_path / "p" / "graph.jsonl").read_text())
    assert rec["planted"]["separation"] == 0.3
    res = gaml("graphgen", "data", "--name", "sbm", "--separation", "0.3", "--out", tmp_path / "s", "-q")
    assert res.code == 2 and "planted only" in res.err and not (tmp_path / "s").exists()
    res = gaml("graphgen", "data", "--name", "planted", "--separation", "inf", "--out", tmp_path / "i", "-q")
    assert res.code == 2 and "finite" in res.err and not (tmp_path / "i").exists()



def test_families_ego_graphs_have_edges_among_the_neighbours():
    """The ego family is a hub's neighbourhood with edges between neighbours, not a star (the
    m = 1 Holme-Kim source made every ego network a star)."""
    from gaml_cli.graphs.embedsets import families

    train, test = families(0, per_family=10)
    egos = [g for g in train + test if g.label == 3]
    assert len(egos) == 10
    assert all(g.num_edges > g.num_nodes - 1 for g in egos)
