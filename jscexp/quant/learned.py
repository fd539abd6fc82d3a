"""Learned fixed-point widths (HGQ, Sun et al., arXiv 2405.00645): each value of a role gets
its own width, trained by gradient descent with the network and pulled down by β·EBOPs.

A role's integer bits ``i`` stay as configured (``width - frac_width``, sign included); the
trainable ``width`` b sets the fractional bits f = b − i. Forward: b rounded (half to even)
and kept in [0, 32]; the value is fixed point with b bits, f of them fractional, rounding half to
even and saturating like the integer quantiser; b = 0 gives 0 (a weight that costs nothing).
Backward: the value's gradient passes straight through inside the format's range; the width's
is HGQ's surrogate — the error δ = x − q halves with each fractional bit, so ∂q/∂b = ln 2 · δ.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from jscexp.errors import UserError
from jscexp.quant._base import ROLE_ATTRS, Quantiser, positive_int, ste
from jscexp.quant.integer import IntegerQuantiser
from jscexp.validate import check_beta

_LN2 = math.log(2.0)
MAX_WIDTH = 32  # the integer quantiser's limit; also keeps 2^f finite whatever a step does


def in_force(width: torch.Tensor) -> torch.Tensor:
    """The widths a forward pass uses: rounded half to even, within [0, MAX_WIDTH]."""
    return torch.round(width.clamp(0, MAX_WIDTH))


class _LearnedQuantise(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, width, int_bits: int, signed: bool):
        b = in_force(width)
        f = b - int_bits
        steps = torch.round(x * torch.exp2(f))
        low = -torch.exp2(b - 1) if signed else torch.zeros_like(b)
        high = torch.exp2(b - 1) - 1 if signed else torch.exp2(b) - 1
        q = torch.where(b > 0, torch.minimum(torch.maximum(steps, low), high) * torch.exp2(-f), 0.0)
        bound = 2.0 ** (int_bits - 1) if signed else 2.0**int_bits
        inside = (x >= -bound if signed else x >= 0) & (x < bound)
        ctx.save_for_backward(inside, (x - q) * _LN2)
        ctx.width_shape = width.shape
        return q

    @staticmethod
    def backward(ctx, grad):
        inside, dq_db = ctx.saved_tensors
        grad_width = grad * dq_db * inside
        return grad * inside, grad_width.sum_to_size(ctx.width_shape), None, None


def learned_quantise(x: torch.Tensor, width: torch.Tensor, int_bits: int, signed: bool) -> torch.Tensor:
    """``x`` on the grid of ``width`` bits per value (``width`` broadcasts over ``x``)."""
    return _LearnedQuantise.apply(x, width, int_bits, signed)


def rounded(width: torch.Tensor) -> torch.Tensor:
    """The widths the forward pass uses, with a straight-through gradient (the EBOPs penalty's)."""
    return ste(width, in_force(width))


class LearnedQuantiser(nn.Module, Quantiser):
    """``learned``: fixed point whose width is a parameter per value of the role's tensor
    (one for a layer's input). ``width`` and ``frac_width`` are where training starts; their
    difference, the integer bits, stays. Its layer gives it its shape (``bind``)."""

    name = "learned"

    def __init__(self, *, width: int, frac_width: int, signed: bool = True, rate: float = 1.0, what: str = "learned"):
        nn.Module.__init__(self)
        start = IntegerQuantiser(width=width, frac_width=frac_width, signed=signed, what=what)  # its checks
        self.start, self.int_bits, self.signed = positive_int("width", width, what), width - frac_width, start.signed
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not rate > 0:
            raise UserError(f"{what}: rate must be a number > 0, got {rate!r}")
        self.rate = float(rate)
        self.bind(torch.Size())

    def bind(self, shape: torch.Size) -> LearnedQuantiser:
        """One width per value of a tensor of ``shape`` (a weight's, a bias's; () for an input).
        The parameter holds width / rate: an optimizer's step moves a width ``rate`` times as far
        as a weight (Adam's step is about the learning rate whatever the gradient's scale)."""
        self.scaled_width = nn.Parameter(torch.full(shape, self.start / self.rate))
        return self

    @property
    def width(self) -> torch.Tensor:
        return self.scaled_width * self.rate

    def quantise(self, x: torch.Tensor) -> torch.Tensor:
        return learned_quantise(x, self.width, self.int_bits, self.signed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.quantise(x)

    def widths(self) -> torch.Tensor:
        """The widths in force, as integers in a float tensor (the penalty's gradient passes)."""
        return rounded(self.width)

    @property
    def bits(self) -> int:
        """The widest value's width: the storage a single format for the role needs."""
        return self.fixed().width

    def fixed(self) -> IntegerQuantiser:
        """The one integer format holding every value (hls4ml's and da4ml's type for the role):
        the configured integer bits and the largest fractional bits in use."""
        with torch.no_grad():
            b = in_force(self.width)
            frac = int(max(0.0, float((b - self.int_bits)[b > 0].max())) if bool((b > 0).any()) else 0)
        return IntegerQuantiser(width=max(self.int_bits + frac, 1), frac_width=frac, signed=self.signed)

    def on_grid(self, x: torch.Tensor, source: torch.Tensor | None = None) -> torch.Tensor:
        """Each value a multiple of its own 2^-f inside its own b-bit range (0 where b = 0)."""
        b = in_force(self.width.detach()).double().expand_as(x)
        steps = x.double() * torch.exp2(b - self.int_bits)
        low = -torch.exp2(b - 1) if self.signed else torch.zeros_like(b)
        high = torch.exp2(b - 1) - 1 if self.signed else torch.exp2(b) - 1
        fits = (steps == steps.round()) & (steps >= low) & (steps <= high)
        return torch.where(b > 0, fits, x == 0)

    def describe(self) -> str:
        b = in_force(self.width.detach())
        return (f"learned(int_bits={self.int_bits}, signed={self.signed}, width={int(b.min())}…{int(b.max())}, "
                f"mean={float(b.mean()):.2f})")


class StackedLearned:
    """K trials' learned widths of one role, read from the stacked parameters (``params[key]``,
    [K, *shape]): trial k's slice gets what its own ``LearnedQuantiser`` gives it."""

    def __init__(self, key: str, int_bits: int, signed: bool, rate: float):
        self.key, self.int_bits, self.signed, self.rate = key, int_bits, signed, rate

    @classmethod
    def of(cls, quantisers: list, key: str) -> StackedLearned | None:
        """The stacked form when every trial learns this role's widths in one format, else None."""
        if not all(isinstance(q, LearnedQuantiser) for q in quantisers) or \
                len({(q.int_bits, q.signed, q.rate) for q in quantisers}) != 1:
            return None
        return cls(key, quantisers[0].int_bits, quantisers[0].signed, quantisers[0].rate)

    def _over(self, width: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return width.view(*width.shape, *([1] * (like.dim() - width.dim())))

    def __call__(self, x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        return learned_quantise(x, self._over(params[self.key] * self.rate, x), self.int_bits, self.signed)

    def widths(self, like: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._over(rounded(params[self.key] * self.rate), like)


def beta_of(qcfg) -> float:
    """``quantisation.beta``, the EBOPs penalty's strength (0 when the config sets none)."""
    beta = qcfg.get("beta")
    return 0.0 if beta is None else check_beta(beta)


def learns(model: nn.Module) -> bool:
    return any(True for _ in roles(model))


def roles(model: nn.Module):
    """(layer name, role, quantiser) of every learned width in ``model``."""
    for name, module in model.named_modules():
        for role, attr in ROLE_ATTRS.items():
            if isinstance(q := getattr(module, attr, None), LearnedQuantiser):
                yield name, role, q
