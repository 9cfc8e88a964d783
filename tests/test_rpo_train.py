"""Wiring of the preference trainer (methods/rpo/train.py) on a tiny caption-conditioned UNet:
shared noise and noise level for winner and loser, the LoRA reference is the starting model
exactly, the gradient reaches the trained weights through both the winner's and the loser's
error, one step equals the loss applied directly, RPO's weights come from the model's own
caption embeddings, resume continues the same run."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from gaml_cli.core.errors import UsageError
from gaml_cli.diffusion.models import build
from gaml_cli.methods.rpo import loss as L
from gaml_cli.methods.rpo import train as T

CAPS = ["a red circle on a blue background", "a blue square on a red background",
        "a red square on a blue background", "a green circle on a white background"]


def tiny_net(seed: int = 0):
    torch.manual_seed(seed)
    cfg = {"arch": "edm-unet2d", "image_shape": [3, 8, 8], "sigma_data": 0.5,
           "cond": {"type": "text", "vocab": sorted({w for c in CAPS for w in c.split()}), "dim": 16, "layers": 1,
                    "heads": 2, "max_len": 12, "pool": "mean"},
           "unet": {"block_out_channels": [8, 16], "layers_per_block": 1,
                    "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
                    "up_block_types": ["AttnUpBlock2D", "UpBlock2D"], "attention_head_dim": 8}}
    net = build(cfg)
    with torch.no_grad():  # a non-trivial starting model
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net.eval()


def pairs(n: int = 4, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    chosen = torch.rand(n, 3, 8, 8, generator=g) * 2 - 1
    rejected = torch.rand(n, 3, 8, 8, generator=g) * 2 - 1
    return [CAPS[i % len(CAPS)] for i in range(n)], chosen, rejected


class Spy(torch.nn.Module):
    """Records (x, sigma, cond) of every call of the wrapped denoiser."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, []

    def forward(self, x, sigma, cond):
        self.calls.append((x.detach().clone(), sigma.detach().clone(), None if cond is None else cond.detach().clone()))
        return self.inner(x, sigma, cond)


def test_winner_and_loser_share_noise_and_noise_level():
    net = tiny_net()
    caps, chosen, rejected = pairs()
    policy, _ = T.prepare_policy(net, T.AlignConfig(lora_rank=4))
    spy = Spy(policy)
    ref = T.Reference(policy, lora=True)
    sigma = torch.tensor([0.3, 1.0, 2.0, 5.0])
    noise = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    cond = policy.encode_condition(caps, 4, "cpu")
    T.pair_errors(spy, ref, chosen, rejected, cond, sigma, noise, policy.precond)
    (x, s, c), = spy.calls
    assert torch.equal(s[:4], s[4:]) and torch.equal(s[:4], sigma)
    assert torch.allclose(x[:4] - chosen, sigma.view(-1, 1, 1, 1) * noise, atol=1e-6)
    assert torch.allclose(x[4:] - rejected, sigma.view(-1, 1, 1, 1) * noise, atol=1e-6)
    assert torch.equal(c[:4], c[4:]) and torch.equal(c[:4], cond)


def test_with_lora_the_reference_is_the_starting_model_exactly():
    net = tiny_net()
    caps, chosen, _ = pairs()
    policy, names = T.prepare_policy(net, T.AlignConfig(lora_rank=4))
    assert names and all("lora_" in n for n in names)
    with torch.no_grad():  # move the adapters away from their zero start
        for n, p in policy.named_parameters():
            if "lora_" in n:
                p.add_(0.3 * torch.randn_like(p))
    ref = T.Reference(policy, lora=True)
    x, sigma = chosen, torch.tensor([0.5, 1.0, 2.0, 4.0])
    cond = net.encode_condition(caps, 4, "cpu")
    with torch.no_grad():
        start = net(x, sigma, cond)
        moved = policy(x, sigma, cond)
    assert torch.equal(ref(x, sigma, cond), start)
    assert not torch.allclose(moved, start)
    with torch.no_grad():  # the adapters are back on after the reference call
        assert torch.equal(policy(x, sigma, cond), moved)


