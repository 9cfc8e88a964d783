"""Preference fine-tuning of a gaml EDM denoiser: Diffusion-DPO, Diffusion-RPO (a reconstruction)
and supervised fine-tuning on the chosen images (SFT, the usual peer) in one explicit loop.

One step, for a batch of B pairs (prompt c_i, chosen x_w(i), rejected x_l(i)):

  1. one noise level sigma_i and one noise n_i per pair, shared by winner and loser
     (Diffusion-DPO): x_w,t = x_w + sigma n, x_l,t = x_l + sigma n;
     sigma from the denoiser's own training distribution, ln sigma ~ N(P_mean, P_std^2).
  2. the policy D_theta and the frozen reference D_ref on both (the reference: the same network
     with its LoRA adapters switched off, so no second copy; a frozen copy for full fine-tuning);
     errors mse = lambda(sigma) * mean (D(x_t) - x)^2, EDM's loss weight lambda(sigma), the
     counterpart of Diffusion-DPO's epsilon-MSE (which is the x-MSE weighted by 1/sigma^2).
  3. loss: dpo -> loss.diffusion_dpo_loss; rpo -> loss.rpo_loss with weights from the prompt
     embeddings the model itself conditions on (its text encoder's vectors); sft -> the mean
     weighted error on the chosen images.
  4. clip the gradient norm, AdamW step.

The gradient reaches theta through both the winner's and the loser's error (a test checks both).
"""

from __future__ import annotations

import copy
import json
import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ...core import console
from ...core.checkpoint import CheckpointDir, StepLoop
from ...core.errors import UsageError
from ...core.runtime import require_finite
from . import loss as L

METHODS = ("rpo", "dpo", "sft")
PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass
class AlignConfig:
    method: str = "rpo"  # rpo | dpo | sft
    steps: int = 300
    batch_size: int = 16  # pairs per step
    lr: float = 1e-4
    beta: float = 5000.0  # Diffusion-DPO's beta, in `beta_convention`
    beta_convention: str = "original"  # original: scale beta/2 (5000 -> 2500); diffusers: scale beta
    loss: str = "sigmoid"  # sigmoid | hinge | ipo
    tau: float = 0.5  # RPO: temperature of the similarity weights
    placement: str = "inside"  # RPO: the weight inside the loss (authors' LLM code) or outside
    lora_rank: int = 8  # 0: full fine-tuning of the UNet (a frozen copy is the reference)
    grad_clip: float = 1.0
    micro_batch: int = 0  # pairs per forward pass (0: the whole per-process batch); the step is the same
    precision: str = "fp32"  # fp32 | bf16 | fp16: autocast compute; weights and optimizer stay fp32
    gradient_checkpointing: bool = False  # recompute the UNet's activations in the backward pass
    p_mean: float = -1.2
    p_std: float = 1.2
    checkpoint_every: int = 100
    seed: int = 0

    def check(self) -> None:
        if self.method not in METHODS:
            raise UsageError(f"unknown method {self.method!r} ({', '.join(METHODS)})")
        if self.loss not in L.LOSS_KINDS:
            raise UsageError(f"--loss must be one of {', '.join(L.LOSS_KINDS)}")
        if self.beta_convention not in L.BETA_CONVENTIONS:
            raise UsageError(f"--beta-convention must be one of {', '.join(L.BETA_CONVENTIONS)}")
        if self.placement not in L.WEIGHT_PLACEMENTS:
            raise UsageError(f"--weight-placement must be one of {', '.join(L.WEIGHT_PLACEMENTS)}")
        for name in ("lr", "beta", "tau", "grad_clip", "p_mean", "p_std"):
            v = getattr(self, name)
            if not math.isfinite(v):
                raise UsageError(f"--{name.replace('_', '-')} {v}: expected a finite number")
        if self.lr <= 0 or self.beta <= 0:
            raise UsageError("--lr and --beta must be positive")
        if self.tau < 0:
            raise UsageError("--tau must be >= 0 (0: each pair weighs only itself)")
        if self.method == "rpo" and self.batch_size < 2:
            raise UsageError("Diffusion-RPO compares pairs with each other: --batch-size must be at least 2")
        if self.precision not in PRECISIONS:
            raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}")
        if self.micro_batch < 0:
            raise UsageError("--micro-batch must be >= 0 (0: the whole batch in one pass)")


# Fields that must match for --resume to continue the same run.
RUN_IDENTITY = ("method", "batch_size", "beta", "beta_convention", "loss", "tau", "placement", "lora_rank",
                "p_mean", "p_std", "seed")


