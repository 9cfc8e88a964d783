"""gaml distill end to end on tiny budgets: digits, shapes captions, LoRA, resume, a tiny SD pipeline."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from gaml_cli.core.artifacts import load_artifact, read_header  # noqa: E402

TINY = ["--steps", "3", "--batch-size", "8", "--device", "cpu", "-q"]


def test_distill_digits_then_sample_one_step_then_eval(gaml, tmp_path):
    run = tmp_path / "run"
    res = gaml("distill", "--teacher", "digits", "--out", run, *TINY, "--eval-every", "3", "--eval-n", "40",
               "-f", "json")
    assert res.code == 0, res.err
    summary = json.loads(res.out)
    assert summary["steps"] == 3
    info = read_header(run / "generator.safetensors")
    assert info.kind == "generator" and info.config["generator"]["sigma_init"] == 2.5
    d = info.config["distill"]
    assert (d["alpha"], d["kappa1"], d["kappa4"], d["t_max"], d["betas"]) == (1.2, 1.0, 1.0, 800, [0.0, 0.999])
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 3 and "loss_fake" in log[-1] and "fd" in log[-1]
    samples = tmp_path / "s.safetensors"
    res = gaml("sample", "--model", run, "-n", "40", "--out", samples, "--device", "cpu", "-f", "json")
    assert res.code == 0, res.err
    assert json.loads(res.out)["nfe"] == 1
    assert load_artifact(samples, "images")["images"].shape == (40, 1, 8, 8)
    res = gaml("eval", "fd", "--images", samples, "--ref", "digits", "-f", "json")
    assert res.code == 0, res.err
    # the in-training evaluation of the last step is the offline one of the saved generator
    # (the same 40 samples and split seed)
    ev = json.loads(res.out)
    assert ev["fd"] == pytest.approx(summary["fd"], rel=1e-6) and ev["accuracy"] == summary["accuracy"]
    assert ev["floor"] == pytest.approx(log[-1]["floor"], rel=1e-6)


def test_generator_starts_as_the_teachers_one_shot_denoiser(gaml, tmp_path):
    """With zero learning rates G stays the teacher: x = D_phi(2.5 z; 2.5, c)."""
    from gaml_cli.core import hub
    from gaml_cli.diffusion.io import load_model

    run = tmp_path / "run"
    assert gaml("distill", "--teacher", "digits", "--out", run, "--lr", "0", "--ema-halflife", "0", *TINY).code == 0
    G, _ = load_model(run / "generator.safetensors")
    T, _ = load_model(hub.resolve("digits"))
    z = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    c = torch.arange(5)
    s = torch.full((5,), 2.5)
    # the teacher is stored in fp16, the generator in fp32 of the same values
    assert torch.allclose(G(2.5 * z, s, c), T(2.5 * z, s, c), atol=1e-5)


def test_resume_continues_the_same_run(gaml, tmp_path):
    """4 iterations + --resume to 6 gives the weights of 6 uninterrupted iterations."""
    args = ["--teacher", "digits", "--batch-size", "8", "--checkpoint-every", "2", "--device", "cpu", "-q"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert gaml("distill", *args, "--out", a, "--steps", "6").code == 0
    assert gaml("distill", *args, "--out", b, "--steps", "4").code == 0
    res = gaml("distill", *args, "--out", b, "--steps", "6", "--resume", "-f", "json")
    assert res.code == 0, res.err
    assert json.loads(res.out)["steps"] == 6
    wa = load_artifact(a / "generator.safetensors", "generator", framework="pt").tensors
    wb = load_artifact(b / "generator.safetensors", "generator", framework="pt").tensors
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # and a fresh run into an existing run folder is refused
    res = gaml("distill", *args, "--out", b, "--steps", "6")
    assert res.code == 2 and "--resume" in res.err and len(res.err_lines) == 1
    # resuming with other settings is refused
    res = gaml("distill", *args, "--out", b, "--steps", "8", "--resume", "--alpha", "1.0")
    assert res.code == 2 and "settings" in res.err


def test_lora_trains_adapters_and_saves_a_plain_generator(gaml, tmp_path):
    run = tmp_path / "lora"
    res = gaml("distill", "--teacher", "digits", "--out", run, "--lora-rank", "2", "--lr", "1e-2", *TINY[:-1],
               "-f", "json")
    assert res.code == 0, res.err
    n_lora = json.loads(res.out)["trainable_parameters"]
    assert 0 < n_lora < 100_000  # adapters only (the full network has 1.0M)
    G = load_artifact(run / "generator.safetensors", "generator", framework="pt").tensors
    T = load_artifact(read_header(run / "generator.safetensors").provenance["parents"][0]["path"], "teacher",
                      framework="pt").tensors
    assert set(G) == set(T)  # merged: the teacher's architecture, no lora_ tensors
    changed = [k for k in G if not torch.allclose(G[k].float(), T[k].float(), atol=1e-3)]
    assert changed and all(k.startswith("unet.") for k in changed)


def test_lora_merge_equals_the_adapted_network():
    from gaml_cli.diffusion.models import ImageDenoiser, default_unet
    from gaml_cli.methods.sid.model import add_lora, merged_state_dict

    torch.manual_seed(0)
    cfg = {"image_shape": [1, 8, 8], "cond": {"type": "class", "num_classes": 3}, "unet": default_unet([1, 8, 8])}
    m = ImageDenoiser(cfg)
    add_lora(m.unet, 2, seed=0)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)  # B starts at zero; make the adapters matter
    plain = ImageDenoiser(cfg)
    plain.load_state_dict(merged_state_dict(m))
    x, s, c = torch.randn(4, 1, 8, 8), torch.tensor([0.1, 1.0, 3.0, 20.0]), torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        assert torch.allclose(m(x, s, c), plain(x, s, c), atol=1e-4)
        assert not torch.allclose(m(x, s, c), ImageDenoiser(cfg)(x, s, c), atol=1e-2)


def test_shapes_style_text_teacher_with_lsg(gaml, tmp_path):
    """A caption teacher (random captions from its attributes) under guidance 1.5."""
    from gaml_cli.__main__ import main

    data = tmp_path / "shapes.safetensors"
    assert main(["dataset", "shapes", "-n", "32", "--size", "16", "--out", str(data), "-q"]) == 0
    teacher = tmp_path / "t.safetensors"
    assert main(["train", "--data", str(data), "--out", str(teacher), "--steps", "2", "--batch-size", "4",
                 "--channels", "16,16", "--layers-per-block", "1", "--device", "cpu", "-q"]) == 0
    run = tmp_path / "run"
    res = gaml("distill", "--teacher", teacher, "--out", run, "--lsg", "1.5", "--steps", "2", "--batch-size", "4",
               "--device", "cpu", "-q")
    assert res.code == 0, res.err
    d = read_header(run / "generator.safetensors").config["distill"]
    assert (d["kappa1"], d["kappa2"], d["kappa4"], d["p_uncond"]) == (1.5, 1.5, 1.5, 0.1)
    res = gaml("sample", "--model", run, "--prompt", "a red circle on a blue background", "-n", "4",
               "--out", tmp_path / "s.safetensors", "--device", "cpu", "-q")
    assert res.code == 0, res.err


def test_tiny_stable_diffusion_distills_and_samples(gaml, tmp_path):
    from sd_tiny import build_tiny_sd

    pipe = build_tiny_sd(tmp_path / "sd")
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "a cat"}\n{"prompt": "a red dog"}\n')
    run = tmp_path / "run"
    res = gaml("distill", "--teacher", pipe, "--out", run, "--steps", "2", "--prompts", prompts, "--eval-every", "1")
    assert res.code == 2 and "--eval-every" in res.err and len(res.err_lines) == 1
    res = gaml("distill", "--teacher", pipe, "--out", run, "--steps", "2", "--batch-size", "2", "--prompts", prompts,
               "--device", "cpu", "-f", "json", "-q")
    assert res.code == 0, res.err
    info = read_header(run / "generator.safetensors")
    d = info.config["distill"]
    # SiD-LSG's SD defaults: guidance 1.5 everywhere, alpha 1, t in [20, 980), sigma_init = sigma(t=625)
    assert (d["kappa1"], d["kappa2"], d["kappa4"], d["alpha"], d["t_min"], d["t_max"]) == (1.5, 1.5, 1.5, 1.0, 20, 980)
    abar = load_artifact(run / "generator.safetensors", "generator")["alphas_cumprod"]
    assert d["sigma_init"] == pytest.approx(((1 - abar[625]) / abar[625]) ** 0.5, rel=1e-4)
    assert (run / "unet" / "config.json").is_file()
    from diffusers import UNet2DConditionModel

    UNet2DConditionModel.from_pretrained(run / "unet")  # a plain diffusers folder
    res = gaml("sample", "--model", run, "--prompt", "a cat", "-n", "2", "--out", tmp_path / "s.safetensors",
               "--device", "cpu", "-f", "json", "-q")
    assert res.code == 0, res.err
    assert json.loads(res.out)["nfe"] == 1


@pytest.mark.parametrize("args, needle", [
    (["--teacher", "sd15", "--prompts", "{prompts}"], "sd15"),
    (["--teacher", "digits-classifier"], "'teacher'"),
    (["--teacher", "digits", "--precision", "fp16", "--device", "cpu"], "fp16"),
    (["--teacher", "digits", "--t-min", "900", "--t-max", "100"], "--t-min"),
    (["--teacher", "digits", "--betas", "0.9"], "--betas"),
    (["--teacher", "digits", "--prompts", "{prompts}"], "text-conditional"),
    (["--teacher", "digits", "--batch-size", "8", "--micro-batch", "3"], "--micro-batch"),
])
def test_bad_input_is_one_line_exit_2(gaml, tmp_path, args, needle):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\n")
    args = [a.replace("{prompts}", str(prompts)) for a in args]
    res = gaml("distill", *args, "--out", tmp_path / "run", "--steps", "1")
    assert res.code == 2, res.err
    assert needle in res.err and len(res.err_lines) == 1, res.err
    assert not (tmp_path / "run" / "generator.safetensors").exists()


def test_offline_sd15_names_alias_and_how_to_provide(gaml, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\n")
    res = gaml("distill", "--teacher", "sd15", "--prompts", prompts, "--out", tmp_path / "run")
    assert res.code == 2
    line = res.err_lines[0]
    assert len(res.err_lines) == 1 and "'sd15'" in line and "--teacher" in line


def test_distilled_sd_unet_in_plain_diffusers_matches_gaml(gaml, tmp_path):
    """The README's plain-diffusers one-step recipe gives gaml's generator output."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from sd_tiny import build_tiny_sd

    from gaml_cli.diffusion.sd import load_sd_generator

    pipe_dir = build_tiny_sd(tmp_path / "sd")
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\n")
    run = tmp_path / "run"
    assert gaml("distill", "--teacher", pipe_dir, "--out", run, "--steps", "1", "--batch-size", "2", "--lr", "1e-3",
                "--prompts", prompts, "--device", "cpu", "-q").code == 0
    info = read_header(run / "generator.safetensors")
    comp = load_sd_generator(run / "generator.safetensors", info.config)
    sigma = info.config["generator"]["sigma_init"]
    z = torch.randn(1, *comp.latent_shape, generator=torch.Generator().manual_seed(0))
    cond = comp.encode_prompts(["a cat"])
    with torch.no_grad():
        ours = comp.denoiser(sigma * z, torch.tensor([sigma]), cond)
        pipe = StableDiffusionPipeline.from_pretrained(pipe_dir, unet=UNet2DConditionModel.from_pretrained(run / "unet"),
                                                       safety_checker=None, requires_safety_checker=False)
        abar = pipe.scheduler.alphas_cumprod[625]
        emb = pipe.encode_prompt("a cat", "cpu", 1, False)[0]
        x_t = (1 - abar).sqrt() * z
        eps = pipe.unet(x_t, 625, encoder_hidden_states=emb).sample
        x0 = (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()
    assert torch.allclose(ours, x0, atol=1e-4)


def test_sigterm_mid_run_then_resume_keeps_the_step_count(tmp_path):
    """A real process stopped with SIGTERM saves a checkpoint and exits 130; --resume goes on
    from that step and counts to --steps."""
    import os
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "run"
    args = [sys.executable, "-m", "gaml_cli", "distill", "--teacher", "digits", "--out", str(run),
            "--batch-size", "4", "--checkpoint-every", "0", "--device", "cpu", "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([*args, "--steps", "100000"], env=env, stderr=subprocess.PIPE, text=True)
    log = run / "log.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (log.is_file() and log.read_text().count("\n") >= 2):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    ckpts = sorted((run / "checkpoints").glob("step-*.safetensors"))
    assert ckpts, err
    k = int(ckpts[-1].stem.split("-")[1])
    assert k >= 20 and not (run / "generator.safetensors").exists()
    res = subprocess.run([*args, "--steps", str(k + 3), "--resume", "-f", "json"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["steps"] == k + 3
    steps_logged = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert steps_logged[-1] == k + 3 and steps_logged == sorted(steps_logged)


def test_two_processes_under_torchrun(tmp_path):
    """The same command line under torchrun (what `accelerate launch` sets up): DDP over gloo
    on CPU, batch split over the processes, one generator written by rank 0."""
    import os
    import shutil
    import subprocess
    import sys

    if shutil.which("torchrun") is None:
        pytest.skip("torchrun not on PATH")
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "gaml_cli",
                          "distill", "--teacher", "digits", "--steps", "2", "--batch-size", "8", "--out", str(run),
                          "--device", "cpu", "-f", "json", "-q"], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1])["steps"] == 2
    d = read_header(run / "generator.safetensors").config["distill"]
    assert d["processes"] == 2 and d["batch_size"] == 8
    assert len(list((run / "checkpoints").glob("step-*.safetensors"))) == 1