def test_full_fine_tuning_reference_is_a_frozen_copy():
    net = tiny_net()
    policy, names = T.prepare_policy(net, T.AlignConfig(lora_rank=0))
    assert names and all(n.startswith("unet.") for n in names)  # the text encoder stays frozen
    ref = T.Reference(policy, lora=False)
    with torch.no_grad():
        for p in policy.unet.parameters():
            p.mul_(1.5)
    caps, chosen, _ = pairs()
    sigma = torch.ones(4)
    cond = net.encode_condition(caps, 4, "cpu")
    with torch.no_grad():
        assert torch.equal(ref(chosen, sigma, cond), net(chosen, sigma, cond))


@pytest.mark.parametrize("method", ["dpo", "rpo"])
def test_the_gradient_reaches_the_weights_through_both_terms(method):
    """Detaching the winner's or the loser's policy output changes the trained weights' gradient:
    both terms carry it."""
    net = tiny_net()
    caps, chosen, rejected = pairs()
    ac = T.AlignConfig(method=method, lora_rank=4, beta=50.0)
    policy, names = T.prepare_policy(net, ac)
    with torch.no_grad():
        for n, p in policy.named_parameters():
            if "lora_" in n:
                p.add_(0.1 * torch.randn_like(p))
    ref = T.Reference(policy, lora=True)
    sigma = torch.tensor([0.3, 1.0, 2.0, 5.0])
    noise = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    cond = policy.encode_condition(caps, 4, "cpu")
    params = [p for n, p in policy.named_parameters() if p.requires_grad]

    def grad(detach: str | None):
        errs = list(T.pair_errors(policy, ref, chosen, rejected, cond, sigma, noise, policy.precond))
        if detach == "w":
            errs[0] = errs[0].detach()
        if detach == "l":
            errs[1] = errs[1].detach()
        loss, _ = T.step_loss(ac, errs, cond)
        return torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)])

    full, no_w, no_l = grad(None), grad("w"), grad("l")
    assert full.abs().sum() > 0
    assert (full - no_w).norm() > 1e-3 * full.norm() and (full - no_l).norm() > 1e-3 * full.norm()
    assert torch.allclose(full, no_w + no_l, rtol=1e-3, atol=1e-6)  # the two terms add up


