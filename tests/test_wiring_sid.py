"""Wiring of the SiD / SFD training loop (methods/sid/train.py: distill), on a tiny random teacher.

The equations are tested by hand in test_sid_loss.py and test_sfd.py; here the question is
whether the loop feeds them the right things: every call of the teacher f_phi, the fake score
f_psi and the generator G is recorded (x, sigma, condition, output, whether x carries a
gradient) during real iterations of `distill`, and the tests check from those records

- which network gets which input and which condition at each step (the fake-score update sees
  G's detached sample with G's condition, nulls at rate p_uncond; the generator update calls
  teacher and fake score on the same x_t; SFD forget rows give the teacher c_s and the others c_f),
- that the losses the loop reports equal the paper's formulas written out here on the recorded
  outputs (kappa1/kappa2/kappa4, alpha, the EDM weight, lambda_f of the forget rows),
- that one step's gradients of G and f_psi equal autograd of those formulas applied to the same
  draws (so the gradient reaches G through x_t inside both score networks),
- the noise-level constants (P_mean/P_std, t_min/t_max, sigma_init) and the EMA constants.

Expected values are computed in this file, not with the helpers under test.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from gaml_cli.core.console import state  # noqa: E402
from gaml_cli.diffusion.models import ImageDenoiser, unet_config  # noqa: E402
from gaml_cli.methods.sfd.plan import build_plan  # noqa: E402
from gaml_cli.methods.sid.model import GamlTeacher  # noqa: E402
from gaml_cli.methods.sid.train import DistillConfig, distill  # noqa: E402

K = 3  # classes; label K is the null label
SHAPE = (1, 8, 8)
SD = 0.5  # sigma_data


class _Log(list):
    """The shared call record; deep copies of the networks keep writing into the same list."""

    def __deepcopy__(self, memo):
        return self


class Spy(torch.nn.Module):
    """A denoiser that records every call: role, x, whether x carries a gradient, sigma, cond, output."""

    def __init__(self, inner: torch.nn.Module, role: str, log: _Log):
        super().__init__()
        self.inner, self.role, self.log = inner, role, log
        self.num_classes, self.cond_type = inner.num_classes, inner.cond_type

    def encode_condition(self, cond, n, device="cpu"):
        return self.inner.encode_condition(cond, n, device)

    def null_condition(self, n, device="cpu"):
        return self.inner.null_condition(n, device)

    def forward(self, x, sigma, cond=None):
        out = self.inner(x, sigma, cond)
        self.log.append({"net": self, "role": self.role, "x": x.detach().clone(), "x_grad": x.requires_grad,
                         "grad_enabled": torch.is_grad_enabled(), "sigma": sigma.detach().clone(),
                         "cond": cond.detach().clone(), "out": out.detach().clone(),
                         "params": {n: p.detach().clone() for n, p in self.inner.named_parameters()}})
        return out


class TinyTeacher(GamlTeacher):
    """GamlTeacher's own draws, encodings, noise levels and weights around a tiny random class UNet."""

    def __init__(self, seed: int = 0):  # noqa: super().__init__ loads a file; set what it would set
        torch.manual_seed(seed)
        cfg = {"image_shape": list(SHAPE), "sigma_data": SD, "cond": {"type": "class", "num_classes": K},
               "unet": unet_config([8, 16], 1)}
        self.base = ImageDenoiser(cfg).eval().requires_grad_(False)
        self.log = _Log()
        self.net = Spy(copy.deepcopy(self.base), "phi", self.log)
        self.config = {"model": cfg}
        self.path = Path("<tiny>")
        self.device = torch.device("cpu")
        self.x_shape = SHAPE
        self.sigma_data = SD
        self.sigma_min, self.sigma_max = 0.002, 80.0
        self.cond_type = "class"
        self.prompts = None
        self.attributes = None
        self.copies = 0

    def trainable_copy(self):
        m = super().trainable_copy()  # the real one: a deep copy, trainable
        m.role = f"copy{self.copies}"
        self.copies += 1
        return m


