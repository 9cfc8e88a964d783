"""SiD-LSG training: an explicit loop (setup / train / save), one iteration =

  1. fake-score update (G frozen): x_g = G(z, c) without gradient, x_t = x_g + sigma n,
     psi <- psi - lr grad_psi  mean_b weight(sigma) ||f_psi^kappa1(x_t, c) - x_g||^2
  2. generator update (fresh z, c, n, sigma): x_g = G(z, c) with gradient,
     theta <- theta - lr grad_theta  mean_b L_theta(x_g, f_phi^kappa4(x_t), f_psi^kappa2(x_t))
     (gradients reach theta through x_g and x_t inside both frozen score networks)
  3. EMA of G (half-life in images, EDM-style ramp-up).

G(z, c) = D_theta(sigma_init z; sigma_init, c): the teacher's own one-shot denoiser at sigma_init
is the initial generator (SiD Sec. 4). Multi-GPU: run under `accelerate launch` or torchrun;
each process draws batch/world samples with its own random stream and DDP averages gradients.
"""

from __future__ import annotations

import copy
import json
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ...core import console
from ...core.checkpoint import CheckpointDir, StepLoop
from ...core.runtime import require_finite
from ...core.errors import UsageError
from ...diffusion.edm import cfg_denoiser
from ..sfd.loss import remain_forget_sum
from .loss import (adversarial_generator_loss, discriminator_loss, fake_score_loss, finite_rows, sid_generator_loss,
                   sid_normaliser)
from .model import add_lora, load_trainable, merged_state_dict, trainable_state


@dataclass
class DistillConfig:
    steps: int = 800
    batch_size: int = 64
    micro_batch: int = 0  # 0: the whole per-process batch in one pass
    lr: float = 1e-4  # generator
    lr_fake: float = 2e-4
    betas: tuple[float, float] = (0.0, 0.999)
    alpha: float = 1.2
    sigma_init: float = 2.5
    kappa1: float = 1.0  # CFG of f_psi in its own loss
    kappa2: float = 1.0  # CFG of f_psi in the generator loss (kappa3 = kappa2)
    kappa4: float = 1.0  # CFG of the teacher in the generator loss
    p_uncond: float = 0.0  # condition dropout when training f_psi (0.1 when kappa1 or kappa2 != 1)
    t_min: int = 0
    t_max: int = 800
    p_mean: float = -1.2
    p_std: float = 1.2
    ema_halflife_kimg: float = 25.0
    ema_rampup: float = 0.5
    precision: str = "fp32"
    grad_clip_value: float = 0.0  # SiD-LSG clips gradient values at 1 under fp16
    gradient_checkpointing: bool = False
    lora_rank: int = 0
    init_from: str = ""  # a finished distill/unlearn run whose generator G starts from (SFD's two-stage variant)
    adv_weight: float = 0.0  # SiDA: weight of the adversarial term in G's loss (0: plain SiD, data-free)
    real_data: str = ""  # SiDA: real images for the discriminator (digits, shapes or an images artifact)
    checkpoint_every: int = 200
    eval_every: int = 0
    eval_n: int = 1000
    seed: int = 0


# Fields that must match for --resume to continue the same run.
RUN_IDENTITY = ("batch_size", "alpha", "sigma_init", "kappa1", "kappa2", "kappa4", "p_uncond", "t_min", "t_max",
                "lora_rank", "init_from", "seed", "adv_weight", "real_data")


def _dist() -> tuple[int, int]:
    """(rank, world) when launched by torchrun / accelerate launch, else (0, 1)."""
    from ...core.runtime import rank_world

    return rank_world()


def _bcast(s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return s.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)


def check_evaluable(teacher) -> None:
    """--eval-every scores with a shipped classifier: the teacher must be a gaml one on digits or shapes."""
    if teacher.family != "edm" or teacher.dataset not in ("digits", "shapes"):
        raise UsageError("--eval-every scores against digits or shapes: it needs a gaml teacher trained on one")


