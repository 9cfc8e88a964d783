"""FlatParams: clipping + AdamW + EMA over one flat buffer give the per-tensor results bit for bit."""

import copy

import pytest
import torch
from torch import nn

from gaml_cli.core.flat import FlatParams


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(7, 33)
        self.b = nn.Linear(33, 5)
        self.ln = nn.LayerNorm(5)
        self.unused = nn.Linear(3, 3)  # never reached by the loss: no gradient, left out of the norm

    def forward(self, x):
        return self.ln(self.b(torch.relu(self.a(x)))).pow(2).sum()


def _per_tensor_step(net, ema, opt, x, clip, d):
    opt.zero_grad(set_to_none=True)
    net(x).backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
    opt.step()
    with torch.no_grad():
        torch._foreach_lerp_(list(ema.parameters()), list(net.parameters()), 1 - d)


def _flat_step(net, flat, flat_ema, opt, x, clip, d):
    flat.zero_grad()
    net(x).backward()
    flat.collect()
    flat.clip_grad_norm_(clip)
    opt.step()
    flat_ema.lerp_to(flat, 1 - d)


def _pair(seed=0):
    torch.manual_seed(seed)
    a = Net()
    return a, copy.deepcopy(a).requires_grad_(False), copy.deepcopy(a), copy.deepcopy(a).requires_grad_(False)


@pytest.mark.parametrize("clip", [1e-3, 1e3])  # clipping active / inactive
def test_flat_update_equals_per_tensor_bit_for_bit(clip):
    net_a, ema_a, net_b, ema_b = _pair()
    opt_a = torch.optim.AdamW(net_a.parameters(), lr=1e-2, weight_decay=1e-2, amsgrad=True, foreach=True)
    flat, flat_ema = FlatParams(net_b.parameters()), FlatParams(ema_b.parameters(), grads=False)
    opt_b = torch.optim.AdamW([flat.param], lr=1e-2, weight_decay=1e-2, amsgrad=True, foreach=True)
    g = torch.Generator().manual_seed(1)
    for _ in range(12):
        x = torch.randn(16, 7, generator=g)
        _per_tensor_step(net_a, ema_a, opt_a, x, clip, 0.9)
        _flat_step(net_b, flat, flat_ema, opt_b, x, clip, 0.9)
    named_b = dict(net_b.named_parameters())
    for name, p in net_a.named_parameters():
        if name.startswith("unused"):
            continue  # AdamW skips it per tensor; flat, its gradient is 0 and weight decay shrinks it
        assert torch.equal(p, named_b[name]), name
    named_ema_b = dict(ema_b.named_parameters())
    for name, p in ema_a.named_parameters():
        assert name.startswith("unused") or torch.equal(p, named_ema_b[name]), name
    # the parameters really are views of the buffer, and the update moved them
    assert net_b.a.weight.data_ptr() == flat.data.data_ptr()
    assert not torch.equal(net_b.a.weight, _pair()[0].a.weight)
    assert net_b.unused.weight.grad is None and flat.grad.abs().sum() > 0


def test_per_tensor_optimizer_state_converts_and_continues_bit_for_bit():
    """A checkpoint made with per-tensor AdamW state resumes on the flat buffer exactly."""
    net_a, ema_a, net_b, ema_b = _pair(seed=3)
    opt_a = torch.optim.AdamW(net_a.parameters(), lr=1e-2, amsgrad=True, foreach=True)
    g = torch.Generator().manual_seed(2)
    xs = [torch.randn(8, 7, generator=g) for _ in range(10)]
    for x in xs[:5]:
        _per_tensor_step(net_a, ema_a, opt_a, x, 1.0, 0.8)
    saved = copy.deepcopy(opt_a.state_dict())
    net_b.load_state_dict(net_a.state_dict())
    ema_b.load_state_dict(ema_a.state_dict())
    flat, flat_ema = FlatParams(net_b.parameters()), FlatParams(ema_b.parameters(), grads=False)
    opt_b = torch.optim.AdamW([flat.param], lr=1e-2, amsgrad=True, foreach=True)
    opt_b.load_state_dict(flat.optimizer_state_from_per_tensor(saved))
    assert float(opt_b.state[flat.param]["step"]) == 5
    for x in xs[5:]:
        _per_tensor_step(net_a, ema_a, opt_a, x, 1.0, 0.8)
        _flat_step(net_b, flat, flat_ema, opt_b, x, 1.0, 0.8)
    for (name, pa), pb in zip(net_a.named_parameters(), net_b.parameters()):
        assert name.startswith("unused") or torch.equal(pa, pb), name  # (weight decay, as above)
    with pytest.raises(ValueError):
        flat.optimizer_state_from_per_tensor({"state": {}, "param_groups": [{"params": [0, 1]}]})


def test_release_gives_each_parameter_its_own_storage(tmp_path):
    from safetensors.torch import save_file

    net = Net()
    flat = FlatParams(net.parameters(), grads=False)
    assert net.b.bias.untyped_storage().data_ptr() == flat.data.untyped_storage().data_ptr()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    flat.release()
    save_file(dict(net.state_dict()), str(tmp_path / "own.safetensors"))
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert net.b.bias.untyped_storage().data_ptr() != flat.data.untyped_storage().data_ptr()
