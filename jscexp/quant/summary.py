"""What the quantise pass did and what it costs: tables, grid verification, bit metrics."""

from __future__ import annotations

import pandas as pd
import torch
from torch import nn

from jscexp.quant._base import ROLE_ATTRS
from jscexp.quant.cost import hardware_costs, widths
from jscexp.quant.layers import LinearQ
from jscexp.quant.learned import LearnedQuantiser, roles
from jscexp.quant.transform import NodeChange


def node_table(changes: list[NodeChange]) -> pd.DataFrame:
    """Ori name | New name | op | Original type | Quantized type | Changed (lab 2 Q4)."""
    return pd.DataFrame(
        [(c.ori_name, c.new_name, c.op, c.original_type, c.quantized_type, c.changed) for c in changes],
        columns=["Ori name", "New name", "op", "Original type", "Quantized type", "Changed"],
    )


def histogram(changes: list[NodeChange]) -> pd.DataFrame:
    """Original type | OP | Total | Changed | Unchanged, as MASE's summary prints it."""
    nodes = node_table(changes)
    grouped = nodes.groupby(["Original type", "op"])["Changed"]
    table = pd.DataFrame({"Total": grouped.size(), "Changed": grouped.sum().astype(int)})
    table["Unchanged"] = table["Total"] - table["Changed"]
    return table.reset_index().rename(columns={"op": "OP"})


def verify(model: nn.Module) -> pd.DataFrame:
    """Per quantised Linear: how many effective weights and biases the quantiser's format can
    hold, checked from the format's definition (``Quantiser.on_grid``), not by re-quantising."""
    rows = []
    for name, module in model.named_modules():
        if not isinstance(module, LinearQ):
            continue
        for role, values, source, q in (
            ("weight", module.effective_weight(), module.weight, module.w_quantiser),
            ("bias", module.effective_bias(), module.bias, module.b_quantiser),
        ):
            if q is None or values is None:
                continue
            with torch.no_grad():
                on = int(q.on_grid(values.detach(), source.detach()).sum())
            rows.append((name, role, q.describe(), values.numel(), on, values.numel() - on))
    return pd.DataFrame(rows, columns=["layer", "tensor", "quantiser", "values", "on grid", "off grid"])


def learned_widths(model: nn.Module) -> pd.DataFrame:
    """Per layer (fx node name) and role, the learned widths a trained model ended with: how
    many values, their least, mean and largest width, how many are 0 bits (cost nothing)."""

    rows = []
    with torch.no_grad():
        for name, role, q, source in roles(model):
            b = q.widths(source)
            rows.append((name.replace(".", "_"), role, b.numel(), int(b.min()), round(float(b.mean()), 3), int(b.max()),
                         int((b == 0).sum())))
    return pd.DataFrame(rows, columns=["layer", "role", "values", "min width", "mean width", "max width",
                                              "zero width"])


def uniform_widths(model: nn.Module) -> bool:
    """Whether every quantised Linear layer has the same quantiser per role (one width for all
    inputs, one for all weights, one for all biases) and none is learned: what a uniform-width
    sweep (``+sweep=quant_bits``) makes, the reference drawn beside a front."""
    layers = [m for m in model.modules() if isinstance(m, LinearQ)]
    for attr in ROLE_ATTRS.values():
        quantisers = [getattr(m, attr, None) for m in layers]
        if len({q.describe() if q is not None else None for q in quantisers}) > 1 \
                or any(isinstance(q, LearnedQuantiser) for q in quantisers):
            return False
    return bool(layers)


def costs(model: nn.Module) -> dict[str, float]:
    """Bit costs of a quantised model; none for a model without a quantised layer (a float
    model's bits say nothing a search could trade against).

    ``avg_weight_bits``: the Linear layers' weights at their quantised width (a float one at
    its dtype's), per weight — what MASE's bit-width search trades accuracy against;
    ``model_size_bits`` and ``avg_param_bits``: every trainable parameter, BatchNorm's float
    ones included, in all and per parameter; ``linear_bitops``: per sample, Σ over Linear
    layers of MACs × input bits × weight bits (an input nobody quantises at the layer's dtype);
    ``bops`` and ``ebops``: ``hardware_costs``.
    """
    if not any(isinstance(m, LinearQ) for m in model.modules()):
        return {}
    size = count = weight_bits = weights = bitops = 0.0
    with torch.no_grad():
        for module in model.modules():
            for pname, p in module.named_parameters(recurse=False):
                if p.requires_grad and not isinstance(module, LearnedQuantiser):  # a width is no weight
                    size += _bits(module, pname, p)
                    count += p.numel()
            if isinstance(module, nn.Linear):
                w_bits = _bits(module, "weight", module.weight)
                weight_bits += w_bits
                weights += module.weight.numel()
                bitops += float((widths(module, "data_in") * widths(module, "weight")).expand(module.weight.shape).sum())
    return {"avg_weight_bits": weight_bits / weights, "model_size_bits": float(size), "avg_param_bits": size / count,
            "linear_bitops": float(bitops), **hardware_costs(model)}


def _bits(module: nn.Module, pname: str, p: torch.Tensor) -> float:
    """All the bits of one parameter tensor: a Linear's weight and bias each value at its own
    width, anything else (BatchNorm's) at its dtype's."""
    if isinstance(module, nn.Linear) and pname in ("weight", "bias"):
        return float(widths(module, pname).expand(p.shape).sum())
    return float(p.numel() * p.element_size() * 8)
