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

    def quantise(self, x: torch.Tensor) -> torch.Tensor:
        low, high = self.levels
        return torch.fake_quantize_per_tensor_affine(x, 2.0**-self.frac_width, 0, low, high)

    def on_grid(self, x: torch.Tensor) -> torch.Tensor:
        low, high = self.levels
        steps = x.double() * 2.0**self.frac_width
        return (steps == steps.round()) & (steps >= low) & (steps <= high)
