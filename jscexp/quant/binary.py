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
        alpha = self._alpha(x.detach())
        return ste(x, torch.where(x.detach() >= 0, alpha, -alpha))

    def _alpha(self, x: torch.Tensor) -> torch.Tensor:
        return x.abs().mean() if self.scaling else torch.ones((), dtype=x.dtype)

    def on_grid(self, x: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """Exactly +α or −α, α = mean |float weights| (1 without scaling)."""
        alpha = self._alpha(source.detach())
        return (x == alpha) | (x == -alpha)


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
        return ste(x, torch.sign(x.detach()) * self._alpha(mag) * keep)

    def _alpha(self, mag: torch.Tensor) -> torch.Tensor:
        keep = mag > self.threshold * mag.mean()
        return mag[keep].mean() if keep.any() else torch.zeros((), dtype=mag.dtype)

    def on_grid(self, x: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """Exactly 0, +α or −α, α = mean |float weight| above Δ (three values at most)."""
        alpha = self._alpha(source.detach().abs())
        return (x == 0) | (x == alpha) | (x == -alpha)