def set_adapters(module: torch.nn.Module, enabled: bool) -> None:
    """Switch every peft LoRA layer of `module` on or off (off: the base network exactly)."""
    for sub in module.modules():
        if hasattr(sub, "enable_adapters") and hasattr(sub, "lora_A"):
            sub.enable_adapters(enabled)


class Reference:
    """The frozen reference D_ref: with LoRA the policy itself with adapters off (no copy);
    for full fine-tuning a frozen copy made before the first step."""

    def __init__(self, policy: torch.nn.Module, lora: bool):
        self.policy, self.lora = policy, lora
        self.copy = None if lora else copy.deepcopy(policy).eval().requires_grad_(False)

    @torch.no_grad()
    def __call__(self, x, sigma, cond):
        if self.copy is not None:
            return self.copy(x, sigma, cond)
        set_adapters(self.policy, False)
        try:
            return self.policy(x, sigma, cond)
        finally:
            set_adapters(self.policy, True)


def prepare_policy(net: torch.nn.Module, ac: AlignConfig) -> tuple[torch.nn.Module, list[str]]:
    """A trainable copy of `net`: LoRA adapters on its UNet (rank ac.lora_rank) or the whole
    UNet; the text encoder stays frozen. Returns (policy, names of the trained parameters)."""
    from ..sid.model import add_lora

    # eval mode throughout: these networks have no dropout or batch statistics, and eval mode keeps
    # the text encoder on the same kernels as sampling, so the LoRA-off reference is the
    # starting model bit for bit
    policy = copy.deepcopy(net).eval()
    policy.requires_grad_(False)
    if ac.lora_rank > 0:
        add_lora(policy.unet, ac.lora_rank, ac.seed)
    else:
        policy.unet.requires_grad_(True)
    names = [n for n, p in policy.named_parameters() if p.requires_grad]
    if not names:
        raise UsageError("nothing to train: the model has no UNet parameters LoRA can adapt")
    return policy, names


class EDMFamily:
    """What the loop needs to know of a gaml EDM denoiser (ImageDenoiser): its noise levels
    (its own training distribution, ln sigma ~ N(P_mean, P_std^2)), its loss weight lambda(sigma),
    how captions become its condition, and the caption embeddings RPO's weights compare (the
    condition vectors themselves). Another model family (Stable Diffusion) supplies the same four."""

    def __init__(self, net: torch.nn.Module):
        self.net = net
        self.precond = net.precond

    def draw_sigma(self, n: int, gen: torch.Generator, ac: "AlignConfig") -> torch.Tensor:
        return (torch.randn(n, generator=gen) * ac.p_std + ac.p_mean).exp()

    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        return self.precond.loss_weight(sigma)

    @torch.no_grad()
    def encode(self, prompts: list[str], device) -> torch.Tensor | None:
        return self.net.encode_condition(list(prompts), len(prompts), device)

    @torch.no_grad()
    def embed(self, cond: torch.Tensor) -> torch.Tensor:
        """The caption vectors the UNet is conditioned on: the (frozen) text encoder's output for
        the token ids `encode` returns (not the ids themselves)."""
        return self.net.text(cond).float()


def pair_errors(policy, reference, x_w, x_l, cond, sigma, noise, weighting, autocast=nullcontext):
    """(mse_w, mse_l, ref_w, ref_l): both images noised with the same sigma and noise; the
    errors weighted by `weighting.loss_weight(sigma)` (lambda(sigma) for EDM denoisers), in fp32.
    The policy's carry the gradient. reference None: (mse_w, mse_l, None, None)."""
    b = x_w.shape[0]
    s = sigma.reshape(-1, *([1] * (x_w.ndim - 1)))
    x_t = torch.cat([x_w + s * noise, x_l + s * noise])
    sig2 = torch.cat([sigma, sigma])
    c2 = None if cond is None else torch.cat([cond, cond])
    weight = weighting.loss_weight(sigma)
    with autocast():
        d = policy(x_t, sig2, c2).float()
        d_ref = None if reference is None else reference(x_t, sig2, c2).float()
    mse_w = L.per_sample_mse(d[:b], x_w, weight)
    mse_l = L.per_sample_mse(d[b:], x_l, weight)
    if d_ref is None:
        return mse_w, mse_l, None, None
    ref_w = L.per_sample_mse(d_ref[:b], x_w, weight)
    ref_l = L.per_sample_mse(d_ref[b:], x_l, weight)
    return mse_w, mse_l, ref_w, ref_l


