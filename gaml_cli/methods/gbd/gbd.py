"""GBD's pieces around the denoiser: scale/shift, concentration, preconditioned input, loss, sampler."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from . import diffusion as bd
from .model import GraphTransformer


@dataclass
class GBDConfig:
    max_nodes: int
    max_degree: int
    scale: float = 0.9          # x0 in {0, 1} -> {shift, scale + shift}   (GBD: 0.9 / 0.09 for generic graphs)
    shift: float = 0.09
    eta: tuple = (1000.0, 30.0, 10.0)  # concentration for high / middle / low normalised degree
    thresholds: tuple = (0.8, 0.4)
    lambda_e: float = 5.0       # loss = KLUB_X + lambda_e KLUB_E
    omega: float = 0.99         # sampling vs marginal KLUB
    schedule: dict = field(default_factory=lambda: asdict(bd.Schedule()))
    net: dict = field(default_factory=lambda: {"layers": 6, "dx": 128, "de": 32, "dy": 64, "heads": 8,
                                               "ffx": 256, "ffe": 64})
    # structural features of the current noisy graph as extra network inputs (DiGress's extra
    # features: degree, triangles, Laplacian spectrum); off in artifacts made before the option
    extra_features: bool = False
    # the drawn degree profile (degree / the graph's largest, per node) as a network input: the
    # sampler already holds it for the concentrations (GBD Sec. 3.3); off in older artifacts
    degree_input: bool = False
    # random-walk features of the noisy graph (RRWP, Ma et al. 2023): (P^k)_ij per pair and
    # (P^k)_ii per node for k = 1..RW_STEPS, P = D^-1 A_t; off in older artifacts
    rw_features: bool = False
    # training times: a share of each batch draws t ~ U(lo, hi) instead of U(t_min, 1), the band
    # where the noisy graph still tells something about the graph (share, lo, hi); 0 in older artifacts
    t_focus: tuple = (0.0, 0.4, 0.85)
    # the form of the loss (`--klub`, `--node-loss`). gaml: the KLUB at each entry's own,
    # modulated concentration, and KLUB_X averaged over the node features (nodes x degree
    # features). GBD's released code (metrics/abstract_metrics.py KLUBs, train_metrics.py
    # TrainLossBeta): the KLUB at one fixed concentration 10,000 with 0.01 added to every gamma
    # shape, and KLUB_X summed over a node's degree features and averaged over nodes (D times
    # gaml's per-feature mean next to the same KLUB_E). klub_eta 0 = modulated.
    klub_eta: float = 0.0
    klub_shape_offset: float = 0.0
    node_loss: str = "per-feature"   # or "per-node"

    @property
    def D(self) -> int:
        return self.max_degree + 1


N_EIGVEC, N_EIGVAL = 2, 5
NODE_LOSSES = ("per-feature", "per-node")
# `--klub`: the loss forms by what they do -> (klub_eta, klub_shape_offset)
KLUB_FORMS = {"modulated": (0.0, 0.0), "fixed": (10000.0, 0.01)}
RW_STEPS = 4


def build_net(cfg: GBDConfig) -> GraphTransformer:
    # inputs: preconditioned logit z_t per feature + the entry's log concentration
    # (+ structural features: degree, triangles, 2 eigenvectors per node; 5 eigenvalues, components)
    fx = (cfg.D + 1 + (2 + N_EIGVEC if cfg.extra_features else 0) + (1 if cfg.degree_input else 0)
          + (RW_STEPS - 1 if cfg.rw_features else 0))
    fy = 1 + (N_EIGVAL + 1 if cfg.extra_features else 0)
    fe = 2 + (RW_STEPS if cfg.rw_features else 0)
    return GraphTransformer(fx=fx, fe=fe, out_x=cfg.D, out_e=1, fy=fy, **cfg.net)


def noisy_adjacency(lz_e: torch.Tensor, alpha_t: torch.Tensor, node_mask: torch.Tensor, shift: float,
                    scale: float) -> torch.Tensor:
    """A_t = 1[x_t > 1/2], x_t = (clamp(z_t / alpha_t, 0, 1) - shift) / scale (E[z_t] = alpha_t x0):
    the graph the noisy state points to."""
    N = node_mask.shape[1]
    z = torch.sigmoid(lz_e.double())
    x = ((z / alpha_t.double().view(-1, 1, 1)).clamp(0, 1) - shift) / scale  # float64: alpha_t reaches 2e-6
    pair = node_mask.unsqueeze(2) & node_mask.unsqueeze(1)
    eye = torch.eye(N, dtype=torch.bool, device=lz_e.device).unsqueeze(0)
    return ((x > 0.5) & pair & ~eye).float()


def random_walk_features(A: torch.Tensor, steps: int = RW_STEPS) -> tuple[torch.Tensor, torch.Tensor]:
    """(P^k)_ij for k = 1..steps as edge channels (B, N, N, steps) and the return probabilities
    (P^k)_ii for k = 2..steps as node channels (B, N, steps - 1), P = D^-1 A (rows of isolated
    nodes stay 0)."""
    P = A / A.sum(-1, keepdim=True).clamp_min(1.0)
    mats, Pk = [], P
    for _ in range(steps):
        mats.append(Pk)
        Pk = Pk @ P
    E = torch.stack(mats, dim=-1)
    X = torch.stack([torch.diagonal(m, dim1=1, dim2=2) for m in mats[1:]], dim=-1)
    return X, E


def _eigh(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.linalg.eigh of one symmetric matrix; where LAPACK's single-precision solver fails to
    converge (seen on sbm's 40-200-node Laplacians during training: "linalg.eigh: The algorithm
    failed to converge ... (error code: 18822)"), the same matrix in double precision, cast back.
    Matrices that converge in single precision get exactly what they got before."""
    try:
        return torch.linalg.eigh(m)
    except torch.linalg.LinAlgError:
        w, v = torch.linalg.eigh(m.double())
        return w.to(m.dtype), v.to(m.dtype)


