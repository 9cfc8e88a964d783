"""gaml dataset: data sets that ship with a package or that gaml generates."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Optional

import typer

from ._common import DeviceOpt, FormatOpt, OracleOpt, QuietOpt, check_folder_out, check_out, out_file, out_folder, setup, value

app = typer.Typer(
    help="Data sets that work offline: scikit-learn's digits, gaml's captioned shapes, preference pairs scored by an oracle, synthetic videos; and the Openstory++ pipeline from videos to keyframes to webdataset shards.\n\nExample:\n\n\b\n    gaml dataset digits --out data/digits.safetensors --grid data/digits.png\n    gaml dataset shapes -n 2000 --out data/shapes.safetensors\n    gaml dataset videos -n 4 --out vids && gaml dataset keyframes vids --out kf > frames.jsonl",
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


def _range(lo: int, hi: int):
    def check(text: str) -> str:
        from ..datasets.videos import parse_range

        try:
            parse_range(text, lo, hi)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        return text

    return check


@app.command("videos")
def videos(
    out: Annotated[str, typer.Option("--out", "-o", callback=out_folder, help="Folder for the videos, their ground-truth JSON and videos.jsonl.")],
    n: Annotated[int, typer.Option("--n", "-n", min=1, max=100_000, help="Number of videos.")] = 8,
    seed: Annotated[int, typer.Option(min=0, help="Video i is drawn from the stream (seed, i).")] = 0,
    width: Annotated[int, typer.Option(min=32, max=4096, help="Frame width in pixels (even).")] = 256,
    height: Annotated[int, typer.Option(min=32, max=4096, help="Frame height in pixels (even).")] = 192,
    fps: Annotated[int, typer.Option(min=1, max=240, help="Frames per second.")] = 24,
    shots: Annotated[str, typer.Option(callback=_range(1, 1000), help="Shots per video, A-B (inclusive) or A.")] = "3-6",
    shot_frames: Annotated[str, typer.Option(callback=_range(1, 100_000), help="Frames per shot, A-B or A.")] = "12-48",
    objects: Annotated[str, typer.Option(callback=_range(1, 8), help="Shapes per shot, A-B or A (1-8).")] = "1-3",
    palette: Annotated[str, typer.Option(help="shapes: the shapes data set's 7 named colours (jittered); random: any RGB colour (named by the nearest in captions).")] = "shapes",
    codec: Annotated[str, typer.Option(help="h264 (.mp4, yuv420p, CRF 18) or ffv1 (.mkv, lossless).")] = "h264",
    fmt: FormatOpt = "human",
    quiet: QuietOpt = False,
):
    """Synthetic videos with known shots: moving shapes on drifting backgrounds, hard cuts.

    Each shot has a panning two-colour background and 1-3 shapes (gaml's shapes renderer)
    moving in straight lines; at a cut every colour, shape and position changes. Writes
    OUT/video-NNNNN.mp4 (PyAV; .mkv with --codec ffv1), OUT/video-NNNNN.json (ground truth:
    `cuts` = first frame of each shot after the first, `shots` with `start_frame`,
    `end_frame`, `caption` and each object's visible box per frame, [x1, y1, x2, y2] in
    pixels) and OUT/videos.jsonl (one line per video). Video i depends only on (--seed, i).

    Example:

    \b
        gaml dataset videos -n 8 --out vids
        gaml dataset videos -n 4 --seed 7 --palette random --shot-frames 10-60 --out unseen
    """
    setup(fmt, quiet)
    from pathlib import Path

    from ..core import console
    from ..core.artifacts import atomic_path, write_jsonl
    from ..core.errors import UsageError
    from ..datasets import videos as V

    if palette not in V.PALETTES:
        raise UsageError(f"--palette {palette}: expected one of {', '.join(V.PALETTES)}")
    if codec not in V.CODECS:
        raise UsageError(f"--codec {codec}: expected one of {', '.join(V.CODECS)}")
    if width % 2 or height % 2:
        raise UsageError(f"--width {width} --height {height}: both must be even (yuv420p video)")
    check_folder_out(out)
    opt = V.VideoOptions(width=width, height=height, fps=fps, shots=V.parse_range(shots, 1, 1000),
                         shot_frames=V.parse_range(shot_frames, 1, 100_000), objects=V.parse_range(objects, 1, 8),
                         palette=palette, codec=codec)

    def write_file(path, writer):
        with atomic_path(path) as tmp:
            writer(tmp)

    import time

    t0 = time.perf_counter()
    with console.progress(n, "videos") as bar:
        rows = V.generate(out, n, seed, opt, write_file=write_file, progress=bar)
    write_jsonl(Path(out) / "videos.jsonl", rows)
    frames = sum(r["frames"] for r in rows)
    console.summary({"out": out, "videos": n, "frames": frames, "shots": sum(r["shots"] for r in rows),
                     "cuts": sum(len(r["cuts"]) for r in rows), "codec": codec, "size": [width, height],
                     "seconds": round(time.perf_counter() - t0, 3)}, title="videos")


@app.command("keyframes")
def keyframes(
    videos: Annotated[list[str], typer.Argument(help="Video files (anything PyAV/FFmpeg decodes) or folders of them.", show_default=False)],
    out: Annotated[str, typer.Option("--out", "-o", callback=out_folder, help="Folder for the keyframes: OUT/<video-id>/<shot>-<frame>.jpg and keyframes.json per video.")],
    size: Annotated[int, typer.Option(min=16, max=4096, help="Side of the square keyframes: resize the short side, crop the centre.")] = 512,
    per_shot: Annotated[int, typer.Option(min=1, max=100, help="Keyframes per shot (evenly spaced; fewer after filters).")] = 1,
    threshold: Annotated[float, typer.Option(min=0.0, max=255.0, help="Content-detector threshold (PySceneDetect's default 27): mean HSV change that starts a new shot.")] = 27.0,
    min_shot: Annotated[int, typer.Option(min=1, help="Shortest shot in frames (PySceneDetect's min_scene_len).")] = 8,
    min_sharpness: Annotated[float, typer.Option(min=0.0, help="Blur filter: drop keyframes whose edge sharpness is lower (sharp synthetic frames 1.3-2.1, Gaussian blur sigma 1 about 0.55; 0 = off).")] = 0.8,
    min_side: Annotated[int, typer.Option(min=1, help="Size filter: no keyframes from a video whose short side is smaller.")] = 128,
    max_hamming: Annotated[int, typer.Option(min=-1, max=64, help="Near-duplicates: pHash within this many bits (of 64) ... (-1 = keep duplicates).")] = 6,
    max_color: Annotated[float, typer.Option(min=0.0, max=255.0, help="... and 8x8 colour thumbnails within this mean difference (0-255).")] = 12.0,
    quality: Annotated[int, typer.Option(min=1, max=100, help="JPEG quality.")] = 95,
    shard: Annotated[Optional[str], typer.Option(help="i/N: process only slice i (0 .. N-1) of N of the inputs, for job arrays.")] = None,
    records: RecordsOpt = "-",
    fmt: FormatOpt = "human",
    quiet: QuietOpt = False,
):
    """Shots and keyframes of videos: one JSONL record per keyframe on stdout.

    Shots: PySceneDetect's ContentDetector rule (mean HSV change between frames at least
    --threshold, hue compared around the circle; shots at least --min-shot frames)
    re-implemented on frames PyAV decodes
    (neither OpenCV nor PySceneDetect needed). Keyframes: the sharpest frame near each of
    --per-shot even slots of a shot; blur (--min-sharpness) and size (--min-side) filters;
    near-duplicates within a video dropped (pHash and colour thumbnail); resized and
    centre-cropped to --size. Record: {"video", "video_id", "shot", "start_frame",
    "end_frame", "frame_index", "time", "image", "sharpness"} (frames counted from 0, end
    inclusive, time in seconds). A rerun skips videos already done with the same options and
    prints their records again. A video that is missing or cannot be decoded gets one line on
    stderr, the others are processed, and the run exits 1 at the end, naming them.

    Example:

    \b
        gaml dataset keyframes vids/*.mp4 --out kf > frames.jsonl
        gaml dataset keyframes vids --out kf --shard 0/4 > frames-0.jsonl
    """
    setup(fmt, quiet)
    from ..core import console
    from ..core.errors import RuntimeFailure
    from ..core.shards import parse_shard
    from ..methods.stories.keyframes import KeyframesOptions, expand_inputs, keyframes as run_keyframes

    sh = parse_shard(shard)
    check_folder_out(out)
    check_out(None if records == "-" else records, ".jsonl", "--records", stdout_ok=True)
    opt = KeyframesOptions(videos=list(videos), out=out, size=size, per_shot=per_shot, threshold=threshold,
                           min_shot=min_shot, min_sharpness=min_sharpness, min_side=min_side,
                           max_hamming=max_hamming, max_color=max_color, quality=quality, shard=sh)
    total = len(expand_inputs(opt.videos))
    with console.progress(total if sh is None else None, "keyframes") as bar, _RecordSink(records) as w:
        summary = run_keyframes(opt, emit=w.write, progress=bar, warn=console.warn)
    console.summary(summary, title="keyframes", stdout_busy=records == "-")
    if summary["failed"]:
        names = ", ".join(f["video"] for f in summary["failed"])
        raise RuntimeFailure(f"{len(summary['failed'])} of {summary['videos']} videos failed: {names}")


@app.command("pack")
def pack(
    records: Annotated[str, typer.Argument(help="Records JSONL ('-' = stdin): `image` (a frame) and optionally `mask_image` (a palette PNG), as keyframes writes them.", show_default=False)],
    out: Annotated[str, typer.Option("--out", "-o", callback=out_folder, help="Folder for the shards: OUT/shard-NNNNNN.tar and OUT/shards.json.")],
    max_size: Annotated[str, typer.Option(help="Largest shard (bytes of the tar): 500MB, 1GB, 1GiB ...")] = "1GB",
    max_count: Annotated[int, typer.Option(min=1, help="Most samples per shard.")] = 10000,
    prefix: Annotated[str, typer.Option(help="Shard file names: PREFIX-NNNNNN.tar.")] = "shard",
    shard: Annotated[Optional[str], typer.Option(help="i/N: pack only slice i (0 .. N-1) of N of the records, into PREFIX-IIIII-NNNNNN.tar.")] = None,
    fmt: FormatOpt = "human",
    quiet: QuietOpt = False,
):
    """Pack records into webdataset tar shards: `<key>.jpg`, `<key>.json`, `<key>.png`.

    Each record becomes a sample: the image as jpg, its `mask_image` as png when it has one,
    the rest of the record as json. A shard closes before the sample that would take it
    over --max-size (a sample larger than that alone gets its own shard) or --max-count.
    Read them with `webdataset.WebDataset("OUT/shard-{000000..000009}.tar")`. A record whose
    image is missing gets one line on stderr and is skipped; the run exits 1 at the end. A
    rerun with unchanged records, files and options writes nothing; --shard i/N packs one
    slice of the records into shards of its own.

    Example:

    \b
        gaml dataset keyframes vids --out kf > frames.jsonl
        gaml dataset pack frames.jsonl --out shards --max-size 500MB
    """
    setup(fmt, quiet)
    import re

    from ..core import console
    from ..core.artifacts import read_jsonl
    from ..core.errors import RuntimeFailure, UsageError
    from ..methods.stories.pack import PackOptions, pack as run_pack, parse_size, validate_record

    try:
        limit = parse_size(max_size)
    except ValueError as exc:
        raise UsageError(f"--max-size {exc}") from None
    if not re.fullmatch(r"[A-Za-z0-9_-]+", prefix):
        raise UsageError(f"--prefix {prefix!r}: use letters, digits, '-' and '_' only")
    check_folder_out(out, inputs={"records": records})
    recs = list(read_jsonl(records, validate=validate_record))
    # line numbers for messages: read_jsonl skips blank lines, so count them again from the file
    numbered = _numbered(records, recs)
    from ..core.shards import parse_shard

    opt = PackOptions(records=records, out=out, max_size=limit, max_count=max_count, prefix=prefix,
                      shard=parse_shard(shard))
    with console.progress(None if opt.shard else len(recs), "pack") as bar:
        summary = run_pack(opt, numbered, warn=console.warn, progress=bar)
    console.summary(summary, title="pack")
    if summary["failed"]:
        raise RuntimeFailure(f"{len(summary['failed'])} of {summary['samples'] + len(summary['failed'])} records failed (lines "
                             f"{', '.join(str(f['line']) for f in summary['failed'])})")


class AnnotateBackend(str, Enum):
    shapes = "shapes"
    transformers = "transformers"


class CaptionBackend(str, Enum):
    shapes = "shapes"
    transformers = "transformers"


class BenchDetector(str, Enum):
    shapes = "shapes"


@app.command("bench")
def bench(
    stories: Annotated[str, typer.Argument(help="Stories JSONL ('-' = stdin): {\"id\", \"frames\": [{\"image\", \"caption\"[, \"mask\", \"mask_image\"]}]} a line, or frame records with `story` (polish/annotate output).", show_default=False)],
    features: Annotated[str, typer.Option(help="Feature model: shapes (offline: the shipped shapes classifier's features, heads and first-block Gram matrices), or a CLIP model through transformers: an alias (clip-l14, clip-h14) or a local folder.")] = "shapes",
    detector: Annotated[BenchDetector, typer.Option(help="Instance finder for frames that come without `mask` (annotate's). shapes: offline colour regions.")] = BenchDetector.shapes,
    fmt: FormatOpt = "human",
    quiet: QuietOpt = False,
):
    """Cohere-Bench-style scores of image stories (unofficial: the benchmark's code is unreleased).

    semantic_alignment (the caption's attributes as the classifier sees them), and
    background_consistency, style_consistency and instance_consistency (mean cosine
    similarity over a story's frame pairs of background features, Gram matrices, and the
    crops of each instance noun), each per story and as a mean over stories. Definitions:
    docs/stories.md. --features shapes works offline; a CLIP model (alias or folder) gives
    CLIP-T alignment and CLIP-I consistency. DINO features are not built yet.

    Example:

    \b
        gaml dataset bench stories.jsonl --format json
        gaml dataset bench stories.jsonl --features clip-l14
    """
    setup(fmt, quiet)
    from ..core import console
    from ..core.artifacts import read_jsonl
    from ..core.errors import InputError
    from ..methods.stories.bench import bench as run_bench, validate_story

    recs = list(read_jsonl(stories, validate=validate_story))
    if not recs:
        raise InputError(f"{stories}: no stories")
    with console.progress(None, "bench") as bar:
        try:
            summary = run_bench(recs, stories, features=features, detector=value(detector), progress=bar)
        except FileNotFoundError as exc:
            raise InputError(f"{exc.filename}: no such file (an image or mask of {stories})") from None
    if console.state.format == "json":
        console.summary(summary)
    else:
        console.summary({k: v for k, v in summary.items() if k != "stories"}, title="bench")


class PolishBackend(str, Enum):
    rules = "rules"
    llm = "llm"


@app.command("polish")
def polish(
    records: Annotated[str, typer.Argument(help="Captioned records JSONL ('-' = stdin): `caption` and `entities` from gaml dataset caption.", show_default=False)],
    backend: Annotated[PolishBackend, typer.Option(help="Rewriter. rules: offline, unifies entity words within a shot of a story.")] = PolishBackend.rules,
    story_len: Annotated[int, typer.Option(min=1, max=100, help="Frames per story (consecutive frames of one video).")] = 5,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="--backend llm: a transformers causal LM (hub id, alias or local folder).")] = None,
    seed: Annotated[int, typer.Option(min=0, help="--backend llm: seed of the sampled retries.")] = 0,
    device: DeviceOpt = "auto",
    shard: Annotated[Optional[str], typer.Option(help="i/N: polish only slice i (0 .. N-1) of N of the videos (a story never spans two jobs).")] = None,
    out: RecordsOutOpt = "-",
    fmt: FormatOpt = "human",
    quiet: QuietOpt = False,
):
    """Group frames into stories and make their captions consistent.

    Frames of one video, in frame order, form stories of up to --story-len (5, as
    Openstory++); each record gets `story` and `story_frame`. The `rules` backend gives each
    colour one shape name and each shot one background word across a story's frames of that
    shot (the majority; ties: the first frame's), keeps the first caption as `origin_caption`
    and marks `polished`. `--backend llm --model M` asks a causal LM (transformers) to rewrite
    each caption with the story's nouns, greedy then two sampled tries, and keeps the
    original after 3 rejected answers (Openstory++'s rule); `fallbacks` counts them.

    Example:

    \b
        gaml dataset caption frames.jsonl | gaml dataset polish - > stories.jsonl
        gaml dataset polish captioned.jsonl --backend llm --model Qwen/Qwen2.5-0.5B-Instruct > stories.jsonl
    """
    setup(fmt, quiet)
    from ..core import console
    from ..core.artifacts import read_jsonl
    from ..methods.stories.polish import polish as run_polish, validate_record as validate_captioned

    from ..core.errors import UsageError
    from ..core.shards import parse_shard

    sh = parse_shard(shard)
    if value(backend) == "llm" and not model:
        raise UsageError("--backend llm needs --model (a transformers causal LM: hub id, alias or folder)")
    if value(backend) == "rules" and model:
        raise UsageError("--model is for --backend llm")
    if out != "-":
        check_out(out, ".jsonl", inputs={"RECORDS": records})
    recs = list(read_jsonl(records, validate=validate_captioned))
    if value(backend) == "llm":
        from ..core.runtime import pick_device
        from ..methods.stories.polish import polish_llm

        with console.progress(len(recs), "polish") as bar, _RecordSink(out) as w:
            summary = polish_llm(recs, emit=w.write, model=model, story_len=story_len, seed=seed,
                                 device=pick_device(value(device)), progress=bar, shard=sh)
        console.summary(summary, title="polish", stdout_busy=out == "-")
        return
    with _RecordSink(out) as w:
        summary = run_polish(recs, emit=w.write, story_len=story_len, shard=sh)
    console.summary(summary, title="polish", stdout_busy=out == "-")


@app.command("caption")
def caption(
    records: Annotated[str, typer.Argument(help="Records JSONL ('-' = stdin) with an `image` each, e.g. the output of keyframes.", show_default=False)],
    backend: Annotated[CaptionBackend, typer.Option(help="Captioner. shapes: offline, the shipped shapes classifier on each colour region of the frame; transformers: an image-to-text model (BLIP, BLIP-2, ...) given by --model.")] = CaptionBackend.shapes,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="--backend transformers: hub id, alias or local folder of an image-to-text model.")] = None,
    max_new_tokens: Annotated[int, typer.Option(min=1, max=512, help="--backend transformers: longest caption in tokens (30, as Openstory++).")] = 30,
    device: DeviceOpt = "auto",
    shard: Annotated[Optional[str], typer.Option(help="i/N: caption only slice i (0 .. N-1) of N of the records.")] = None,
    out: RecordsOutOpt = "-",
    fmt: FormatOpt = "human",
    quiet: QuietOpt = False,
):
    """A caption per frame: adds `caption`, `entities` and `caption_backend` to each record.

    The `shapes` backend finds the flat-coloured objects of a frame (as annotate's shapes
    backend), names each one's shape and colour with the shipped shapes classifier and the
    background by its mean colour: "a red circle and a white square on a blue background",
    objects from left to right. A missing image gets one line naming it; the rest is
    captioned and the run exits 1 at the end. `--backend transformers --model M` captions
    with an image-to-text model through transformers (BLIP, BLIP-2, ...; greedy, up to
    --max-new-tokens), without `entities`.

    Example:

    \b
        gaml dataset keyframes vids --out kf > frames.jsonl
        gaml dataset caption frames.jsonl > captioned.jsonl
        gaml dataset caption frames.jsonl --backend transformers --model Salesforce/blip2-opt-2.7b > captioned.jsonl
    """
    setup(fmt, quiet)
    from ..core import console
    from ..core.artifacts import read_jsonl
    from ..core.errors import RuntimeFailure
    from ..core.shards import parse_shard
    from ..methods.stories.annotate import validate_record
    from ..methods.stories.caption import CaptionOptions, caption as run_caption

    from ..core.errors import UsageError
    from ..core.runtime import pick_device

    sh = parse_shard(shard)
    if value(backend) == "transformers" and not model:
        raise UsageError("--backend transformers needs --model (an image-to-text model: hub id, alias or folder)")
    if value(backend) == "shapes" and model:
        raise UsageError("--model is for --backend transformers")
    if out != "-":
        check_out(out, ".jsonl", inputs={"RECORDS": records})
    recs = list(read_jsonl(records, validate=validate_record))
    opt = CaptionOptions(records=records, backend=value(backend), shard=sh, model=model,
                         device=pick_device(value(device)) if model else "cpu", max_new_tokens=max_new_tokens)
    with console.progress(None if sh else len(recs), "caption") as bar, _RecordSink(out) as w:
        summary = run_caption(opt, _numbered(records, recs), emit=w.write, warn=console.warn, progress=bar)
    console.summary(summary, title="caption", stdout_busy=out == "-")
    if summary["failed"]:
        raise RuntimeFailure(f"{len(summary['failed'])} of {summary['records']} records failed (lines "
                             f"{', '.join(str(f['line']) for f in summary['failed'])})")


@app.command("annotate")
def annotate(
    records: Annotated[str, typer.Argument(help="Records JSONL ('-' = stdin) with an `image` each, e.g. the output of keyframes.", show_default=False)],
    out: Annotated[str, typer.Option("--out", "-o", callback=out_folder, help="Folder for the masks: OUT/<video-id>/<frame>.png (palette, value = instance index) and a .json beside each.")],
    backend: Annotated[AnnotateBackend, typer.Option(help="Instance finder. shapes: offline, flat-coloured objects on a smooth background (gaml's synthetic videos); transformers: entity nouns -> --detector boxes -> --segmenter masks.")] = AnnotateBackend.shapes,
    detector: Annotated[Optional[str], typer.Option(help="--backend transformers: a zero-shot object detector (OWLv2, OWL-ViT, Grounding DINO, ...): hub id, alias or folder.")] = None,
    segmenter: Annotated[Optional[str], typer.Option(help="--backend transformers: a SAM model (box prompts): hub id, alias or folder.")] = None,
    threshold: Annotated[float, typer.Option(min=0.0, max=1.0, help="--backend transformers: lowest detection score kept.")] = 0.1,
    device: DeviceOpt = "auto",
    min_instances: Annotated[int, typer.Option(min=0, max=255, help="Drop frames with fewer instances.")] = 1,
    max_instances: Annotated[int, typer.Option(min=1, max=255, help="Drop frames with more instances.")] = 8,
    min_logit: Annotated[float, typer.Option(min=0.0, max=1.0, help="Drop instances with a lower score (shapes: how well the mask's fill matches its shape).")] = 0.5,
    shard: Annotated[Optional[str], typer.Option(help="i/N: annotate only slice i (0 .. N-1) of N of the records.")] = None,
    records_out: Annotated[str, typer.Option("--records", callback=out_file(".jsonl", stdout=True), help="Where the annotated JSONL records go ('-' = stdout).")] = "-",
    fmt: FormatOpt = "human",
    quiet: QuietOpt = False,
):
    """Instance boxes and index masks per frame, as Openstory++'s released records.

    Adds to each kept record `mask_image` (a palette PNG whose pixel values are instance
    indices: 0 background, 1.. instances, largest first, smaller ones drawn last) and `mask`:
    [{"value": 0, "label": "background"}, {"value", "label", "logit", "box": [x1, y1, x2, y2]}]
    (and `origin_caption` when the record has a `caption`). Frames with fewer than
    --min-instances or more than --max-instances are dropped (1-8, as Openstory++). A rerun
    reuses finished frames. A missing image gets one line naming it; the rest is processed
    and the run exits 1 at the end. `--backend transformers` prompts an open-vocabulary
    detector with the frame's entity nouns and SAM with its boxes (label = noun, logit =
    detection score); `shapes` works offline on gaml's synthetic frames.

    Example:

    \b
        gaml dataset keyframes vids --out kf > frames.jsonl
        gaml dataset annotate frames.jsonl --out masks > annotated.jsonl
        gaml dataset annotate captioned.jsonl --out masks --backend transformers \\
          --detector google/owlv2-base-patch16-ensemble --segmenter facebook/sam-vit-base > annotated.jsonl
    """
    setup(fmt, quiet)
    from ..core import console
    from ..core.artifacts import read_jsonl
    from ..core.errors import RuntimeFailure, UsageError
    from ..core.shards import parse_shard
    from ..methods.stories.annotate import AnnotateOptions, annotate as run_annotate, validate_record

    sh = parse_shard(shard)
    if min_instances > max_instances:
        raise UsageError(f"--min-instances {min_instances} is more than --max-instances {max_instances}")
    if value(backend) == "transformers" and not (detector and segmenter):
        raise UsageError("--backend transformers needs --detector and --segmenter (hub ids, aliases or folders)")
    if value(backend) == "shapes" and (detector or segmenter):
        raise UsageError("--detector and --segmenter are for --backend transformers")
    check_folder_out(out, inputs={"records": records})
    if records_out != "-":
        check_out(records_out, ".jsonl", "--records", inputs={"RECORDS": records})
    recs = list(read_jsonl(records, validate=validate_record))
    from ..core.runtime import pick_device

    opt = AnnotateOptions(records=records, out=out, backend=value(backend), min_instances=min_instances,
                          max_instances=max_instances, min_logit=min_logit, shard=sh, detector=detector,
                          segmenter=segmenter, threshold=threshold,
                          device=pick_device(value(device)) if detector else "cpu")
    with console.progress(None if sh else len(recs), "annotate") as bar, _RecordSink(records_out) as w:
        summary = run_annotate(opt, _numbered(records, recs), emit=w.write, warn=console.warn, progress=bar)
    console.summary(summary, title="annotate", stdout_busy=records_out == "-")
    if summary["failed"]:
        raise RuntimeFailure(f"{len(summary['failed'])} of {summary['records']} records failed (lines "
                             f"{', '.join(str(f['line']) for f in summary['failed'])})")


class _RecordSink:
    """Records to stdout as they come ('-'), or to a JSONL file written at the end, at once and
    outside the command's output group, so the file lands even when the run then exits 1."""

    def __init__(self, path: str):
        self.path = path
        self.rows: list[dict] = []
        self._w = None

    def __enter__(self):
        if self.path == "-":
            from ..core.artifacts import JsonlWriter

            self._w = JsonlWriter("-").__enter__()
        return self

    def write(self, rec: dict) -> None:
        if self._w is not None:
            self._w.write(rec)
        else:
            self.rows.append(rec)

    def __exit__(self, *exc):
        if self._w is not None:
            return self._w.__exit__(*exc)
        if exc[0] is None:
            import json

            from ..core.artifacts import atomic_write

            with atomic_write(self.path, "w", immediate=True) as fh:
                for rec in self.rows:
                    fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
        return False


RecordsOpt = Annotated[str, typer.Option("--records", callback=out_file(".jsonl", stdout=True), help="Where the JSONL records go ('-' = stdout).")]
RecordsOutOpt = Annotated[str, typer.Option("--out", "-o", callback=out_file(".jsonl", stdout=True), help="Where the JSONL records go ('-' = stdout).")]


def _numbered(path: str, recs: list[dict]) -> list[tuple[int, dict]]:
    if path == "-":
        return list(enumerate(recs, 1))
    with open(path, encoding="utf-8") as fh:
        lines = [i for i, line in enumerate(fh, 1) if line.strip()]
    return list(zip(lines, recs))