def batch_backward(ac: "AlignConfig", policy_fwd, policy_raw, reference, x_w, x_l, cond, sigma, noise, emb,
                   weighting, autocast=nullcontext, backward=None, no_sync=None) -> tuple[torch.Tensor, dict]:
    """Accumulate the gradient of one step's loss over micro-batches of ac.micro_batch pairs;
    returns (loss, stats) of the whole batch. The gradient is the whole batch's, whatever the
    micro-batch (tests/test_rpo_train.py checks it):

    - dpo and sft: the loss is a mean over pairs, so each micro-batch's mean loss is scaled by
      its share of the batch and back-propagated at once;
    - rpo: the M x M loss couples every pair of the batch, so the errors of all micro-batches are
      first computed without a graph, the loss's gradient with respect to each pair's two errors is
      taken there, and each micro-batch is then recomputed with a graph and back-propagated with
      those per-pair gradients (the chain rule, one extra forward pass of the policy).

    policy_fwd: the module to call for gradients (a DDP wrapper under torchrun), policy_raw the
    module itself; no_sync(): DDP's context that skips the all-reduce (every pass but the last)."""
    backward = backward or (lambda t: t.backward())
    no_sync = no_sync or nullcontext
    b = x_w.shape[0]
    m = ac.micro_batch or b
    chunks = [slice(i, min(i + m, b)) for i in range(0, b, m)]
    pick = (lambda t, c: None if t is None else t[c])
    if len(chunks) == 1:
        errors = pair_errors(policy_fwd, reference, x_w, x_l, cond, sigma, noise, weighting, autocast)
        loss, stats = step_loss(ac, errors, emb)
        backward(loss)
        return loss.detach(), stats
    if ac.method != "rpo":
        parts, total = [], 0.0
        for k, c in enumerate(chunks):
            ctx = no_sync if k < len(chunks) - 1 else nullcontext
            with ctx():
                e = pair_errors(policy_fwd, reference, x_w[c], x_l[c], pick(cond, c), sigma[c], noise[c], weighting,
                                autocast)
                loss_c, _ = step_loss(ac, e, pick(emb, c))
                backward(loss_c * ((c.stop - c.start) / b))
            total += float(loss_c.detach()) * (c.stop - c.start) / b
            parts.append([t.detach() for t in e])
        errors = [torch.cat(list(col)) for col in zip(*parts)]
        _, stats = step_loss(ac, errors, emb)
        return torch.tensor(total), stats
    with torch.no_grad():  # pass 1: every pair's errors, no graph
        parts = [pair_errors(policy_raw, reference, x_w[c], x_l[c], pick(cond, c), sigma[c], noise[c], weighting,
                             autocast) for c in chunks]
    mse_w, mse_l, ref_w, ref_l = (torch.cat(list(col)) for col in zip(*parts))
    mse_w.requires_grad_(True)
    mse_l.requires_grad_(True)
    with torch.enable_grad():
        loss, stats = step_loss(ac, (mse_w, mse_l, ref_w, ref_l), emb)
        g_w, g_l = torch.autograd.grad(loss, (mse_w, mse_l))
    for k, c in enumerate(chunks):  # pass 2: each micro-batch's graph, driven by those gradients
        ctx = no_sync if k < len(chunks) - 1 else nullcontext
        with ctx():
            e_w, e_l, _, _ = pair_errors(policy_fwd, None, x_w[c], x_l[c], pick(cond, c), sigma[c], noise[c],
                                         weighting, autocast)
            backward((e_w * g_w[c]).sum() + (e_l * g_l[c]).sum())
    return loss.detach(), stats


def step_loss(ac: "AlignConfig", errors, embeddings: torch.Tensor | None) -> tuple[torch.Tensor, dict]:
    mse_w, mse_l, ref_w, ref_l = errors
    if ac.method == "dpo":
        return L.diffusion_dpo_loss(mse_w, mse_l, ref_w, ref_l, ac.beta, ac.loss, ac.beta_convention)
    if ac.method == "rpo":
        w = L.rpo_weights(embeddings, ac.tau)
        return L.rpo_loss(mse_w, mse_l, ref_w, ref_l, w, ac.beta, ac.loss, ac.beta_convention, ac.placement)
    loss = mse_w.mean()  # sft: the denoising loss on the chosen images only
    return loss, L._stats(L.dpo_margin(mse_w, mse_l, ref_w, ref_l), mse_w, mse_l, ref_w, ref_l)


