"""An own quantiser for jscexp: power-of-two weights (each weight ±2^e or 0), the multiplier-free
format of LUT-based FPGA designs. One class; conf/quantisation/pow2.yaml names it by its dotted
path. What it declares is what jscexp does with it:

- ``fixed_point = True`` with ``fixed()``: every value ±2^e is exact in one fixed-point format,
  so hls4ml exports it (ap_fixed), da4ml estimates its LUTs and the costs count its widths;
- no ``stack`` of its own and no trained state: trials of a sweep train as one stacked model,
  each through its own quantiser (``Quantiser.stack``'s generic form).

    PYTHONPATH=examples python -m jscexp hydra.searchpath=[file://examples/conf] mode=qat quantisation=pow2
"""

import torch

from jscexp.errors import UserError
from jscexp.quant import Quantiser
from jscexp.quant._base import ste
from jscexp.quant.integer import IntegerQuantiser


class PowerOfTwo(Quantiser):
    """Rounds |x| to the nearest power of two in the log domain, 2^min_exp … 2^max_exp, keeping
    the sign; |x| below 2^(min_exp − 1/2) becomes 0."""

    name = "pow2"
    fixed_point = True

    def __init__(self, *, max_exp: int = 0, min_exp: int = -6, what: str = "pow2"):
        if not (isinstance(max_exp, int) and isinstance(min_exp, int)) or min_exp > max_exp:
            raise UserError(f"{what}: need integers min_exp ≤ max_exp, got min_exp={min_exp!r}, max_exp={max_exp!r}")
        self.max_exp, self.min_exp = max_exp, min_exp

    @property
    def bits(self) -> int:
        """A sign, and a code for each exponent plus one for zero."""
        return 1 + int(self.max_exp - self.min_exp + 1).bit_length()

    def quantise(self, x: torch.Tensor) -> torch.Tensor:
        mag = x.detach().abs()
        exponent = torch.round(torch.log2(mag.clamp_min(2.0 ** (self.min_exp - 2))))
        q = torch.sign(x.detach()) * torch.exp2(exponent.clamp(self.min_exp, self.max_exp))
        return ste(x, torch.where(exponent < self.min_exp, torch.zeros_like(q), q))

    def on_grid(self, x: torch.Tensor, source: torch.Tensor | None = None) -> torch.Tensor:
        mag = x.double().abs()
        exponent = torch.log2(mag.clamp_min(2.0**-1074))
        whole = exponent == exponent.round()
        return (mag == 0) | (whole & (exponent >= self.min_exp) & (exponent <= self.max_exp))

    def fixed(self, source: torch.Tensor | None = None) -> IntegerQuantiser:
        """Signed fixed point from 2^min_exp to 2^max_exp: every value exact, none saturated."""
        frac = max(-self.min_exp, 0)
        return IntegerQuantiser(width=1 + max(self.max_exp + 1, 0) + frac, frac_width=frac)
