"""Input formats per feature in the firmware twin: hls4ml casts a layer's whole result to one
type, so a layer whose learned input formats differ between features gets a quantiser node of
its own before it — hls4ml's ``FixedPointQuantizer`` (the layer HGQ's proxy models deploy
through), which casts each element to its own ``ap_fixed<b, i, AP_RND_CONV, AP_SAT>``: the
learned quantiser's arithmetic, value for value."""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.fx
from hls4ml.utils.torch import HLS4MLModule

from jscexp.quant.integer import IntegerQuantiser
from jscexp.quant.layers import LinearQ
from jscexp.quant.learned import LearnedQuantiser


class FeatureFormats(HLS4MLModule):
    """A learned input quantiser taken out of its layer (a leaf hls4ml's tracer keeps whole)."""

    def __init__(self, quantiser: LearnedQuantiser):
        super().__init__()
        self.quantiser = copy.deepcopy(quantiser).eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.quantiser(x)

    def kbi(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """hls4ml's mask: per feature, sign bit, width and integer bits with the sign (ap_fixed's)."""
        width, int_bits, k = (t.expand_as(self.quantiser.scaled_frac).detach().numpy()[None, :]
                              for t in self.quantiser.formats())
        return k.astype(np.int64), width.astype(np.int64), int_bits.astype(np.int64)

    def union(self) -> IntegerQuantiser:
        return self.quantiser.fixed()


def split(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """A copy of ``gm`` computing the same, where each Linear whose learned input formats differ
    between features reads them from a ``FeatureFormats`` node (``<layer>_in``) before it."""
    out = copy.deepcopy(gm)
    mixed = set(per_feature_inputs(out))
    for node in list(out.graph.nodes):
        if node.op != "call_module" or node.name not in mixed:
            continue
        layer = out.get_submodule(str(node.target))
        assert isinstance(layer, LinearQ) and isinstance(layer.x_quantiser, LearnedQuantiser)
        name = f"{node.name}_in"
        out.add_submodule(name, FeatureFormats(layer.x_quantiser))
        layer.x_quantiser = None
        with out.graph.inserting_before(node):
            formats = out.graph.call_module(name, args=node.args)
        node.args = (formats,)
    out.recompile()
    return out


def per_feature_inputs(gm: torch.nn.Module) -> tuple[str, ...]:
    """The layers (fx node names) whose learned input formats differ between features."""
    found = []
    for name, module in gm.named_modules():
        if isinstance(q := getattr(module, "x_quantiser", None), LearnedQuantiser):
            width, int_bits, k = (t.expand_as(q.scaled_frac) for t in q.formats())
            if len({tuple(v) for v in torch.stack([width, int_bits, k * (width > 0)], dim=-1).tolist()}) > 1:
                found.append(name.replace(".", "_"))  # the fx node's name
    return tuple(found)


def register() -> None:
    """hls4ml's PyTorch front end reads a ``FeatureFormats`` as a ``FixedPointQuantizer`` layer."""
    from hls4ml.converters.pytorch_to_hls import get_supported_pytorch_layers, register_pytorch_layer_handler

    if FeatureFormats.__name__ not in get_supported_pytorch_layers():  # it dispatches on the class name
        register_pytorch_layer_handler(FeatureFormats.__name__, _handler)


def _handler(operation, layer_name, input_names, input_shapes, node, class_object, data_reader, config):
    layer = {"class_name": "FixedPointQuantizer", "name": layer_name, "inputs": input_names,
             "mask_kbi": class_object.kbi(), "RND": "RND_CONV", "SAT": "SAT", "fusible": False, "overrides": {}}
    return layer, input_shapes[0]
