"""Wiring of gaml's EDM code: the teacher trainer (diffusion/train.py), the loss (edm.edm_loss),
the samplers and schedule (edm.py) and the sampling front ends (diffusion/sample.py).

Each test records what the code hands to the network and compares the result with the paper's
formula written out here: the EDM loss weight and ln(sigma) ~ N(P_mean, P_std^2) constants reach
the trainer, one training step's gradient equals autograd of the loss on the same draws, warm-up
and EMA constants, one Euler and one Heun step (EDM Algorithm 1), the Karras schedule with
non-default constants, and classifier-free guidance D_u + w (D_c - D_u) in the samplers.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from gaml_cli.core import runtime  # noqa: E402
from gaml_cli.core.console import state  # noqa: E402
from gaml_cli.diffusion import edm  # noqa: E402
from gaml_cli.diffusion import sample as smp  # noqa: E402
from gaml_cli.diffusion import train as tr  # noqa: E402
from gaml_cli.diffusion.data import ImageData  # noqa: E402
from gaml_cli.diffusion.models import unet_config  # noqa: E402


def _toy_D(x, sigma, cond=None):
    """A nonlinear denoiser that depends on x, sigma and the condition (float64-friendly)."""
    s = sigma.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)
    c = 0.0 if cond is None else cond.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
    return x / (1 + s**2) + 0.3 * torch.sin(x) + 0.1 * c * s


class Recorder:
    def __init__(self, D=_toy_D):
        self.D, self.calls = D, []

    def __call__(self, x, sigma, cond=None):
        self.calls.append((x.clone(), sigma.clone(), None if cond is None else cond.clone()))
        return self.D(x, sigma, cond)


# -- the loss and the training loop ------------------------------------------------------------
def test_edm_loss_feeds_the_noisy_image_and_weights_by_table_1():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 2, 4, 4, generator=g, dtype=torch.float64)
    n = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    sigma = torch.tensor([0.1, 0.9, 7.0], dtype=torch.float64)
    cond = torch.tensor([2, 0, 1])
    D = Recorder()
    got = edm.edm_loss(D, x0, cond, sigma, n, edm.EDMPrecond(0.3))
    x_in, s_in, c_in = D.calls[0]
    s = sigma.view(-1, 1, 1, 1)
    assert torch.equal(x_in, x0 + s * n) and torch.equal(s_in, sigma) and torch.equal(c_in, cond)
    lam = (sigma**2 + 0.09) / (sigma * 0.3) ** 2
    want = lam * ((_toy_D(x0 + s * n, sigma, cond) - x0) ** 2).mean(dim=(1, 2, 3))
    assert torch.allclose(got, want)


K = 3


def _data(n=12):
    """Images that say which row they are (value j/n everywhere plus a pattern) with labels j mod 3."""
    x = np.stack([np.full((1, 8, 8), j / n) + 0.05 * np.sin(np.arange(64).reshape(1, 8, 8) + j) for j in range(n)])
    return ImageData(images=x.astype(np.float32), cond_type="class", labels=np.arange(n) % K, captions=None,
                     info={"dataset": None, "image_shape": [1, 8, 8], "classes": ["a", "b", "c"]}, path=Path("<toy>"))


@pytest.fixture
def spied_train(monkeypatch):
    """train_teacher with the network it builds and the arguments of each edm_loss call recorded."""
    seen = {"loss": []}
    real_build, real_loss = tr.build, tr.edm_loss

    def build(cfg):
        m = real_build(cfg)
        seen["model"], seen["init"] = m, copy.deepcopy(m)
        return m

    def loss(D, x0, cond, sigma, noise, precond=edm.EDMPrecond()):
        seen["loss"].append({"D": D, "x0": x0.clone(), "cond": None if cond is None else cond.clone(),
                             "sigma": sigma.clone(), "noise": noise.clone(), "precond": precond})
        return real_loss(D, x0, cond, sigma, noise, precond)

    monkeypatch.setattr(tr, "build", build)
    monkeypatch.setattr(tr, "edm_loss", loss)
    state.quiet = True
    return seen


def test_teacher_training_step_wiring(spied_train, tmp_path):
    """One step: x0 rows with their own labels (nulls at rate p_uncond), ln sigma ~ N(0.8, 0.05^2),
    sigma_data 0.3 in the weight; the model's gradient equals autograd of
    mean_b lambda(sigma) mean_pix (D(x0 + sigma n; sigma, c) - x0)^2 on the same draws; Adam's first
    step moves every weight by lr / warmup; the EMA is 0.1 old + 0.9 new (decay min(0.999, 1/10))."""
    data = _data()
    tc = tr.TrainConfig(steps=1, batch_size=16, lr=1e-3, warmup=4, ema=0.999, p_uncond=0.5, p_mean=0.8, p_std=0.05,
                        sigma_data=0.3, grad_clip=0.0, checkpoint_every=0, unet=unet_config([8, 16], 1))
    ema, mcfg, _ = tr.train_teacher(data, tc, tmp_path / "ck", torch.device("cpu"))
    assert mcfg["sigma_data"] == 0.3
    [rec] = spied_train["loss"]
    model, init = spied_train["model"], spied_train["init"]
    assert rec["D"] is model and rec["precond"].sigma_data == 0.3
    # each x0 is a data row, with that row's label or the null label K
    rows = [int(round(float(r.mean()) * 12)) for r in rec["x0"]]
    for r, x, c in zip(rows, rec["x0"], rec["cond"].tolist()):
        assert torch.allclose(x, torch.from_numpy(data.images[r])) and c in (r % K, K)
    dropped = int((rec["cond"] == K).sum())
    assert 0 < dropped < 16
    assert ((rec["sigma"].log() - 0.8).abs() < 0.3).all()
    assert 0.7 < rec["noise"].std().item() < 1.3
    # the gradient of one step, by hand
    x0, s, n = rec["x0"], rec["sigma"], rec["noise"]
    D0 = copy.deepcopy(init).requires_grad_(True)
    pred = D0(x0 + s.view(-1, 1, 1, 1) * n, s, rec["cond"])
    lam = (s**2 + 0.09) / (s * 0.3) ** 2
    (lam * ((pred - x0) ** 2).mean(dim=(1, 2, 3))).mean().backward()
    want = torch.cat([p.grad.flatten() for p in D0.parameters() if p.grad is not None])
    got = torch.cat([p.grad.flatten() for p, q in zip(model.parameters(), D0.parameters()) if q.grad is not None])
    assert ((got - want).norm() / want.norm()).item() < 1e-4
    # Adam's first step is lr_t * sign(g): lr_t = lr * (step + 1) / warmup = 2.5e-4
    moved = []
    for (name, p1), p0, q in zip(model.named_parameters(), init.parameters(), D0.parameters()):
        d = (p1 - p0).abs()
        assert d.max().item() <= 2.5e-4 * (1 + 1e-3), name
        if q.grad is not None:
            big = q.grad.abs() > 1e-6
            moved.append(d[big].flatten())
    moved = torch.cat(moved)
    assert torch.allclose(moved, torch.full_like(moved, 2.5e-4), rtol=1e-2)
    # EMA after step 0: decay min(0.999, (1 + 0) / (10 + 0)) = 0.1
    for (name, e), p0, p1 in zip(ema.named_parameters(), init.parameters(), model.parameters()):
        assert torch.allclose(e, 0.1 * p0 + 0.9 * p1, atol=1e-7), name


# -- schedule and samplers -----------------------------------------------------------------------
def test_karras_schedule_with_other_constants():
    got = edm.karras_sigmas(4, sigma_min=0.1, sigma_max=10.0, rho=3.0).double()
    a, b = 10.0 ** (1 / 3), 0.1 ** (1 / 3)
    want = [(a + i / 3 * (b - a)) ** 3 for i in range(4)] + [0.0]
    assert got.tolist() == pytest.approx(want, rel=1e-6)


def test_one_euler_step_is_its_formula():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 1, 2, 2, generator=g, dtype=torch.float64) * 5
    sig = torch.tensor([5.0, 1.5], dtype=torch.float64)
    cond = torch.tensor([1, 2, 0])
    D = Recorder()
    out = edm.sample_euler(D, x, sig, cond)
    assert len(D.calls) == 1
    xc, sc, cc = D.calls[0]
    assert torch.equal(xc, x) and sc.tolist() == [5.0] * 3 and torch.equal(cc, cond)
    d = (x - _toy_D(x, torch.full((3,), 5.0, dtype=torch.float64), cond)) / 5.0
    assert torch.allclose(out, x + (1.5 - 5.0) * d)


def test_heun_steps_are_algorithm_1():
    """sigmas [4, 1.2, 0]: a Heun step 4 -> 1.2 (Euler then the trapezoid at 1.2), then a plain
    Euler step 1.2 -> 0, which lands on D(x; 1.2)."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 1, 3, 3, generator=g, dtype=torch.float64) * 4
    sig = torch.tensor([4.0, 1.2, 0.0], dtype=torch.float64)
    cond = torch.tensor([2, 1])
    D = Recorder()
    out = edm.sample_heun(D, x, sig, cond)

    def Dh(v, s):
        return _toy_D(v, torch.full((2,), s, dtype=torch.float64), cond)

    d1 = (x - Dh(x, 4.0)) / 4.0
    x_e = x + (1.2 - 4.0) * d1
    d2 = (x_e - Dh(x_e, 1.2)) / 1.2
    x1 = x + (1.2 - 4.0) * (d1 + d2) / 2
    x2 = x1 + (0.0 - 1.2) * (x1 - Dh(x1, 1.2)) / 1.2
    assert [c[1][0].item() for c in D.calls] == [4.0, 1.2, 1.2]
    assert torch.allclose(D.calls[1][0], x_e) and torch.allclose(D.calls[2][0], x1)
    assert torch.allclose(out, x2) and torch.allclose(out, Dh(x1, 1.2))