def _run(tmp_path, dc: DistillConfig, plan_args=None, seed=0):
    state.quiet = True
    t = TinyTeacher(seed)
    plan = build_plan(t, *plan_args) if plan_args else None
    out = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
    out.mkdir()
    final, report, _ = distill(t, dc, out, torch.device("cpu"), plan=plan)
    return t, final, report


def _phases(t: TinyTeacher):
    """Split the record of one-micro-batch iterations into (fake-score phase, generator phase) per step.
    G is the network whose calls come first (it generates); each phase starts with one G call."""
    log = list(t.log)
    g_net = log[0]["net"]
    starts = [i for i, r in enumerate(log) if r["net"] is g_net] + [len(log)]
    phases = [log[a:b] for a, b in zip(starts, starts[1:])]
    return g_net, [(phases[i], phases[i + 1]) for i in range(0, len(phases), 2)]


def _by_role(phase, g_net):
    g = [r for r in phase if r["net"] is g_net]
    f = [r for r in phase if r["net"] is not g_net and r["role"] != "phi"]
    p = [r for r in phase if r["role"] == "phi"]
    return g, f, p


def _lam(s):
    """EDM's loss weight (sigma^2 + sigma_data^2) / (sigma sigma_data)^2, written out."""
    return (s**2 + SD**2) / (s * SD) ** 2


def _split_guided(rec, n, kappa):
    """(c, null, guided output) of a recorded call: with kappa != 1 the call is batched [c; null]."""
    if kappa == 1.0:
        assert len(rec["x"]) == n
        return rec["cond"], None, rec["out"]
    assert len(rec["x"]) == 2 * n
    assert torch.equal(rec["x"][:n], rec["x"][n:]) and torch.equal(rec["sigma"][:n], rec["sigma"][n:])
    d_c, d_u = rec["out"][:n], rec["out"][n:]
    return rec["cond"][:n], rec["cond"][n:], d_u + kappa * (d_c - d_u)


def _gen_loss_rows(x_g, y_real, y_fake, alpha):
    """SiD's generator loss per row, written out (PAPERS.md)."""
    w = (x_g - y_real).abs().flatten(1).mean(1).clamp_min(1e-5).view(-1, 1, 1, 1)
    d = y_real - y_fake
    return (d * ((y_real - x_g) - alpha * d) / w.detach()).flatten(1).sum(1)


def _sigma_of_t(t):
    a, b = 80.0 ** (1 / 7), 0.002 ** (1 / 7)
    return (a + (1 - t) * (b - a)) ** 7


