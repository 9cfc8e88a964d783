"""gaml eval: score generated images (FD, conditional accuracy) and train the feature nets."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ._common import DeviceOpt, FormatOpt, QuietOpt, check_out, setup

app = typer.Typer(help="Evaluate generated images: Frechet distance and conditional accuracy.",
                  no_args_is_help=True)


@app.command("fd")
def fd(
    images: Annotated[str, typer.Option("--images", "-i", help="Generated 'images' artifact (from gaml sample).")],
    ref: Annotated[str, typer.Option("--ref", "-r", help="Real images: an 'images' artifact, or 'digits' / 'shapes'.")],
    classifier: Annotated[Optional[str], typer.Option(help="Feature classifier artifact or alias (default: the shipped one for the data set).")] = None,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the split of the reference into two halves.")] = 0,
    fmt: FormatOpt = "human",
    quiet: QuietOpt = False,
):
    """Frechet distance to real images in a gaml classifier's feature space, with its floor.

    With m = min(#samples, #reference / 2), the reference is split into disjoint halves A
    and B of m images: fd = FD(samples[:m], B) and floor = FD(A, B), both at the same
    sample size. accuracy: how often the classifier sees the asked-for class (digits) or
    all the caption's attributes (shapes) in the samples.

    Example:

    \b
        gaml sample --model digits -n 1000 --out s.safetensors
        gaml eval fd --images s.safetensors --ref digits --format json
    """
    setup(fmt, quiet)
    from ..core import console
    from ..core.artifacts import load_artifact
    from ..diffusion.eval import load_classifier, reference_images, score

    gen = load_artifact(images, "images")
    clf, clf_path = load_classifier(classifier, ref, gen.config)
    ref_x, ref_name = reference_images(ref, clf)
    result = score(clf, gen, ref_x, seed=seed)
    result.update({"images": images, "ref": ref_name, "classifier": str(clf_path)})
    console.summary(result, title="fd")


@app.command("clip")
def clip(
    images: Annotated[str, typer.Option("--images", "-i", help="Generated 'images' artifact whose config lists its prompts (gaml sample writes them).")],
    model: Annotated[str, typer.Option("--model", "-m", help="CLIP model: alias (clip-l14), hub id or local folder in transformers format.")] = "clip-l14",
    prompts: Annotated[Optional[str], typer.Option(help="Prompts instead of the artifact's: text (one a line) or JSONL with 'prompt'.")] = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    device: DeviceOpt = "auto",
    fmt: FormatOpt = "human",
    quiet: QuietOpt = False,
):
    """CLIP score: how well each image matches its prompt (cosine of CLIP embeddings).

    Reports clip_score (mean raw cosine, as SiD-LSG reports it) and clipscore_100 (mean of
    100 * max(cos, 0), as torchmetrics does). Weights come from the HF cache or a local
    folder; offline without them the error says what to provide.

    Example:

    \b
        gaml sample --model sd15 --prompts coco.txt -n 1000 --out s.safetensors
        gaml eval clip --images s.safetensors --model clip-l14 --format json
    """
    setup(fmt, quiet)
    import numpy as np

    from ..core import console, runtime
    from ..core.artifacts import load_artifact
    from ..core.errors import UsageError
    from ..core.prompts import cycle, read_prompts
    from ..diffusion.clip import ClipScorer

    art = load_artifact(images, "images")
    x = art["images"]
    if prompts is not None:
        texts = cycle(read_prompts(prompts), len(x))
    else:
        texts = art.config.get("prompts")
        if not texts or len(texts) != len(x):
            raise UsageError(f"{images} lists no prompts for its images; give --prompts")
    dev = runtime.pick_device(device.value if hasattr(device, "value") else device)
    scorer = ClipScorer(model, device=dev)
    cos = scorer.cosines(x, texts, batch_size=batch_size)
    console.summary({"clip_score": float(cos.mean()), "clipscore_100": float((100 * np.maximum(cos, 0)).mean()),
                     "std": float(cos.std()), "n": int(len(cos)), "model": str(scorer.path), "images": images},
                    title="clip")


@app.command("train-classifier")
def train_classifier_cmd(
    data: Annotated[str, typer.Option("--data", "-d", help="An 'images' artifact with labels or attrs.")],
    out: Annotated[str, typer.Option("--out", "-o", help="Classifier artifact to write (.safetensors).")],
    epochs: Annotated[int, typer.Option(min=1, help="Passes over the training split.")] = 30,
    batch_size: Annotated[int, typer.Option(min=1)] = 128,
    lr: Annotated[float, typer.Option(min=0.0, help="Peak learning rate (one-cycle).")] = 2e-3,
    seed: Annotated[int, typer.Option(min=0)] = 0,
    fmt: FormatOpt = "human",
    quiet: QuietOpt = False,
):
    """Train the small CNN whose features `gaml eval fd` uses and whose heads score accuracy.

    Trains on the artifact's train split and reports accuracy on its test split.

    Example:

    \b
        gaml eval train-classifier --data data/digits.safetensors --out digits-classifier.safetensors
    """
    setup(fmt, quiet)
    from ..core import console
    from ..core.artifacts import load_artifact, save_artifact
    from ..core.errors import InputError
    from ..diffusion.features import targets_of, train_classifier

    check_out(out, ".safetensors")
    art = load_artifact(data, "images")
    try:
        y, heads, names = targets_of(art)
    except ValueError as exc:
        raise InputError(f"{data}: {exc}") from None
    x = art["images"]
    split = art["split"] if "split" in art.tensors else None
    tr = split == 0 if split is not None else slice(None)
    te = split == 1 if split is not None else None
    model, report = train_classifier(
        x[tr], {k: v[tr] for k, v in y.items()}, heads, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
        x_val=x[te] if te is not None and te.any() else None,
        y_val={k: v[te] for k, v in y.items()} if te is not None and te.any() else None)
    config = {"model": model.config, "classes": names, "dataset": art.config.get("dataset"), "train": report}
    save_artifact(out, model.state_dict(), kind="classifier", config=config, seed=seed, parents=[data])
    console.summary({"out": out, **report}, title="classifier")
