"""What a quantised model costs in hardware (docs/hardware.md): bit operations by their
published definitions, and da4ml's estimate of LUTs and latency from a trace of its
fixed-point arithmetic."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from jscexp.quant._base import ROLE_ATTRS, quantised_tensor
from jscexp.quant.integer import IntegerQuantiser
from jscexp.quant.layers import LinearQ
from jscexp.quant.learned import beta_ramp


def widths(module: nn.Module, role: str) -> torch.Tensor:
    """A role's width per value (broadcasting over its tensor): its quantiser's (``widths``: a
    learned one's with the penalty's gradient, another's one width); unquantised, its dtype's (an
    input nobody quantises at 32 for float32, as the BOPs reference code takes for a first layer)."""
    q = getattr(module, ROLE_ATTRS[role], None)
    if q is not None:
        return q.widths(quantised_tensor(module, role))
    weight = module.weight
    assert isinstance(weight, torch.Tensor), "a layer with a weight tensor"
    return torch.tensor(float(weight.element_size() * 8))


def ebops_of(b_a: torch.Tensor, b_w: torch.Tensor, shape: torch.Size, b_b: torch.Tensor | None) -> torch.Tensor:
    """EBOPs as HGQ2 counts them (``hgq.layers.QDense._compute_ebops``) for dense layers of
    weight ``shape`` ([..., m, n]) whose leading dimensions (if any) are separate models:
    Σ over every weight of b_a·b_w — a weight of width 0 costs nothing, one of width > 0 counts
    whatever its value — plus Σ of the m bias widths (HGQ2: their mean × m). ``b_a`` and ``b_w``
    broadcast over [..., m, n] (an input width per model or per feature), ``b_b`` over [..., m]."""
    total = (b_w * b_a).expand(shape).sum(dim=(-2, -1))
    return total if b_b is None else total + b_b.expand(shape[:-1]).sum(dim=-1)


def sum_ebops(layers: Iterable[tuple[torch.Size, Callable[[str], torch.Tensor | None]]], total: torch.Tensor) -> torch.Tensor:
    """``total`` plus ``ebops_of`` each quantised Linear, given as its weight's shape and its
    widths by role (None: no bias): the one EBOPs sum, of a lone model or of a stacked one's K."""
    for shape, width in layers:
        b_w = width("weight")
        assert b_w is not None
        b_a = width("data_in")
        assert b_a is not None
        total = total + ebops_of(b_a.to(b_w.device), b_w, shape, width("bias"))
    return total


def ebops(model: nn.Module) -> torch.Tensor:
    """The model's EBOPs as a tensor, differentiable in its learned widths (the β·EBOPs loss term)."""
    def of(layer: LinearQ) -> Callable[[str], torch.Tensor | None]:
        return lambda role: None if role == "bias" and layer.bias is None else widths(layer, role)

    return sum_ebops(((layer.weight.shape, of(layer)) for layer in quantised_linears(model)), torch.zeros(()))


@dataclass
class WidthPenalty:
    """β·EBOPs added to the training loss of a model that learns its widths (HGQ), β ramping up
    over ``warmup`` epochs (``beta_ramp``): what a training loop asks of it, nothing learned-
    specific in the loop itself."""

    beta: float
    warmup: int = 0
    share: float = 1.0  # of β in force this epoch

    def start_epoch(self, epoch: int) -> None:
        self.share = beta_ramp(epoch, self.warmup)

    def term(self, model: nn.Module) -> torch.Tensor:
        return self.beta * self.share * ebops(model)

    def cost(self, model: nn.Module) -> dict[str, float]:
        """The epoch's record: the model's EBOPs at its widths now."""
        with torch.no_grad():
            return {"epoch_ebops": float(ebops(model))}


def hardware_costs(model: nn.Module) -> dict[str, float]:
    """Bit operations per sample over the quantised Linear layers, with each value's own width.

    ``bops`` (Baskin et al.; Hawks et al. 2021 on JSC): Σ over the m·n weights of
    b_a·b_w + b_a + b_w + ⌈log2 n⌉ (m·n·(…) for one width per layer), no pruning term.
    ``ebops`` (HGQ, arXiv 2405.00645, as the hgq2 package counts it: ``ebops_of``): Σ over the
    weights of b_a·b_w, plus the bias widths (b_b·m for one width).
    """
    bops = 0.0
    with torch.no_grad():
        for layer in quantised_linears(model):
            b_a, b_w = widths(layer, "data_in").double(), widths(layer, "weight").double()
            per_weight = b_a * b_w + b_a + b_w + math.ceil(math.log2(layer.in_features))
            bops += float(per_weight.expand(layer.weight.shape).sum())
        return {"bops": bops, "ebops": float(ebops(model))}


def quantised_linears(model: nn.Module) -> list[LinearQ]:
    return [m for m in model.modules() if isinstance(m, LinearQ)]


def traceable(model: nn.Module) -> bool:
    """Whether da4ml can trace every quantised Linear: fixed-point input, weight and bias."""
    layers = quantised_linears(model)
    return bool(layers) and all(
        (q := getattr(layer, attr)) is not None and q.fixed(quantised_tensor(layer, role)) is not None
        for layer in layers for role, attr in ROLE_ATTRS.items() if role != "bias" or layer.bias is not None)


def wants_estimate(hardware, model: nn.Module) -> bool:
    """``hardware.estimate`` (jscexp.config.HardwareConf) for this model."""
    if hardware.estimate is False:
        return False
    weights = sum(layer.weight.numel() for layer in quantised_linears(model))
    return hardware.estimate is True or weights <= hardware.estimate_max_weights


def estimate(model: nn.Module) -> dict[str, float]:
    """da4ml's estimate for the quantised Linear layers, each traced from its fixed-point input
    to its exact sum (the float BatchNorm and ReLU between them are not hardware here):
    ``est_lut`` Σ adder bits (da4ml's LUT proxy), ``est_latency`` Σ adder depth (levels)."""
    from da4ml.trace import FixedVariableArrayInput, comb_trace
    from da4ml.trace.ops import quantize

    lut = latency = 0.0
    for layer in quantised_linears(model):
        q = layer.x_quantiser.fixed() if layer.x_quantiser is not None else None
        assert isinstance(q, IntegerQuantiser), "estimate() needs traceable(model)"
        inp = FixedVariableArrayInput((layer.in_features,))
        x = quantize(inp, int(q.signed), q.width - q.frac_width - int(q.signed), q.frac_width)  # its input format
        with torch.no_grad():
            weight = layer.effective_weight().double().numpy().T
            bias = layer.effective_bias()
        out = x @ weight + (bias.double().numpy() if bias is not None else 0.0)
        logic = comb_trace(inp, out)
        lut += float(logic.cost)
        latency += float(np.max(logic.latency))
    return {"est_lut": lut, "est_latency": latency}