# ------------------------------------------------------------------------------------------------
def test_each_network_gets_its_inputs_and_conditions(tmp_path):
    """One iteration, no guidance: G -> f_psi (fake-score update), then G -> f_psi and f_phi."""
    dc = DistillConfig(steps=2, batch_size=16, lr=1e-3, lr_fake=1e-3, sigma_init=2.0, p_mean=0.7, p_std=0.05,
                       t_min=300, t_max=320, checkpoint_every=0, ema_halflife_kimg=0)
    t, final, _ = _run(tmp_path, dc)
    g_net, steps = _phases(t)
    assert len(steps) == 2
    assert final is g_net  # the network that generated is the one returned (EMA off)
    for fake, gen in steps:
        # -- fake-score update: G samples without gradient, f_psi sees that sample, detached, noised
        g, f, p = _by_role(fake, g_net)
        assert len(g) == 1 and len(f) == 1 and not p
        g, f = g[0], f[0]
        assert not g["grad_enabled"] and not f["x_grad"]
        assert torch.all(g["sigma"] == 2.0)  # G(sigma_init z; sigma_init, c)
        assert 0.8 < (g["x"] / 2.0).std().item() < 1.2
        assert torch.equal(f["cond"], g["cond"])  # the condition G generated with
        assert ((0 <= f["cond"]) & (f["cond"] < K)).all()  # p_uncond 0: no null labels
        s = f["sigma"].view(-1, 1, 1, 1)
        assert ((s.log() - 0.7).abs() < 0.3).all()  # ln sigma ~ N(P_mean 0.7, P_std 0.05^2)
        n = (f["x"] - g["out"]) / s  # x_t = x_g + sigma n with n ~ N(0, I)
        assert 0.8 < n.std().item() < 1.2 and abs(n.mean().item()) < 0.2
        # -- generator update: fresh draws; teacher and fake score on the same x_t, with gradient
        g, f, p = _by_role(gen, g_net)
        assert len(g) == 1 and len(f) == 1 and len(p) == 1
        g, f, p = g[0], f[0], p[0]
        assert g["grad_enabled"] and f["x_grad"] and p["x_grad"]
        assert f["net"] is not g_net and p["net"] is t.net
        assert torch.all(g["sigma"] == 2.0)
        assert torch.equal(f["x"], p["x"]) and torch.equal(f["sigma"], p["sigma"])
        assert torch.equal(f["cond"], g["cond"]) and torch.equal(p["cond"], g["cond"])
        lo, hi = _sigma_of_t(0.300), _sigma_of_t(0.320)  # t ~ U[t_min, t_max] / 1000
        assert ((f["sigma"] >= lo * (1 - 1e-5)) & (f["sigma"] <= hi * (1 + 1e-5))).all()
        n = (f["x"] - g["out"]) / f["sigma"].view(-1, 1, 1, 1)
        assert 0.8 < n.std().item() < 1.2
        assert not torch.equal(g["x"], fake[0]["x"])  # a fresh z
    # the teacher stays frozen: same weights as built, no gradients
    for (n1, a), (_, b) in zip(t.base.named_parameters(), t.net.inner.named_parameters()):
        assert torch.equal(a, b) and b.grad is None, n1


@pytest.mark.parametrize("kappas", [(1.7, 1.3, 2.5), (1.0, 1.0, 1.0)])
def test_reported_losses_are_the_formulas_on_the_recorded_outputs(tmp_path, kappas):
    """loss_fake = mean_b lambda(sigma) ||f_psi^kappa1(x_t, c) - x_g||^2 and
    loss_g = mean_b SiD(x_g, f_phi^kappa4(x_t, c), f_psi^kappa2(x_t, c); alpha), computed here
    from the recorded network outputs; guidance f^k = f(null) + k (f(c) - f(null))."""
    k1, k2, k4 = kappas
    B = 8
    dc = DistillConfig(steps=1, batch_size=B, lr=1e-3, lr_fake=1e-2, alpha=1.1, kappa1=k1, kappa2=k2, kappa4=k4,
                       p_uncond=0.5, checkpoint_every=0, ema_halflife_kimg=0)
    t, _, report = _run(tmp_path, dc)
    g_net, [(fake, gen)] = _phases(t)
    g, f, _ = _by_role(fake, g_net)
    c, null, y = _split_guided(f[0], B, k1)
    if null is not None:
        assert (null == K).all()
    x_g = g[0]["out"]
    assert torch.equal(c, g[0]["cond"])  # a dropped label is dropped for G's sample too
    dropped = (c == K).sum().item()
    assert 0 < dropped < B  # p_uncond 0.5 reaches the fake-score update
    s = f[0]["sigma"][:B]
    expected_f = (_lam(s) * ((y - x_g) ** 2).flatten(1).sum(1)).sum() / B
    assert report["loss_fake"] == pytest.approx(expected_f.item(), rel=1e-5)

    g, f, p = _by_role(gen, g_net)
    assert not (g[0]["cond"] == K).any()  # no condition dropout in the generator update
    cf, nf, y_fake = _split_guided(f[0], B, k2)
    cp, np_, y_real = _split_guided(p[0], B, k4)
    expected_g = _gen_loss_rows(g[0]["out"], y_real, y_fake, 1.1).sum() / B
    assert abs(expected_g.item()) > 1e-4  # the fake score moved: a loss that can be wrong
    assert report["loss_g"] == pytest.approx(expected_g.item(), rel=1e-5)