class ToyModel(torch.nn.Module):
    """Just enough of an ImageDenoiser for generate(): class conditions, null label K, _toy_D."""

    cond_type = "class"
    num_classes = K

    def __init__(self):
        super().__init__()
        self.rec = Recorder()

    def encode_condition(self, cond, n, device="cpu"):
        return torch.as_tensor([int(c) for c in cond], dtype=torch.long)

    def null_condition(self, n, device="cpu"):
        return torch.full((n,), K, dtype=torch.long)

    def forward(self, x, sigma, cond=None):
        return self.rec(x, sigma, cond)


def _z(n, seed, shape):
    return runtime.randn_per_sample(shape, runtime.sample_seeds(seed, range(n)))


def test_teacher_sampling_uses_the_schedule_guidance_and_noise():
    """generate(): x starts at sigma_max z; three Euler steps on the Karras sigmas from 10 to 0.5 with
    rho 3, then 0; each evaluation is one batched call [c; null] combined as D_u + 2.5 (D_c - D_u)."""
    m = ToyModel()
    cfg = {"model": {"image_shape": [1, 2, 2]}}
    spec = smp.SampleSpec(n=3, seed=5, steps=3, sampler="euler", guidance=2.5, sigma_max=10.0, sigma_min=0.5, rho=3.0)
    out, facts = smp.generate(m, "teacher", cfg, spec, [0, 2, 1], torch.device("cpu"))
    assert facts["nfe"] == 3 and facts["guidance"] == 2.5
    a, b = 10.0 ** (1 / 3), 0.5 ** (1 / 3)
    sig = [(a + i / 2 * (b - a)) ** 3 for i in range(3)] + [0.0]
    c, null = torch.tensor([0, 2, 1]), torch.full((3,), K)
    x = _z(3, 5, (1, 2, 2)) * 10.0
    first = m.rec.calls[0]
    assert torch.allclose(first[0], torch.cat([x, x])) and torch.equal(first[2], torch.cat([c, null]))
    for s, s_next in zip(sig, sig[1:]):
        sv = torch.full((3,), s)
        d_c, d_u = _toy_D(x, sv, c), _toy_D(x, sv, null)
        x = x + (s_next - s) * (x - (d_u + 2.5 * (d_c - d_u))) / s
    assert [c[1][0].item() for c in m.rec.calls] == pytest.approx(sig[:3], rel=1e-6)
    assert torch.allclose(out, x, atol=1e-5)


