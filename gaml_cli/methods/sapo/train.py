"""SAPO's training loop (arXiv 2405.20830, Algorithm 1), explicit and plain.

State: the policy pi_theta (LoRA adapters or all weights), its EMA pi_ema, the reference
pi_ref (a snapshot of the EMA), the replay buffer B. The EMA and the reference are copies of the
TRAINED tensors only (with LoRA: adapter weights, the base is shared), swapped into the policy
network for their forward passes, so no second network lives in memory. One optimizer step:

  1. take the next `batch_size` (prompt x, chosen y_w) of the data (a fresh permutation per epoch);
  2. with pi_ema, cut each y_w at a random point and regenerate a segment (splice.py); the
     spliced response is the rejected y_l; push (x, y_w, y_l) into B (FIFO, buffer_size);
  3. draw `batch_size` items from B with probability proportional to 1 / (1 + times drawn);
  4. loss on the drawn items (micro-batches share one generation: the reference code generated at
     every micro-step under gradient accumulation, a fault not copied):
       dpo / hinge: loss.dpo_loss with pi_ref;  orpo: loss.orpo_loss (no reference);
  5. clip the gradient norm, optimizer step;
  6. EMA: theta_ema <- ema_beta * theta_ema + (1 - ema_beta) * theta   (ema_beta 0.5 in the paper);
  7. every `ref_sync_steps` steps: theta_ref <- theta_ema.

Randomness is a function of (seed, step): the data order of each epoch, the cut points, the draws
(a generator checkpointed with the run) and the sampling seed of step k, so --resume continues
the uninterrupted run; the buffer (items, ids, draw counts) resumes with it.

Under torchrun / `accelerate launch` (WORLD_SIZE > 1) each process takes its share of every
step's examples (batch_size / processes) from the same data order, regenerates and buffers them in
its own replay buffer (buffer_size / processes), draws its share of the batch, and DDP averages
the gradients; the policy, EMA and reference stay identical on all processes. Rank 0 writes the
checkpoints (with every process's buffer and random stream) and the log.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ...core import console
from ...core.checkpoint import CheckpointDir, StepLoop
from ...core.errors import UsageError
from ...core.runtime import require_finite
from . import loss as L
from .buffer import ReplayBuffer
from .splice import cut_points, generate_segments, splice


@dataclass
class SapoConfig:
    loss: str = "dpo"  # dpo | hinge | orpo
    beta: float | None = None  # None: 0.1 for dpo/hinge, 0.05 (ORPO's lambda) for orpo
    ema_beta: float = 0.5
    segment_length: int = 256
    buffer_size: int = 2000
    ref_sync_steps: int = 100
    top_k: int = 50
    top_p: float = 0.95
    temperature: float = 0.7
    steps: int = 200
    batch_size: int = 8
    micro_batch: int | None = None
    lr: float = 5e-5
    optimizer: str = "adamw"  # adamw | rmsprop (the authors' SAPO-DPO runs: RMSprop, lr 5e-7, full)
    grad_clip: float = 1.0
    lora_rank: int = 16  # 0: all weights
    gradient_checkpointing: bool = False
    checkpoint_every: int = 100
    seed: int = 0

    def resolved_beta(self) -> float:
        return L.DEFAULT_BETA[self.loss] if self.beta is None else self.beta

    def check(self) -> None:
        if self.loss not in L.LOSSES:
            raise UsageError(f"--loss must be one of {', '.join(L.LOSSES)}")
        if self.optimizer not in ("adamw", "rmsprop"):
            raise UsageError("--optimizer must be adamw or rmsprop")
        for name in ("beta", "ema_beta", "top_p", "temperature", "lr", "grad_clip"):
            v = getattr(self, name)
            if v is not None and not math.isfinite(v):
                raise UsageError(f"--{name.replace('_', '-')} {v}: expected a finite number")
        if not 0 <= self.ema_beta < 1:
            raise UsageError("--ema-beta must be in [0, 1) (the EMA's weight on its old value)")
        if self.resolved_beta() <= 0 or self.lr <= 0:
            raise UsageError("--beta and --lr must be positive")
        if not 0 < self.top_p <= 1:
            raise UsageError("--top-p must be in (0, 1]")
        if self.micro_batch is not None and self.batch_size % self.micro_batch:
            raise UsageError(f"--micro-batch {self.micro_batch} must divide --batch-size {self.batch_size}")


# What must match for --resume to continue the same run.
RUN_IDENTITY = ("loss", "beta", "ema_beta", "segment_length", "buffer_size", "ref_sync_steps", "top_k", "top_p",
                "temperature", "batch_size", "optimizer", "lora_rank", "seed")


def _dist() -> tuple[int, int]:
    """(rank, world) when launched by torchrun / accelerate launch, else (0, 1)."""
    from ...core.runtime import rank_world

    return rank_world()


def trainable(model) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def master_dtype(dtype: torch.dtype) -> torch.dtype:
    """The EMA and the reference keep half-precision weights in fp32 (an EMA of bf16 weights
    would round most updates away); they are cast to the network's dtype when swapped in."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def clone_params(params: dict[str, torch.nn.Parameter]) -> dict[str, torch.Tensor]:
    return {n: p.detach().to(master_dtype(p.dtype), copy=True) for n, p in params.items()}