def _guided(net, x, s, c, kappa):
    """f^kappa(x; c) with separate conditional and null calls (the loop batches them)."""
    if kappa == 1.0:
        return net(x, s, c)
    d_u = net(x, s, torch.full_like(c, K))
    return d_u + kappa * (net(x, s, c) - d_u)


def _grads(module):
    return torch.cat([p.grad.flatten() if p.grad is not None else torch.zeros(p.numel())
                      for p in module.parameters()])


def _rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def test_one_step_gradients_equal_autograd_of_the_losses(tmp_path):
    """G's gradient after one iteration equals autograd of the SiD loss applied here to the same
    draws (z, c, sigma, noise recovered from the record), with x_t = x_g + sigma n inside both score
    networks; detaching x_t in either network gives a clearly different gradient. f_psi's gradient
    equals autograd of its weighted denoising loss on G's sample."""
    B, k1, k2, k4, alpha = 8, 1.5, 1.3, 2.0, 1.2
    dc = DistillConfig(steps=1, batch_size=B, lr=1e-3, lr_fake=1e-2, alpha=alpha, kappa1=k1, kappa2=k2, kappa4=k4,
                       checkpoint_every=0, ema_halflife_kimg=0)
    t, G, _ = _run(tmp_path, dc)
    g_net, [(fake, gen)] = _phases(t)
    g, f, p = _by_role(gen, g_net)
    g, f, p = g[0], f[0], p[0]
    f_psi = f["net"]
    c, s = g["cond"], f["sigma"][:B]
    x_t_rec = f["x"][:B]

    def generator_grad(detach_fake=False, detach_real=False):
        G0 = copy.deepcopy(t.base).requires_grad_(True)  # G before its step: the teacher's weights
        x_g = G0(g["x"], g["sigma"], c)
        assert torch.allclose(x_g, g["out"], atol=1e-6)
        x_t = x_g + (x_t_rec - x_g.detach())  # = x_g + sigma n, the recorded draw
        y_fake = _guided(f_psi.inner, x_t.detach() if detach_fake else x_t, s, c, k2)
        y_real = _guided(t.base, x_t.detach() if detach_real else x_t, s, c, k4)
        (_gen_loss_rows(x_g, y_real, y_fake, alpha).sum() / B).backward()
        return _grads(G0)

    got = _grads(G.inner)
    want = generator_grad()
    assert want.norm() > 0
    assert _rel(got, want) < 1e-3
    assert _rel(generator_grad(detach_fake=True), want) > 0.05
    assert _rel(generator_grad(detach_real=True), want) > 0.05

    # fake score: autograd of mean_b lambda(sigma) ||f_psi^kappa1(x_t) - x_g||^2 at its initial weights
    g0, f0, _ = _by_role(fake, g_net)
    F0 = copy.deepcopy(t.base).requires_grad_(True)
    cf, sf, xf = f0[0]["cond"][:B], f0[0]["sigma"][:B], f0[0]["x"][:B]
    y = _guided(F0, xf, sf, cf, k1)
    (_lam(sf).view(-1, 1, 1, 1) * (y - g0[0]["out"]) ** 2).flatten(1).sum(1).sum().div(B).backward()
    assert _rel(_grads(f_psi.inner), _grads(F0)) < 1e-3


