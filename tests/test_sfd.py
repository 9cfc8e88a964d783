"""gaml unlearn (Score Forgetting Distillation) and gaml eval forget: loss by hand, plans, CLI."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from gaml_cli.core.artifacts import read_header  # noqa: E402
from gaml_cli.methods.sfd.loss import remain_forget_sum  # noqa: E402
from gaml_cli.methods.sfd.plan import ForgetPlan, build_plan, concept_prompts  # noqa: E402
from gaml_cli.methods.sid.loss import sid_generator_loss  # noqa: E402

TINY = ["--steps", "2", "--batch-size", "8", "--device", "cpu", "-q"]


def test_remain_forget_weighting_by_hand():
    per = torch.tensor([1.0, 2.0, 3.0, 4.0])
    f = torch.tensor([False, False, True, True])
    # (1 + 2) / 2 + 0.1 (3 + 4) / 2
    assert remain_forget_sum(per, f, 2, 2, 0.1).item() == pytest.approx(1.85)
    # micro-batches add up: rows of a batch of 8 split in two passes
    assert remain_forget_sum(per, f, 4, 4, 0.1).item() * 2 == pytest.approx(1.5 + 0.35)
    # no forget rows: exactly SiD's batch mean
    none = torch.zeros(4, dtype=torch.bool)
    assert torch.equal(remain_forget_sum(per, none, 4, 0, 0.5), per.sum() / 4)


def test_forget_term_by_hand():
    """One pixel: x_g = 0.5, teacher at the override f_phi(x_t, c_s) = 1.0, fake score at the
    forget condition f_psi(x_t, c_f) = 0.25, alpha 1.2:
    w = |0.5 - 1.0| = 0.5, d = 0.75, L = 0.75 ((1.0 - 0.5) - 1.2 * 0.75) / 0.5 = -0.6."""
    x_g, phi_s, psi_f = (torch.tensor([[[[v]]]]) for v in (0.5, 1.0, 0.25))
    per = sid_generator_loss(x_g, phi_s, psi_f, alpha=1.2)
    assert per.item() == pytest.approx(-0.6)
    # its gradient in x_g (score outputs held fixed, w without gradient) is -(f_phi(c_s) - f_psi(c_f)) / w
    # = -0.75 / 0.5: gradient descent moves G's answer to c_f towards the teacher's answer to c_s
    x = x_g.clone().requires_grad_(True)
    sid_generator_loss(x, phi_s, psi_f, alpha=1.2).sum().backward()
    assert x.grad.item() == pytest.approx(-1.5)


class _ClassTeacher:
    """Just enough of a class-conditional teacher for plans."""

    cond_type = "class"
    prompts = None

    class net:  # noqa: N801
        num_classes = 10

    def draw_conditions(self, n, gen):
        return torch.randint(10, (n,), generator=gen).tolist()


def test_class_plan_draws_retained_and_forget_rows():
    plan = build_plan(_ClassTeacher(), ["0", "7"], ["1", "2"], None, 0.01, 0.5)
    gen = torch.Generator().manual_seed(0)
    assert plan.counts(8) == (4, 4) and plan.counts(3) == (1, 2) and plan.counts(1) == (1, 0)
    kept = plan.draw_retained(_ClassTeacher(), 400, gen)
    assert set(kept) == {1, 2, 3, 4, 5, 6, 8, 9}
    f, s = plan.draw_forget(_ClassTeacher(), 400, gen)
    assert set(zip(f, s)) == {(0, 1), (7, 2)}


def test_attribute_plan_on_the_shipped_shapes_teacher():
    from gaml_cli.core import hub
    from gaml_cli.methods.sid.model import load_teacher

    t = load_teacher(str(hub.resolve("shapes")), torch.device("cpu"), None)
    plan = build_plan(t, ["color=red"], ["color=blue"], None, 0.01, 0.25)
    gen = torch.Generator().manual_seed(0)
    f, s = plan.draw_forget(t, 200, gen)
    for a, b in zip(f, s):
        assert a.startswith("a red ") and b == a.replace("a red ", "a blue ", 1)
        assert not a.endswith("blue background") and not a.endswith("red background")
    kept = plan.draw_retained(t, 200, gen)
    assert len(kept) == 200 and not any(k.startswith("a red ") for k in kept)
    assert any(k.endswith("red background") for k in kept)  # only the shape's colour is forgotten
    bg = build_plan(t, ["background=white"], ["background=black"], None, 0.01, 0.5)
    f, s = bg.draw_forget(t, 100, gen)
    assert all(a.endswith("on a white background") and b.endswith("on a black background") for a, b in zip(f, s))
    assert not any(a.startswith(("a white ", "a black ")) for a in f)


def test_prompt_plan_replaces_or_appends_the_concept():
    assert concept_prompts("a photo of Brad Pitt smiling", "brad pitt", "a middle aged man") == \
        ("a photo of Brad Pitt smiling", "a photo of a middle aged man smiling")
    assert concept_prompts("a woman on a beach", "nudity", "") == ("a woman on a beach, nudity", "a woman on a beach")
    assert concept_prompts("a cat", "dog", "fox") == ("a cat, dog", "a cat, fox")

    class T:
        cond_type = "text"
        prompts = ["a photo of brad pitt", "a cat", "a dog"]

    plan = build_plan(T(), ["Brad Pitt"], ["a man"], None, 1.0, 0.5)
    assert plan.retained == ["a cat", "a dog"]
    f, s = plan.draw_forget(T(), 50, torch.Generator().manual_seed(1))
    assert all(a.lower().count("brad pitt") == 1 and "brad pitt" not in b.lower() for a, b in zip(f, s))


def test_no_forget_pairs_is_exactly_distill(tmp_path):
    """The loop with an empty plan (every row retained) takes the same steps as gaml distill."""
    from gaml_cli.core import hub
    from gaml_cli.methods.sid.model import load_teacher
    from gaml_cli.methods.sid.train import DistillConfig, distill

    from gaml_cli.core.console import state

    state.quiet = True
    dev = torch.device("cpu")
    dc = DistillConfig(steps=2, batch_size=8, checkpoint_every=0, ema_halflife_kimg=0)
    for d in "abc":
        (tmp_path / d).mkdir()
    t = load_teacher(str(hub.resolve("digits")), dev, None)
    g1, _, _ = distill(t, dc, tmp_path / "a", dev)
    t = load_teacher(str(hub.resolve("digits")), dev, None)
    g2, _, _ = distill(t, dc, tmp_path / "b", dev, plan=ForgetPlan("none"))
    for (n, a), (_, b) in zip(g1.state_dict().items(), g2.state_dict().items()):
        assert torch.equal(a, b), n
    # and a real plan changes the result
    t = load_teacher(str(hub.resolve("digits")), dev, None)
    g3, _, _ = distill(t, dc, tmp_path / "c", dev, plan=build_plan(t, ["0"], ["1"], None, 0.5, 0.5))
    assert any(not torch.equal(a, b) for a, b in zip(g1.state_dict().values(), g3.state_dict().values()))


def test_teacher_is_asked_about_the_override_on_forget_rows(tmp_path, monkeypatch):
    """Forget rows: G and the fake score get c_f = 0, the frozen teacher gets c_s = 1."""
    from gaml_cli.core import hub
    from gaml_cli.core.console import state
    from gaml_cli.methods.sid.model import load_teacher
    from gaml_cli.methods.sid.train import DistillConfig, distill

    state.quiet = True
    dev = torch.device("cpu")
    t = load_teacher(str(hub.resolve("digits")), dev, None)
    seen = {"teacher": [], "other": []}
    teacher_net = t.net
    orig = type(teacher_net).forward

    def spy(self, x, sigma, c=None, *a, **k):
        if c is not None:
            seen["teacher" if self is teacher_net else "other"].append(c.detach().clone())
        return orig(self, x, sigma, c, *a, **k)

    monkeypatch.setattr(type(teacher_net), "forward", spy)
    plan = build_plan(t, ["0"], ["1"], None, 0.01, 0.5)
    (tmp_path / "r").mkdir()
    distill(t, DistillConfig(steps=1, batch_size=8, checkpoint_every=0), tmp_path / "r", dev, plan=plan)
    teacher_c = torch.cat(seen["teacher"])
    other_c = torch.cat(seen["other"])
    assert 0 not in teacher_c.tolist() and 1 in teacher_c.tolist()
    assert 0 in other_c.tolist()


def test_unlearn_digits_then_eval_forget_then_sample(gaml, tmp_path):
    run = tmp_path / "run"
    res = gaml("unlearn", "--teacher", "digits", "--forget", "0", "--into", "1", "--out", run, *TINY, "-f", "json")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    assert out["forget"] == [[0, 1]] and out["forget_weight"] == 0.01
    info = read_header(run / "generator.safetensors")
    assert info.kind == "generator" and info.config["distill"]["forget"]["pairs"] == [[0, 1]]
    assert info.config["distill"]["method"].startswith("SFD")
    res = gaml("eval", "forget", "--model", run, "-n", "20", "--device", "cpu", "-f", "json")
    assert res.code == 0, res.err
    ev = json.loads(res.out)
    assert {"forgotten_recognised", "into_rate", "retained_accuracy", "retained_fd"} <= set(ev)
    assert ev["pairs"] == [{"forget": 0, "into": 1, "recognised": ev["forgotten_recognised"], "into_rate": ev["into_rate"]}]
    # the teacher for comparison: it still draws zeros when asked for 0
    res = gaml("eval", "forget", "--model", "digits", "--forget", "0", "--into", "1", "-n", "20", "--steps", "4",
               "--device", "cpu", "-f", "json", "-q")
    assert res.code == 0, res.err
    assert json.loads(res.out)["forgotten_recognised"] >= 0.8
    res = gaml("sample", "--model", run, "-n", "4", "--class", "0", "--out", tmp_path / "s.safetensors", "-q")
    assert res.code == 0, res.err
    # resuming with other pairs is refused
    res = gaml("unlearn", "--teacher", "digits", "--forget", "2", "--into", "1", "--out", run, *TINY, "--resume",
               "--steps", "3")
    assert res.code == 2 and "another teacher or settings" in res.err


def test_unlearn_pairs_file(gaml, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"forget": "3", "into": "8"}\n{"forget": 5}\n')
    res = gaml("unlearn", "--teacher", "digits", "--pairs", pairs, "--out", tmp_path / "r", *TINY)
    assert res.code == 2 and len(res.err_lines) == 1 and "line 2" in res.err
    assert not (tmp_path / "r").exists()
    pairs.write_text('{"forget": "3", "into": "8"}\n')
    res = gaml("unlearn", "--teacher", "digits", "--pairs", pairs, "--out", tmp_path / "r", *TINY, "-f", "json")
    assert res.code == 0, res.err
    assert json.loads(res.out)["forget"] == [[3, 8]]


@pytest.mark.parametrize("args, needle", [
    (["--forget", "0"], "one --into for each --forget"),
    (["--forget", "12", "--into", "1"], "classes 0..9"),
    (["--forget", "3", "--into", "3"], "same class on both sides"),
    (["--forget", "1", "--into", "2", "--forget", "2", "--into", "3"], "itself forgotten"),
    (["--forget", "red", "--into", "1"], "class number"),
    ([], "nothing to forget"),
    (["--forget", "0", "--into", "1", "--forget-share", "1"], "strictly between"),
])
def test_unlearn_bad_input_is_one_line_exit_2(gaml, tmp_path, args, needle):
    out = tmp_path / "run"
    res = gaml("unlearn", "--teacher", "digits", "--out", out, *args, *TINY)
    assert res.code == 2, res.err
    assert len(res.err_lines) == 1 and needle in res.err, res.err
    assert not out.exists()


def test_unlearn_shapes_bad_attribute(gaml, tmp_path):
    for args, needle in ((["--forget", "red", "--into", "blue"], "KEY=VALUE"),
                         (["--forget", "color=pink", "--into", "color=blue"], "the teacher knows color"),
                         (["--forget", "color=red", "--into", "shape=circle"], "same attribute")):
        res = gaml("unlearn", "--teacher", "shapes", "--out", tmp_path / "r", *args, *TINY)
        assert res.code == 2 and len(res.err_lines) == 1 and needle in res.err, res.err


def test_eval_forget_bad_input(gaml, tmp_path):
    res = gaml("eval", "forget", "--model", "digits")
    assert res.code == 2 and "records no forgotten conditions" in res.err
    res = gaml("eval", "forget", "--model", "digits", "--into", "1")
    assert res.code == 2 and "--into needs --forget" in res.err
    res = gaml("eval", "forget", "--model", "digits", "--forget", "10")
    assert res.code == 2 and "classes 0..9" in res.err
    res = gaml("eval", "forget", "--model", "digits-classifier", "--forget", "1")
    assert res.code == 2 and len(res.err_lines) == 1


def test_tiny_stable_diffusion_unlearns_a_concept_and_clip_judges_it(gaml, tmp_path):
    from sd_tiny import build_tiny_clip, build_tiny_sd

    pipe = build_tiny_sd(tmp_path / "sd")
    clip = build_tiny_clip(tmp_path / "clip")
    prompts = tmp_path / "p.txt"
    prompts.write_text("a photo of a cat\na red dog\na house\n")
    run = tmp_path / "run"
    res = gaml("unlearn", "--teacher", pipe, "--prompts", prompts, "--forget", "cat", "--into", "dog", "--out", run,
               "--steps", "1", "--batch-size", "2", "--device", "cpu", "-f", "json", "-q")
    assert res.code == 0, res.err
    info = read_header(run / "generator.safetensors")
    assert info.config["distill"]["forget"] == {"mode": "prompt", "pairs": [["cat", "dog"]], "weight": 1.0, "share": 0.5}
    res = gaml("eval", "forget", "--model", run, "--prompts", prompts, "--clip", clip, "-n", "3", "--device", "cpu",
               "-f", "json", "-q")
    assert res.code == 0, res.err
    ev = json.loads(res.out)
    pair = ev["pairs"][0]
    assert (pair["forget"], pair["into"]) == ("cat", "dog")
    # one pair: the means are its rates, each a count out of the n = 3 samples
    assert (ev["forgotten_recognised"], ev["into_rate"]) == (pair["recognised"], pair["into_rate"])
    for rate in (pair["recognised"], pair["into_rate"]):
        assert 3 * rate == pytest.approx(round(3 * rate))
    assert pair["recognised"] + pair["into_rate"] <= 1 and ev["retained_fd"] is None
    # "a red dog" and "a house" name no cat: they are scored (the method-level numbers: test_wiring_fd.py)
    assert isinstance(ev["retained_clip"], float) and ev["nfe"] == 1
    res = gaml("eval", "forget", "--model", run, "--clip", clip)
    assert res.code == 2 and "--prompts" in res.err
    res = gaml("eval", "forget", "--model", run, "--prompts", prompts)  # clip-l14 is not in the test's cache
    assert res.code == 2 and "'clip-l14' not found locally" in res.err and len(res.err_lines) == 1


def test_init_from_a_distill_run(gaml, tmp_path):
    """Two stages: distil, then unlearn from that generator. With zero learning rates the second
    run's generator is exactly the first's (G started from it, sigma_init taken from it)."""
    from gaml_cli.diffusion.io import load_model

    first = tmp_path / "sid"
    assert gaml("distill", "--teacher", "digits", "--out", first, "--init-sigma", "2.0", *TINY).code == 0
    second = tmp_path / "sfd"
    res = gaml("unlearn", "--teacher", "digits", "--forget", "0", "--into", "1", "--init-from", first, "--out", second,
               "--lr", "0", "--ema-halflife", "0", *TINY)
    assert res.code == 0, res.err
    a, info_a = load_model(first / "generator.safetensors")
    b, info_b = load_model(second / "generator.safetensors")
    assert info_b.config["generator"]["sigma_init"] == 2.0
    assert info_b.config["distill"]["init_from"] == str(first / "generator.safetensors")
    for (n, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), n
    # a run of another teacher, or something that is not a run: one line, exit 2, nothing written
    for bad, needle in ((tmp_path / "nothing", "no generator.safetensors"),):
        res = gaml("unlearn", "--teacher", "digits", "--forget", "0", "--into", "1", "--init-from", bad,
                   "--out", tmp_path / "x", *TINY)
        assert res.code == 2 and needle in res.err and len(res.err_lines) == 1
        assert not (tmp_path / "x").exists()
    res = gaml("distill", "--teacher", "shapes", "--init-from", first, "--out", tmp_path / "y", *TINY)
    assert res.code == 2 and "another architecture" in res.err and not (tmp_path / "y").exists()
