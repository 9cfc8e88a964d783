"""GBD training: explicit loop (setup / train / save), EMA, AdamW, gradient clipping, resumable.

Per step: draw a batch of training graphs, a time t ~ U(t_min, 1) per graph, sample z_t for
every node feature and node pair (one draw per unordered pair), predict x0 and take an AdamW
step on KLUB_X + lambda KLUB_E with the concentrations of the graph's own degree profile.
Checkpoints (network, EMA, optimizer, random state, step) go to a folder every N steps and on
Ctrl-C / SIGTERM; --resume continues and reproduces the uninterrupted run.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ...core import console, runtime
from ...core.checkpoint import CheckpointDir, StepLoop
from ...core.runtime import require_finite
from ...core.ema import copy_buffers, ema_decay
from ...core.flat import FlatParams
from ...core.errors import InputError, UsageError
from ...graphs.io import Graph
from . import data as gd
from .gbd import GBD, GBDConfig, build_net
from .model import param_count

KIND = "gbd"


@dataclass
class TrainConfig:
    steps: int = 6500
    batch_size: int = 32
    lr: float = 1e-3
    lr_schedule: str = "constant"   # or "cosine": lr * (1 + cos(pi * step / steps)) / 2
    weight_decay: float = 1e-12
    ema: float = 0.999
    ema_std: float = 0.0            # > 0: EDM2's power-function EMA of this relative width instead
    grad_clip: float = 1.0
    checkpoint_every: int = 500
    seed: int = 0
    size_groups: int = 2            # > 1: size-grouped batches (batch_indices); 1: uniform
    workers: int = 2                # > 1: each batch cut into this many parts run at once (split_backward)


# TrainConfig values a checkpoint does not record, so that checkpoints made before --lr-schedule,
# --ema-std and --size-groups existed still resume (with these values)
OMITTED = {"lr_schedule": "constant", "ema_std": 0.0, "size_groups": 1}


def settings_diff(saved: dict, want: dict) -> str:
    """What differs between a checkpoint's run config and this run's, for the resume error:
    the training options by name (with both values), else the data or the network."""
    a, b = {**OMITTED, **saved.get("train", {})}, {**OMITTED, **want.get("train", {})}
    opts = [f"--{k.replace('_', '-')} {a.get(k)} (now {b.get(k)})" for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)]
    if opts:
        return "other settings: " + ", ".join(opts)
    if saved.get("graphs") != want.get("graphs"):
        return f"other data ({saved.get('graphs')} graphs, now {want.get('graphs')})"
    return "other data or network settings"


def _own(sd: dict) -> dict:
    return {k: v.clone() for k, v in sd.items()}


def prepare(graphs: Sequence[Graph], cfg_overrides: dict[str, Any] | None = None):
    if not graphs:
        raise InputError("no training graphs")
    if any(g.num_nodes == 0 for g in graphs):
        raise InputError("a training graph has no nodes")
    max_nodes = max(g.num_nodes for g in graphs)
    max_degree = max(int(g.degrees().max(initial=0)) for g in graphs)
    cfg = GBDConfig(max_nodes=max_nodes, max_degree=max_degree, **(cfg_overrides or {}))
    tens = gd.to_tensors(graphs, max_nodes, max_degree)
    p_x, p_e = gd.marginals(tens)
    return cfg, tens, p_x, p_e


def model_overrides(layers: int, hidden: Sequence[int], heads: int, eta: Sequence[float], lambda_e: float,
                    extra_features: bool, degree_input: bool, rw_features: bool,
                    t_focus: Sequence[float], klub: str = "modulated", node_loss: str = "per-feature") -> dict[str, Any]:
    """GBDConfig overrides from `gaml graphgen train`'s options; the feed-forward widths are twice
    the node and edge widths. `klub`: "modulated" (the KLUB at each entry's own concentration) or
    "fixed" (at 10,000 with 0.01 added to the gamma shapes, GBD's released code)."""
    from .gbd import KLUB_FORMS, NODE_LOSSES

    if klub not in KLUB_FORMS:
        raise UsageError(f"--klub {klub}: one of {', '.join(KLUB_FORMS)}")
    if node_loss not in NODE_LOSSES:
        raise UsageError(f"--node-loss {node_loss}: one of {', '.join(NODE_LOSSES)}")
    dx, de, dy = (int(v) for v in hidden)
    k_eta, k_off = KLUB_FORMS[klub]
    return {"eta": tuple(eta), "lambda_e": lambda_e,
            "net": {"layers": layers, "dx": dx, "de": de, "dy": dy, "heads": heads, "ffx": 2 * dx, "ffe": 2 * de},
            "extra_features": extra_features, "degree_input": degree_input, "rw_features": rw_features,
            "t_focus": tuple(t_focus), "klub_eta": k_eta, "klub_shape_offset": k_off, "node_loss": node_loss}


def lr_at(tc: TrainConfig, step: int) -> float:
    """The learning rate of optimizer step `step` (0-based): constant, or a half cosine from lr at
    step 0 to 0 after the last step (Loshchilov & Hutter 2017, SGDR without restarts)."""
    if tc.lr_schedule == "constant":
        return tc.lr
    if tc.lr_schedule == "cosine":
        return tc.lr * 0.5 * (1 + math.cos(math.pi * step / tc.steps))
    raise UsageError(f"unknown learning-rate schedule {tc.lr_schedule!r}")


def size_groups(tc: TrainConfig, graphs: int, batch: int) -> int:
    """How many batches one size-sorted draw is cut into: --size-groups, at most graphs // batch
    (each draw is made without replacement)."""
    return max(1, min(tc.size_groups, graphs // batch))


def batch_indices(tc: TrainConfig, step: int, n: torch.Tensor, batch: int, gen: torch.Generator) -> torch.Tensor:
    """The training graphs of optimizer step `step` (0-based); n: (G,) node counts.

    Uniform batches: `batch` graphs drawn without replacement from `gen`. Size-grouped batches
    (k = size_groups(...) > 1, the idea of "group by length" batching in sequence models): step
    `step` belongs to draw step // k, which picks k * batch graphs without replacement, sorts them
    by node count and cuts them into k batches taken in a random order. Every graph still comes
    up as often as with uniform batches, but a batch holds graphs of similar size and is padded
    only to its own largest one. Each draw comes from its own generator, seeded by (seed, draw),
    so a run resumed at any step takes the same batches."""
    G = n.shape[0]
    k = size_groups(tc, G, batch)
    if k == 1:
        return torch.randperm(G, generator=gen)[:batch]
    rng = np.random.default_rng([tc.seed, step // k])
    pick = rng.permutation(G)[: k * batch]
    pick = pick[np.argsort(n.numpy()[pick], kind="stable")]
    j = int(rng.permutation(k)[step % k])
    return torch.from_numpy(pick[j * batch: (j + 1) * batch].copy())


def split_backward(gbd: GBD, net, A, X, M, ND, gen: torch.Generator, per, pool, parts: int):
    """Loss and backward of one batch with the batch cut into `parts` run at once on threads.

    The draws (times, noise) are made for the whole batch first, as `GBD.loss` makes them, so the
    generator advances the same way; the graphs, sorted by size, are dealt out to the parts in
    turn and each part is padded only to its own largest graph. Every part's KLUBs are divided by
    the whole batch's counts, so the parts' losses add up to the batch's loss. The first part
    backpropagates into the parameters' gradients, the others into gradients of their own, added
    in part order, so the sum does not depend on which thread finishes first (resume stays exact).
    The denoiser treats every graph on its own, so this is the one-call step up to rounding. It
    pays on CPU, where a step is thousands of small operations: one thread leaves the cores idle
    between them, two parts keep them busy."""
    t, lz_x, lz_e = gbd.draw(A, X, M, ND, gen)
    per = per or gbd.counts(M)
    n = M.sum(1)
    order = torch.argsort(n, stable=True)
    chunks = [ii for ii in (order[i::parts] for i in range(parts)) if len(ii)]
    params = [p for p in net.parameters() if p.requires_grad]

    def run(ii, own_grads: bool):
        m = int(n[ii].max())
        loss, lx, le = gbd.loss_at(net, A[ii, :m, :m], X[ii, :m], M[ii, :m], ND[ii, :m], t[ii], lz_x[ii, :m],
                                   lz_e[ii, :m, :m], per)
        grads = None
        if own_grads:
            grads = torch.autograd.grad(loss, params, allow_unused=True)
        else:
            loss.backward()
        return loss.detach(), lx, le, grads

    futures = [pool.submit(run, ii, True) for ii in chunks[1:]]
    results = [run(chunks[0], False)] + [f.result() for f in futures]
    with torch.no_grad():
        for *_, grads in results[1:]:
            into = [(p.grad, g) for p, g in zip(params, grads) if g is not None and p.grad is not None]
            if into:
                torch._foreach_add_([a for a, _ in into], [g for _, g in into])
            for p, g in zip(params, grads):
                if g is not None and p.grad is None:   # a parameter the first part did not reach
                    p.grad = g
    return sum(r[0] for r in results), sum(r[1] for r in results), sum(r[2] for r in results)


def train(graphs: Sequence[Graph], tc: TrainConfig, ckpt_dir: Path, device: torch.device,
          resume: bool = False, cfg_overrides: dict[str, Any] | None = None):
    """Returns (EMA network, GBDConfig, tensors to save beside it, report)."""
    torch.manual_seed(tc.seed)
    cfg, tens, p_x, p_e = prepare(graphs, cfg_overrides)
    net = build_net(cfg).to(device).train()
    ema = copy.deepcopy(net).eval().requires_grad_(False)
    gen = torch.Generator().manual_seed(tc.seed)
    gbd = GBD(cfg, p_x, p_e)
    G = len(graphs)
    A, X, M, ND = (x.to(device) for x in (tens.A, tens.onehot, tens.node_mask, tens.norm_deg))
    ckpt = CheckpointDir(ckpt_dir, keep=2)
    run_cfg = {"model": asdict(cfg), "graphs": G, "train": {k: v for k, v in asdict(tc).items()
                                                           if k not in ("steps", "checkpoint_every", "workers")
                                                           and OMITTED.get(k, ...) != v}}
    start, seconds = 0, 0.0
    if resume:
        step, state, saved = ckpt.load(device="cpu")
        want = json.loads(json.dumps(run_cfg))  # the checkpoint stores it as JSON (tuples -> lists)
        if saved != want:
            raise UsageError(f"{ckpt_dir}: the checkpoint was made with {settings_diff(saved, want)}; "
                             "resume with the same --data and options")
        net.load_state_dict(state["net"])
        ema.load_state_dict(state["ema"])
        gen.set_state(state["gen"])
        start, seconds = step, float(state.get("seconds", 0.0))
    # The parameters, their gradients and the EMA's parameters as views of flat buffers, so that
    # clipping, AdamW and the EMA update are a few calls a step instead of a few per tensor: the
    # per-tensor results bit for bit (core/flat.py, tests), ~10% of a step cheaper on 2 CPU threads.
    flat, flat_ema = FlatParams(net.parameters()), FlatParams(ema.parameters(), grads=False)
    # AdamW with foreach: the per-tensor update bit for bit on CPU (checked); not fused (training
    # runs with fused AdamW were worse, mechanism unknown: development notes)
    opt = torch.optim.AdamW([flat.param], lr=tc.lr, weight_decay=tc.weight_decay, amsgrad=True, foreach=True)
    if resume:
        try:
            saved_opt = state["opt"]
            if len(saved_opt["param_groups"][0]["params"]) > 1:  # per-tensor state: checkpoints made before
                saved_opt = flat.optimizer_state_from_per_tensor(saved_opt)
            opt.load_state_dict(saved_opt)
        except (KeyError, IndexError, ValueError, RuntimeError) as e:
            raise InputError(f"{ckpt.latest()}: its optimizer state does not fit this network ({e})") from None
        console.log(f"resumed from {ckpt.latest()} at step {start}")

    t0 = time.perf_counter()

    def save_ckpt(step: int) -> None:
        # clones: the parameters are views of one flat buffer; a checkpoint stores them on their own
        ckpt.save(step, {"net": _own(net.state_dict()), "ema": _own(ema.state_dict()), "opt": opt.state_dict(),
                         "gen": gen.get_state(), "seconds": seconds + time.perf_counter() - t0},
                  config=run_cfg, seed=tc.seed)

    console.log(f"training GBD: {param_count(net) / 1e6:.2f}M parameters, {G} graphs of up to {cfg.max_nodes} "
                f"nodes, {tc.steps} steps of {min(tc.batch_size, G)} on {device}")
    bs = min(tc.batch_size, G)
    k = size_groups(tc, G, bs)
    # size-grouped batches divide the KLUBs by a uniform batch's expected node features and pairs
    n_all = tens.n.double()
    per = None if k == 1 else (bs * float(n_all.mean()) * cfg.D, bs * float((n_all * (n_all - 1)).mean()))
    if k > 1:
        console.log(f"size-grouped batches: each draw of {k * bs} graphs sorted by size and cut into {k}")
    # --workers: the batch in parts run at once on threads, each part's operations on its share
    # of the cores (2 parts at 1 intra-op thread each: forward + backward ~20-25% cheaper on 2
    # cores; 2 parts at 2 threads each are slower than one call). The calling thread runs the
    # first part, the pool the others.
    split = tc.workers > 1 and device.type == "cpu"
    last = {"loss": float("nan"), "klub_x": float("nan"), "klub_e": float("nan")}
    loop = StepLoop(start, tc.steps, save_ckpt, ckpt, every=tc.checkpoint_every)
    with contextlib.ExitStack() as stack:
        pool = stack.enter_context(runtime.thread_pool_share(tc.workers)) if split else None
        with loop, console.progress(tc.steps, "graphgen train", completed=start) as bar:
            for step in loop:
                idx = batch_indices(tc, step, tens.n, bs, gen)
                m = int(tens.n[idx].max())  # pad the batch only to its largest graph
                idx = idx.to(device)
                for group in opt.param_groups:
                    group["lr"] = lr_at(tc, step)
                flat.zero_grad()
                if pool is None:
                    loss, lx, le = gbd.loss(net, A[idx, :m, :m], X[idx, :m], M[idx, :m], ND[idx, :m], gen, per=per)
                    loss.backward()
                else:
                    loss, lx, le = split_backward(gbd, net, A[idx, :m, :m], X[idx, :m], M[idx, :m], ND[idx, :m], gen,
                                                  per, pool, tc.workers)
                require_finite(step, loss=loss)
                flat.collect()
                if tc.grad_clip > 0:
                    flat.clip_grad_norm_(tc.grad_clip)
                opt.step()
                flat_ema.lerp_to(flat, 1 - ema_decay(step, tc.ema, tc.ema_std))  # ema <- d ema + (1 - d) net
                copy_buffers(ema, net)
                last = {"loss": float(loss.detach()), "klub_x": lx, "klub_e": le}
                bar.update(1, **last)
    seconds += time.perf_counter() - t0
    flat_ema.release()
    if start >= tc.steps:
        console.warn(f"the checkpoint is already at step {start} >= --steps {tc.steps}; saving it as it is")
    profiles = {"profile_n": tens.n, "profile_norm_deg": tens.norm_deg, "p_x": p_x, "p_e": torch.tensor([p_e])}
    report = {"steps": max(start, tc.steps), "final_loss": last["loss"], "klub_x": last["klub_x"],
              "klub_e": last["klub_e"], "train_seconds": round(seconds, 1), "parameters": param_count(ema),
              "graphs": G, "max_nodes": cfg.max_nodes, "device": str(device)}
    return ema, cfg, profiles, report