@pytest.mark.parametrize("micro", [0, 4])
def test_sfd_conditions_and_forget_weight(tmp_path, micro):
    """Forget 0 -> 1 with lambda_f 0.3: forget rows give G and f_psi c_f = 0 and the teacher c_s = 1;
    retained rows give all three the same retained label. Both reported losses and G's gradient are
    mean_retained + 0.3 mean_forget of the per-row formulas, also across micro-batches."""
    B, lam_f, alpha = 8, 0.3, 1.2
    dc = DistillConfig(steps=1, batch_size=B, micro_batch=micro, lr=1e-3, lr_fake=1e-2, alpha=alpha, kappa2=1.5,
                       p_uncond=0.5, checkpoint_every=0, ema_halflife_kimg=0)
    t, G, report = _run(tmp_path, dc, plan_args=(["0"], ["1"], None, lam_f, 0.5))
    log = list(t.log)
    g_net = log[0]["net"]
    gen_calls = [i for i, r in enumerate(log) if r["net"] is g_net]
    passes = B // (micro or B)
    assert len(gen_calls) == 2 * passes
    fake_phase = log[:gen_calls[passes]]
    gen_phase = log[gen_calls[passes]:]
    m = micro or B
    forget = torch.arange(m) >= m // 2  # share 0.5: the last half of each micro-batch

    loss_f = 0.0
    n_rem = n_fgt = B // 2
    for i in range(passes):
        g, f = fake_phase[2 * i], fake_phase[2 * i + 1]
        assert g["net"] is g_net and f["net"] is not g_net and f["role"] != "phi"
        assert torch.equal(f["cond"], g["cond"])
        assert (g["cond"][forget] == 0).all()  # forget rows keep c_f, never dropped
        kept = g["cond"][~forget]
        assert not (kept == 0).any()
        per = (_lam(f["sigma"]).view(-1, 1, 1, 1) * (f["out"] - g["out"]) ** 2).flatten(1).sum(1)
        loss_f += per[~forget].sum() / n_rem + lam_f * per[forget].sum() / n_fgt
    assert report["loss_fake"] == pytest.approx(float(loss_f), rel=1e-5)

    G0 = copy.deepcopy(t.base).requires_grad_(True)
    loss_g = 0.0
    null_seen = False
    for i in range(passes):
        g, f, p = _by_role(gen_phase[3 * i:3 * i + 3], g_net)
        g, f, p = g[0], f[0], p[0]
        c = g["cond"]
        assert (c[forget] == 0).all() and not ((c[~forget] == 0) | (c[~forget] == K)).any()
        cf, _, y_fake = _split_guided(f, m, 1.5)
        assert torch.equal(cf, c)  # f_psi gets c_f on forget rows
        assert (p["cond"][forget] == 1).all()  # the teacher gets the override c_s
        assert torch.equal(p["cond"][~forget], c[~forget])
        assert torch.equal(p["x"], f["x"][:m])
        null_seen |= bool((fake_phase[2 * i]["cond"] == K).any())
        x_g = G0(g["x"], g["sigma"], c)
        x_t = x_g + (p["x"] - x_g.detach())
        y_fake = _guided(f["net"].inner, x_t, p["sigma"], c, 1.5)
        y_real = t.base(x_t, p["sigma"], p["cond"])
        per = _gen_loss_rows(x_g, y_real, y_fake, alpha)
        loss_g = loss_g + per[~forget].sum() / n_rem + lam_f * per[forget].sum() / n_fgt
    assert null_seen  # p_uncond reached the retained rows
    assert report["loss_g"] == pytest.approx(float(loss_g.detach()), rel=1e-5)
    loss_g.backward()
    assert _rel(_grads(G.inner), _grads(G0)) < 1e-3


