"""Resumable training state: exact round trip, and resume == uninterrupted training."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from gaml_cli.core.checkpoint import CheckpointDir, capture_rng, flatten, restore_rng, unflatten  # noqa: E402
from gaml_cli.core.errors import InputError  # noqa: E402


def test_flatten_roundtrip_keeps_types():
    state = {"a": torch.arange(3), "b": (1, 2.5, None), "c": {0: torch.ones(2), 1: "x"}, "d": [True, {"e": 3}]}
    skeleton, tensors = flatten(state)
    json.dumps(skeleton)  # the skeleton is plain JSON
    back = unflatten(json.loads(json.dumps(skeleton)), tensors)
    assert back["b"] == (1, 2.5, None) and isinstance(back["b"], tuple)
    assert set(back["c"]) == {0, 1} and torch.equal(back["c"][0], torch.ones(2))
    assert back["d"] == [True, {"e": 3}] and torch.equal(back["a"], torch.arange(3))


def _setup():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, betas=(0.0, 0.999))
    return model, opt


def _step(model, opt):
    x = torch.randn(16, 4)  # drawn from the global RNG: resume must restore it
    loss = (model(x) - x.sum(1, keepdim=True)).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()


def test_resume_equals_uninterrupted(tmp_path):
    model, opt = _setup()
    for _ in range(10):
        _step(model, opt)
    straight = [p.detach().clone() for p in model.parameters()]

    model, opt = _setup()
    for _ in range(5):
        _step(model, opt)
    ck = CheckpointDir(tmp_path / "ck", keep=2)
    ck.save(5, {"model": model.state_dict(), "opt": opt.state_dict(), "rng": capture_rng()}, config={"lr": 1e-2})
    del model, opt
    torch.manual_seed(999)  # disturb the RNG: resume must put it back

    model, opt = _setup()
    step, state, cfg = ck.load()
    assert step == 5 and cfg == {"lr": 1e-2}
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    restore_rng(state["rng"])
    for _ in range(5):
        _step(model, opt)
    for a, b in zip(straight, model.parameters()):
        assert torch.equal(a, b)


def test_keeps_last_n_and_latest_pointer(tmp_path):
    ck = CheckpointDir(tmp_path, keep=2)
    for s in (10, 20, 30):
        ck.save(s, {"w": torch.full((2,), float(s))})
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-00000020.safetensors", "step-00000030.safetensors"]
    step, state, _ = ck.load()
    assert step == 30 and torch.equal(state["w"], torch.full((2,), 30.0))


def test_empty_folder_and_corrupt_checkpoint(tmp_path):
    with pytest.raises(InputError, match="no checkpoint"):
        CheckpointDir(tmp_path).load()
    ck = CheckpointDir(tmp_path)
    p = ck.save(1, {"w": torch.ones(3)})
    p.write_bytes(p.read_bytes()[:-4])
    with pytest.raises(InputError, match="truncated"):
        ck.load()
