"""Quantisation stage: quantisers (a registry), quantised layers, the fx transform,
summaries, verification and bit costs."""

from __future__ import annotations

from jscexp.errors import UserError
from jscexp.quant._base import Quantiser
from jscexp.quant.binary import BinaryQuantiser, TernaryQuantiser
from jscexp.quant.integer import IntegerQuantiser
from jscexp.quant.learned import LearnedQuantiser
from jscexp.quant.minifloat import MinifloatQuantiser

QUANTISERS: dict[str, type[Quantiser]] = {
    q.name: q for q in (IntegerQuantiser, MinifloatQuantiser, BinaryQuantiser, TernaryQuantiser, LearnedQuantiser)
}


def quantiser_class(name: str, what: str = "quantiser") -> type[Quantiser]:
    """A shipped quantiser by its name, or a user's by its dotted class path (``mypkg.Pow2``)."""
    if name in QUANTISERS:
        return QUANTISERS[name]
    if "." in name:
        from jscexp.components import import_target

        return import_target(name, "quantisation", Quantiser, label=f"{what}: quantiser")
    raise UserError(f"{what}: unknown quantiser '{name}': choose one of {', '.join(QUANTISERS)}, "
                    "or name your own Quantiser class by its dotted path")


def make_quantiser(name: str, what: str = "quantiser", **kwargs) -> Quantiser:
    """Builds a quantiser (``quantiser_class``); unknown names and options are one-line UserErrors."""
    cls = quantiser_class(name, what)
    try:
        return cls(what=what, **kwargs)  # type: ignore[call-arg]  # every subclass takes what=
    except TypeError as err:  # an option the quantiser doesn't take, or a missing one
        raise UserError(f"{what}: bad options {sorted(kwargs)} for '{name}' ({err})") from None


__all__ = ["QUANTISERS", "Quantiser", "make_quantiser", "quantiser_class"]