@pytest.mark.parametrize("halflife_kimg, rampup", [(25.0, 0.25), (0.016, 0.0)])
def test_ema_constants(tmp_path, halflife_kimg, rampup):
    """After iteration k (k images = k * batch): half = min(halflife, k batch * rampup) images,
    beta = 0.5^(batch / half), ema <- beta ema + (1 - beta) G."""
    B = 8
    dc = DistillConfig(steps=2, batch_size=B, lr=1e-2, lr_fake=1e-2, checkpoint_every=0,
                       ema_halflife_kimg=halflife_kimg, ema_rampup=rampup)
    t, ema, _ = _run(tmp_path, dc)
    g_net, steps = _phases(t)
    assert ema is not g_net
    G1 = steps[1][0][0]["params"]  # G's weights when iteration 2 began
    G2 = dict(g_net.inner.named_parameters())
    ema_want = {}
    for k, G0v in t.base.named_parameters():
        e = G0v
        for done, Gk in ((B, G1[k]), (2 * B, G2[k].detach())):
            half = halflife_kimg * 1000 if not rampup else min(halflife_kimg * 1000, done * rampup)
            beta = 0.5 ** (B / half)
            e = beta * e + (1 - beta) * Gk
        ema_want[k] = e
    moved = 0
    for k, v in ema.inner.named_parameters():
        assert torch.allclose(v, ema_want[k], atol=1e-7, rtol=1e-5), k
        moved += int(not torch.allclose(v, G2[k], atol=1e-6))
    assert moved  # the EMA is not G itself


