"""The lab's graph report: the fx graph, op counts ("Network overview") and layer types."""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch.fx
from torch import nn

from jscexp.models import fx_trace

FX_OPS = ("placeholder", "get_attr", "call_function", "call_method", "call_module", "output")


def op_name(module: nn.Module) -> str:
    """``BatchNorm1d`` → ``batch_norm1d``, ``Linear`` → ``linear``, as MASE names ops."""
    base = type(module).__mro__[0]
    for cls in type(module).__mro__:
        if cls.__module__.startswith("torch.nn"):
            base = cls
            break
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z][a-z])", "_", base.__name__).lower()


def node_kind(gm: torch.fx.GraphModule, node: torch.fx.Node) -> tuple[str, str]:
    """(op, type name) of a node, with the lab's spelling for placeholders and outputs."""
    if node.op == "call_module":
        module = gm.get_submodule(str(node.target))
        return op_name(module), type(module).__name__
    if node.op == "placeholder":
        return "placeholder", str(node.target)
    if node.op == "output":
        return "output", "output"
    return node.op, str(getattr(node.target, "__name__", node.target))


def trace(model: nn.Module) -> torch.fx.GraphModule:
    return fx_trace(model, "the analysis (graph report and statistics profile; analysis=off skips them)")


@dataclass
class GraphReport:
    graph: str
    op_counts: dict[str, int]
    layer_types: list[str]

    def text(self) -> str:
        return f"{self.graph}\nNetwork overview:\n{self.op_counts}\nLayer types:\n[{', '.join(self.layer_types)}]\n"


def graph_report(model: nn.Module) -> GraphReport:
    gm = trace(model)
    counts = dict.fromkeys(FX_OPS, 0)
    layers = []
    for node in gm.graph.nodes:
        counts[node.op] = counts.get(node.op, 0) + 1
        if node.op == "call_module":
            layers.append(repr(gm.get_submodule(node.target)))
    return GraphReport(str(gm.graph).rstrip(), counts, layers)
