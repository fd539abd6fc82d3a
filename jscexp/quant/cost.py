"""What a quantised model costs in hardware (docs/hardware.md): bit operations by their
published definitions, and da4ml's estimate of LUTs and latency from a trace of its
fixed-point arithmetic."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from jscexp.quant.integer import IntegerQuantiser
from jscexp.quant.layers import LinearQ


def param_bits(module: nn.Module, param: str) -> int:
    """A parameter's width: its quantiser's, else its dtype's (BatchNorm's float32: 32)."""
    if isinstance(module, LinearQ):
        q = module.w_quantiser if param == "weight" else module.b_quantiser
        if q is not None:
            return q.bits
    return getattr(module, param).element_size() * 8


def _input_bits(layer: LinearQ) -> int:
    """The layer's input width; an input nobody quantises at its dtype's (32 for float32, as
    the BOPs reference code takes for an unquantised first layer)."""
    return layer.x_quantiser.bits if layer.x_quantiser is not None else layer.weight.element_size() * 8


def hardware_costs(model: nn.Module) -> dict[str, float]:
    """Bit operations per sample over the quantised Linear layers.

    ``bops`` (Baskin et al.; Hawks et al. 2021 on JSC): Σ m·n·(b_a·b_w + b_a + b_w + ⌈log2 n⌉),
    no pruning term. ``ebops`` (HGQ, arXiv 2405.00645; HGQ2's dense layer): Σ over the
    multiplications performed — a weight quantised to 0 is none — of b_a·b_w, plus the bias
    term b_b·m.
    """
    bops = ebops = 0
    for layer in quantised_linears(model):
        n, m = layer.in_features, layer.out_features
        b_a, b_w = _input_bits(layer), param_bits(layer, "weight")
        bops += m * n * (b_a * b_w + b_a + b_w + math.ceil(math.log2(n)))
        with torch.no_grad():
            performed = int(layer.effective_weight().count_nonzero())
        ebops += performed * b_a * b_w + (m * param_bits(layer, "bias") if layer.bias is not None else 0)
    return {"bops": float(bops), "ebops": float(ebops)}


def quantised_linears(model: nn.Module) -> list[LinearQ]:
    return [m for m in model.modules() if isinstance(m, LinearQ)]


def traceable(model: nn.Module) -> bool:
    """Whether da4ml can trace every quantised Linear: fixed-point input, weight and bias."""
    layers = quantised_linears(model)
    return bool(layers) and all(
        isinstance(q, IntegerQuantiser) for layer in layers
        for q in (layer.x_quantiser, layer.w_quantiser, *([layer.b_quantiser] if layer.bias is not None else [])))


def wants_estimate(hardware, model: nn.Module) -> bool:
    """``hardware.estimate`` (jscexp.config.HardwareConf) for this model."""
    if hardware.estimate is False or not traceable(model):
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
        q = layer.x_quantiser
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
