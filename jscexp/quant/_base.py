"""What every quantiser is: a fake-quantising callable with a straight-through gradient."""

from __future__ import annotations

import abc
from typing import ClassVar, Protocol

import torch

from jscexp.errors import UserError

# Where a quantised layer (jscexp.quant.layers) keeps each role's quantiser.
ROLE_ATTRS = {"data_in": "x_quantiser", "weight": "w_quantiser", "bias": "b_quantiser"}


def quantised_tensor(module, role: str) -> torch.Tensor | None:
    """The tensor a layer's role quantises (its weight, its bias), or None for its input: what a
    quantiser whose formats follow the values reads them from."""
    return None if role == "data_in" else getattr(module, role)


class StackedForm(Protocol):
    """K trials' quantisers of one role applied to a stacked [K, ...] tensor (``Quantiser.stack``);
    ``params``/``buffers`` are the stacked model's, where trained formats live."""

    def __call__(self, x: torch.Tensor, params, buffers, training: bool) -> torch.Tensor: ...

    def widths(self, like: torch.Tensor, params, buffers) -> torch.Tensor:
        """Each trial's widths, broadcasting over a stacked tensor like ``like`` (for EBOPs)."""
        ...


class Quantiser(abc.ABC):
    """Maps a float tensor onto the quantiser's grid, still as floats (fake quantisation).

    Subclasses set ``name`` and implement ``quantise``, ``bits`` and ``on_grid``; the gradient
    must pass straight through (``ste`` helps where torch has no fused op).
    """

    name: str = ""
    # Capabilities, declared here rather than decided by name elsewhere:
    fixed_point: ClassVar[bool] = False  # its values are fixed point (``fixed`` gives the format): hls4ml exports
    #                                      them, da4ml traces them, after a ReLU they may go unsigned (``signed``)
    learns_widths: ClassVar[bool] = False  # its widths are trained under the β·EBOPs penalty (``quantisation.beta``,
    #                                        ``widths`` with its gradient); it takes ``rate`` (``quantisation.width_rate``)

    @classmethod
    def stacks(cls) -> bool:
        """Whether trials quantised by this class can train as one stacked model (``stack``)."""
        return not issubclass(cls, torch.nn.Module)  # a trained quantiser needs its own stacked form

    @classmethod
    def varies_in_stack(cls, option: str) -> bool:
        """Whether the trials of one stacked model may quantise with different values of
        ``option`` (``width``). Here any option: each trial's own quantiser quantises its slice."""
        return cls.stacks()

    @classmethod
    def explorable(cls, option: str) -> bool:
        """Whether population-based training may change ``option`` of a member's quantiser while
        it trains (its stacked form's ``set`` takes the new quantiser): none here."""
        return False

    @classmethod
    def stack(cls, quantisers: list, prefix: str, role: str, device: torch.device) -> StackedForm | None:
        """K trials' quantisers of one role (``prefix``: the layer's attribute) as one stacked form
        — ``form(x[K, ...], params, buffers, training)``, ``form.widths(like, params, buffers)`` —
        or None when they cannot train as one model. Here: each trial's own quantiser on its slice,
        exact for any quantiser without trained state; subclasses may vectorise it."""
        if not cls.stacks() or any(type(q) is not cls for q in quantisers):
            return None
        return PerTrial(quantisers)

    @abc.abstractmethod
    def quantise(self, x: torch.Tensor) -> torch.Tensor: ...

    @property
    @abc.abstractmethod
    def bits(self) -> int:
        """Storage bits per value, for the cost metrics."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.quantise(x)

    def widths(self, source: torch.Tensor | None = None) -> torch.Tensor:
        """Its width per value, broadcasting over the tensor it quantises (``source``, or None for
        an input), for EBOPs: here its one storage width."""
        return torch.tensor(float(self.bits))

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


class PerTrial:
    """The stacked form of K quantisers without trained state: trial k's slice of a [K, ...]
    tensor through trial k's quantiser, so each gets what it would alone."""

    def __init__(self, quantisers: list[Quantiser]):
        self.quantisers = list(quantisers)

    def __call__(self, x: torch.Tensor, params=None, buffers=None, training: bool = False) -> torch.Tensor:
        return torch.stack([q(x[k]) for k, q in enumerate(self.quantisers)])

    def widths(self, like: torch.Tensor, params=None, buffers=None) -> torch.Tensor:
        """Each trial's storage bits, viewed to broadcast over a stacked tensor like ``like``."""
        bits = torch.tensor([float(q.bits) for q in self.quantisers], device=like.device)
        return bits.view(-1, *([1] * (like.dim() - 1)))

    def set(self, trial: int, quantiser: Quantiser) -> None:
        """Trial ``trial`` quantises with ``quantiser`` from here on (population-based training)."""
        self.quantisers[trial] = quantiser


def ste(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``q`` forward, exactly, and identity gradient backward.

    Not ``x + (q - x).detach()``: that rounds twice and lands an ulp off ``q`` for most values.
    """
    return q.detach() + (x - x.detach())


def positive_int(name: str, value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise UserError(f"{what}: {name} must be a positive integer, got {value!r}")
    return value
