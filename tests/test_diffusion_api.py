"""The diffusion core's jobs from Python (gaml_cli.diffusion.jobs, methods.sfd.evaluate): the
same options as the commands, the same artifacts bit for bit, the same refusals."""

from __future__ import annotations

import dataclasses
import inspect
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from gaml_cli.core.artifacts import load_artifact, read_header  # noqa: E402
from gaml_cli.core.errors import InputError, UsageError  # noqa: E402
from gaml_cli.diffusion import jobs  # noqa: E402

TINY = dict(steps=3, batch_size=8, warmup=1, checkpoint_every=2, channels="8,8", layers_per_block=1, device="cpu")


def _argv(opts: dict) -> list[str]:
    out = []
    for k, v in opts.items():
        out += [f"--{k.replace('_', '-')}", str(v)]
    return out


def _same_tensors(a, b) -> None:
    assert set(a.tensors) == set(b.tensors)
    for k in a.tensors:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.fixture(scope="module")
def teachers(digits_artifact, tmp_path_factory):
    """The same tiny teacher, trained once by `gaml train` and once by jobs.train."""
    from gaml_cli.__main__ import main

    d = tmp_path_factory.mktemp("api")
    cli, api = d / "cli.safetensors", d / "api.safetensors"
    assert main(["train", "--data", str(digits_artifact), "--out", str(cli), *_argv(TINY), "-q"]) == 0
    summary = jobs.train(jobs.TrainOptions(data=str(digits_artifact), out=str(api), **TINY))
    return cli, api, summary


def test_train_from_python_writes_the_clis_teacher(teachers):
    cli, api, summary = teachers
    a, b = load_artifact(cli, "teacher"), load_artifact(api, "teacher")
    _same_tensors(a, b)
    for key in ("model", "data", "sampling"):
        assert a.config[key] == b.config[key], key
    assert a.config["model"]["unet"]["block_out_channels"] == [8, 8]
    assert summary["out"] == str(api) and summary["steps"] == 3
    assert summary["checkpoints"] == str(api)[: -len(".safetensors")] + ".ckpt"
    assert (api.parent / "api.ckpt").is_dir()


def test_sample_from_python_writes_the_clis_samples(gaml, teachers, tmp_path):
    teacher = teachers[0]
    opts = dict(n=5, steps=2, batch_size=3, seed=4)
    cli_out, cli_grid = tmp_path / "cli.safetensors", tmp_path / "cli.png"
    res = gaml("sample", "--model", teacher, *_argv(opts), "--device", "cpu", "--out", cli_out, "--grid", cli_grid,
               "-f", "json")
    assert res.code == 0, res.err
    api_out, api_grid = tmp_path / "api.safetensors", tmp_path / "api.png"
    summary = jobs.sample(jobs.SampleOptions(model=str(teacher), out=str(api_out), grid=str(api_grid), device="cpu",
                                             **opts))
    a, b = load_artifact(cli_out, "images"), load_artifact(api_out, "images")
    _same_tensors(a, b)
    assert list(b["labels"]) == [0, 1, 2, 3, 4]
    assert a.config == b.config
    assert cli_grid.read_bytes() == api_grid.read_bytes()
    cli_summary = json.loads(res.out)
    assert set(summary) == set(cli_summary) and summary["out"] == str(api_out)
    assert {k: v for k, v in summary.items() if k not in ("out", "seconds", "images_per_s")} == \
        {k: v for k, v in cli_summary.items() if k not in ("out", "seconds", "images_per_s")}


def test_sample_a_class_from_python(teachers, tmp_path):
    out = tmp_path / "s.safetensors"
    s = jobs.sample(jobs.SampleOptions(model=str(teachers[1]), out=str(out), n=3, steps=1, class_=7, device="cpu"))
    assert s["images"] == 3 and s["nfe"] == 1
    assert list(load_artifact(out, "images")["labels"]) == [7, 7, 7]


