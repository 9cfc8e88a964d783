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


def _run_loop(tmp_path, signal_at=None, signals=1, total=6, every=2, save_at_end=True):
    """A StepLoop over `total` steps; at step `signal_at` it sends itself SIGINT `signals` times
    half way through the step. Returns (saved steps, step halves finished, raised, handler after)."""
    import os
    import signal

    from gaml_cli.core.checkpoint import StepLoop

    saved, halves = [], []
    before = signal.getsignal(signal.SIGINT)
    loop = StepLoop(0, total, saved.append, CheckpointDir(tmp_path / "c"), every=every, save_at_end=save_at_end)
    raised = False
    try:
        with loop:
            for step in loop:
                halves.append((step, "first"))
                if step == signal_at:
                    for _ in range(signals):
                        os.kill(os.getpid(), signal.SIGINT)
                halves.append((step, "second"))
    except KeyboardInterrupt:
        raised = True
    return saved, halves, raised, loop, signal.getsignal(signal.SIGINT) is before


def test_step_loop_saves_periodically_and_at_the_end(tmp_path):
    saved, halves, raised, loop, restored = _run_loop(tmp_path, total=5, every=2)
    assert saved == [2, 4, 5] and not raised and loop.done == 5 and restored
    assert len(halves) == 10
    saved, *_ = _run_loop(tmp_path, total=5, every=0, save_at_end=False)
    assert saved == []


def test_step_loop_signal_finishes_the_step_then_checkpoints(tmp_path):
    """SIGINT inside step 2 (0-based): the step's second half still runs, the checkpoint is of 3
    whole steps, KeyboardInterrupt follows; no later step starts."""
    saved, halves, raised, loop, restored = _run_loop(tmp_path, signal_at=2, total=6, every=2)
    assert raised and restored
    assert halves[-1] == (2, "second") and len(halves) == 6
    assert saved == [2, 3] and loop.done == 3


def test_step_loop_second_signal_stops_at_once_without_a_checkpoint(tmp_path):
    saved, halves, raised, loop, restored = _run_loop(tmp_path, signal_at=2, signals=2, total=6, every=2)
    assert raised and restored
    assert halves[-1] == (2, "first")      # stopped inside the step
    assert saved == [2] and loop.done == 2  # the half-done step is not saved
