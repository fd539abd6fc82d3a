"""Hardware-cost estimators are components: ``hardware/estimator`` names a class (``_target_``)
that declares the metrics it logs (name → label) and computes them for a quantised model.
Tables, fronts, the report and a run's headline take the names and labels from that
declaration (the run's ``jscexp.estimates`` tag), never from a list of their own."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar

from jscexp.errors import UserError

if TYPE_CHECKING:
    from torch import nn


class Estimator(ABC):
    """Subclasses set ``metrics`` and implement ``estimate``; ``applies`` says which quantised
    models they can cost (default: every quantised Linear in fixed point, which da4ml and hls4ml
    need)."""

    metrics: ClassVar[dict[str, str]] = {}  # metric name → label for tables and plots

    def applies(self, model: nn.Module) -> bool:
        from jscexp.quant.cost import traceable

        return traceable(model)

    @abstractmethod
    def estimate(self, model: nn.Module) -> dict[str, float]:
        """Exactly the declared ``metrics`` of ``model`` (a quantised GraphModule)."""


class Da4ml(Estimator):
    """da4ml's trace of each quantised Linear from its fixed-point input to its exact sum
    (``jscexp.quant.cost.estimate``; docs/hardware.md)."""

    metrics = {"est_lut": "est. LUT", "est_latency": "est. latency"}

    def estimate(self, model: nn.Module) -> dict[str, float]:
        from jscexp.quant.cost import estimate

        return estimate(model)


def make_estimator(node: Mapping | None) -> Estimator | None:
    """The estimator ``hardware.estimator`` names (None for ``none``); one line if it is wrong."""
    target = (node or {}).get("_target_")
    if not target:
        return None
    from jscexp.components import build

    estimator = build(node, "hardware.estimator", Estimator)
    if not estimator.metrics:
        raise UserError(f"hardware.estimator._target_={target}: the estimator declares no metrics")
    return estimator


def checked(estimator: Estimator, found: dict[str, float]) -> dict[str, float]:
    """An estimate with exactly the declared metrics, every one a number: else one line."""
    if set(found) != set(estimator.metrics):
        raise UserError(f"estimator {type(estimator).__name__} returned {sorted(found)}, but declares "
                        f"{sorted(estimator.metrics)}")
    return {k: float(v) for k, v in found.items()}
