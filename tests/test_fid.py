"""gaml eval fid: the TF-graph Inception in plain torch, weights found offline, FID by the formula.

The network was checked once against pytorch-fid's own InceptionV3 (torchvision blocks patched
as the TF graph), fed the same random state dict: pool3 features identical to the last bit.
Here: its tensor names and shapes are those of the pytorch-fid weight file (torchvision's
Inception3 with 1008 classes and no aux head: 23,885,392 parameters), FID matches an
independent eigenvalue computation, and every way of getting the input wrong is one line, exit 2.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("scipy")

from gaml_cli.core.artifacts import save_artifact  # noqa: E402
from gaml_cli.diffusion import inception as inc  # noqa: E402


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A random FID Inception saved as pytorch-fid saves it (a plain torch state dict)."""
    torch.manual_seed(0)
    net = inc.FIDInception()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2.0)
                m.bias.normal_(0, 0.1)
    path = tmp_path_factory.mktemp("inception") / inc.WEIGHTS_NAME
    torch.save({k: v for k, v in net.state_dict().items() if "num_batches" not in k}, path)
    return path


def _imgs(tmp_path, name, n, seed, channels=3, size=(20, 24), shift=0.0):
    x = np.random.default_rng(seed).uniform(-1, 1, (n, channels, *size)).astype(np.float32)
    x = np.clip(x + shift, -1, 1)
    return save_artifact(tmp_path / name, {"images": x}, kind="images", config={}), x


def test_network_has_the_weight_files_tensors():
    sd = inc.FIDInception().state_dict()
    params = {k: v for k, v in sd.items() if "num_batches" not in k}
    assert sum(v.numel() for v in params.values()) == 23_885_392
    assert tuple(sd["Mixed_7c.branch3x3dbl_3b.conv.weight"].shape) == (384, 384, 3, 1)
    assert tuple(sd["fc.weight"].shape) == (1008, 2048)
    assert tuple(sd["Conv2d_1a_3x3.bn.running_var"].shape) == (32,)
    # the TF graph's last block max-pools, the others average without the padding
    assert inc.FIDInception().Mixed_7c.max_pool and not inc.FIDInception().Mixed_7b.max_pool


def _fid_by_eigenvalues(f1, f2):
    """Independent route: Tr((S1 S2)^(1/2)) = sum sqrt(eig(S1^(1/2) S2 S1^(1/2)))."""
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    w, v = np.linalg.eigh(s1)
    r1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    ev = np.linalg.eigvalsh(r1 @ s2 @ r1)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(ev, 0, None)).sum())


def test_fid_matches_independent_computation_and_stats_round_trip(gaml, weights, tmp_path):
    a, xa = _imgs(tmp_path, "a.safetensors", 6, 0)
    b, xb = _imgs(tmp_path, "b.safetensors", 7, 1, size=(16, 16), shift=0.3)
    res = gaml("eval", "fid", "--images", a, "--ref", b, "--inception", weights, "--device", "cpu",
               "--batch-size", "4", "--save-ref-stats", tmp_path / "b.npz", "-f", "json")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    net = inc.load_inception(weights)
    f1, f2 = inc.features(net, xa), inc.features(net, xb)
    # features: resized to 299, [0, 1] -> [-1, 1], through the network
    with torch.no_grad():
        direct = net(torch.from_numpy((xa[:2] + 1) / 2)).double().numpy()
    np.testing.assert_allclose(f1[:2], direct, rtol=1e-5, atol=1e-6)
    expected = _fid_by_eigenvalues(f1, f2)
    assert expected > 0
    assert out["fid"] == pytest.approx(expected, rel=1e-3, abs=1e-6)
    assert out["n"] == 6 and out["n_ref"] == 7
    assert "biased" in res.err  # fewer than 2,048 a side: said so
    # the saved reference statistics give the same number, without the reference images
    res2 = gaml("eval", "fid", "--images", a, "--ref", tmp_path / "b.npz", "--inception", weights,
                "--device", "cpu", "-f", "json", "-q")
    assert res2.code == 0, res2.err
    assert json.loads(res2.out)["fid"] == pytest.approx(out["fid"], rel=1e-9)
    assert json.loads(res2.out)["n_ref"] == 7


def test_fid_of_a_set_with_itself_is_zero_and_grey_is_rgb(gaml, weights, tmp_path, monkeypatch):
    g, xg = _imgs(tmp_path, "g.safetensors", 5, 2, channels=1)
    rgb = save_artifact(tmp_path / "rgb.safetensors", {"images": np.repeat(xg, 3, axis=1)}, kind="images", config={})
    monkeypatch.setenv("GAML_FID_INCEPTION", str(weights))  # found through the environment
    res = gaml("eval", "fid", "--images", g, "--ref", rgb, "--device", "cpu", "-f", "json", "-q")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    net = inc.load_inception(weights)
    scale = np.trace(np.cov(inc.features(net, xg), rowvar=False))
    assert abs(out["fid"]) < 1e-4 * scale


def test_weights_found_in_torch_hub_cache(gaml, weights, tmp_path, monkeypatch):
    import shutil

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("GAML_FID_INCEPTION", raising=False)
    (tmp_path / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    shutil.copy(weights, tmp_path / "torch" / "hub" / "checkpoints" / inc.WEIGHTS_NAME)
    a, _ = _imgs(tmp_path, "a.safetensors", 3, 0)
    res = gaml("eval", "fid", "--images", a, "--ref", a, "--device", "cpu", "-f", "json", "-q")
    assert res.code == 0, res.err
    assert json.loads(res.out)["inception"].startswith(str(tmp_path / "torch"))


def test_fid_bad_input(gaml, weights, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    monkeypatch.delenv("GAML_FID_INCEPTION", raising=False)
    a, _ = _imgs(tmp_path, "a.safetensors", 3, 0)
    res = gaml("eval", "fid", "--images", a, "--ref", a)
    assert res.code == 2 and len(res.err_lines) == 1
    assert inc.WEIGHTS_URL in res.err and "--inception" in res.err
    # a file that is not the network's weights: an artifact, garbage bytes, a wrong state dict
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "other.pth")
    for w in (a, tmp_path / "junk.pth", tmp_path / "other.pth"):
        res = gaml("eval", "fid", "--images", a, "--ref", a, "--inception", w)
        assert res.code == 2 and len(res.err_lines) == 1, (w, res.err)
    # bad statistics, a single image, stats asked from stats, a non-.npz stats path
    np.savez(tmp_path / "bad.npz", mu=np.zeros(3), sigma=np.eye(3))
    one, _ = _imgs(tmp_path, "one.safetensors", 1, 0)
    for args in (("--ref", tmp_path / "bad.npz"), ("--ref", tmp_path / "missing.npz"),
                 ("--ref", a, "--images", one), ("--ref", tmp_path / "bad.npz", "--save-ref-stats", tmp_path / "s.npz"),
                 ("--ref", a, "--save-ref-stats", tmp_path / "s.txt")):
        res = gaml("eval", "fid", "--images", a, *args, "--inception", weights)
        assert res.code == 2 and len(res.err_lines) == 1, (args, res.err)
    assert not (tmp_path / "s.npz").exists() and not (tmp_path / "s.txt").exists()
