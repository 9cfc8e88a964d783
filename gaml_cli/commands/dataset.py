"""gaml dataset: data sets that ship with a package or that gaml generates."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ._common import DeviceOpt, FormatOpt, OracleOpt, QuietOpt, check_folder_out, check_out, out_file, out_folder, setup, value

app = typer.Typer(
    help="Data sets that work offline: scikit-learn's digits, gaml's captioned shapes, and preference pairs scored by an oracle.\n\nExample:\n\n\b\n    gaml dataset digits --out data/digits.safetensors --grid data/digits.png\n    gaml dataset shapes -n 2000 --out data/shapes.safetensors",
    no_args_is_help=True,
)


@app.command("digits")
def digits(
    out: Annotated[str, typer.Option("--out", "-o", callback=out_file(".safetensors"), help="Image artifact to write (.safetensors).")],
    test_fraction: Annotated[float, typer.Option(min=0.0, max=0.9, help="Share of each class held out as test.")] = 0.2,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the stratified split.")] = 0,
    grid: Annotated[Optional[str], typer.Option(callback=out_file(".png"), help="Also write a PNG grid of the first 100 images.")] = None,
    fmt: FormatOpt = "human",
    quiet: QuietOpt = False,
):
    """Write scikit-learn's 8x8 digits (1,797 images, labels 0-9) as an image artifact.

    Images are (N, 1, 8, 8) float32 in [-1, 1] with tensors `images`, `labels` and `split`
    (0 train, 1 test; stratified by label, fixed by --seed).

    Example:

    \b
        gaml dataset digits --out data/digits.safetensors --grid data/digits.png
    """
    setup(fmt, quiet)
    from ..core import console
    from ..core.artifacts import file_sha256, save_artifact
    from ..core.images import IMAGE_KIND, save_grid
    from ..datasets import digits as ds

    check_out(out, ".safetensors")
    check_out(grid, ".png", "--grid", inputs={"--out": out})
    tensors = ds.load(test_fraction=test_fraction, seed=seed)
    path = save_artifact(out, tensors, kind=IMAGE_KIND, config=ds.config(test_fraction, seed), seed=seed)
    if grid:
        save_grid(tensors["images"][:100], grid, nrow=10)
    split = tensors["split"]
    console.summary(
        {
            "out": str(path),
            "kind": IMAGE_KIND,
            "images": int(len(split)),
            "train": int((split == 0).sum()),
            "test": int((split == 1).sum()),
            "shape": [1, 8, 8],
            "classes": 10,
            "grid": grid,
            "sha256": file_sha256(path),
        },
        title="digits",
    )


@app.command("shapes")
def shapes(
    out: Annotated[str, typer.Option("--out", "-o", callback=out_file(".safetensors"), help="Image artifact to write (.safetensors).")],
    captions: Annotated[Optional[str], typer.Option(callback=out_file(".jsonl", stdout=True), help="Captions + attributes JSONL ('-' for stdout). Default: next to --out, same name, .jsonl.")] = None,
    n: Annotated[int, typer.Option("--n", "-n", min=1, max=1_000_000, help="Number of images.")] = 10000,
    seed: Annotated[int, typer.Option(min=0, help="Image i is drawn from the stream (seed, i).")] = 0,
    size: Annotated[int, typer.Option(min=8, max=32, help="Image side in pixels (8..32).")] = 32,
    test_fraction: Annotated[float, typer.Option(min=0.0, max=0.9, help="Expected share of test images.")] = 0.2,
    spec: Annotated[Optional[str], typer.Option(help="JSONL ('-' = stdin): one image a line, fixing any of shape, color, background, radius, x, y; the rest is random. Overrides --n.")] = None,
    grid: Annotated[Optional[str], typer.Option(callback=out_file(".png"), help="Also write a PNG grid of the first 64 images.")] = None,
    fmt: FormatOpt = "human",
    quiet: QuietOpt = False,
):
    """Generate captioned shapes: "a red circle on a blue background" and so on.

    4 shapes x 7 colours x 6 other background colours, random size and position,
    anti-aliased. Images go to a safetensors artifact (`images` (N, 3, S, S) in [-1, 1],
    `attrs` (N, 3) = shape, colour, background ids, `split`); captions and attributes go to
    JSONL, one record a line. Deterministic: the same --seed gives the same bytes, and
    image i does not depend on --n.

    Example:

    \b
        gaml dataset shapes --n 2000 --seed 0 --out data/shapes.safetensors --grid data/shapes.png
        echo '{"shape": "circle", "color": "red", "background": "blue"}' |
          gaml dataset shapes --spec - --out red-circle.safetensors
    """
    setup(fmt, quiet)
    from pathlib import Path

    from ..core import console
    from ..core.artifacts import file_sha256, save_artifact, write_jsonl
    from ..core.images import IMAGE_KIND, save_grid
    from ..datasets import shapes as ds

    check_out(out, ".safetensors", inputs={"--spec": spec})
    check_out(grid, ".png", "--grid", inputs={"--out": out, "--spec": spec})
    cap_path = captions or str(Path(out).with_suffix(".jsonl"))
    if cap_path == "-":
        console.files_follow()  # `--captions - | head` still writes the artifact
    if cap_path != "-":
        check_out(cap_path, ".jsonl", "--captions", inputs={"--spec": spec})
        if Path(cap_path).resolve() == Path(out).resolve():
            from ..core.errors import UsageError

            raise UsageError("--captions and --out must be different files")
    specs = None
    if spec is not None:
        from ..core.artifacts import read_jsonl
        from ..core.errors import InputError

        specs = list(read_jsonl(spec, validate=ds.validate_spec))
        if not specs:
            raise InputError(f"{spec}: no records")
        n = len(specs)
    with console.progress(n, "shapes") as bar:
        tensors, records = ds.generate(n, seed, size=size, test_fraction=test_fraction, progress=bar,
                                       specs=specs)
    write_jsonl(cap_path, records)
    cap_name = Path(cap_path).name if cap_path != "-" else None
    cfg = ds.config(n, seed, size, test_fraction, cap_name)
    parents = []
    if spec is not None and spec != "-":
        parents.append(spec)
        cfg["spec"] = Path(spec).name
    if cap_path != "-":
        cfg["captions_sha256"] = file_sha256(cap_path)
    path = save_artifact(out, tensors, kind=IMAGE_KIND, config=cfg, seed=seed, parents=parents)
    if grid:
        save_grid(tensors["images"][:64], grid, nrow=8)
    split = tensors["split"]
    console.summary(
        {
            "out": str(path),
            "captions": cap_path,
            "kind": IMAGE_KIND,
            "images": n,
            "train": int((split == 0).sum()),
            "test": int((split == 1).sum()),
            "shape": [3, size, size],
            "grid": grid,
            "sha256": file_sha256(path),
        },
        title="shapes",
        stdout_busy=cap_path == "-",
    )


@app.command("prefs")
def prefs(
    out: Annotated[str, typer.Option("--out", "-o", callback=out_folder, help="New or empty folder: images/*.png and prefs.jsonl.")],
    oracle: OracleOpt = "size",
    model: Annotated[str, typer.Option("--model", "-m", help="A caption-conditional teacher or one-step generator: an artifact, a run folder, or the alias shapes.")] = "shapes",
    n: Annotated[Optional[int], typer.Option("--n", "-n", min=1, max=1_000_000, help="Number of pairs [default: 1000, or one per --captions line].")] = None,
    captions: Annotated[Optional[str], typer.Option(help="Captions, one a line (text) or JSONL with 'prompt'/'caption' ('-' = stdin); cycled over the pairs. Default: random captions from the model's attributes.")] = None,
    steps: Annotated[Optional[int], typer.Option(min=1, max=1000, help="Sampler steps (teachers; default from the model).")] = None,
    guidance: Annotated[Optional[float], typer.Option(min=0.0, help="Classifier-free guidance scale (default from the model).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Samples per forward pass (does not change the samples).")] = 256,
    seed: Annotated[int, typer.Option(min=0, help="Image a of pair i uses seed (seed, 2i), b uses (seed, 2i + 1).")] = 0,
    device: DeviceOpt = "auto",
    fmt: FormatOpt = "human",
    quiet: QuietOpt = False,
):
    """Offline preference pairs: two samples per caption, the oracle's favourite is "chosen".

    For each caption the model draws two images with different seeds; --oracle scores both
    from their pixels (a property the caption leaves free: size or position) and the higher
    is chosen. Writes OUT/images/NNNNN-a.png and -b.png (RGB, the model's resolution) and
    OUT/prefs.jsonl, one pair a line: {"prompt", "chosen", "rejected" (paths relative to
    OUT), "label" (1, or 0.5 when the scores tie exactly), "oracle", "chosen_score",
    "rejected_score"}. The summary gives pairs, ties, mean_margin (the mean chosen-minus-
    rejected score) and seconds. The oracles are in docs/diffusion.md ("Preference data and
    oracles").

    Example:

    \b
        gaml dataset prefs --model shapes --oracle size -n 1000 --out prefs-size
        gaml dataset prefs --model shapes --oracle left -n 8 --steps 10 --out prefs-left --format json
    """
    setup(fmt, quiet)
    from ..core import console
    from ..datasets.prefs import PrefsOptions, prefs as run_prefs

    check_folder_out(out, inputs={"--captions": captions, "--model": model})
    summary = run_prefs(PrefsOptions(out=out, oracle=value(oracle), model=model, n=n, captions=captions, steps=steps,
                                     guidance=guidance, batch_size=batch_size, seed=seed, device=value(device)))
    console.summary(summary, title="prefs")


@app.command("arithmetic")
def arithmetic(
    out: Annotated[str, typer.Option("--out", "-o", callback=out_folder, help="Folder to write train.jsonl and test.jsonl into.")],
    test: Annotated[int, typer.Option(min=1, max=9999, help="Held-out sums in test.jsonl (never in train.jsonl).")] = 500,
    train: Annotated[Optional[int], typer.Option(min=1, help="Sums in train.jsonl (default: all the others, 10,000 - --test).")] = None,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the shuffle that splits train and test.")] = 0,
    fmt: FormatOpt = "human",
    quiet: QuietOpt = False,
):
    """Two-digit sums as a language task with a checkable answer: {"prompt": "37+48=", "completion": "85"}.

    a and b are integers 0-99; the prompt is exactly "{a}+{b}=" and the completion the decimal
    sum. The 10,000 ordered pairs are shuffled by --seed; the first --test are held out.

    Example:

    \b
        gaml dataset arithmetic --out data/arith
        gaml eval answers --completions c.jsonl --data data/arith/test.jsonl
    """
    setup(fmt, quiet)
    from pathlib import Path

    from ..core import console
    from ..core.artifacts import output_group, write_jsonl
    from ..datasets import arithmetic as ds

    check_folder_out(out)
    train_rows, test_rows = ds.make(test=test, train=train, seed=seed)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    with output_group():
        write_jsonl(folder / "train.jsonl", train_rows)
        write_jsonl(folder / "test.jsonl", test_rows)
    console.summary({"out": str(folder), "train": len(train_rows), "test": len(test_rows), "seed": seed},
                    title="dataset arithmetic")