class Evaluator:
    """FD / accuracy of the EMA generator on a fixed batch, in the shipped classifier's features."""

    def __init__(self, teacher, n: int, seed: int):
        from ...diffusion.eval import load_classifier, reference_images
        from ...diffusion.sample import default_conditions

        check_evaluable(teacher)
        ds = teacher.dataset
        self.clf, _ = load_classifier(None, ds, {"dataset": ds})
        self.ref, _ = reference_images(ds, self.clf)
        self.teacher, self.n, self.seed = teacher, n, seed
        self.conds = default_conditions(teacher.net, teacher.config, n, seed)

    @torch.no_grad()
    def __call__(self, G: torch.nn.Module, sigma_init: float) -> dict[str, Any]:
        import numpy as np

        from ...core.artifacts import Artifact, ArtifactInfo
        from ...diffusion.eval import score
        from ...diffusion.sample import SampleSpec, caption_attrs, generate

        G.eval()
        cfg = {"model": self.teacher.config["model"], "generator": {"sigma_init": sigma_init}}
        x, _ = generate(G, "generator", cfg, SampleSpec(n=self.n, seed=self.seed), self.conds, self.teacher.device)
        tensors: dict[str, Any] = {"images": x.clamp(-1, 1).numpy()}
        art_cfg: dict[str, Any] = {}
        if self.teacher.cond_type == "class":
            tensors["labels"] = np.asarray(self.conds)
        elif self.teacher.cond_type == "text":
            tensors["attrs"] = caption_attrs(self.conds, self.teacher.attributes)
            art_cfg["attrs_columns"] = ["shape", "color", "background"]
        info = ArtifactInfo(path=Path("<distill eval>"), kind="images", version=None, config=art_cfg,
                            provenance={}, tensors={})
        s = score(self.clf, Artifact(info=info, tensors=tensors), self.ref, seed=self.seed)
        out = {"fd": s["fd"], "floor": s["floor"], "accuracy": s.get("accuracy")}
        if s.get("attribute_accuracy"):
            out["attribute_accuracy"] = s["attribute_accuracy"]
        return out


