"""The defects found trying gaml as a new user would (issue 24, item 4): each test here failed on
the code before its fix.

Outputs: an output equal to an input is refused; an output that cannot be written is refused
before any work; a write that fails later names the user's path; a command's files land
together or not at all. Numbers: nan/inf refused everywhere, a diverging run stops without a
model, NaN images named. Pipes: a closed stdout exits 0 and the files are still written.
Smaller: binary recipes, --dry-run catching bad output names, two SIGTERMs, stdin on a
terminal, one style of usage error, typed choices, examples on group pages.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT

TRAIN_TINY = ["--steps", "2", "--batch-size", "8", "--warmup", "1", "--checkpoint-every", "1", "--device", "cpu", "-q"]
GBD_TINY = ["--layers", "1", "--hidden", "8,4,8", "--heads", "2", "--batch-size", "8", "--device", "cpu", "-q"]


def _sha(p: Path) -> str:
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def comm(tmp_path_factory):
    from gaml_cli.__main__ import main

    d = tmp_path_factory.mktemp("comm")
    assert main(["graphgen", "data", "--name", "community-small", "--out", str(d), "-q"]) == 0
    return d


# --------------------------------------------------------------------------- output = input


@pytest.mark.parametrize("argv", [
    lambda d, c: ["train", "--data", d, "--out", d, *TRAIN_TINY],
    lambda d, c: ["eval", "train-classifier", "--data", d, "--out", d, "--epochs", "1", "-q"],
    lambda d, c: ["sample", "--model", d, "-n", "2", "--out", d, "-q"],
    lambda d, c: ["grid", d, "--out", d.with_suffix(".png")],  # control: a different file is fine
])
def test_an_output_equal_to_an_input_is_refused(gaml, digits_artifact, tmp_path, argv):
    d = tmp_path / "digits.safetensors"
    d.write_bytes(digits_artifact.read_bytes())
    before = _sha(d)
    args = argv(d, None)
    res = gaml(*args)
    if args[0] == "grid":
        assert res.code == 0, res.err
        return
    assert res.code == 2, res.err
    assert "is also the input" in res.err and len(res.err_lines) == 1
    assert _sha(d) == before


def test_graphgen_train_refuses_its_data_as_output(gaml, comm, tmp_path):
    data = tmp_path / "train.safetensors"  # a model path that is also the data path
    data.write_text((comm / "train.jsonl").read_text())
    before = _sha(data)
    res = gaml("graphgen", "train", "--data", data, "--out", data, "--steps", "1", *GBD_TINY)
    assert res.code == 2 and "is also the input" in res.err
    assert _sha(data) == before


# --------------------------------------------------------------------------- unwritable places


def _try_mount(path: Path, options: str) -> bool:
    if os.geteuid() != 0 or sys.platform != "linux":
        return False
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    return r.returncode == 0


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def readonly_dir(tmp_path, monkeypatch):
    """A folder nobody can write: a read-only tmpfs where the machine lets tests mount one
    (root in a container, as CI), else the same refusals simulated at the os level."""
    d = tmp_path / "ro"
    if _try_mount(d, "ro,size=1m"):
        yield d
        _umount(d)
        return
    d.mkdir(exist_ok=True)
    real_mkstemp, real_access = tempfile.mkstemp, os.access

    def mkstemp(*a, dir=None, **k):
        if dir is not None and str(Path(dir).resolve()).startswith(str(d.resolve())):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real_mkstemp(*a, dir=dir, **k)

    def access(p, mode, *a, **k):
        if str(Path(p).resolve()).startswith(str(d.resolve())) and mode & os.W_OK:
            return False
        return real_access(p, mode, *a, **k)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(os, "access", access)
    yield d


def _no_work(monkeypatch, target: str, name: str):
    import importlib

    mod = importlib.import_module(target)

    def boom(*a, **k):
        raise AssertionError(f"{target}.{name} ran: the work started before the output was checked")

    monkeypatch.setattr(mod, name, boom)


@pytest.mark.parametrize("case", ["train", "graphgen-train", "sample", "train-classifier", "shapes", "graphgen-data"])
def test_an_unwritable_output_is_refused_before_the_work(gaml, digits_artifact, comm, readonly_dir, monkeypatch, case):
    ro = readonly_dir
    if case == "train":
        _no_work(monkeypatch, "gaml_cli.diffusion.train", "train_teacher")
        args = ["train", "--data", digits_artifact, "--out", ro / "t.safetensors", *TRAIN_TINY]
    elif case == "graphgen-train":
        _no_work(monkeypatch, "gaml_cli.methods.gbd.train", "train")
        args = ["graphgen", "train", "--data", comm / "train.jsonl", "--out", ro / "g.safetensors", "--steps", "1", *GBD_TINY]
    elif case == "sample":
        _no_work(monkeypatch, "gaml_cli.diffusion.sample", "generate")
        args = ["sample", "--model", "digits", "-n", "2", "--out", ro / "s.safetensors", "-q"]
    elif case == "train-classifier":
        _no_work(monkeypatch, "gaml_cli.diffusion.features", "train_classifier")
        args = ["eval", "train-classifier", "--data", digits_artifact, "--out", ro / "c.safetensors", "-q"]
    elif case == "shapes":
        _no_work(monkeypatch, "gaml_cli.datasets.shapes", "generate")
        args = ["dataset", "shapes", "-n", "4", "--out", ro / "s.safetensors", "-q"]
    else:
        _no_work(monkeypatch, "gaml_cli.graphs.datasets", "generate")
        args = ["graphgen", "data", "--name", "grid", "--out", ro / "g", "-q"]
    res = gaml(*args)
    assert res.code == 2, res.err
    assert "cannot be written" in res.err and str(ro) in res.err and len(res.err_lines) == 1


def test_a_training_run_checks_its_checkpoint_folder_first(gaml, digits_artifact, tmp_path, readonly_dir, monkeypatch):
    _no_work(monkeypatch, "gaml_cli.diffusion.train", "train_teacher")
    res = gaml("train", "--data", digits_artifact, "--out", tmp_path / "t.safetensors",
               "--checkpoint-dir", readonly_dir / "ckpt", *TRAIN_TINY)
    assert res.code == 2 and "--checkpoint-dir" in res.err and "cannot be written" in res.err


def test_a_full_disk_names_the_users_path_and_leaves_nothing(tmp_path):
    """The probe passes (64 KiB fit), the captions JSONL (~1 MB) fits, the 74 MB artifact does
    not: one line naming the path the user gave and the reason, exit 1, no temp file and no
    captions JSONL left behind."""
    full = tmp_path / "full"
    if not _try_mount(full, "size=2m"):
        pytest.skip("cannot mount a small tmpfs here (needs root on Linux)")
    try:
        r = subprocess.run([sys.executable, "-m", "gaml_cli", "dataset", "shapes", "-n", "6000",
                            "--out", str(full / "s.safetensors"), "-q"], capture_output=True, text=True, cwd=ROOT,
                           timeout=300)
        assert r.returncode == 1, r.stderr
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        assert lines == [f"gaml: error: could not write {full / 's.safetensors'}: no space left on the device"], r.stderr
        assert "Error" not in r.stderr and ".tmp" not in r.stderr
        assert list(full.iterdir()) == []
    finally:
        _umount(full)


# --------------------------------------------------------------------------- all or nothing


def test_dataset_digits_leaves_no_artifact_when_the_grid_fails(gaml, tmp_path, monkeypatch):
    import gaml_cli.core.images as images

    def fail(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(images, "save_grid", fail)
    res = gaml("dataset", "digits", "--out", tmp_path / "d.safetensors", "--grid", tmp_path / "d.png", "-q")
    assert res.code != 0
    assert not (tmp_path / "d.safetensors").exists() and list(tmp_path.iterdir()) == []


def test_dataset_shapes_leaves_no_captions_when_the_artifact_fails(gaml, tmp_path, monkeypatch):
    import gaml_cli.core.artifacts as artifacts

    real = artifacts.save_artifact

    def fail(path, *a, **k):
        if str(path).endswith("s.safetensors"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(path, *a, **k)

    monkeypatch.setattr(artifacts, "save_artifact", fail)
    res = gaml("dataset", "shapes", "-n", "8", "--out", tmp_path / "s.safetensors", "-q")
    assert res.code != 0
    assert list(tmp_path.iterdir()) == []  # no s.jsonl


def test_graphgen_data_leaves_no_folder_when_a_write_fails(gaml, tmp_path, monkeypatch):
    import gaml_cli.graphs.io as gio

    real, calls = gio.write_graphs, []

    def second_fails(path, graphs):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(path, graphs)

    monkeypatch.setattr(gio, "write_graphs", second_fails)
    res = gaml("graphgen", "data", "--name", "grid", "--out", tmp_path / "g" / "sets", "-q")
    assert res.code != 0 and len(calls) == 2
    assert not (tmp_path / "g").exists()


def test_a_failed_checkpoint_leaves_no_empty_checkpoint_folder(gaml, digits_artifact, tmp_path, monkeypatch):
    import safetensors.torch

    real = safetensors.torch.save_file

    def fail(tensors, path, *a, **k):  # the disk fills up while a checkpoint is written
        if "step-" in Path(path).name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(tensors, path, *a, **k)

    monkeypatch.setattr(safetensors.torch, "save_file", fail)
    out = tmp_path / "t.safetensors"
    res = gaml("train", "--data", digits_artifact, "--out", out, "--channels", "8,8", "--layers-per-block", "1",
               *TRAIN_TINY)
    assert res.code == 1 and "could not write" in res.err and "step-00000001.safetensors" in res.err
    assert list(tmp_path.iterdir()) == []  # neither t.safetensors nor an empty t.ckpt/


# --------------------------------------------------------------------------- numbers


def _float_options():
    from gaml_cli.app import click_app
    from gaml_cli.core import clicompat as cc

    found = []

    def visit(cmd, path):
        for p in getattr(cmd, "params", []):
            ann = getattr(getattr(p, "type_descriptor", None), "annotation", None)
            if ann is float or (ann is not None and float in getattr(ann, "__args__", ())):
                if cc.is_option(p):
                    found.append((path, p.opts[0]))
        if cc.is_group(cmd):
            for name, sub in cmd.commands.items():
                visit(sub, f"{path} {name}".strip())

    visit(click_app(), "")
    return found


@pytest.mark.parametrize("path,opt", _float_options())
def test_every_float_option_refuses_nan_and_inf(gaml, path, opt):
    for bad in ("nan", "inf", "-inf"):
        res = gaml(*path.split(), opt, bad)
        assert res.code == 2, (path, opt, bad, res.err)
        assert f"gaml: error: " in res.err and "not a finite number" in res.err, res.err


def test_guidance_nan_and_inf_are_named(gaml, tmp_path):
    for bad in ("nan", "inf"):
        res = gaml("sample", "--model", "digits", "-n", "2", "--guidance", bad, "--out", tmp_path / "s.safetensors")
        assert res.code == 2 and res.err_lines == [
            f"gaml: error: --guidance: '{bad}' is not a finite number (see 'gaml sample --help')"]
    assert not (tmp_path / "s.safetensors").exists()


def test_distill_alpha_nan_writes_no_generator(gaml, tmp_path):
    res = gaml("distill", "--teacher", "digits", "--alpha", "nan", "--out", tmp_path / "run", "--steps", "1")
    assert res.code == 2 and "--alpha" in res.err
    assert not (tmp_path / "run").exists()


def test_fd_on_nan_images_names_them(gaml, tmp_path):
    from gaml_cli.core.artifacts import save_artifact

    x = np.zeros((20, 1, 8, 8), np.float32)
    x[3, 0, 1, 1] = np.nan
    x[7] = np.inf
    p = tmp_path / "bad.safetensors"
    save_artifact(p, {"images": x, "labels": np.zeros(20, np.int64)}, kind="images",
                  config={"dataset": "digits", "shape": [1, 8, 8], "value_range": [-1, 1]})
    res = gaml("eval", "fd", "--images", p, "--ref", "digits")
    assert res.code == 2, res.err
    assert res.err_lines == [f"gaml: error: {p}: 2 of 20 images hold nan or inf values (the first is image 3); "
                             "was the model that made them diverged?"]


def test_a_diverging_training_run_stops_without_a_model(gaml, digits_artifact, tmp_path, monkeypatch):
    import torch

    import gaml_cli.diffusion.train as dtrain

    real, calls = dtrain.edm_loss, []

    def nan_at_second(*a, **k):
        calls.append(1)
        loss = real(*a, **k)
        return loss * float("nan") if len(calls) == 2 else loss

    monkeypatch.setattr(dtrain, "edm_loss", nan_at_second)
    out = tmp_path / "t.safetensors"
    res = gaml("train", "--data", digits_artifact, "--out", out, "--channels", "8,8", "--layers-per-block", "1",
               *TRAIN_TINY, "--steps", "3")
    assert res.code == 1 and len(res.err_lines) == 1, res.err
    assert "training diverged at step 2: the loss is nan" in res.err
    assert not out.exists()
    ckpts = sorted((tmp_path / "t.ckpt").glob("step-*.safetensors"))
    assert [c.name for c in ckpts] == ["step-00000001.safetensors"]  # the good step's checkpoint is kept
    assert torch.isfinite(torch.tensor(1.0))


def test_a_diverging_graphgen_run_stops_without_a_model(gaml, comm, tmp_path, monkeypatch):
    from gaml_cli.methods.gbd.gbd import GBD

    real = GBD.loss

    def nan_loss(self, *a, **k):
        loss, lx, le = real(self, *a, **k)
        return loss * float("nan"), lx, le

    monkeypatch.setattr(GBD, "loss", nan_loss)
    out = tmp_path / "g.safetensors"
    res = gaml("graphgen", "train", "--data", comm / "train.jsonl", "--out", out, "--steps", "2", "--workers", "1",
               *GBD_TINY)
    assert res.code == 1 and "training diverged at step 1" in res.err, res.err
    assert not out.exists()


# --------------------------------------------------------------------------- pipes


def _first_line_then_close(args: list[str], timeout: float = 300) -> int:
    """Run gaml with stdout into a pipe, read one line, close the pipe (as `| head -n 1`)."""
    p = subprocess.Popen([sys.executable, "-m", "gaml_cli", *map(str, args)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    first = p.stdout.readline()
    p.stdout.close()
    _, err = p.communicate(timeout=timeout)
    assert first, err
    return p.returncode, err.decode()


def test_captions_to_a_closed_pipe_still_write_the_artifact(tmp_path):
    out = tmp_path / "s.safetensors"
    code, err = _first_line_then_close(["dataset", "shapes", "-n", "3000", "--out", out, "--captions", "-", "-q"])
    assert code == 0, err
    assert err == "" and out.is_file()
    from gaml_cli.core.artifacts import load_artifact

    assert load_artifact(out, "images")["images"].shape[0] == 3000


def test_boost_predict_into_head_exits_0(tmp_path):
    from gaml_cli.__main__ import main

    assert main(["boost", "data", "diabetes", "--train", str(tmp_path / "t.csv"), "--test", str(tmp_path / "e.csv"), "-q"]) == 0
    assert main(["boost", "fit", "--data", str(tmp_path / "t.csv"), "--target", "y", "--out", str(tmp_path / "m.dbt"),
                 "--timesteps", "3", "-q"]) == 0
    code, err = _first_line_then_close(["boost", "predict", "--model", tmp_path / "m.dbt", "--data", tmp_path / "e.csv",
                                        "--samples", "50"])
    assert code == 0 and "Error" not in err, err


def test_graphgen_sample_into_head_exits_0(comm, tmp_path):
    from gaml_cli.__main__ import main

    model = tmp_path / "g.safetensors"
    assert main(["graphgen", "train", "--data", str(comm / "train.jsonl"), "--out", str(model), "--steps", "1",
                 *GBD_TINY]) == 0
    code, err = _first_line_then_close(["graphgen", "sample", "--model", model, "-n", "64", "--steps", "5",
                                        "--batch-size", "1", "-q"])
    assert code == 0 and "Error" not in err, err


# --------------------------------------------------------------------------- smaller


def test_run_on_a_binary_file_is_not_a_recipe(gaml, tmp_path):
    p = tmp_path / "r.yaml"
    p.write_bytes(bytes(range(256)) * 4)
    res = gaml("run", p)
    assert res.code == 2 and res.err_lines == [f"gaml: error: {p}: not a YAML recipe (binary, not UTF-8 text)"]


def test_dry_run_refuses_an_output_name_its_command_would_refuse(gaml, tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("steps:\n  - name: data\n    command: dataset digits\n    args: {out: d.png}\n    outputs: {data: d.png}\n")
    res = gaml("run", p, "--dry-run")
    assert res.code == 2 and "--out: d.png: expected a file name ending in .safetensors" in res.err
    assert res.out == ""


def test_two_sigterms_exit_130_after_the_checkpoint(comm, tmp_path):
    out, ckpt = tmp_path / "g.safetensors", tmp_path / "g.ckpt"
    p = subprocess.Popen([sys.executable, "-m", "gaml_cli", "graphgen", "train", "--data", str(comm / "train.jsonl"),
                          "--out", str(out), *GBD_TINY, "--steps", "100000", "--checkpoint-every", "2"],
                         stderr=subprocess.PIPE, text=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while time.time() < deadline and not list(ckpt.glob("step-*.safetensors")):
        time.sleep(0.1)
    p.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert list(ckpt.glob("step-*.safetensors")) and not out.exists()


def test_reading_stdin_from_a_terminal_is_refused(gaml, comm, monkeypatch):
    import io

    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stdin", Tty(""))
    res = gaml("graphgen", "eval", "--ref", comm / "test.jsonl")
    assert res.code == 2 and "stdin is a terminal" in res.err


def test_usage_errors_come_in_one_style(gaml, tmp_path):
    cases = [
        (["sample", "--model", "digits", "-n", "0", "--out", tmp_path / "s.safetensors"],
         "gaml: error: --n: must be at least 1 (see 'gaml sample --help')"),
        (["sample", "--model", "digits", "-n", "x", "--out", tmp_path / "s.safetensors"],
         "gaml: error: --n: expected an integer (see 'gaml sample --help')"),
        (["info", "--device", "tpu"],
         "gaml: error: --device: 'tpu' is not one of 'auto', 'cpu', 'cuda', 'mps'. (see 'gaml info --help')"),
        (["train", "--data", "d.safetensors", "--out", "t.pt"],
         "gaml: error: --out: t.pt: expected a file name ending in .safetensors (see 'gaml train --help')"),
    ]
    for args, line in cases:
        res = gaml(*args)
        assert res.code == 2 and res.err_lines == [line], res.err


def test_fixed_choices_are_typed_and_shown(gaml):
    for args, shown in [(["sample"], "--sampler <heun|euler>"), (["train"], "--cond <auto|class|text|none>"),
                        (["train"], "--split <train|test|all>"), (["train"], "--save-precision <fp32|bf16|fp16>"),
                        (["grid"], "--split <train|test|all>")]:
        res = gaml(*args, "--help")
        assert shown in " ".join(res.out.split()), (args, shown)
    res = gaml("sample", "--model", "digits", "--sampler", "rk4", "--out", "x.safetensors")
    assert res.code == 2 and "--sampler" in res.err and "heun" in res.err


def test_run_dash_n_is_an_old_spelling_of_dry_run(gaml):
    path = ROOT / "recipes" / "quickstart.yaml"
    res = gaml("run", path, "--dry-run")
    old = gaml("run", path, "-n")
    assert res.code == old.code == 0 and res.out == old.out and res.out.startswith("gaml ")
    assert "-n" not in gaml("run", "--help").out.split("--dry-run")[0].split("Options:")[-1]
    assert "old spelling" in old.err


def test_format_help_does_not_say_stderr(gaml):
    assert "(stderr)" not in gaml("topic", "show", "--help").out
    assert "(stderr)" not in gaml("models", "ls", "--help").out


@pytest.mark.parametrize("group", ["boost", "dataset", "eval", "graphgen", "models", "topic"])
def test_group_help_pages_show_an_example(gaml, group):
    res = gaml(group, "--help")
    assert res.code == 0 and "Example:" in res.out and f"gaml {group} " in res.out.split("Example:")[1]


@pytest.fixture(scope="module")
def bow(tmp_path_factory):
    from gaml_cli.__main__ import main

    d = tmp_path_factory.mktemp("bow")
    assert main(["topic", "vocab", "--corpus", "lee", "--out", str(d / "bow.safetensors"), "-q"]) == 0
    return d / "bow.safetensors"


@pytest.mark.parametrize("case", ["transform-corpus", "transform-model", "fit"])
def test_topic_refuses_to_overwrite_its_inputs(gaml, bow, tmp_path, case):
    b = tmp_path / "bow.safetensors"
    b.write_bytes(bow.read_bytes())
    before = _sha(b)
    if case == "fit":
        res = gaml("topic", "fit", "--corpus", b, "--out", b, "--steps", "1", "-q")
    elif case == "transform-corpus":
        res = gaml("topic", "transform", "--model", bow, "--corpus", b, "--out", b, "-q")
    else:
        res = gaml("topic", "transform", "--model", b, "--corpus", bow, "--out", b, "-q")
    assert res.code == 2 and "is also the input" in res.err, res.err
    assert _sha(b) == before


def test_topic_transform_checks_its_output_before_the_work(gaml, bow, readonly_dir, monkeypatch):
    _no_work(monkeypatch, "gaml_cli.methods.gbn.run", "load_model")
    res = gaml("topic", "transform", "--model", bow, "--corpus", bow, "--out", readonly_dir / "t.jsonl")
    assert res.code == 2 and "cannot be written" in res.err


def test_boost_predict_refuses_to_overwrite_its_data(gaml, tmp_path):
    from gaml_cli.__main__ import main

    assert main(["boost", "data", "diabetes", "--train", str(tmp_path / "t.csv"), "-q"]) == 0
    before = _sha(tmp_path / "t.csv")
    res = gaml("boost", "predict", "--model", tmp_path / "none.dbt", "--data", tmp_path / "t.csv",
               "--out", tmp_path / "t.csv")
    assert res.code == 2 and "is also the input --data" in res.err
    res = gaml("boost", "fit", "--data", tmp_path / "t.csv", "--target", "y", "--out", tmp_path / "t.csv")
    assert res.code == 2
    assert _sha(tmp_path / "t.csv") == before