# ------------------------------------------------------------------------------------------------
def _sd_sigma(t: int) -> float:
    """sigma_t of SD's scaled-linear DDPM schedule (beta 0.00085..0.012, 1000 steps), written out."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    abar = torch.cumprod(1 - betas, 0)[t]
    return float(((1 - abar) / abar).sqrt())


def test_stable_diffusion_teacher_wiring(tmp_path, monkeypatch):
    """SiD-LSG on a tiny SD pipeline: G at t_init 625; both losses at DDPM sigmas of t in
    [t_min, t_max); guidance against the empty prompt; the fake score's unweighted epsilon loss
    (weight 1 / sigma^2 on x0); reported losses = the formulas on the recorded outputs."""
    from sd_tiny import build_tiny_sd

    from gaml_cli.diffusion.sd import VPEpsDenoiser
    from gaml_cli.methods.sid.model import SDTeacher

    state.quiet = True
    pipe = build_tiny_sd(tmp_path / "sd")
    prompts = ["a photo of a cat", "a red dog", "a house"]
    t = SDTeacher(str(pipe), torch.device("cpu"), prompts)
    log = []
    orig = VPEpsDenoiser.forward

    def spy(self, x, sigma, cond):
        out = orig(self, x, sigma, cond)
        log.append({"net": self, "x": x.detach().clone(), "x_grad": x.requires_grad, "sigma": sigma.detach().clone(),
                    "cond": cond.detach().clone(), "out": out.detach().clone()})
        return out

    monkeypatch.setattr(VPEpsDenoiser, "forward", spy)
    B, k1, k2, k4 = 4, 2.0, 1.5, 3.0
    assert t.default_sigma_init == pytest.approx(_sd_sigma(625), rel=1e-5)
    dc = DistillConfig(steps=1, batch_size=B, lr=1e-3, lr_fake=1e-2, alpha=1.0, sigma_init=t.default_sigma_init,
                       kappa1=k1, kappa2=k2, kappa4=k4, t_min=100, t_max=110, checkpoint_every=0, ema_halflife_kimg=0)
    (tmp_path / "run").mkdir()
    G, report, _ = distill(t, dc, tmp_path / "run", torch.device("cpu"))
    assert [r["net"] is G for r in log] == [True, False, True, False, False]
    g0, f0, g1 = log[0], log[1], log[2]
    f1, p1 = (log[3], log[4]) if log[4]["net"] is t.net else (log[4], log[3])
    assert p1["net"] is t.net and f1["net"] is f0["net"] is not t.net
    allowed = torch.tensor([_sd_sigma(i) for i in range(100, 110)])
    empty = t.comp.encode_prompts([""])[0]
    each = {p: t.comp.encode_prompts([p])[0] for p in prompts}
    for g in (g0, g1):
        assert torch.allclose(g["sigma"], torch.full((B,), _sd_sigma(625)), rtol=1e-5)
        assert all(any(torch.allclose(c, e, atol=1e-5) for e in each.values()) for c in g["cond"])
    for f in (f0, f1, p1):
        assert len(f["x"]) == 2 * B
        assert all(torch.allclose(c, empty, atol=1e-5) for c in f["cond"][B:])  # null = the "" prompt
        assert all(((s - allowed).abs() < 1e-4 * allowed).any() for s in f["sigma"][:B])
    assert torch.allclose(f0["cond"][:B], g0["cond"]) and torch.allclose(f1["cond"][:B], g1["cond"])
    assert torch.allclose(p1["cond"][:B], g1["cond"])
    assert not f0["x_grad"] and f1["x_grad"] and p1["x_grad"] and torch.equal(f1["x"], p1["x"])

    _, _, y = _split_guided(f0, B, k1)
    s = f0["sigma"][:B].view(-1, 1, 1, 1)
    expected_f = ((y - g0["out"]) ** 2 / s**2).flatten(1).sum(1).sum() / B
    assert report["loss_fake"] == pytest.approx(expected_f.item(), rel=1e-5)
    _, _, y_fake = _split_guided(f1, B, k2)
    _, _, y_real = _split_guided(p1, B, k4)
    expected_g = _gen_loss_rows(g1["out"], y_real, y_fake, 1.0).sum() / B
    assert report["loss_g"] == pytest.approx(expected_g.item(), rel=1e-5)


def test_the_papers_constants_are_the_defaults():
    """SiD's constants (PAPERS.md) as the loop's defaults, and the shipped gaml teacher's noise levels
    under them: ln sigma ~ N(-1.2, 1.2^2) for the fake score, sigma(t), t ~ U[0, 0.8], for G."""
    from gaml_cli.core import hub
    from gaml_cli.methods.sid.model import SDTeacher, load_teacher

    dc = DistillConfig()
    assert (dc.alpha, dc.sigma_init, dc.t_min, dc.t_max, dc.p_mean, dc.p_std) == (1.2, 2.5, 0, 800, -1.2, 1.2)
    assert dc.betas == (0.0, 0.999) and (dc.kappa1, dc.kappa2, dc.kappa4, dc.p_uncond) == (1.0, 1.0, 1.0, 0.0)
    assert GamlTeacher.default_sigma_init == 2.5 and GamlTeacher.default_t_range == (0, 800)
    assert SDTeacher.default_t_range == (20, 980) and SDTeacher.INIT_TIMESTEP == 625
    t = load_teacher(str(hub.resolve("digits")), torch.device("cpu"), None)
    assert (t.sigma_min, t.sigma_max, t.sigma_data) == (0.002, 80.0, 0.5)
    gen = torch.Generator().manual_seed(0)
    ls = t.fake_sigma(20_000, gen, dc).log()
    assert ls.mean().item() == pytest.approx(-1.2, abs=0.03) and ls.std().item() == pytest.approx(1.2, abs=0.03)
    s = t.gen_sigma(20_000, gen, dc)
    assert s.min().item() >= 0.002 * (1 - 1e-5) and s.max().item() <= _sigma_of_t(0.8) * (1 + 1e-5)
    assert s.max().item() > 0.95 * _sigma_of_t(0.8) and s.min().item() < 0.01
    # t uniform on [0, 0.8]: the median sigma is sigma(0.4)
    assert s.median().item() == pytest.approx(_sigma_of_t(0.4), rel=0.05)
    assert t.fake_weight(torch.tensor([2.0])).item() == pytest.approx((4 + 0.25) / 1.0)


def test_bad_input_in_the_method_layer_is_a_usage_or_input_error(tmp_path):
    """Each of these reaches the user as one line and exit code 2 (not 1, not a traceback)."""
    from gaml_cli.core.artifacts import save_artifact
    from gaml_cli.core.errors import GamlError
    from gaml_cli.methods.sid.model import SDTeacher, load_teacher, load_trainable
    from gaml_cli.methods.sid.train import check_evaluable

    state.quiet = True
    images = save_artifact(tmp_path / "x.safetensors", {"images": torch.zeros(2, 1, 8, 8).numpy()}, kind="images",
                           config={})
    (tmp_path / "empty").mkdir()
    (tmp_path / "run").mkdir()
    cases = [
        (lambda: distill(TinyTeacher(), DistillConfig(steps=1, batch_size=8, micro_batch=3), tmp_path / "run",
                         torch.device("cpu")), "must divide the per-process batch 8"),
        (lambda: check_evaluable(TinyTeacher()), "digits or shapes"),
        (lambda: load_trainable(torch.nn.Linear(2, 2), {"nope": torch.zeros(1)}), "does not fit"),
        (lambda: SDTeacher("whatever", torch.device("cpu"), None), "needs --prompts"),
        (lambda: load_teacher(str(images), torch.device("cpu"), None), "is a 'images' artifact"),
        (lambda: load_teacher(str(tmp_path / "empty"), torch.device("cpu"), None), "neither a diffusers pipeline"),
        (lambda: build_plan(TinyTeacher(), ["0"], ["1"], None, 0.01, 1.0), "strictly between"),
        (lambda: build_plan(TinyTeacher(), ["2"], ["2"], None, 0.01, 0.5), "same class on both sides"),
        (lambda: build_plan(TinyTeacher(), ["3"], ["1"], None, 0.01, 0.5), "classes 0..2"),
    ]
    for call, needle in cases:
        with pytest.raises(GamlError) as e:
            call()
        assert e.value.exit_code == 2 and needle in e.value.one_line(), (needle, e.value)
    assert not list((tmp_path / "run").iterdir())  # the refused run wrote nothing


def test_micro_batches_add_up_to_the_batch_mean(tmp_path):
    """Two micro-batches of 4 in a batch of 8: each network's loss (and G's gradient) is the sum of
    the per-row losses over both passes divided by 8, not by 4."""
    B, alpha = 8, 1.2
    dc = DistillConfig(steps=1, batch_size=B, micro_batch=4, lr=1e-3, lr_fake=1e-2, alpha=alpha, checkpoint_every=0,
                       ema_halflife_kimg=0)
    t, G, report = _run(tmp_path, dc)
    log = list(t.log)
    g_net = log[0]["net"]
    assert [r["net"] is g_net for r in log][:4] == [True, False, True, False]
    fake, gen = log[:4], log[4:]
    loss_f = sum((_lam(f["sigma"]).view(-1, 1, 1, 1) * (f["out"] - g["out"]) ** 2).flatten(1).sum(1).sum()
                 for g, f in (fake[0:2], fake[2:4])) / B
    assert report["loss_fake"] == pytest.approx(float(loss_f), rel=1e-5)
    G0 = copy.deepcopy(t.base).requires_grad_(True)
    loss_g = 0.0
    for i in range(2):
        g, f, p = _by_role(gen[3 * i:3 * i + 3], g_net)
        x_g = G0(g[0]["x"], g[0]["sigma"], g[0]["cond"])
        x_t = x_g + (p[0]["x"] - x_g.detach())
        y_fake = f[0]["net"].inner(x_t, p[0]["sigma"], g[0]["cond"])
        y_real = t.base(x_t, p[0]["sigma"], g[0]["cond"])
        loss_g = loss_g + _gen_loss_rows(x_g, y_real, y_fake, alpha).sum() / B
    assert report["loss_g"] == pytest.approx(float(loss_g.detach()), rel=1e-5)
    loss_g.backward()
    assert _rel(_grads(G.inner), _grads(G0)) < 1e-3