def distill(teacher, dc: DistillConfig, out_dir: Path, device: torch.device, resume: bool = False,
            progress_label: str = "distill", plan=None, real=None) -> tuple[torch.nn.Module, dict[str, Any], int]:
    """Run SiD-LSG; returns (the generator to save: the EMA copy if kept; report; this process's rank).

    plan: a methods.sfd.plan.ForgetPlan for Score Forgetting Distillation (gaml unlearn): each
    micro-batch then holds retained rows and forget rows; on forget rows the teacher is evaluated
    at the override condition and both losses weight the rows as methods.sfd.loss says.
    real: SiDA's methods.sid.adversarial.RealImages (built from dc.real_data when not given)."""
    rank, world = _dist()
    main = rank == 0
    if dc.batch_size % world:
        raise UsageError(f"--batch-size {dc.batch_size} must be divisible by the {world} processes")
    local_b = dc.batch_size // world
    micro = dc.micro_batch or local_b
    if local_b % micro:
        raise UsageError(f"--micro-batch {micro} must divide the per-process batch {local_b}")
    amp_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[dc.precision]
    autocast = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if amp_dtype else nullcontext
    scaler = torch.amp.GradScaler(device.type) if dc.precision == "fp16" else None

    # ---- setup: three networks (teacher frozen; fake score and generator from the teacher)
    torch.manual_seed(dc.seed)
    f_phi = teacher.net
    f_psi = teacher.trainable_copy()
    G = teacher.trainable_copy()
    if dc.init_from:
        from .model import load_generator_into

        load_generator_into(G, teacher, Path(dc.init_from))
    if dc.lora_rank:
        add_lora(teacher.core(f_psi), dc.lora_rank, dc.seed)
        add_lora(teacher.core(G), dc.lora_rank, dc.seed + 1)
    if dc.gradient_checkpointing:
        for m in (f_psi, G, f_phi):
            core = teacher.core(m)
            if hasattr(core, "enable_gradient_checkpointing"):
                core.enable_gradient_checkpointing()
    G_ema = copy.deepcopy(G).eval().requires_grad_(False) if dc.ema_halflife_kimg > 0 else None
    if dc.real_data:  # SiDA: the fake score's encoder is also the discriminator on real images
        from .adversarial import RealImages, discriminator_logits, encoder_tap

        if world > 1:
            raise UsageError("--real-data (SiDA) runs in one process for now")
        real = real if real is not None else RealImages(dc.real_data, teacher, plan)
        n_pixels = int(torch.Size(teacher.x_shape).numel())
    g_names = [n for n, p in G.named_parameters() if p.requires_grad]
    f_names = [n for n, p in f_psi.named_parameters() if p.requires_grad]
    opt_g = torch.optim.Adam([p for p in G.parameters() if p.requires_grad], lr=dc.lr, betas=dc.betas,
                             eps=1e-6 if dc.precision == "fp16" else 1e-8)
    opt_f = torch.optim.Adam([p for p in f_psi.parameters() if p.requires_grad], lr=dc.lr_fake, betas=dc.betas,
                             eps=1e-6 if dc.precision == "fp16" else 1e-8)
    G_train, f_train = G, f_psi
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        G_train, f_train = DDP(G, device_ids=ids), DDP(f_psi, device_ids=ids)
    gen = torch.Generator().manual_seed(dc.seed * 1_000_003 + rank)
    ckpt = CheckpointDir(out_dir / "checkpoints", keep=2)
    identity = {k: getattr(dc, k) for k in RUN_IDENTITY} | {"teacher": teacher.describe()}
    if plan is not None:
        identity["forget"] = plan.describe()
    if real is not None:
        identity["real_images"] = len(real.x)
    n_rem, n_fgt = plan.counts(micro) if plan is not None else (micro, 0)
    n_rem, n_fgt = n_rem * (local_b // micro), n_fgt * (local_b // micro)
    start, seconds, history = 0, 0.0, []
    if resume:
        step, state, run_cfg = ckpt.load(device="cpu")
        if run_cfg.get("identity") != json.loads(json.dumps(identity)):
            raise UsageError(f"{out_dir}: the checkpoint was made with another teacher or settings "
                             f"({', '.join(RUN_IDENTITY)} must match); start a new --out")
        load_trainable(G, state["G"])
        load_trainable(f_psi, state["fake"])
        if G_ema is not None and "G_ema" in state:
            load_trainable(G_ema, state["G_ema"])
        opt_g.load_state_dict(state["opt_g"])
        opt_f.load_state_dict(state["opt_f"])
        gen.set_state(state["gen"])
        if rank > 0:  # the checkpoint holds rank 0's stream; give the others fresh, distinct ones
            gen.manual_seed(dc.seed * 1_000_003 + rank + 7_919 * step)
        start, seconds, history = step, float(state.get("seconds", 0.0)), list(run_cfg.get("history", []))
        if main:
            console.log(f"resumed from {ckpt.latest()} at step {start}")
    evaluator = Evaluator(teacher, dc.eval_n, dc.seed) if dc.eval_every and main else None

    def save_ckpt(step: int) -> None:
        if not main:
            return
        state = {"G": trainable_state(G, g_names), "fake": trainable_state(f_psi, f_names),
                 "opt_g": opt_g.state_dict(), "opt_f": opt_f.state_dict(), "gen": gen.get_state(),
                 "seconds": seconds + time.perf_counter() - t0}
        if G_ema is not None:
            state["G_ema"] = trainable_state(G_ema, g_names)
        ckpt.save(step, state, config={"identity": identity, "distill": asdict(dc), "history": history},
                  seed=dc.seed)

    def conditions(n: int):
        """(condition of G and the fake score, condition of the teacher, forget-row mask or None)."""
        if plan is None:
            conds = teacher.draw_conditions(n, gen)
            c = teacher.encode(conds, n) if conds is not None else teacher.null(n)
            return c, c, None
        nr, nf = plan.counts(n)
        kept = plan.draw_retained(teacher, nr, gen)
        forget, override = plan.draw_forget(teacher, nf, gen)
        c = teacher.encode(kept + forget, n)
        c_phi = teacher.encode(kept + override, n) if nf else c
        return c, c_phi, torch.arange(n, device=device) >= nr

    def batch_loss(per_sample: torch.Tensor, is_forget, ok: torch.Tensor) -> torch.Tensor:
        if is_forget is None:
            return per_sample.sum() / local_b
        return remain_forget_sum(per_sample, is_forget[ok], n_rem, n_fgt, plan.weight)

    def generate(c: torch.Tensor | None, n: int) -> torch.Tensor:
        z = torch.randn((n, *teacher.x_shape), generator=gen).to(device)
        s = torch.full((n,), dc.sigma_init, device=device)
        with autocast():
            return G_train(dc.sigma_init * z, s, c).float()

    def backward(loss) -> None:
        if scaler is not None:
            scaler.scale(loss).backward()
        else:
            loss.backward()

    def finish(opt, module) -> None:
        if scaler is not None:
            scaler.unscale_(opt)
        for p in module.parameters():
            if p.grad is not None:
                torch.nan_to_num(p.grad, nan=0.0, posinf=1e5, neginf=-1e5, out=p.grad)
        if dc.grad_clip_value > 0:
            torch.nn.utils.clip_grad_value_([p for p in module.parameters() if p.requires_grad], dc.grad_clip_value)
        if scaler is not None:
            scaler.step(opt)
        else:
            opt.step()

    @torch.no_grad()
    def ema_update(done_images: int) -> None:
        if G_ema is None:
            return
        half = dc.ema_halflife_kimg * 1000
        if dc.ema_rampup:
            half = min(half, done_images * dc.ema_rampup)
        beta = 0.5 ** (dc.batch_size / max(half, 1e-8))
        p_ema = dict(G_ema.named_parameters())
        for n, p in G.named_parameters():
            if p.requires_grad:
                p_ema[n].lerp_(p.detach(), 1 - beta)

    n_params = sum(p.numel() for p in G.parameters() if p.requires_grad)
    if main:
        what = "SiD-LSG" if plan is None else f"SFD (forget {plan.describe()['pairs']}, weight {plan.weight}, share {plan.share})"
        if real is not None:
            what += f" + SiDA (adversarial weight {dc.adv_weight}, {len(real.x)} real images from {dc.real_data})"
        console.log(f"{what}: {teacher.describe()['family']} teacher {teacher.path}, {n_params / 1e6:.2f}M trainable "
                    f"parameters per network, batch {dc.batch_size} ({world} process(es)), kappa "
                    f"{dc.kappa1}/{dc.kappa2}/{dc.kappa4}, alpha {dc.alpha}, sigma_init {dc.sigma_init:.3f}, "
                    f"{dc.precision} on {device}")
    t0 = time.perf_counter()
    loss_f = loss_g = loss_d = float("nan")
    log_path = out_dir / "log.jsonl"
    loop = StepLoop(start, dc.steps, save_ckpt, ckpt, every=dc.checkpoint_every, unit="iteration", announce=main)
    with loop, console.progress(dc.steps, progress_label, completed=start) if main else nullcontext(None) as bar:
        for step in loop:
            # 1. fake score network (generator frozen)
            f_psi.train().requires_grad_(False)
            for n, p in f_psi.named_parameters():
                p.requires_grad_(n in f_names)
            opt_f.zero_grad(set_to_none=True)
            total_f = total_d = 0.0
            for _ in range(local_b // micro):
                c, _, is_forget = conditions(micro)
                if dc.p_uncond > 0 and c is not None:
                    drop = (torch.rand(micro, generator=gen) < dc.p_uncond).to(device)
                    if is_forget is not None:
                        # forget rows keep c_f, in every gaml path (digits and SD teachers alike). This
                        # follows the SFD reference's DDPM script (DDPM/runners/diffusion.py: the forget
                        # branch passes cond_drop_prob=0.0; its retained rows use distill.cond_drop_prob,
                        # absent from its configs, so 0). Its SD script does not: with a fake-score CFG
                        # scale != 1 it blanks 10% of the forget prompts as well as of the retained ones
                        # (SD/training/training_loop.py), so gaml's SD path differs from it here.
                        drop &= ~is_forget
                    # as in the SiD-LSG reference, a dropped prompt is dropped for G's sample too
                    c = torch.where(_bcast(drop, c).bool(), teacher.null(micro).to(c.dtype), c)
                with torch.no_grad():
                    x_g = generate(c, micro)
                sigma = teacher.fake_sigma(micro, gen, dc)
                noise = torch.randn(x_g.shape, generator=gen).to(device)
                x_t = x_g + _bcast(sigma, x_g) * noise
                with autocast(), (encoder_tap(teacher, f_psi) if real is not None else nullcontext([])) as seen:
                    y = cfg_denoiser(f_train, teacher.null(micro), dc.kappa1)(x_t, sigma, c).float()
                ok = finite_rows(y, x_g)
                loss = batch_loss(fake_score_loss(y[ok], x_g[ok], teacher.fake_weight(sigma[ok])), is_forget, ok)
                if real is not None:
                    # SiDA: the same f_psi, as discriminator, on real images noised with the same sigma and n
                    logits_fake = discriminator_logits(seen[0], micro)
                    x_r, c_r = real.draw(micro, gen)
                    c_r = teacher.encode(c_r, micro) if c_r is not None else teacher.null(micro)
                    with autocast(), encoder_tap(teacher, f_psi) as seen_r:
                        f_train(x_r + _bcast(sigma, x_r) * noise, sigma, c_r)
                    logits_real = discriminator_logits(seen_r[0], micro)
                    ok_d = ok & finite_rows(logits_real, logits_fake)
                    loss_disc = discriminator_loss(logits_real[ok_d], logits_fake[ok_d],
                                                   teacher.fake_weight(sigma[ok_d])).sum() / local_b
                    loss = loss + loss_disc
                    total_d += float(loss_disc.detach())
                backward(loss)
                total_f += float(loss.detach())
            require_finite(step, fake_score_loss=total_f)
            finish(opt_f, f_psi)
            f_psi.eval().requires_grad_(False)

            # 2. generator (score networks frozen; gradient flows through their inputs)
            G.train()
            opt_g.zero_grad(set_to_none=True)
            total_g = 0.0
            for _ in range(local_b // micro):
                c, c_phi, is_forget = conditions(micro)
                x_g = generate(c, micro)
                sigma = teacher.gen_sigma(micro, gen, dc)
                noise = torch.randn(x_g.shape, generator=gen).to(device)
                x_t = x_g + _bcast(sigma, x_g) * noise
                null = teacher.null(micro)
                with autocast():
                    with encoder_tap(teacher, f_psi) if real is not None else nullcontext([]) as seen:
                        y_fake = cfg_denoiser(f_psi, null, dc.kappa2)(x_t, sigma, c).float()
                    y_real = cfg_denoiser(f_phi, null, dc.kappa4)(x_t, sigma, c_phi).float()
                ok = finite_rows(x_g, y_real, y_fake)
                per = sid_generator_loss(x_g[ok], y_real[ok], y_fake[ok], dc.alpha)
                if real is not None and dc.adv_weight:
                    # SiDA: the discriminator's verdict on this same x_t, through f_psi's encoder
                    logits = discriminator_logits(seen[0], micro)[ok]
                    w = sid_normaliser(x_g[ok], y_real[ok])
                    per = per + dc.adv_weight * adversarial_generator_loss(logits, w, n_pixels)
                loss = batch_loss(per, is_forget, ok)
                backward(loss)
                total_g += float(loss.detach())
            require_finite(step, generator_loss=total_g)
            finish(opt_g, G)
            if scaler is not None:
                scaler.update()
            # images counted after this step; the EDM/SiD reference loops count them before it (cur_nimg
            # is incremented after their EMA update), so gaml's ramp-up runs one batch ahead: at step 1 the
            # reference copies G into the EMA (half-life 0), gaml keeps 0.5^(1/ema_rampup) of the start.
            # Kept: the tables of record were measured so; the difference fades once the ramp-up ends.
            ema_update((step + 1) * dc.batch_size)
            loss_f, loss_g, loss_d = total_f, total_g, total_d
            fields: dict[str, Any] = {"loss_fake": loss_f, "loss_g": loss_g}
            if real is not None:
                fields["loss_d"] = loss_d
            if evaluator is not None and ((step + 1) % dc.eval_every == 0 or step + 1 == dc.steps):
                fields.update(evaluator(G_ema or G, dc.sigma_init))
                (G_ema or G).train(False)
            if main:
                rec = {"step": step + 1, "seconds": round(seconds + time.perf_counter() - t0, 2), **fields}
                if "fd" in fields:
                    history.append(rec)
                if "fd" in fields or (step + 1) % 10 == 0 or step + 1 == dc.steps:
                    with open(log_path, "a") as fh:
                        fh.write(json.dumps(console.finite(rec)) + "\n")
                bar.update(1, **{k: v for k, v in fields.items() if k not in ("floor", "attribute_accuracy")})
    seconds += time.perf_counter() - t0
    if start >= dc.steps and main:
        console.warn(f"the checkpoint is already at step {start} >= --steps {dc.steps}; saving it as it is")
    final = G_ema if G_ema is not None else G
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    report = {"steps": max(start, loop.done), "loss_fake": console.finite(loss_f), "loss_g": console.finite(loss_g),
              "train_seconds": round(seconds, 1), "trainable_parameters": n_params, "processes": world,
              "history": history}
    return final, report, rank


def generator_weights(G: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The generator's weights as the teacher architecture has them (LoRA merged)."""
    return merged_state_dict(G)
