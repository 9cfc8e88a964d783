"""A module's parameters, and their gradients, as views of one flat buffer each.

A training step's bookkeeping after the backward pass (gradient clipping, the optimizer, the EMA)
is elementwise, so over one flat tensor it is a handful of calls instead of a handful per
parameter tensor. For GBD's default network (356 tensors, 0.67M parameters) clipping + AdamW +
EMA took ~23 ms a step on 2 CPU threads per tensor and ~5 ms flat: most of the per-tensor cost is
Python and dispatch overhead, not arithmetic.

Every parameter becomes a view of the buffer at a 64-byte aligned offset (as the allocator places
tensors), so the network computes exactly what it did; the gradients accumulate into views of a
second buffer. The update is the per-tensor one bit for bit (tests/test_flat.py): AdamW's and the
EMA's arithmetic is elementwise, and the clipping norm is computed from the same per-tensor norms
as `torch.nn.utils.clip_grad_norm_`, over the same tensors: those that received a gradient. As
with `zero_grad(set_to_none=True)`, a parameter that never receives a gradient (one the loss does
not reach) has none and is left out of the norm; its slice of the buffer stays 0, so AdamW leaves
it unchanged up to weight decay. One difference remains: a parameter that had a gradient and gets
none in a later step counts as a zero there (set_to_none would leave it out of that step).
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

ALIGN = 16  # elements: 64 bytes of float32


def _offsets(params: list[torch.Tensor]) -> tuple[list[int], int]:
    offs, total = [], 0
    for p in params:
        offs.append(total)
        total += -(-p.numel() // ALIGN) * ALIGN
    return offs, total


class FlatParams:
    """Makes `params` views of `self.data` (and, with grads=True, their gradients views of
    `self.grad`); `self.param` is the one tensor to hand to the optimizer."""

    def __init__(self, params: Iterable[nn.Parameter], grads: bool = True):
        self.params = list(params)
        if not self.params:
            raise ValueError("no parameters to flatten")
        ref = self.params[0]
        if any(p.dtype != ref.dtype or p.device != ref.device for p in self.params):
            raise ValueError("flat parameters need one dtype and one device")
        self.offsets, total = _offsets(self.params)
        self.data = torch.zeros(total, dtype=ref.dtype, device=ref.device)
        with torch.no_grad():
            for p, o in zip(self.params, self.offsets):
                view = self.data[o: o + p.numel()]
                view.copy_(p.detach().reshape(-1))
                p.data = view.view_as(p)
        self.param = nn.Parameter(self.data, requires_grad=grads)
        self.grad = None
        if grads:
            self.grad = torch.zeros_like(self.data)
            self.param.grad = self.grad
            self._views = [self.grad[o: o + p.numel()].view_as(p) for p, o in zip(self.params, self.offsets)]
            for p in self.params:
                p.grad = None  # bound by collect() once autograd has shown which ones get one
            self._unbound = list(range(len(self.params)))

    def view(self, buf: torch.Tensor, i: int) -> torch.Tensor:
        """Parameter i's slice of a buffer laid out like `self.data` (optimizer state, say)."""
        p, o = self.params[i], self.offsets[i]
        return buf[o: o + p.numel()].view_as(p)

    def zero_grad(self) -> None:
        self.grad.zero_()

    def collect(self) -> None:
        """After backward: a gradient that autograd made as a fresh tensor (a parameter's first
        one) is copied into the buffer and the parameter's .grad becomes its view, into which
        later backward passes accumulate in place."""
        still = []
        for i in self._unbound:
            p, v = self.params[i], self._views[i]
            if p.grad is None:
                still.append(i)
                continue
            with torch.no_grad():
                v.copy_(p.grad)
            p.grad = v
        self._unbound = still

    def clip_grad_norm_(self, max_norm: float) -> torch.Tensor:
        """torch.nn.utils.clip_grad_norm_ (2-norm) over the parameters that have a gradient, the
        scaling applied to the whole buffer at once."""
        grads = [p.grad for p in self.params if p.grad is not None]
        total = torch.nn.utils.get_total_norm(grads, 2.0)
        coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
        self.grad.mul_(coef)
        return total

    def lerp_to(self, other: FlatParams, weight: float) -> None:
        """self <- self + weight * (other - self), elementwise: an EMA update when `other` holds
        the trained network with the same layout."""
        with torch.no_grad():
            self.data.lerp_(other.data, weight)

    def release(self) -> None:
        """Gives every parameter its own storage again (so that the buffer can go, and a saved
        state dict holds only the parameters) and drops the gradients."""
        with torch.no_grad():
            for p in self.params:
                p.data = p.data.clone()
                p.grad = None

    # ---- optimizer state: flat, and the per-tensor layout of checkpoints made before
    def optimizer_state_from_per_tensor(self, state: dict) -> dict:
        """A torch optimizer state dict over the separate parameters (one entry per parameter
        tensor, in `self.params` order) -> the same state over `self.param`. Tensor states are
        laid out like `self.data` (0 for parameters without state); scalar and step states take
        the largest value among the parameters."""
        groups = state["param_groups"]
        if len(groups) != 1 or len(groups[0]["params"]) != len(self.params):
            raise ValueError("optimizer state of another network")
        ids = groups[0]["params"]
        per = state["state"]
        merged: dict = {}
        for i, pid in enumerate(ids):
            for k, v in per.get(pid, per.get(str(pid), {})).items():
                if torch.is_tensor(v) and v.dim() > 0:
                    if k not in merged:
                        merged[k] = torch.zeros_like(self.data, dtype=v.dtype)
                    self.view(merged[k], i).copy_(v.reshape(self.params[i].shape))
                else:
                    merged[k] = v if k not in merged else max(merged[k], v, key=float)
        return {"state": {0: merged} if merged else {}, "param_groups": [{**groups[0], "params": [0]}]}