class DriftWatch:
    """Users of Diffusion-DPO report both errors growing against the reference at large beta
    (the model unlearns both images): warn once when, over the last `window` steps, the mean
    winner AND loser errors are both above the reference's by more than `rel`."""

    def __init__(self, window: int = 50, rel: float = 0.02):
        self.window, self.rel, self.rows, self.warned = window, rel, [], False

    def update(self, stats: dict, step: int) -> None:
        self.rows.append((float(stats["mse_w"]), float(stats["ref_mse_w"]), float(stats["mse_l"]),
                          float(stats["ref_mse_l"])))
        self.rows = self.rows[-self.window:]
        if self.warned or len(self.rows) < self.window:
            return
        mw, rw, ml, rl = (sum(r[k] for r in self.rows) / len(self.rows) for k in range(4))
        if mw > rw * (1 + self.rel) and ml > rl * (1 + self.rel):
            self.warned = True
            console.warn(f"step {step}: both errors have grown above the reference's (winner {mw:.4g} vs "
                         f"{rw:.4g}, loser {ml:.4g} vs {rl:.4g}, means of {self.window} steps): the model is "
                         "drifting; try a smaller --beta or --lr")


def align(net: torch.nn.Module, prompts: list[str], chosen: torch.Tensor, rejected: torch.Tensor,
          ac: AlignConfig, out_dir: Path, device: torch.device, resume: bool = False,
          progress_label: str = "align", family=None,
          embeddings: torch.Tensor | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Fine-tune `net` (a gaml ImageDenoiser, or another family's denoiser with `family`: see
    EDMFamily) on the preference pairs (images in the space the denoiser works in: pixels, or
    latents); returns (policy, report). Checkpoints and log.jsonl go to out_dir.

    embeddings: one row per pair for RPO's weights (e.g. CLIP's, from methods/rpo/embed.py);
    None: the caption vectors the model conditions on (family.embed).

    Under torchrun / `accelerate launch` (WORLD_SIZE > 1) each process takes batch_size / world
    pairs of every step and DDP averages the gradients; RPO's M x M weights then span each
    process's pairs. Only rank 0 writes checkpoints and the log."""
    ac.check()
    out_dir = Path(out_dir) if out_dir is not None else None
    n = len(prompts)
    if n == 0 or chosen.shape != rejected.shape or chosen.shape[0] != n:
        raise UsageError("the pairs must hold as many chosen and rejected images as prompts")
    if embeddings is not None and len(embeddings) != n:
        raise UsageError(f"RPO's embeddings have {len(embeddings)} rows for {n} pairs")
    if family is None and tuple(chosen.shape[1:]) != tuple(net.config["image_shape"]):
        raise UsageError(f"the pairs' images are {tuple(chosen.shape[1:])}; the model wants "
                         f"{tuple(net.config['image_shape'])}")
    if family is None and getattr(net, "cond_type", None) != "text":
        raise UsageError("preference alignment needs a caption-conditioned model (e.g. shapes, or a gaml train "
                         f"artifact with captions); this one is {getattr(net, 'cond_type', '?')}-conditional")
    from ...core.runtime import distributed

    rank, world, device = distributed(device)
    main = rank == 0
    if ac.batch_size % world:
        raise UsageError(f"--batch-size {ac.batch_size} must be divisible by the {world} processes")
    local_b = ac.batch_size // world
    if ac.method == "rpo" and local_b < 2:
        raise UsageError(f"Diffusion-RPO compares pairs within a process: --batch-size {ac.batch_size} over {world} "
                         "processes leaves fewer than 2 pairs each")
    if ac.micro_batch and ac.micro_batch > local_b:
        raise UsageError(f"--micro-batch {ac.micro_batch} is larger than the per-process batch {local_b}")
    amp = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[ac.precision]
    if amp is torch.float16 and device.type == "cpu":
        raise UsageError("--precision fp16 needs a GPU; use fp32 or bf16 on CPU")
    autocast = (lambda: torch.autocast(device.type, dtype=amp)) if amp is not None else nullcontext
    scaler = torch.amp.GradScaler(device.type) if ac.precision == "fp16" else None
    torch.manual_seed(ac.seed)
    policy, names = prepare_policy(net.to(device), ac)
    if ac.gradient_checkpointing:
        if not hasattr(policy.unet, "enable_gradient_checkpointing"):
            raise UsageError("--gradient-checkpointing: this model's UNet does not support it")
        policy.unet.enable_gradient_checkpointing()
    reference = Reference(policy, lora=ac.lora_rank > 0)
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=ac.lr, weight_decay=0.0, eps=1e-6 if ac.precision == "fp16" else 1e-8)
    policy_fwd, no_sync = policy, None
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        policy_fwd = DDP(policy, device_ids=[device.index] if device.type == "cuda" else None)
        no_sync = policy_fwd.no_sync
    gen = torch.Generator().manual_seed(ac.seed * 1_000_003 + rank if world > 1 else ac.seed)
    family = family if family is not None else EDMFamily(policy)
    ckpt = CheckpointDir(out_dir / "checkpoints", keep=2)
    identity = {k: getattr(ac, k) for k in RUN_IDENTITY} | {"pairs": n, "processes": world}
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / "log.jsonl"
    start, seconds = 0, 0.0
    if resume:
        from ..sid.model import load_trainable

        step, state, run_cfg = ckpt.load(device="cpu")
        if run_cfg.get("identity") != json.loads(json.dumps(identity)):
            raise UsageError(f"{out_dir}: the checkpoint was made with other settings or pairs "
                             f"({', '.join(RUN_IDENTITY)} and the number of processes must match); start a new --out")
        load_trainable(policy, state["policy"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"])
        if rank > 0:  # the checkpoint holds rank 0's stream; give the others fresh, distinct ones
            gen.manual_seed(ac.seed * 1_000_003 + rank + 7_919 * step)
        if scaler is not None and "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        start, seconds = step, float(state.get("seconds", 0.0))
        if main:
            console.log(f"resumed from {ckpt.latest()} at step {start}")
    chosen, rejected = chosen.to(device), rejected.to(device)
    cond_all = family.encode(list(prompts), device)  # the conditions the model sees (frozen encoder)
    emb_all = None
    if ac.method == "rpo":  # RPO's similarity embeddings
        emb_all = embeddings.float().to(device) if embeddings is not None else family.embed(cond_all)
    t0 = time.perf_counter()

    def save_ckpt(step: int) -> None:
        from ..sid.model import trainable_state

        if not main:
            return
        state = {"policy": trainable_state(policy, names), "opt": opt.state_dict(), "gen": gen.get_state(),
                 "seconds": seconds + time.perf_counter() - t0}
        if scaler is not None:
            state["scaler"] = scaler.state_dict()
        ckpt.save(step, state, config={"identity": identity, "align": asdict(ac)}, seed=ac.seed)

    def backward(t: torch.Tensor) -> None:
        (scaler.scale(t) if scaler is not None else t).backward()

    watch = DriftWatch()
    last: dict[str, float] = {}
    loop = StepLoop(start, ac.steps, save_ckpt, ckpt, every=ac.checkpoint_every, announce=main)
    if main:
        console.log(f"{ac.method}: {n} pairs, {len(names)} trained tensors "
                    f"({sum(p.numel() for p in params) / 1e6:.3f}M parameters, "
                    f"{'LoRA rank ' + str(ac.lora_rank) if ac.lora_rank else 'full UNet'}), {ac.steps} steps of "
                    f"{ac.batch_size} pairs ({world} process(es)"
                    f"{', micro-batches of ' + str(ac.micro_batch) if ac.micro_batch else ''}), {ac.precision} "
                    f"on {device}")
    with loop, (console.progress(ac.steps, progress_label, completed=start) if main else nullcontext(None)) as bar:
        for step in loop:
            idx = torch.randint(n, (local_b,), generator=gen)
            sigma = family.draw_sigma(local_b, gen, ac)
            noise = torch.randn((local_b, *chosen.shape[1:]), generator=gen)
            idx_d, sigma, noise = idx.to(device), sigma.to(device), noise.to(device)
            cond = None if cond_all is None else cond_all[idx_d]
            opt.zero_grad(set_to_none=True)
            loss, stats = batch_backward(ac, policy_fwd, policy, reference, chosen[idx_d], rejected[idx_d], cond,
                                         sigma, noise, None if emb_all is None else emb_all[idx_d], family,
                                         autocast, backward, no_sync)
            require_finite(step, loss=loss)
            if scaler is not None:
                scaler.unscale_(opt)
            if ac.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, ac.grad_clip)
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            last = {"loss": float(loss), **{k: float(v) for k, v in stats.items()}}
            if main:
                watch.update(stats, step + 1)
                if (step + 1) % 10 == 0 or step + 1 == ac.steps:
                    with open(log_path, "a") as fh:
                        fh.write(json.dumps({"step": step + 1, **console.finite(last)}) + "\n")
                bar.update(1, loss=last["loss"], acc=last["implicit_accuracy"])
    seconds += time.perf_counter() - t0
    if start >= ac.steps and main:
        console.warn(f"the checkpoint is already at step {start} >= --steps {ac.steps}; saving it as it is")
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    report = {"steps": max(start, loop.done), "train_seconds": round(seconds, 1), "pairs": n,
              "trainable_parameters": sum(p.numel() for p in params), "processes": world,
              **console.finite(last), "drift_warning": watch.warned}
    if not main:
        report["rank"] = rank
    return policy, report