@torch.no_grad()
def structural_features(lz_e: torch.Tensor, alpha_t: torch.Tensor, node_mask: torch.Tensor, shift: float,
                        scale: float, n_max: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """DiGress-style extra features of the graph the noisy state points to: A_t = 1[x_t > 1/2] with
    x_t = (clamp(z_t / alpha_t, 0, 1) - shift) / scale (E[z_t] = alpha_t x0). Per node: degree / N,
    triangles / N and the 2 Laplacian eigenvectors after the lowest (community indicators); per
    graph: the 5 lowest Laplacian eigenvalues / N and the share of zero ones (components).
    N is the padded width, or `n_max` (the model's largest graph) when the batch is padded less:
    the graphs are then padded to n_max for these features, so that they are the same, to the
    bit, however far a batch is padded (the eigenvectors' signs and bases come from LAPACK, which
    need not give the same ones for a differently padded matrix). Graphs are padded to at least
    N_EIGVAL nodes, so that a data set of graphs under 5 nodes gets its 5 eigenvalues the way a
    small graph in a wider batch does (from the padded nodes above the real ones)."""
    B, N0 = node_mask.shape
    width = max(N0 if n_max is None else n_max, N_EIGVAL)
    if width > N0:
        pad = width - N0
        fx, fy = structural_features(F.pad(lz_e, (0, pad, 0, pad)), alpha_t, F.pad(node_mask, (0, pad)),
                                     shift, scale)
        return fx[:, :N0], fy
    N = N0
    A = noisy_adjacency(lz_e, alpha_t, node_mask, shift, scale).float()
    deg = A.sum(-1)
    tri = torch.diagonal(A @ A @ A, dim1=1, dim2=2) / 2
    # padded nodes get a large diagonal so their eigenvalues sit above the real ones
    L = torch.diag_embed(deg + (~node_mask).float() * 4 * N) - A
    # On CUDA, cuSOLVER's batched eigh (Jacobi) fails to converge on such Laplacians, whose
    # eigenvalues repeat (components, cliques, the padded block): "linalg.eigh: (Batch element 10):
    # The algorithm failed to converge" on an H200, torch 2.11. These matrices are at most a few
    # dozen nodes wide, so the decomposition runs on the CPU (LAPACK) on every device, which also
    # gives the same features whether a model is trained or sampled on CPU or GPU.
    # One call per matrix: torch's batched eigh can return another basis of a repeated
    # eigenvalue's eigenspace (isolated nodes, symmetric parts) for a matrix at batch position 0
    # than at a later one (seen on a 5-node star-like graph: eigenvectors apart by 1.39), which
    # would make a graph's features depend on its batch; the sampler's per-graph seeding and the
    # split training step (train.split_backward) need them not to. ~30 us a matrix.
    pairs = [_eigh(m) for m in L.cpu()]
    evals, evecs = (torch.stack(r).to(L.device) for r in zip(*pairs))
    vec = evecs[:, :, 1: 1 + N_EIGVEC] * node_mask.unsqueeze(-1)
    n = node_mask.float().sum(1, keepdim=True).clamp_min(1)
    feats_x = torch.cat([(deg / N).unsqueeze(-1), (tri / N).unsqueeze(-1), vec], dim=-1)
    feats_y = torch.cat([evals[:, :N_EIGVAL] / N, ((evals.abs() < 1e-4).float().sum(1, keepdim=True) / n)], dim=1)
    return feats_x, feats_y


def call_by_size(net, X, E, t, node_mask, y):
    """net(X, E, t, node_mask, y) with the graphs of each size run as their own chunk, padded only to
    that size. The denoiser treats every graph on its own and masks its padding, so the result is
    the same as one call on the whole padded batch (tests/test_gbd.py) at a fraction of the node
    pairs when sizes vary, and a graph's computation does not depend on the rest of the batch (the
    sampler's per-sample seeding relies on that). Padded entries of the outputs are 0 (the callers
    mask them). CPU only: on the H200 these networks were launch-bound (README), where more,
    smaller calls would cost more. Training does not use it: at 2 threads it did not pay (the bad
    training seeds of the runs that used it are more likely fused AdamW's, which was worse on its
    own too: bench/results/graphgen-development.md, sixth and seventh passes)."""
    if X.device.type != "cpu":
        return net(X, E, t, node_mask, y)
    counts = node_mask.sum(1)
    B, N = node_mask.shape
    out_x = out_e = None
    for m in counts.unique().tolist():
        ii = (counts == m).nonzero().squeeze(1)
        m = int(m)
        ox, oe = net(X[ii, :m], E[ii, :m, :m], t[ii], node_mask[ii, :m], y[ii])
        if out_x is None:
            out_x = ox.new_zeros(B, N, ox.shape[-1])
            out_e = oe.new_zeros(B, N, N, oe.shape[-1])
        out_x = out_x.index_put((ii,), F.pad(ox, (0, 0, 0, N - m)))
        out_e = out_e.index_put((ii,), F.pad(oe, (0, 0, 0, N - m, 0, N - m)))
    return out_x, out_e


class GBD:
    """Stateless helpers bound to a config and the data marginals (p_X per degree, p_E)."""

    def __init__(self, cfg: GBDConfig, p_x: torch.Tensor, p_e: float):
        self.cfg = cfg
        self.sched = bd.Schedule(**cfg.schedule)
        self.p_x = p_x.float()
        self.p_e = torch.tensor(float(p_e))
        self.log_eta_scale = math.log(max(cfg.eta))

    # ---- maps
    def scale_shift(self, x: torch.Tensor) -> torch.Tensor:
        return self.cfg.scale * x + self.cfg.shift

    def concentrations(self, norm_deg: torch.Tensor):
        eta_n = bd.node_eta(norm_deg, self.cfg.eta, self.cfg.thresholds)
        eta_e = bd.edge_eta(norm_deg, eta_n)
        return eta_n, eta_e

    def masks(self, node_mask: torch.Tensor):
        N = node_mask.shape[1]
        pair = node_mask.unsqueeze(2) & node_mask.unsqueeze(1)
        off = pair & ~torch.eye(N, dtype=torch.bool, device=node_mask.device).unsqueeze(0)
        return pair, off

    # ---- network call
    def predict_x0(self, net, lz_x, lz_e, t, alpha_t, eta_n, eta_e, node_mask, n_frac, norm_deg=None,
                   by_size: bool = False):
        """x0_hat for X and E from the logits of z_t: preconditioned input, sigmoid output, scale/shift.
        `norm_deg`: the degree profile behind the concentrations (an input when cfg.degree_input);
        `by_size`: run the denoiser by graph size (call_by_size; the sampler's choice)."""
        lo, hi = self.cfg.shift, self.cfg.shift + self.cfg.scale
        a_n = alpha_t.view(-1, 1, 1)
        mx, sx = bd.logit_stats(a_n, eta_n.unsqueeze(-1), lo, hi, self.p_x.to(lz_x.device))
        me, se = bd.logit_stats(a_n, eta_e, lo, hi, self.p_e.to(lz_x.device))
        xin = ((lz_x - mx) / sx).clamp(-30, 30)
        ein = ((lz_e - me) / se).clamp(-30, 30)
        pair, off = self.masks(node_mask)
        xin = xin * node_mask.unsqueeze(-1)
        ein = ein * off
        X = torch.cat([xin, (eta_n.log() / self.log_eta_scale).unsqueeze(-1) * node_mask.unsqueeze(-1)], dim=-1)
        E = torch.stack([ein, eta_e.log() / self.log_eta_scale * off], dim=-1)
        y = n_frac.unsqueeze(1)
        if self.cfg.extra_features:
            fx, fy = structural_features(lz_e, alpha_t, node_mask, self.cfg.shift, self.cfg.scale, self.cfg.max_nodes)
            X = torch.cat([X, fx * node_mask.unsqueeze(-1)], dim=-1)
            y = torch.cat([y, fy], dim=1)
        if self.cfg.degree_input:
            X = torch.cat([X, (norm_deg * node_mask).unsqueeze(-1)], dim=-1)
        if self.cfg.rw_features:
            rx, re = random_walk_features(noisy_adjacency(lz_e, alpha_t, node_mask, self.cfg.shift, self.cfg.scale))
            X = torch.cat([X, rx.float() * node_mask.unsqueeze(-1)], dim=-1)
            E = torch.cat([E, re.float() * off.unsqueeze(-1)], dim=-1)
        out_x, out_e = call_by_size(net, X, E, t, node_mask, y) if by_size else net(X, E, t, node_mask, y)
        return self.scale_shift(torch.sigmoid(out_x)), self.scale_shift(torch.sigmoid(out_e.squeeze(-1)))

    # ---- training loss (BD Eq. 11 on nodes and edges; GBD: KLUB_X + lambda KLUB_E)
    def klub_etas(self, eta_n: torch.Tensor, eta_e: torch.Tensor):
        """The concentrations the KLUB is evaluated at, in float64: the entries' own (klub_eta 0)
        or the fixed klub_eta everywhere (GBD's released code: 10,000). The forward draws and the
        network's inputs keep the modulated ones either way."""
        if self.cfg.klub_eta > 0:
            return (torch.full_like(eta_n, self.cfg.klub_eta, dtype=torch.float64),
                    torch.full_like(eta_e, self.cfg.klub_eta, dtype=torch.float64))
        return eta_n.double(), eta_e.double()

    def node_loss_per_node(self) -> bool:
        if self.cfg.node_loss not in NODE_LOSSES:
            raise ValueError(f"node_loss {self.cfg.node_loss!r}: one of {', '.join(NODE_LOSSES)}")
        return self.cfg.node_loss == "per-node"

    def draw(self, A, onehot, node_mask, norm_deg, generator: torch.Generator | None = None,
             t: torch.Tensor | None = None):
        """The random part of the training loss: times t (B,) (given, or drawn with --t-focus) and
        the logits of z_t for the node features and the node pairs (one draw per pair)."""
        B, N = node_mask.shape
        dev = A.device
        if t is None:
            u = torch.rand(B, generator=generator)
            share, lo, hi = self.cfg.t_focus
            if share > 0:
                band = torch.rand(B, generator=generator) < share
                u = torch.where(band, (lo + (hi - lo) * u - self.sched.t_min) / (1 - self.sched.t_min), u)
            t = self.sched.t_min + (1 - self.sched.t_min) * u
        t = t.to(dev)
        alpha_t = self.sched.alpha(t)
        eta_n, eta_e = self.concentrations(norm_deg)
        a_n = alpha_t.view(-1, 1, 1)
        lz_x = bd.q_sample_logit(self.scale_shift(onehot).cpu(), a_n.cpu(), eta_n.unsqueeze(-1).cpu(), generator).to(dev)
        lz_e = bd.q_sample_logit(self.scale_shift(A).cpu(), a_n.cpu(), eta_e.cpu(), generator).to(dev)
        lz_e = torch.triu(lz_e, 1) + torch.triu(lz_e, 1).transpose(1, 2)  # one draw per node pair
        return t, lz_x, lz_e

    def counts(self, node_mask) -> tuple[float, float]:
        """The node features and off-diagonal node pairs of a batch: what the KLUBs are averaged over."""
        _, off = self.masks(node_mask)
        return max(float(node_mask.sum()) * self.cfg.D, 1.0), max(float(off.sum()), 1.0)

    def loss(self, net, A, onehot, node_mask, norm_deg, generator: torch.Generator | None = None,
             t: torch.Tensor | None = None, per: tuple[float, float] | None = None):
        """The training loss at random times (or at the given times `t`, (B,), for probes).
        KLUB_X is averaged over the batch's node features and KLUB_E over its node pairs, or, with
        `per` = (node features, node pairs), divided by these fixed counts instead (the expected
        counts of a uniform batch: what size-grouped batches use so that every pair weighs the same
        whichever batch it falls in)."""
        t, lz_x, lz_e = self.draw(A, onehot, node_mask, norm_deg, generator, t)
        return self.loss_at(net, A, onehot, node_mask, norm_deg, t, lz_x, lz_e, per)

    def loss_at(self, net, A, onehot, node_mask, norm_deg, t, lz_x, lz_e, per=None):
        """The loss given the draws of `draw` (for a slice of its batch, `per` must be the whole
        batch's counts: then the slices' losses add up to the batch's)."""
        s = self.sched.s_ratio * t
        alpha_t, alpha_s = self.sched.alpha(t), self.sched.alpha(s)
        eta_n, eta_e = self.concentrations(norm_deg)
        x0 = self.scale_shift(onehot)
        e0 = self.scale_shift(A)
        n_frac = node_mask.float().sum(1) / self.cfg.max_nodes
        xh, eh = self.predict_x0(net, lz_x, lz_e, t, alpha_t, eta_n, eta_e, node_mask, n_frac, norm_deg)
        gap = self.sched.alpha_gap(s, t).double().view(-1, 1, 1)
        at, as_ = alpha_t.double().view(-1, 1, 1), alpha_s.double().view(-1, 1, 1)
        # alpha (B, 1, 1) broadcasts over (B, N, D) node features and (B, N, N) pairs alike
        # the KLUB's concentration: the entries' own (modulated), or one fixed value (released code)
        kn, ke_ = self.klub_etas(eta_n, eta_e)
        off_ = self.cfg.klub_shape_offset
        kx = bd.klub(xh.double(), x0.double(), as_, at, kn.unsqueeze(-1), self.cfg.omega, gap=gap, offset=off_)
        ke = bd.klub(eh.double(), e0.double(), as_, at, ke_, self.cfg.omega, gap=gap, offset=off_)
        pair, off = self.masks(node_mask)
        # per-node: KLUB_X summed over a node's D features, so divided by nodes, not node features
        d = self.cfg.D if self.node_loss_per_node() else 1
        if per is None:
            loss_x = (kx * node_mask.unsqueeze(-1)).sum() / (node_mask.sum() * self.cfg.D).clamp_min(1) * d
            loss_e = (ke * off).sum() / off.sum().clamp_min(1)
        else:
            loss_x = (kx * node_mask.unsqueeze(-1)).sum() / per[0] * d
            loss_e = (ke * off).sum() / per[1]
        return (loss_x + self.cfg.lambda_e * loss_e).float(), float(loss_x.detach()), float(loss_e.detach())
