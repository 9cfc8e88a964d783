"""gaml eval: score generated images (FD, conditional accuracy) and train the feature nets.

Thin: the jobs are in gaml_cli.diffusion.jobs (fd, clip, fid, train-classifier),
gaml_cli.methods.sfd.evaluate (forget) and gaml_cli.datasets.prefs (reward).
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ._common import DeviceOpt, FormatOpt, Oracle, QuietOpt, check_out, out_file, setup, value

app = typer.Typer(help="Evaluate generated images: Frechet distance, conditional accuracy, oracle rewards.\n\nExample:\n\n\b\n    gaml sample --model digits -n 1000 --out s.safetensors\n    gaml eval fd --images s.safetensors --ref digits",
                  no_args_is_help=True)


@app.command("fd")
def fd(
    images: Annotated[str, typer.Option("--images", "-i", help="Generated 'images' artifact (from gaml sample).")],
    ref: Annotated[str, typer.Option("--ref", "-r", help="Real images: an 'images' artifact, or 'digits' / 'shapes'.")],
    classifier: Annotated[Optional[str], typer.Option(help="Feature classifier artifact or alias (default: the shipped one for the data set).")] = None,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the split of the reference into two halves.")] = 0,
    features: Annotated[Optional[str], typer.Option(help="Feature spaces, comma-separated: classifier (gaml's), mlp (a scikit-learn MLP trained on the real train split), pixels (random projection to 64 dims) [all; mlp where the reference has labels].")] = None,
    fmt: FormatOpt = "human",
    quiet: QuietOpt = False,
):
    """Frechet distance and KID to real images in several feature spaces, with their floors.

    With m = min(#samples, #reference / 2), the reference is split into disjoint halves A
    and B of m images: fd = FD(samples[:m], B) and floor = FD(A, B), both at the same
    sample size; the top-level fd / floor / ratio are in gaml's classifier's features.
    "spaces" repeats this in each --features space (classifier; mlp: a scikit-learn MLP's
    penultimate layer, independent of gaml; pixels) and adds KID (unbiased, polynomial
    kernel) with its jackknife standard error, for the samples and for the floor.
    accuracy: how often the classifier sees the asked-for class (digits) or all the
    caption's attributes (shapes) in the samples.

    Example:

    \b
        gaml sample --model digits -n 1000 --out s.safetensors
        gaml eval fd --images s.safetensors --ref digits --format json
        gaml eval fd --images s.safetensors --ref digits --features mlp,pixels
    """
    setup(fmt, quiet)
    from ..core import console
    from ..diffusion.jobs import FdOptions, fd as run_fd, fd_lines

    result = run_fd(FdOptions(images=images, ref=ref, classifier=classifier, seed=seed, features=features))
    console.summary(result if console.state.format == "json" else fd_lines(result), title="fd")


@app.command("compare")
def compare(
    images: Annotated[str, typer.Option("--images", "-i", help="Samples to judge (e.g. a one-step generator's, from gaml sample).")],
    against: Annotated[str, typer.Option("--against", "-a", help="Samples to judge them against (e.g. the teacher's, same seeds and n).")],
    ref: Annotated[str, typer.Option("--ref", "-r", help="Real images: an 'images' artifact, or 'digits' / 'shapes'.")],
    classifier: Annotated[Optional[str], typer.Option(help="Feature classifier artifact or alias (default: the shipped one for the data set).")] = None,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the split of the reference into two halves (one split for both).")] = 0,
    features: Annotated[Optional[str], typer.Option(help="Feature spaces, as in gaml eval fd [all that apply].")] = None,
    fmt: FormatOpt = "human",
    quiet: QuietOpt = False,
):
    """Two sample sets side by side against real images: FD and KID in every feature space, accuracy, speed.

    Runs `gaml eval fd` on both with the same reference split and spaces and prints one line:
    each space's FD of --images next to --against's (their ratio, the floor), KID with the
    larger standard error, class accuracy, and the ratio of the images/s that gaml sample
    recorded. --format json: the line, the ratios and both full eval fd results.

    Example:

    \b
        gaml sample --model runs/sid-digits -n 1000 --out g.safetensors
        gaml sample --model digits -n 1000 --steps 18 --out t.safetensors
        gaml eval compare --images g.safetensors --against t.safetensors --ref digits
    """
    setup(fmt, quiet)
    from ..core import console
    from ..diffusion.jobs import CompareOptions, compare as run_compare

    result = run_compare(CompareOptions(images=images, against=against, ref=ref, classifier=classifier, seed=seed,
                                        features=features))
    if console.state.format == "json":
        console.summary(result, title="compare")
    elif not console.state.quiet:
        console.err().print(result["line"], markup=False, highlight=False, soft_wrap=True)


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
    from ..core import console
    from ..diffusion.jobs import ClipOptions, clip as run_clip

    summary = run_clip(ClipOptions(images=images, model=model, prompts=prompts, batch_size=batch_size,
                                   device=value(device)))
    console.summary(summary, title="clip")


@app.command("fid")
def fid(
    images: Annotated[str, typer.Option("--images", "-i", help="Generated 'images' artifact (RGB or grey, any size).")],
    ref: Annotated[str, typer.Option("--ref", "-r", help="Real images: an 'images' artifact, or FID statistics (.npz with mu, sigma, as pytorch-fid saves them).")],
    inception: Annotated[Optional[str], typer.Option(help="FID Inception weights (pt_inception-2015-12-05-6726825d.pth); default: $GAML_FID_INCEPTION, then torch's hub cache.")] = None,
    save_ref_stats: Annotated[Optional[str], typer.Option(callback=out_file(".npz"), help="Also write the reference's statistics to this .npz, to pass as --ref next time.")] = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 50,
    device: DeviceOpt = "auto",
    fmt: FormatOpt = "human",
    quiet: QuietOpt = False,
):
    """FID of real RGB images: Frechet distance of Inception-v3 pool3 features.

    The network is the TF FID graph's Inception (the one papers' FIDs use, e.g. SiD-LSG's
    COCO numbers), loaded from the pytorch-fid weight file; images in [0, 1] are resized to
    299x299 as pytorch-fid does. Nothing is downloaded: put the file in torch's hub cache,
    or pass --inception. Below 2,048 images per side the covariances are rank-deficient and
    FID is biased upwards; gaml warns. For gaml's own small domains use `gaml eval fd`.

    Example:

    \b
        gaml sample --model sd15 --prompts coco.txt -n 10000 --out s.safetensors
        gaml eval fid --images s.safetensors --ref coco-val.safetensors --save-ref-stats coco.npz
        gaml eval fid --images s.safetensors --ref coco.npz --format json
    """
    setup(fmt, quiet)
    from ..core import console
    from ..diffusion.jobs import FidOptions, fid as run_fid

    if save_ref_stats is not None and not ref.endswith(".npz"):  # (statistics as --ref: the job refuses it first)
        check_out(save_ref_stats, ".npz", "--save-ref-stats", inputs={"--images": images, "--ref": ref})
    summary = run_fid(FidOptions(images=images, ref=ref, inception=inception, save_ref_stats=save_ref_stats,
                                 batch_size=batch_size, device=value(device)))
    console.summary(summary, title="fid")


@app.command("forget")
def forget(
    model: Annotated[str, typer.Option("--model", "-m", help="A gaml unlearn / distill run folder, a generator or teacher artifact, or an alias.")],
    forget_: Annotated[Optional[list[str]], typer.Option("--forget", help="A forgotten condition: class (0) or attribute value (color=red); repeat for several. Default: the pairs the run recorded.")] = None,
    into: Annotated[Optional[list[str]], typer.Option("--into", help="The override of each --forget (for into_rate).")] = None,
    n: Annotated[int, typer.Option("--n", "-n", min=2, help="Samples per forgotten condition, and for the retained conditions.")] = 1000,
    steps: Annotated[Optional[int], typer.Option(min=1, help="Sampler steps for teachers (one-step generators ignore it).")] = None,
    guidance: Annotated[Optional[float], typer.Option(min=0.0, help="Guidance for teachers (default: the model's).")] = None,
    prompts: Annotated[Optional[str], typer.Option(help="Stable Diffusion: the prompts (text or JSONL) the concepts are put into.")] = None,
    clip: Annotated[str, typer.Option(help="Stable Diffusion: the CLIP model that judges the concepts (alias, hub id or folder).")] = "clip-l14",
    seed: Annotated[int, typer.Option(min=0)] = 0,
    device: DeviceOpt = "auto",
    fmt: FormatOpt = "human",
    quiet: QuietOpt = False,
):
    """How well a model forgot: recognition of the forgotten conditions, quality of the rest.

    forgotten_recognised: share of samples asked for a forgotten condition that the shipped
    classifier still sees as it (lower is better); into_rate: share it sees as the override;
    retained_accuracy and retained_fd (with retained_floor, real vs real): conditional
    accuracy and FD on the retained conditions against their real images. Stable Diffusion
    (an unlearn/distill SD run or a pipeline) needs --prompts: CLIP judges whether each sample
    of "PROMPT, CONCEPT" is nearer that text than the override's, and retained_clip is the
    CLIP score of the prompts without the concept (needs the CLIP weights, --clip).

    Example:

    \b
        gaml unlearn --teacher digits --forget 0 --into 1 --out runs/sfd-digits
        gaml eval forget --model runs/sfd-digits --format json
        gaml eval forget --model digits --forget 0 --into 1      # the teacher, for comparison
        gaml eval forget --model runs/sfd-sd15 --prompts subjects.txt --clip clip-l14
    """
    setup(fmt, quiet)
    from ..core import console
    from ..methods.sfd.evaluate import ForgetEvalOptions, evaluate_forgetting

    summary = evaluate_forgetting(ForgetEvalOptions(model=model, forget=forget_, into=into, n=n, steps=steps,
                                                    guidance=guidance, prompts=prompts, clip=clip, seed=seed,
                                                    device=value(device)))
    console.summary(summary, title="forget")


@app.command("train-classifier")
def train_classifier_cmd(
    data: Annotated[str, typer.Option("--data", "-d", help="An 'images' artifact with labels or attrs.")],
    out: Annotated[str, typer.Option("--out", "-o", callback=out_file(".safetensors"), help="Classifier artifact to write (.safetensors).")],
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
    from ..diffusion.jobs import ClassifierOptions, train_classifier

    check_out(out, ".safetensors", inputs={"--data": data})
    summary = train_classifier(ClassifierOptions(data=data, out=out, epochs=epochs, batch_size=batch_size, lr=lr,
                                                 seed=seed))
    console.summary(summary, title="classifier")


@app.command("reward")
def reward(
    images: Annotated[str, typer.Option("--images", "-i", help="An 'images' artifact (gaml sample, gaml dataset shapes).")],
    oracle: Annotated[Optional[Oracle], typer.Option("--oracle", help="One of gaml's shapes oracles (size, small, left, centered); the default when no --model is given: size.")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="A reward model for real images instead of an oracle: pickscore (PickScore v1; tokenizer from clip-h14), a hub id or a local transformers CLIPModel folder.")] = None,
    prompts: Annotated[Optional[str], typer.Option("--prompts", help="With --model: a prompts file (one per line, cycled) instead of the prompts the artifact lists.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per batch (--model).")] = 64,
    device: DeviceOpt = "auto",
    fmt: FormatOpt = "human",
    quiet: QuietOpt = False,
):
    """Reward of images: mean, std, min, quantiles and max over an images artifact, by one of
    gaml's oracles or by a reward model.

    The oracles measure, from the pixels, a property of gaml's synthetic shapes that their
    caption leaves free (the same scores `gaml dataset prefs` ranks pairs by): size (area
    share), small (1 - area share), left (1 - centroid x), centered (minus the centroid's
    distance to the centre); higher is preferred. no_shape counts images where no shape
    stands out from the background. They suit gaml's shapes, not real photographs.

    For real images, --model scores each image against its prompt with a CLIP-format reward
    model: PickScore's score, exp(logit_scale) * cos(image, prompt) (about 100 x the cosine),
    with its cosine beside it. PickScore v1 loads through transformers when its weights are
    present (gaml models download pickscore; clip-h14 gives its tokenizer). HPS v2 ships as an
    open_clip checkpoint, which gaml does not load.

    Example:

    \b
        gaml sample --model shapes -n 256 --out s.safetensors
        gaml eval reward --images s.safetensors --oracle size --format json
        gaml eval reward --images sd-samples.safetensors --model pickscore
    """
    setup(fmt, quiet)
    from ..core import console
    from ..datasets.prefs import RewardOptions, reward as run_reward

    summary = run_reward(RewardOptions(images=images, oracle=value(oracle), model=model, prompts=prompts,
                                       batch_size=batch_size, device=value(device)))
    console.summary(summary, title="reward")


@app.command("answers")
def answers(
    completions: Annotated[str, typer.Option("--completions", "-c", help="JSONL {\"prompt\", \"completion\"} (gaml align generate's output; '-' for stdin).")],
    data: Annotated[str, typer.Option("--data", "-d", help="JSONL with the reference answers: {\"prompt\", \"completion\"} (or \"chosen\").")],
    fmt: FormatOpt = "human",
    quiet: QuietOpt = False,
):
    """Exact-match accuracy of generated answers against reference answers, matched by prompt.

    Example:

    \b
        gaml align generate --model runs/sapo --prompts data/arith/test.jsonl > c.jsonl
        gaml eval answers --completions c.jsonl --data data/arith/test.jsonl
    """
    setup(fmt, quiet)
    from ..core import console
    from ..core.artifacts import read_jsonl
    from ..datasets.arithmetic import exact_match

    def check(rec):
        if not isinstance(rec.get("prompt"), str) or not isinstance(rec.get("completion"), str):
            raise ValueError("expected string 'prompt' and 'completion' fields")

    comp = list(read_jsonl(completions, validate=check))
    ref = list(read_jsonl(data))
    console.summary(exact_match(comp, ref), title="eval answers")
