"""What every quantiser is: a fake-quantising callable with a straight-through gradient."""

from __future__ import annotations

import abc

import torch

from jscexp.errors import UserError

# Where a quantised layer (jscexp.quant.layers) keeps each role's quantiser.
ROLE_ATTRS = {"data_in": "x_quantiser", "weight": "w_quantiser", "bias": "b_quantiser"}


def quantised_tensor(module, role: str) -> torch.Tensor | None:
    """The tensor a layer's role quantises (its weight, its bias), or None for its input: what a
    quantiser whose formats follow the values reads them from."""
    return None if role == "data_in" else getattr(module, role)


class Quantiser(abc.ABC):
    """Maps a float tensor onto the quantiser's grid, still as floats (fake quantisation).

    Subclasses set ``name`` and implement ``quantise``, ``bits`` and ``on_grid``; the gradient
    must pass straight through (``ste`` helps where torch has no fused op).
    """

    name: str = ""

    @abc.abstractmethod
    def quantise(self, x: torch.Tensor) -> torch.Tensor: ...

    @property
    @abc.abstractmethod
    def bits(self) -> int:
        """Storage bits per value, for the cost metrics."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.quantise(x)

    @abc.abstractmethod
    def on_grid(self, x: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """Which of the quantised values ``x`` the format can hold, from the format's definition,
        never by calling ``quantise`` (a check by the code under test cannot fail); ``source``
        is the float tensor they came from, for formats whose levels depend on it."""

    def fixed(self, source: torch.Tensor | None = None):
        """The fixed-point (integer) format that holds this quantiser's values, or None for
        another format (hls4ml and da4ml know fixed point only); ``source`` is the tensor it
        quantises where its formats follow the values (a weight, a bias)."""
        return None

    def describe(self) -> str:
        fields = ", ".join(f"{k}={v}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{self.name}({fields})"


def ste(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``q`` forward, exactly, and identity gradient backward.

    Not ``x + (q - x).detach()``: that rounds twice and lands an ulp off ``q`` for most values.
    """
    return q.detach() + (x - x.detach())


def positive_int(name: str, value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise UserError(f"{what}: {name} must be a positive integer, got {value!r}")
    return value