def test_generator_sampling_is_one_call_at_sigma_init():
    m = ToyModel()
    cfg = {"model": {"image_shape": [1, 2, 2]}, "generator": {"sigma_init": 1.7}}
    out, facts = smp.generate(m, "generator", cfg, smp.SampleSpec(n=4, seed=3, batch_size=3), [1, 0, 2, 1],
                              torch.device("cpu"))
    assert facts["nfe"] == 1 and len(m.rec.calls) == 2  # batches of 3 + 1
    z = _z(4, 3, (1, 2, 2))
    c = torch.tensor([1, 0, 2, 1])
    assert torch.allclose(out, _toy_D(1.7 * z, torch.full((4,), 1.7), c), atol=1e-6)


class ToySD:
    """Just enough of SDComponents: a recorded denoiser, prompt 'embeddings', decode = 2 x."""

    latent_shape = (1, 2, 2)

    def __init__(self):
        self.rec = Recorder()

        class Den:
            sigma_min, sigma_max = 0.03, 14.6

            def __call__(den, x, sigma, cond):  # noqa: N805
                return self.rec(x, sigma, cond)

        self.denoiser = Den()

    def encode_prompts(self, prompts):
        return torch.tensor([float(len(p)) for p in prompts])

    def null_condition(self, n):
        return torch.zeros(n)

    def decode(self, latents):
        return 2 * latents


