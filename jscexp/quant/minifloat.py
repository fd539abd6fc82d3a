"""Minifloat: sign, ``exponent_width`` exponent bits with a bias, the rest mantissa; denormals."""

from __future__ import annotations

import torch

from jscexp.errors import UserError
from jscexp.quant._base import Quantiser, positive_int, ste


class MinifloatQuantiser(Quantiser):
    """Rounds to the nearest representable minifloat (half to even) and saturates at the max.

    Every exponent code is a number (no inf/NaN codes, as in MASE's ``minifloat_denorm``);
    exponent code 0 holds the denormals, spaced 2^(1−bias−m) apart.
    """

    name = "minifloat"

    def __init__(self, *, width: int, exponent_width: int, exponent_bias: int | None = None, what: str = "minifloat"):
        self.width = positive_int("width", width, what)
        self.exponent_width = positive_int("exponent_width", exponent_width, what)
        if exponent_width >= width:
            raise UserError(f"{what}: exponent_width {exponent_width} leaves no sign bit in width {width}")
        self.exponent_bias = 2 ** (exponent_width - 1) - 1 if exponent_bias is None else int(exponent_bias)

    @property
    def bits(self) -> int:
        return self.width

    @property
    def mantissa_width(self) -> int:
        return self.width - 1 - self.exponent_width

    @property
    def max_value(self) -> float:
        top = 2**self.exponent_width - 1 - self.exponent_bias
        return (2 - 2.0**-self.mantissa_width) * 2.0**top

    def quantise(self, x: torch.Tensor) -> torch.Tensor:
        m = self.mantissa_width
        min_exp = 1 - self.exponent_bias  # smallest normal exponent; below it, denormal spacing
        exponent = torch.floor(torch.log2(x.detach().abs().clamp_min(torch.finfo(torch.float32).tiny)))
        spacing = torch.exp2(exponent.clamp_min(min_exp) - m)
        q = torch.round(x.detach() / spacing) * spacing
        q = q.clamp(-self.max_value, self.max_value)
        return ste(x, q)

    def on_grid(self, x: torch.Tensor, source: torch.Tensor | None = None) -> torch.Tensor:
        """Decodes each value: zero, or ±mantissa·2^(e−m) with an integer mantissa of m+1 bits
        (m bits for denormals), e within the exponent range, magnitude at most the maximum."""
        m, min_exp = self.mantissa_width, 1 - self.exponent_bias
        max_exp = 2**self.exponent_width - 1 - self.exponent_bias
        mag = x.double().abs()
        exponent = torch.floor(torch.log2(mag.clamp_min(2.0**-1074))).clamp_min(min_exp)
        mantissa = mag / torch.exp2(exponent - m)
        fits = (mantissa == mantissa.round()) & (mantissa < 2 ** (m + 1)) & (exponent <= max_exp)
        return (mag == 0) | fits
