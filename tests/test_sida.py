"""SiDA wiring (methods/sid/adversarial.py, loss.py, the loop in train.py) on a tiny random teacher:
the discriminator is the fake score network's encoder; the adversarial term's gradient reaches the
generator and raises the discriminator's verdict on its samples; the real images reach only the
discriminator's loss in the fake-score update; and `gaml distill` / `gaml unlearn` run with it."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from gaml_cli.core.console import state  # noqa: E402
from gaml_cli.diffusion.models import ImageDenoiser, unet_config  # noqa: E402
from gaml_cli.methods.sid import adversarial  # noqa: E402
from gaml_cli.methods.sid.loss import adversarial_generator_loss, discriminator_loss  # noqa: E402
from gaml_cli.methods.sid.model import GamlTeacher  # noqa: E402
from gaml_cli.methods.sid.train import DistillConfig, distill  # noqa: E402

SHAPE = (1, 8, 8)


class Tiny(GamlTeacher):
    def __init__(self, seed: int = 0):  # noqa: set what GamlTeacher.__init__ would, without a file
        torch.manual_seed(seed)
        cfg = {"image_shape": list(SHAPE), "sigma_data": 0.5, "cond": {"type": "class", "num_classes": 3},
               "unet": unet_config([8, 16], 1)}
        self.net = ImageDenoiser(cfg).eval().requires_grad_(False)
        self.config = {"model": cfg}
        self.path, self.device, self.x_shape, self.sigma_data = Path("<tiny>"), torch.device("cpu"), SHAPE, 0.5
        self.sigma_min, self.sigma_max, self.cond_type, self.prompts, self.attributes = 0.002, 80.0, "class", None, None


def test_the_discriminator_is_the_fake_score_networks_encoder():
    t = Tiny()
    f_psi = t.trainable_copy()
    assert adversarial.encoder_module(t, f_psi) is f_psi.unet.mid_block
    x, s, c = torch.randn(4, *SHAPE), torch.full((4,), 0.7), torch.tensor([0, 1, 2, 0])
    seen = []
    h = f_psi.unet.mid_block.register_forward_hook(lambda m, i, o: seen.append(o))
    y_ref = f_psi(x, s, c)
    h.remove()
    y, logits = adversarial.logits_and_output(t, f_psi, x, s, c)
    assert torch.allclose(y, y_ref) and logits.shape == (4, 1, 4, 4)
    assert torch.allclose(logits, seen[0].mean(1, keepdim=True))
    # it is f_psi's own encoder: changing f_psi's mid block changes D, the teacher's copy is untouched
    with torch.no_grad():
        next(f_psi.unet.mid_block.parameters()).add_(0.5)
    _, moved = adversarial.logits_and_output(t, f_psi, x, s, c)
    _, phi = adversarial.logits_and_output(t, t.net, x, s, c)
    assert not torch.allclose(moved, logits) and torch.allclose(phi, logits)
    # a guided call batches [c; null]: D reads the conditional rows only
    from gaml_cli.diffusion.edm import cfg_denoiser

    _, guided = adversarial.logits_and_output(t, f_psi, x, s, c, call=cfg_denoiser(f_psi, t.null(4), 1.5))
    assert torch.allclose(guided, moved, atol=1e-6)


def test_the_adversarial_gradient_reaches_the_generator_with_the_right_sign():
    """One SGD step of G on the adversarial term alone raises D(x_g + sigma n) on the same z, n;
    the fake score network's parameters get no step (their gradients are off in G's update)."""
    t = Tiny()
    G, f_psi = t.trainable_copy(), t.trainable_copy().eval().requires_grad_(False)
    gen = torch.Generator().manual_seed(0)
    z, n = torch.randn(8, *SHAPE, generator=gen), torch.randn(8, *SHAPE, generator=gen)
    c, s_init, sigma = torch.arange(8) % 3, torch.full((8,), 2.5), torch.full((8,), 0.5)

    def verdict():
        x_g = G(2.5 * z, s_init, c)
        x_t = x_g + sigma.view(-1, 1, 1, 1) * n
        y_fake, logits = adversarial.logits_and_output(t, f_psi, x_t, sigma, c)
        return x_g, y_fake, logits

    x_g, _, logits = verdict()
    with torch.no_grad():
        y_real = t.net(x_g + sigma.view(-1, 1, 1, 1) * n, sigma, c)
    w = (x_g - y_real).abs().flatten(1).mean(1).clamp_min(1e-5).detach()
    loss = adversarial_generator_loss(logits, w, 64).mean()
    before = logits.mean().item()
    loss.backward()
    grads = [p.grad for p in G.parameters() if p.grad is not None]
    assert grads and sum(g.abs().sum() for g in grads) > 0
    assert all(p.grad is None for p in f_psi.parameters())
    with torch.no_grad():
        for p in G.parameters():
            if p.grad is not None:
                p.sub_(1e-2 * p.grad / (p.grad.norm() + 1e-12))
    _, _, after = verdict()
    assert after.mean().item() > before


def test_discriminator_loss_by_hand():
    lr, lf, wt = torch.tensor([[2.0], [-1.0]]), torch.tensor([[0.5], [3.0]]), torch.tensor([1.0, 4.0])
    sp = torch.nn.functional.softplus
    real = (sp(-lr)).mean()  # -log sigmoid(l)
    fake = (sp(lf)).mean()  # -log(1 - sigmoid(l))
    assert torch.allclose(discriminator_loss(lr, lf, wt), wt * (real + fake) / 2)
    w = torch.tensor([0.5, 2.0])
    assert torch.allclose(adversarial_generator_loss(torch.tensor([[20.0], [-1.0]]), w, 64),
                          64 * (sp(-torch.tensor([10.0, -1.0]))).mean() / w)  # logits clipped at 10


class RecordingReal:
    """Stands in for RealImages: records what it hands out (with gradients on)."""

    def __init__(self):
        self.handed = []
        self.x = torch.zeros(10, *SHAPE)

    def draw(self, n, gen):
        x = torch.rand(n, *SHAPE, generator=gen).mul(2).sub(1).requires_grad_(True)
        self.handed.append(x)
        return x, [i % 3 for i in range(n)]


def _distill(tmp_path, name, real, weight, steps=2):
    state.quiet = True
    t = Tiny()
    dc = DistillConfig(steps=steps, batch_size=4, ema_halflife_kimg=0, checkpoint_every=0,
                       real_data="recorded" if real is not None else "", adv_weight=weight)
    out = tmp_path / name
    out.mkdir()
    G, _, _ = distill(t, dc, out, torch.device("cpu"), real=real)
    return G


def test_real_images_reach_only_the_discriminator_loss(tmp_path):
    """One real batch per fake-score update and none in the generator's; each gets a gradient (from
    L_D, the only loss that sees it); the adversarial weight changes G's update, the data-free run
    equals weight 0 up to the discriminator having trained f_psi."""
    real = RecordingReal()
    G_adv = _distill(tmp_path, "adv", real, 1.0)
    assert len(real.handed) == 2  # steps x one micro-batch, fake-score updates only
    assert all(x.grad is not None and x.grad.abs().sum() > 0 for x in real.handed)
    G_zero = _distill(tmp_path, "zero", RecordingReal(), 0.0)
    diff = sum((a - b).abs().sum() for a, b in zip(G_adv.state_dict().values(), G_zero.state_dict().values()))
    assert diff > 0


def test_distill_and_unlearn_with_real_data_end_to_end(gaml, tmp_path):
    tiny = ["--steps", "2", "--batch-size", "4", "--device", "cpu", "-q", "-f", "json"]
    run = tmp_path / "sida"
    res = gaml("distill", "--teacher", "digits", "--out", run, "--real-data", "digits", *tiny)
    assert res.code == 0, res.err
    out = json.loads(res.out)
    assert out["real_data"] == "digits" and out["adversarial_weight"] == 1.0
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert "loss_d" in log[-1]
    # fine-tuning a finished SiD run, and SFD with the discriminator on retained digits only
    res = gaml("distill", "--teacher", "digits", "--out", tmp_path / "ft", "--real-data", "digits",
               "--adversarial-weight", "0.1", "--init-from", run, *tiny)
    assert res.code == 0, res.err
    res = gaml("unlearn", "--teacher", "digits", "--forget", "0", "--into", "1", "--out", tmp_path / "u",
               "--real-data", "digits", *tiny)
    assert res.code == 0, res.err
    # bad input: one line, exit 2, nothing written
    for args in (["--adversarial-weight", "1"], ["--real-data", "shapes"], ["--real-data", str(tmp_path / "none.safetensors")]):
        bad = tmp_path / "bad"
        res = gaml("distill", "--teacher", "digits", "--out", bad, *args, *tiny)
        assert res.code == 2, (args, res.err)
        assert not bad.exists() and len(res.err.strip().splitlines()) == 1


def test_real_images_for_unlearn_drop_the_forgotten_class():
    from gaml_cli.methods.sfd.plan import ForgetPlan

    class T:
        family, x_shape, cond_type, device = "edm", (1, 8, 8), "class", torch.device("cpu")

    r = adversarial.RealImages("digits", T(), ForgetPlan(mode="class", pairs=[(0, 1)]))
    assert 0 not in set(r.conds) and len(r.conds) == len(r.x) > 1000
