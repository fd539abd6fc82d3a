"""A quantised model as hls4ml sees it: a plain-layer twin with the quantised constants, and one
``ap_fixed`` per tensor from jscexp's quantisers (docs/hardware.md, "The firmware twin").

jscexp quantises a layer's *input*; hls4ml casts a layer's *result*. So the quantiser on node
N's input becomes the result type of N's predecessor, rounding half to even and saturating
(``AP_RND_CONV, AP_SAT``: the integer quantiser's arithmetic). Every other result is typed
wide enough to hold its exact value (a Linear's sum: the accumulator hls4ml issue #324 saw
overflow), so the C simulation computes what jscexp's model computes.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.fx
from torch import nn

from jscexp.errors import UserError
from jscexp.quant.integer import IntegerQuantiser
from jscexp.quant.layers import BatchNormQ, LinearQ, ReLUQ

FLOAT_STANDIN = "ap_fixed<40,20>"  # a float tensor's type: close, not exact (docs/hardware.md)
# The model input's type where a per-feature quantiser reads it: every float32 of magnitude ≥ 2^-16 exactly
WIDE_INPUT = "ap_fixed<64,24>"


@dataclass(frozen=True)
class Fixed:
    """A fixed-point format: ``width`` bits, ``integer`` of them left of the point (sign included)."""

    width: int
    integer: int
    signed: bool = True

    @classmethod
    def of(cls, q: IntegerQuantiser) -> Fixed:
        return cls(q.width, q.width - q.frac_width, q.signed)

    @classmethod
    def holding(cls, bound: float, frac: int) -> Fixed:
        """Signed, wide enough for every multiple of 2^-frac with magnitude ≤ ``bound``."""
        integer = (math.floor(math.log2(bound)) + 2) if bound > 0 else 1
        return cls(integer + frac, integer)

    @property
    def frac(self) -> int:
        return self.width - self.integer

    @property
    def bound(self) -> float:
        return 2.0 ** (self.integer - (1 if self.signed else 0))

    def text(self, cast: bool = False) -> str:
        name = "ap_fixed" if self.signed else "ap_ufixed"
        return f"{name}<{self.width},{self.integer}{',AP_RND_CONV,AP_SAT' if cast else ''}>"


def _fixed(q, what: str, source: torch.Tensor | None = None) -> Fixed | None:
    if q is None:
        return None
    if (fixed := q.fixed(source)) is None:
        raise UserError(f"{what}: hls4ml has no type for the '{q.name}' format: export runs of fixed-point "
                        "(integer) presets, e.g. quantisation=int8 or int8_all")
    return Fixed.of(fixed)


def twin(gm: torch.fx.GraphModule) -> nn.Module:
    """The model with plain torch layers holding the quantised constants (hls4ml's PyTorch front
    end reads Linear, BatchNorm1d and ReLU): a quantised BatchNorm becomes x·scale + shift."""
    out = copy.deepcopy(gm)
    for name, module in gm.named_modules():
        if (plain := _plain(module)) is not None:
            parent, _, leaf = name.rpartition(".")
            setattr(out.get_submodule(parent) if parent else out, leaf, plain)
    return out.eval()


def _plain(module: nn.Module) -> nn.Module | None:
    """A quantised layer's plain twin, or None for a layer hls4ml reads as it is."""
    with torch.no_grad():
        if isinstance(module, LinearQ):
            linear = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None)
            bias = module.effective_bias()
            linear.load_state_dict({"weight": module.effective_weight(), **({"bias": bias} if bias is not None else {})})
            return linear
        if isinstance(module, BatchNormQ):
            scale, shift = module.folded()
            bn = nn.BatchNorm1d(module.num_features, eps=0.0)  # hls4ml's γ/√(σ²+ε) is then the scale itself
            bn.load_state_dict({"weight": scale, "bias": shift, "running_mean": torch.zeros_like(scale),
                                "running_var": torch.ones_like(scale), "num_batches_tracked": torch.tensor(0)})
            return bn
    return nn.ReLU() if isinstance(module, ReLUQ) else None


def precisions(gm: torch.fx.GraphModule, input_name: str) -> dict[str, dict[str, str]]:
    """hls4ml's ``LayerName`` precisions, by fx node name (hls4ml's layer names)."""
    from jscexp.export.features import FeatureFormats  # imports hls4ml: only where a model is exported

    layers: dict[str, dict[str, str]] = {}
    value: dict[str, Fixed | None] = {}  # each node's output format (None: float)
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            value[node.name] = None
            continue
        if node.op in ("call_function", "call_method"):
            raise UserError(f"{node.name}: hls4ml export handles a chain of Linear, BatchNorm1d and ReLU modules, "
                            f"not the operation {getattr(node.target, '__name__', node.target)}")
        if node.op != "call_module":
            continue
        module = gm.get_submodule(str(node.target))
        source = node.args[0].name
        if isinstance(module, FeatureFormats):  # casts each feature itself
            if node.args[0].op == "placeholder":
                layers.setdefault(input_name, {})["result"] = WIDE_INPUT
            union = Fixed.of(module.union())
            layers[node.name], value[node.name] = {"result": union.text()}, union
            continue
        cast = _fixed(getattr(module, "x_quantiser", None), f"{node.name} input")
        if cast is not None:  # jscexp quantises this input: hls4ml casts the predecessor's result
            hls_source = input_name if node.args[0].op == "placeholder" else source
            layers.setdefault(hls_source, {})["result"] = cast.text(cast=True)
            value[source] = cast
        layers[node.name], value[node.name] = _layer(module, value[source], node.name)
    return layers


def _layer(module: nn.Module, x: Fixed | None, name: str) -> tuple[dict[str, str], Fixed | None]:
    """One layer's precisions and its output format, exact where its operands are fixed."""
    if isinstance(module, nn.ReLU):
        return {"result": x.text() if x else FLOAT_STANDIN}, x
    if isinstance(module, nn.Linear):
        w = _fixed(getattr(module, "w_quantiser", None), f"{name} weight", module.weight)
        b = _fixed(getattr(module, "b_quantiser", None), f"{name} bias", module.bias) if module.bias is not None else None
        return _affine(x, w, b, module.bias is not None, module.in_features, ("weight", "bias"), accum=True)
    if isinstance(module, nn.BatchNorm1d):
        w = _fixed(getattr(module, "w_quantiser", None), f"{name} scale")
        b = _fixed(getattr(module, "b_quantiser", None), f"{name} shift")
        return _affine(x, w, b, True, 1, ("scale", "bias"), accum=False)
    raise UserError(f"{name}: hls4ml export handles Linear, BatchNorm1d and ReLU, not {type(module).__name__}")


def _affine(x, w, b, has_bias: bool, n: int, keys: tuple[str, str], *, accum: bool) -> tuple[dict[str, str], Fixed | None]:
    """Σ_n x·w + b: exact when x, w and b are fixed (its bound over every input in x's range)."""
    types = {keys[0]: w.text() if w else FLOAT_STANDIN, keys[1]: b.text() if b else FLOAT_STANDIN}
    if x is None or w is None or (has_bias and b is None):
        out = None
    else:
        frac = max(x.frac + w.frac, b.frac if b else 0)
        out = Fixed.holding(n * x.bound * w.bound + (b.bound if b else 0.0), frac)
    result = out.text() if out else FLOAT_STANDIN
    return {**types, "result": result, **({"accum": result} if accum else {})}, out
