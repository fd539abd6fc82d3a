"""Binary and ternary weights: {−α, +α} and {−α, 0, +α} (XNOR-Net, TWN)."""

from __future__ import annotations

import torch

from jscexp.errors import UserError
from jscexp.quant._base import Quantiser, ste


class BinaryQuantiser(Quantiser):
    """α·sign(x), with sign(0) = +1 and α = mean |x| (or 1 with ``scaling: false``)."""

    name = "binary"

    def __init__(self, *, scaling: bool = True, what: str = "binary"):
        self.scaling = bool(scaling)

    @property
    def bits(self) -> int:
        return 1

    def quantise(self, x: torch.Tensor) -> torch.Tensor:
        alpha = x.detach().abs().mean() if self.scaling else torch.ones((), dtype=x.dtype)
        return ste(x, torch.where(x.detach() >= 0, alpha, -alpha))

    def on_grid(self, x: torch.Tensor) -> torch.Tensor:
        """One magnitude for every value (α is recomputed per tensor, so exact equality)."""
        return x.abs() == x.abs().max()


class TernaryQuantiser(Quantiser):
    """Zero below the threshold Δ = ``threshold``·mean|x|, else ±α with α the mean |x| above Δ.

    TWN's rule; ``threshold: 0.7`` is its approximately optimal factor for Gaussian weights.
    """

    name = "ternary"

    def __init__(self, *, threshold: float = 0.7, what: str = "ternary"):
        if not 0 < float(threshold) < 2:
            raise UserError(f"{what}: threshold must be in (0, 2) times mean |x|, got {threshold!r}")
        self.threshold = float(threshold)

    @property
    def bits(self) -> int:
        return 2

    def quantise(self, x: torch.Tensor) -> torch.Tensor:
        mag = x.detach().abs()
        keep = mag > self.threshold * mag.mean()
        alpha = mag[keep].mean() if keep.any() else torch.zeros((), dtype=x.dtype)
        return ste(x, torch.sign(x.detach()) * alpha * keep)

    def on_grid(self, x: torch.Tensor) -> torch.Tensor:
        """Zero or the one nonzero magnitude α."""
        return (x == 0) | (x.abs() == x.abs().max())