def test_stable_diffusion_sampling_wiring():
    comp = ToySD()
    prompts = ["a cat", "a red dog"]
    spec = smp.SampleSpec(n=2, seed=4, steps=2, sampler="euler", guidance=3.0, rho=7.0)
    out, facts = smp.generate_sd(comp, spec, prompts, torch.device("cpu"))
    assert facts == {"nfe": 2, "sampler": "euler", "steps": 2, "guidance": 3.0}
    a, b = 14.6 ** (1 / 7), 0.03 ** (1 / 7)
    sig = [a**7, b**7, 0.0]  # the EDM schedule over SD's own sigma range
    c, null = torch.tensor([5.0, 9.0]), torch.zeros(2)
    x = _z(2, 4, (1, 2, 2)) * sig[0]
    for s, s_next in zip(sig, sig[1:]):
        sv = torch.full((2,), s)
        d_c, d_u = _toy_D(x, sv, c), _toy_D(x, sv, null)
        x = x + (s_next - s) * (x - (d_u + 3.0 * (d_c - d_u))) / s
    assert torch.allclose(out, 2 * x, rtol=1e-4, atol=1e-4)
    comp = ToySD()
    out, facts = smp.generate_sd_onestep(comp, 2.5, smp.SampleSpec(n=2, seed=4), prompts, torch.device("cpu"))
    assert facts["nfe"] == 1 and len(comp.rec.calls) == 1
    z = _z(2, 4, (1, 2, 2))
    assert torch.allclose(out, 2 * _toy_D(2.5 * z, torch.full((2,), 2.5), c), atol=1e-5)


def test_edm_constants_are_the_defaults():
    """EDM Table 1 / Sec. 5 constants as gaml's defaults: P_mean -1.2, P_std 1.2, sigma_data 0.5,
    sigma in [0.002, 80], rho 7."""
    tc = tr.TrainConfig()
    assert (tc.p_mean, tc.p_std, tc.sigma_data) == (-1.2, 1.2, 0.5)
    assert edm.EDMPrecond().sigma_data == 0.5
    spec = smp.SampleSpec(n=1)
    assert (spec.sigma_min, spec.sigma_max, spec.rho) == (0.002, 80.0, 7.0)
    a, b = 80.0 ** (1 / 7), 0.002 ** (1 / 7)
    assert edm.karras_sigmas(3).double().tolist() == pytest.approx([80.0, ((a + b) / 2) ** 7, 0.002, 0.0], rel=1e-6)
    ls = edm.sample_sigma_train(20_000, generator=torch.Generator().manual_seed(0)).log()
    assert ls.mean().item() == pytest.approx(-1.2, abs=0.03) and ls.std().item() == pytest.approx(1.2, abs=0.03)


def test_sampling_bad_input_is_a_usage_error():
    from gaml_cli.core.errors import GamlError

    cfg = {"model": {"image_shape": [1, 2, 2]}}
    uncond = ToyModel()
    uncond.cond_type = "none"
    for call, needle in (
        (lambda: smp.generate(ToyModel(), "teacher", cfg, smp.SampleSpec(n=1, sampler="ddim"), [0], "cpu"),
         "--sampler must be one of"),
        (lambda: smp.generate(uncond, "teacher", cfg, smp.SampleSpec(n=1, guidance=2.0), None, "cpu"),
         "guidance needs a conditional model"),
        (lambda: smp.generate_sd(ToySD(), smp.SampleSpec(n=1, sampler="ddim"), ["a"], "cpu"), "--sampler must be"),
    ):
        with pytest.raises(GamlError) as e:
            call()
        assert e.value.exit_code == 2 and needle in e.value.one_line()


def test_text_teacher_training_pairs_images_with_their_captions(spied_train, tmp_path):
    """Caption data: each x0 row comes with the tokens of its own caption, or the empty caption's
    (the null condition) at rate p_uncond."""
    d = _data()
    caps = [f"a {c} {s} on a black background" for c, s in
            zip(["red", "green", "blue"] * 4, ["circle", "square", "triangle", "star"] * 3)]
    data = ImageData(images=d.images, cond_type="text", labels=None, captions=caps,
                     info={"dataset": None, "image_shape": [1, 8, 8]}, path=Path("<toy>"))
    tc = tr.TrainConfig(steps=1, batch_size=16, p_uncond=0.4, grad_clip=0.0, checkpoint_every=0,
                        unet=unet_config([8, 16], 1))
    tr.train_teacher(data, tc, tmp_path / "ck", torch.device("cpu"))
    [rec] = spied_train["loss"]
    model = spied_train["model"]
    tokens = model.text.tokenize(caps)
    empty = model.text.tokenize([""])[0]
    dropped = 0
    for x, c in zip(rec["x0"], rec["cond"]):
        r = int(round(float(x.mean()) * 12))
        if torch.equal(c, empty):
            dropped += 1
        else:
            assert torch.equal(c, tokens[r]), (r, c)
    assert 0 < dropped < 16