def test_one_training_step_is_the_loss_applied_directly(tmp_path):
    """align() for one step with plain SGD-equivalent checks: the step's logged loss equals
    diffusion_dpo_loss on the same draws recomputed here, and the weights moved."""
    net = tiny_net()
    caps, chosen, rejected = pairs()
    ac = T.AlignConfig(method="dpo", steps=1, batch_size=4, lora_rank=4, beta=50.0, checkpoint_every=0, seed=5)
    policy, report = T.align(copy.deepcopy(net), caps, chosen, rejected, ac, tmp_path, torch.device("cpu"))
    g = torch.Generator().manual_seed(ac.seed)
    idx = torch.randint(4, (4,), generator=g)
    sigma = (torch.randn(4, generator=g) * ac.p_std + ac.p_mean).exp()
    noise = torch.randn(4, 3, 8, 8, generator=g)
    cond = net.encode_condition([caps[i] for i in idx], 4, "cpu")
    with torch.no_grad():
        s = sigma.view(-1, 1, 1, 1)
        w = net.precond.loss_weight(sigma)
        mse_w = ((net(chosen[idx] + s * noise, sigma, cond) - chosen[idx]) ** 2).flatten(1).mean(1) * w
        mse_l = ((net(rejected[idx] + s * noise, sigma, cond) - rejected[idx]) ** 2).flatten(1).mean(1) * w
    # step 1: the policy starts equal to the reference (LoRA B = 0), so h = 0 and loss = log 2
    expected, _ = L.diffusion_dpo_loss(mse_w, mse_l, mse_w, mse_l, 50.0)
    assert report["loss"] == pytest.approx(float(expected), rel=1e-5) == pytest.approx(0.693147, rel=1e-5)
    assert report["mse_w"] == pytest.approx(float(mse_w.mean()), rel=1e-4)
    moved = any(float(p.detach().abs().sum()) > 0 for n, p in policy.named_parameters() if "lora_B" in n)
    assert moved
    log = [json.loads(l) for l in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 1 and "implicit_accuracy" in log[-1] and "ref_mse_w" in log[-1]


def test_rpo_weights_come_from_the_models_caption_embeddings():
    net = tiny_net()
    caps, chosen, rejected = pairs()
    ac = T.AlignConfig(method="rpo", tau=0.5, lora_rank=4)
    cond = net.encode_condition(caps, 4, "cpu")
    errs = [torch.rand(4, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    loss, stats = T.step_loss(ac, errs, cond)
    expected, _ = L.rpo_loss(*errs, L.rpo_weights(cond, 0.5), ac.beta, placement="inside")
    assert float(loss) == pytest.approx(float(expected))
    # the same captions get equal weight rows
    two = torch.cat([cond[:1], cond[:1]])
    assert torch.allclose(L.rpo_weights(two, 0.5), torch.full((2, 2), 0.5))


def test_resume_continues_the_same_run(tmp_path):
    caps, chosen, rejected = pairs()
    ac = T.AlignConfig(method="dpo", steps=4, batch_size=2, lora_rank=4, beta=50.0, checkpoint_every=2, seed=1)
    straight, _ = T.align(tiny_net(), caps, chosen, rejected, ac, tmp_path / "a", torch.device("cpu"))
    half = T.AlignConfig(**{**ac.__dict__, "steps": 2})
    T.align(tiny_net(), caps, chosen, rejected, half, tmp_path / "b", torch.device("cpu"))
    resumed, rep = T.align(tiny_net(), caps, chosen, rejected, ac, tmp_path / "b", torch.device("cpu"), resume=True)
    assert rep["steps"] == 4
    a, b = dict(straight.named_parameters()), dict(resumed.named_parameters())
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = T.AlignConfig(**{**ac.__dict__, "beta": 10.0})
    with pytest.raises(UsageError, match="other settings"):
        T.align(tiny_net(), caps, chosen, rejected, other, tmp_path / "b", torch.device("cpu"), resume=True)


def test_bad_settings_are_one_line_errors():
    caps, chosen, rejected = pairs()
    for bad in [dict(method="kto"), dict(loss="kto"), dict(beta=-1.0), dict(tau=-0.1), dict(method="rpo", batch_size=1),
                dict(beta=float("nan"))]:
        with pytest.raises(UsageError):
            T.AlignConfig(**bad).check()
    with pytest.raises(UsageError, match="images are"):
        T.align(tiny_net(), caps, chosen[:, :, :4, :4], rejected[:, :, :4, :4], T.AlignConfig(), None, torch.device("cpu"))


@pytest.mark.parametrize("method", ["dpo", "rpo"])
def test_training_steps_move_the_model_toward_the_chosen_images(tmp_path, method):
    """The step's direction: after training on (chosen, rejected), the policy's error on the chosen
    images has fallen relative to the rejected ones, against the reference (margin h > 0 on fresh
    draws); trained on the swapped pairs, the same margin turns negative."""
    caps, chosen, rejected = pairs()

    def margin_after(a, b, tag):
        ac = T.AlignConfig(method=method, steps=30, batch_size=4, lora_rank=4, lr=1e-2, beta=200.0,
                           checkpoint_every=0, seed=0)
        policy, _ = T.align(tiny_net(), caps, a, b, ac, tmp_path / tag, torch.device("cpu"))
        ref = T.Reference(policy, lora=True)
        g = torch.Generator().manual_seed(99)
        sigma = (torch.randn(64, generator=g) * 1.2 - 1.2).exp()
        noise = torch.randn(64, 3, 8, 8, generator=g)
        idx = torch.arange(64) % 4
        cond = policy.encode_condition([caps[i] for i in idx], 64, "cpu")
        with torch.no_grad():  # always measured in the (chosen, rejected) order
            mse_w, mse_l, ref_w, ref_l = T.pair_errors(policy, ref, chosen[idx], rejected[idx], cond, sigma, noise,
                                                       policy.precond)
        return float(((ref_w - ref_l) - (mse_w - mse_l)).mean())  # written out, not loss.dpo_margin

    assert margin_after(chosen, rejected, "as-given") > 0
    assert margin_after(rejected, chosen, "swapped") < 0
