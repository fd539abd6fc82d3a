"""MASE's ``integer`` fixed point: q = clamp(round(x·2^f), −2^(w−1), 2^(w−1)−1) / 2^f."""

from __future__ import annotations

import torch

from jscexp.errors import UserError
from jscexp.quant._base import Quantiser, positive_int


class IntegerQuantiser(Quantiser):
    """Fixed point with ``width`` bits, ``frac_width`` of them fractional; round half to even.

    ``torch.fake_quantize_per_tensor_affine`` with scale 2^−f and zero point 0 computes
    exactly this, with its straight-through gradient (zero outside the clamp range).
    """

    name = "integer"
    fixed_point = True

    @classmethod
    def explorable(cls, option: str) -> bool:
        """Its bits: ``StackedInteger.set`` swaps a trial's width and fractional width mid-training."""
        return option in ("width", "frac_width")

    @classmethod
    def stack(cls, quantisers: list, prefix: str, role: str, device: torch.device) -> StackedInteger | None:
        """Vectorised: one fake-quantisation with a width per trial."""
        return StackedInteger(quantisers, device) if all(isinstance(q, IntegerQuantiser) for q in quantisers) else None

    def __init__(self, *, width: int, frac_width: int, signed: bool = True, what: str = "integer"):
        self.width = positive_int("width", width, what)
        if isinstance(frac_width, bool) or not isinstance(frac_width, int) or frac_width < 0:
            raise UserError(f"{what}: frac_width must be an integer ≥ 0, got {frac_width!r}")
        if frac_width > width:
            raise UserError(f"{what}: frac_width {frac_width} is larger than width {width}")
        if width > 32:
            raise UserError(f"{what}: width {width} is more than 32 bits")
        self.frac_width = frac_width
        self.signed = bool(signed)

    @property
    def bits(self) -> int:
        return self.width

    @property
    def levels(self) -> tuple[int, int]:
        if self.signed:
            return -(2 ** (self.width - 1)), 2 ** (self.width - 1) - 1
        return 0, 2**self.width - 1

    def fixed(self, source: torch.Tensor | None = None) -> IntegerQuantiser:
        return self

    def quantise(self, x: torch.Tensor) -> torch.Tensor:
        low, high = self.levels
        return torch.fake_quantize_per_tensor_affine(x, 2.0**-self.frac_width, 0, low, high)

    def on_grid(self, x: torch.Tensor, source: torch.Tensor | None = None) -> torch.Tensor:
        """A multiple of 2^-f whose step count lies inside the clamp range."""
        low, high = self.levels
        steps = x.double() * 2.0**self.frac_width
        return (steps == steps.round()) & (steps >= low) & (steps <= high)


class _FakeQuantise(torch.autograd.Function):
    """``fake_quantize_per_tensor_affine``'s arithmetic and gradient with tensor scale and levels."""

    @staticmethod
    def forward(ctx, x, inv_scale, scale, low, high):
        steps = torch.round(x * inv_scale)  # exact: the scales are powers of two; round half to even
        inside = (steps >= low) & (steps <= high)
        ctx.save_for_backward(inside)
        return torch.minimum(torch.maximum(steps, low), high) * scale

    @staticmethod
    def backward(ctx, grad):
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None, None, None


class StackedInteger:
    """K integer quantisers, one per trial, applied to a stacked [K, ...] tensor.

    Trial k's slice gets exactly what ``quantisers[k]`` gives it alone (same values, same
    straight-through gradient), so trials with different widths share one stacked model.
    """

    def __init__(self, quantisers: list[IntegerQuantiser], device: torch.device):
        def tensor(values) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float32, device=device)

        self.bits = tensor([q.width for q in quantisers])
        self.inv_scale = tensor([2.0**q.frac_width for q in quantisers])
        self.scale = tensor([2.0**-q.frac_width for q in quantisers])
        self.low, self.high = (tensor(v) for v in zip(*(q.levels for q in quantisers)))

    def set(self, trial: int, quantiser: IntegerQuantiser) -> None:
        """Trial ``trial`` quantises with ``quantiser`` from here on (population-based training's widths)."""
        if not isinstance(quantiser, IntegerQuantiser):
            raise ValueError(f"trial {trial}'s new quantiser is {type(quantiser).__name__}, not integer")
        self.bits[trial] = quantiser.width
        self.inv_scale[trial], self.scale[trial] = 2.0**quantiser.frac_width, 2.0**-quantiser.frac_width
        self.low[trial], self.high[trial] = quantiser.levels

    def __call__(self, x: torch.Tensor, params=None, buffers=None, training: bool = False) -> torch.Tensor:
        shape = (-1, *([1] * (x.dim() - 1)))
        return _FakeQuantise.apply(x, *(t.view(shape) for t in (self.inv_scale, self.scale, self.low, self.high)))

    def widths(self, like: torch.Tensor, params=None, buffers=None) -> torch.Tensor:
        """Each trial's width, viewed to broadcast over a stacked [K, ...] tensor like ``like``."""
        return self.bits.view(-1, *([1] * (like.dim() - 1)))