def test_classifier_and_fd_from_python_match_the_cli(gaml, digits_artifact, teachers, tmp_path):
    samples = tmp_path / "s.safetensors"
    jobs.sample(jobs.SampleOptions(model=str(teachers[1]), out=str(samples), n=20, steps=1, device="cpu"))
    cli_clf, api_clf = tmp_path / "c1.safetensors", tmp_path / "c2.safetensors"
    assert gaml("eval", "train-classifier", "--data", digits_artifact, "--out", cli_clf, "--epochs", "1", "-q").code == 0
    summary = jobs.train_classifier(jobs.ClassifierOptions(data=str(digits_artifact), out=str(api_clf), epochs=1))
    _same_tensors(load_artifact(cli_clf, "classifier"), load_artifact(api_clf, "classifier"))
    assert summary["out"] == str(api_clf)
    res = gaml("eval", "fd", "--images", samples, "--ref", "digits", "--classifier", cli_clf, "-f", "json")
    assert res.code == 0, res.err
    assert jobs.fd(jobs.FdOptions(images=str(samples), ref="digits", classifier=str(cli_clf))) == json.loads(res.out)


def test_refusals_from_python_are_the_commands(digits_artifact, teachers, tmp_path):
    out = str(tmp_path / "x.safetensors")
    cases = [
        (lambda: jobs.sample(jobs.SampleOptions(model="digits", out=out, class_=1, prompt="x")),
         UsageError, "give at most one of --class, --prompt, --prompts"),
        (lambda: jobs.sample(jobs.SampleOptions(model=str(teachers[1]), out=out, class_=12, device="cpu")),
         UsageError, "--class 12: the model has classes 0..9"),
        (lambda: jobs.train(jobs.TrainOptions(data=str(digits_artifact), out=out, channels="12,32", device="cpu")),
         UsageError, "--channels must be positive multiples of 8 (GroupNorm uses 8 groups)"),
        (lambda: jobs.train(jobs.TrainOptions(data=str(digits_artifact), out=out, channels="a,b", device="cpu")),
         UsageError, "--channels 'a,b': expected integers like 48,96,96"),
        (lambda: jobs.train(jobs.TrainOptions(data=str(digits_artifact), out=out, resume=True, device="cpu")),
         UsageError, f"--resume: no checkpoint folder {out[: -len('.safetensors')]}.ckpt"),
        (lambda: jobs.train(jobs.TrainOptions(data=str(digits_artifact), out=out, save_precision="fp8")),
         UsageError, "--save-precision must be one of fp32, fp16, bf16"),
        (lambda: jobs.clip(jobs.ClipOptions(images=str(digits_artifact))),
         UsageError, f"{digits_artifact} lists no prompts for its images; give --prompts"),
        (lambda: jobs.fid(jobs.FidOptions(images=str(digits_artifact), ref="r.npz", save_ref_stats="s.npz")),
         UsageError, "--save-ref-stats needs --ref to be images, not statistics"),
        (lambda: jobs.train_classifier(jobs.ClassifierOptions(data=str(teachers[1]), out=out)),
         InputError, "is an artifact of kind 'teacher', but this needs 'images'"),
    ]
    for call, error, message in cases:
        with pytest.raises(error) as exc:
            call()
        assert message in str(exc.value), (message, str(exc.value))
    assert not (tmp_path / "x.safetensors").exists()


def test_eval_forget_from_python_refuses_a_model_without_pairs():
    from gaml_cli.methods.sfd.evaluate import ForgetEvalOptions, evaluate_forgetting

    with pytest.raises(UsageError, match="records no forgotten conditions; give --forget"):
        evaluate_forgetting(ForgetEvalOptions(model="digits", device="cpu"))


@pytest.mark.parametrize("command,options", [
    ("train.train", jobs.TrainOptions), ("sample.sample", jobs.SampleOptions), ("eval.fd", jobs.FdOptions),
    ("eval.clip", jobs.ClipOptions), ("eval.fid", jobs.FidOptions),
    ("eval.train_classifier_cmd", jobs.ClassifierOptions), ("eval.forget", "sfd"),
])
def test_each_options_class_has_the_commands_options(command, options):
    """Same names (forget_ is --forget), same defaults: Python and the command line never drift apart."""
    import importlib
    from enum import Enum

    if options == "sfd":
        from gaml_cli.methods.sfd.evaluate import ForgetEvalOptions as options
    module, name = command.split(".")
    fn = getattr(importlib.import_module(f"gaml_cli.commands.{module}"), name)
    params = {("forget" if p == "forget_" else p): v.default for p, v in inspect.signature(fn).parameters.items()
              if p not in ("fmt", "quiet")}
    fields = {f.name: f.default for f in dataclasses.fields(options)}
    assert set(params) == set(fields)
    for k, default in params.items():
        if default is inspect.Parameter.empty:
            assert fields[k] is dataclasses.MISSING, k
        else:
            assert fields[k] == (default.value if isinstance(default, Enum) else default), k