@contextmanager
def swapped(params: dict[str, torch.nn.Parameter], values: dict[str, torch.Tensor]):
    """Run the network with `values` in place of the trained tensors (the .data pointers are
    exchanged: nothing is copied unless the values are fp32 masters of half-precision weights),
    then put the policy's back."""
    saved = {n: p.data for n, p in params.items()}
    for n, p in params.items():
        v = values[n]
        p.data = v if v.dtype == p.dtype else v.to(p.dtype)
    try:
        yield
    finally:
        for n, p in params.items():
            p.data = saved[n]


@torch.no_grad()
def ema_update(ema: dict[str, torch.Tensor], params: dict[str, torch.nn.Parameter], ema_beta: float) -> None:
    """theta_ema <- ema_beta * theta_ema + (1 - ema_beta) * theta."""
    for n, p in params.items():
        ema[n].mul_(ema_beta).add_(p.detach().to(ema[n].dtype), alpha=1 - ema_beta)


def pad_batch(rows: list[tuple[list[int], list[int]]], pad_id: int, device) -> tuple[torch.Tensor, ...]:
    """Right-padded (input_ids, attention_mask, response_mask) of prompt + response rows."""
    width = max(len(p) + len(r) for p, r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    att = torch.zeros((len(rows), width), dtype=torch.long)
    resp = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (p, r) in enumerate(rows):
        n = len(p) + len(r)
        ids[i, :n] = torch.tensor(p + r)
        att[i, :n] = 1
        resp[i, len(p):n] = 1
    return ids.to(device), att.to(device), resp.to(device)


def pair_logps(model, items, pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sum log pi(y_w), sum log pi(y_l), |y_w|, |y_l|) of buffer items, chosen and rejected in
    one forward pass."""
    rows = [(it.prompt, it.chosen) for it in items] + [(it.prompt, it.rejected) for it in items]
    ids, att, resp = pad_batch(rows, pad_id, device)
    logits = model(input_ids=ids, attention_mask=att, use_cache=False).logits
    s, n = L.sequence_logps(logits, ids, resp)
    b = len(items)
    return s[:b], s[b:], n[:b], n[b:]


def batch_loss(model, items, cfg: SapoConfig, pad_id: int, device, ref: dict | None, params,
               total_chosen_tokens: float, ref_model=None) -> tuple[torch.Tensor, dict]:
    """The SAPO loss of a (micro-)batch of buffer items; the policy's log-probs carry the gradient.
    (`model` may be a DDP wrapper; `ref_model` is then the network inside it.)"""
    pi_w, pi_l, n_w, n_l = pair_logps(model, items, pad_id, device)
    beta = cfg.resolved_beta()
    if cfg.loss in L.DPO_LOSSES:
        with torch.no_grad(), swapped(params, ref):
            ref_w, ref_l, _, _ = pair_logps(ref_model or model, items, pad_id, device)
        loss, stats = L.dpo_loss(pi_w, pi_l, ref_w, ref_l, beta, cfg.loss)
    else:
        nll = -pi_w.sum() / total_chosen_tokens
        loss, stats = L.orpo_loss(pi_w / n_w.clamp(min=1), pi_l / n_l.clamp(min=1), nll, beta)
    stats = {**stats, "logp_chosen": pi_w.detach().mean(), "logp_rejected": pi_l.detach().mean()}
    return loss, stats


class DataOrder:
    """Example indices in a fresh permutation per epoch, a pure function of (seed, position)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self._perm = n, seed, {}

    def perm(self, epoch: int) -> list[int]:
        if epoch not in self._perm:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = {epoch: torch.randperm(self.n, generator=g).tolist()}
        return self._perm[epoch]

    def take(self, start: int, k: int) -> list[int]:
        return [self.perm((start + j) // self.n)[(start + j) % self.n] for j in range(k)]


def make_optimizer(params: list, cfg: SapoConfig):
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)


def sapo_train(model, tokenizer, data: list[tuple[list[int], list[int]]], cfg: SapoConfig, out_dir: Path,
               device, ctx: int | None = None, resume: bool = False, identity_extra: dict | None = None,
               progress_label: str = "sapo") -> tuple[Any, dict]:
    """Train `model` (already on `device`, LoRA already added when wanted) with SAPO on tokenized
    (prompt, chosen) rows; checkpoints and log.jsonl in out_dir. Returns (model, report)."""
    cfg.check()
    if not data:
        raise UsageError("no training examples")
    rank, world = _dist()
    main = rank == 0
    if cfg.batch_size % world:
        raise UsageError(f"--batch-size {cfg.batch_size} must be divisible by the {world} processes")
    local_b = cfg.batch_size // world
    if cfg.micro_batch is not None and local_b % cfg.micro_batch:
        raise UsageError(f"--micro-batch {cfg.micro_batch} must divide each process's share of the batch ({local_b})")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos_id = tokenizer.eos_token_id
    from .lm import disable_dropout

    disable_dropout(model)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()
    model.train()
    params = trainable(model)
    if not params:
        raise UsageError("nothing to train: the model has no trainable parameters")
    ema = clone_params(params)
    ref = clone_params(params) if cfg.loss in L.DPO_LOSSES else None
    opt = make_optimizer(list(params.values()), cfg)
    gen = torch.Generator().manual_seed(cfg.seed if main else cfg.seed * 1_000_003 + rank)
    buffer = ReplayBuffer(-(-cfg.buffer_size // world))
    order = DataOrder(len(data), cfg.seed)
    out_dir = Path(out_dir)
    ckpt = CheckpointDir(out_dir / "checkpoints", keep=2)
    identity = {k: getattr(cfg, k) for k in RUN_IDENTITY} | {"examples": len(data), "processes": world} \
        | (identity_extra or {})
    start, seconds, ref_syncs = 0, 0.0, 0
    if resume:
        step, state, run_cfg = ckpt.load(device="cpu")
        if run_cfg.get("identity") != json.loads(json.dumps(identity)):
            raise UsageError(f"{out_dir}: the checkpoint was made with other settings, model or data "
                             f"({', '.join(RUN_IDENTITY)} must match); start a new --out")
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(state["policy"][n])
        ema = {n: t.to(device=device, dtype=master_dtype(params[n].dtype)) for n, t in state["ema"].items()}
        if ref is not None:
            ref = {n: t.to(device=device, dtype=master_dtype(params[n].dtype)) for n, t in state["ref"].items()}
        opt.load_state_dict(state["opt"])
        mine = state if main else state["ranks"][rank - 1]
        gen.set_state(mine["gen"])
        buffer.load_state_dict(mine["buffer"])
        start, seconds, ref_syncs = step, float(state.get("seconds", 0.0)), int(state.get("ref_syncs", 0))
        console.log(f"resumed from {ckpt.latest()} at step {start} ({len(buffer)} items in the replay buffer)")
    fwd = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        fwd = DDP(model, device_ids=[device.index] if torch.device(device).type == "cuda" else None)
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / "log.jsonl"
    t0 = time.perf_counter()

    def save_ckpt(step: int) -> None:
        others = None
        if world > 1:  # every process's buffer and random stream go into rank 0's checkpoint
            import torch.distributed as dist

            gathered = [None] * world
            dist.all_gather_object(gathered, {"gen": gen.get_state(), "buffer": buffer.state_dict()})
            others = gathered[1:]
        if not main:
            return
        state = {"policy": {n: p.detach().cpu() for n, p in params.items()},
                 "ema": {n: t.cpu() for n, t in ema.items()}, "opt": opt.state_dict(), "gen": gen.get_state(),
                 "buffer": buffer.state_dict(), "seconds": seconds + time.perf_counter() - t0,
                 "ref_syncs": ref_syncs}
        if ref is not None:
            state["ref"] = {n: t.cpu() for n, t in ref.items()}
        if others is not None:
            state["ranks"] = others
        ckpt.save(step, state, config={"identity": identity, "sapo": asdict(cfg)}, seed=cfg.seed)

    micro = cfg.micro_batch or local_b
    loop = StepLoop(start, cfg.steps, save_ckpt, ckpt, every=cfg.checkpoint_every, announce=main)
    n_params = sum(p.numel() for p in params.values())
    console.log(f"sapo-{cfg.loss}: {len(data)} examples, {n_params / 1e6:.3f}M trained parameters "
                f"({'LoRA rank ' + str(cfg.lora_rank) if cfg.lora_rank else 'all weights'}), {cfg.steps} steps of "
                f"{cfg.batch_size} on {device}" + (f" ({world} processes)" if world > 1 else ""))
    last: dict[str, float] = {}
    gen_seconds = 0.0
    with loop, console.progress(cfg.steps, progress_label, completed=start) as bar:
        for step in loop:
            # 1-2. regenerate a segment of each chosen response with the EMA model; push to the buffer
            rows = [data[i] for i in order.take(step * cfg.batch_size + rank * local_b, local_b)]
            cuts = cut_points([len(r) for _, r in rows], gen)
            contexts = [p + r[:c] for (p, r), c in zip(rows, cuts)]
            tg = time.perf_counter()
            torch.manual_seed(cfg.seed * 7_919 + step + 104_729 * rank)  # generate() samples from the global generator
            with swapped(params, ema):
                segments = generate_segments(model, contexts, cfg.segment_length, pad_id, eos_id, cfg.top_k,
                                             cfg.top_p, cfg.temperature, device, ctx)
            gen_seconds += time.perf_counter() - tg
            identical = 0
            for (p, r), c, s in zip(rows, cuts, segments):
                rejected = splice(r, c, s, eos_id)
                if ctx is not None:
                    rejected = rejected[: ctx - len(p)]
                identical += rejected == r
                buffer.push(p, r, rejected)
            # 3. draw from the buffer toward rarely drawn items
            items = buffer.draw(local_b, gen)
            total_chosen = float(sum(len(it.chosen) for it in items))
            # 4-5. loss and update (micro-batches accumulate into one step)
            opt.zero_grad(set_to_none=True)
            sums: dict[str, float] = {}
            loss_total = 0.0
            for k in range(0, local_b, micro):
                chunk = items[k:k + micro]
                loss, stats = batch_loss(fwd, chunk, cfg, pad_id, device, ref, params, total_chosen, ref_model=model)
                # DPO losses are batch means: weight each chunk by its share; ORPO's NLL is already
                # normalised by the whole batch's chosen tokens, its odds-ratio term is a mean
                if cfg.loss == "orpo":
                    scaled = stats["nll"] + (loss - stats["nll"]) * len(chunk) / local_b
                else:
                    scaled = loss * len(chunk) / local_b
                require_finite(step, loss=scaled)
                scaled.backward()
                loss_total += float(scaled.detach())
                for key, v in stats.items():  # batch means; ORPO's NLL is already a share of the batch's
                    share = 1.0 if key == "nll" else len(chunk) / local_b
                    sums[key] = sums.get(key, 0.0) + float(v) * share
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(list(params.values()), cfg.grad_clip)
            opt.step()
            # 6-7. EMA of the policy; the reference refreshed from the EMA
            ema_update(ema, params, cfg.ema_beta)
            if ref is not None and (step + 1) % cfg.ref_sync_steps == 0:
                ref = {n: t.clone() for n, t in ema.items()}
                ref_syncs += 1
            last = {"loss": loss_total, **sums, "identical_pairs": identical / local_b,
                    "buffer": len(buffer), "mean_draws": sum(it.draws for it in buffer.items) / len(buffer)}
            if main and ((step + 1) % 10 == 0 or step + 1 == cfg.steps):
                with open(log_path, "a") as fh:
                    fh.write(json.dumps({"step": step + 1, **console.finite(last),
                                         "generation_seconds": round(gen_seconds, 2)}) + "\n")
            bar.update(1, loss=last["loss"], acc=last.get("accuracy", 0.0))
    seconds += time.perf_counter() - t0
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    if start >= cfg.steps and main:
        console.warn(f"the checkpoint is already at step {start} >= --steps {cfg.steps}; saving it as it is")
    report = {"steps": max(start, loop.done), "train_seconds": round(seconds, 1), "examples": len(data),
              "trainable_parameters": n_params, "reference_refreshes": ref_syncs,
              "buffer_items": len(buffer), "processes": world, **console.finite(last)}
    return model, report
