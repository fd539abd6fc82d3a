"""The quantise pass on the torch.fx graph, configured like MASE's ``pass_args``.

``by: type`` keys ops (``linear``, ``relu``, …), ``by: name`` keys fx node names
(``seq_blocks_2``, …); ``default`` covers the rest; ``config.name: null`` leaves a node alone.
With ``by: type``, a node's own entry (``seq_blocks_2: {config: {weight_width: 4}}``) refines
its op's: per-layer widths, sweepable like any width (``+quantisation.seq_blocks_2.config.weight_width=2,4``).
"""

from __future__ import annotations

import copy
import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch.fx
from torch import nn

from jscexp.analysis.graph import node_kind
from jscexp.analysis.profile import batches_of, profile
from jscexp.errors import UserError
from jscexp.models import fx_trace
from jscexp.quant import make_quantiser, quantiser_class
from jscexp.quant.entries import META_KEYS, ROLES, role_options
from jscexp.quant.layers import QUANTISED, UNSIGNED_ROLES


@dataclass
class NodeChange:
    ori_name: str
    new_name: str
    op: str
    original_type: str
    quantized_type: str
    changed: bool


def uses_auto_frac(qcfg: Mapping) -> bool:
    """Whether any entry asks for ``frac_width: auto`` (and so needs profiled ranges)."""
    return "'auto'" in repr(qcfg)


def auto_frac(width: int, max_abs: float, signed: bool) -> int:
    """Fractional bits that leave enough integer bits for ``max_abs`` (``frac_width: auto``)."""
    int_bits = math.floor(math.log2(max_abs)) + 1 if max_abs > 0 else 0
    return min(max(width - int(signed) - max(int_bits, 0), 0), width)


def _quantisers(entry: Mapping, op: str, where: str, ranges: Mapping[str, float], rate=None) -> dict:
    """One quantiser per role that the entry gives options for (``weight_width`` → weight);
    a learned one moves its widths at ``rate`` (``quantisation.width_rate``) unless its entry says."""
    unsigned = UNSIGNED_ROLES.get(op, set())
    made = {}
    for role, role_name, texts in role_options(entry):
        if role_name is None:  # ``bias_name: null``: that role stays float
            if texts:
                raise UserError(f"quantisation {where} {role}: {role}_name is null, so its options "
                                f"{', '.join(sorted(texts))} would change nothing")
            continue
        opts = {k: _integer_text(v) for k, v in texts.items()}
        traced = opts.get("int_bits") == "traced"  # its sign comes from the data
        if role in unsigned and quantiser_class(role_name).fixed_point and not traced:
            opts["signed"] = False
        if opts.get("frac_width") == "auto":
            if role not in ranges:
                raise UserError(f"quantisation {where} {role}: frac_width auto needs a profiled range (no data here)")
            opts["frac_width"] = auto_frac(int(opts.get("width", 0)), ranges[role], opts.get("signed", True))
        if rate is not None and quantiser_class(role_name).learns_widths:
            opts.setdefault("rate", rate)
        made[role] = make_quantiser(role_name, what=f"quantisation {where} {role}", **opts)
    if not made:
        raise UserError(f"quantisation {where}: config names '{entry.get('name')}' but gives no data_in_/weight_/bias_ options")
    return made


def _integer_text(value):
    """'7' → 7: a quoted CLI interpolation (``'…frac_width="${sub:${…width},1}"'``) arrives as text."""
    return int(value) if isinstance(value, str) and value.lstrip("-").isdigit() else value


def _ranges(gm: torch.fx.GraphModule, calibration: torch.Tensor | None) -> dict[str, dict[str, float]]:
    """Largest magnitude of each module node's input (profiled) and of its weight and bias."""
    names = [n.name for n in gm.graph.nodes if n.op == "call_module"]
    inputs = {}
    if calibration is not None:
        spec = {"by": "name", "target_activation_nodes": names,
                "activation_statistics": {"range_min_max": {}}, "num_samples": len(calibration)}
        meta = profile(gm, spec, batches_of(calibration))
        inputs = {n: meta[n]["args"]["data_in_0"]["range_min_max"] for n in names}
    ranges = {}
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        module, found = gm.get_submodule(node.target), {}
        if node.name in inputs:
            found["data_in"] = max(abs(inputs[node.name]["min"]), abs(inputs[node.name]["max"]))
        for role in ("weight", "bias"):
            if isinstance(getattr(module, role, None), torch.Tensor):
                found[role] = getattr(module, role).detach().abs().max().item()
        ranges[node.name] = found
    return ranges


def quantise(
    model: nn.Module, qcfg: Mapping, calibration: torch.Tensor | None = None
) -> tuple[torch.fx.GraphModule, list[NodeChange]]:
    """Returns a traced copy of ``model`` with the configured nodes replaced, and what changed.

    ``calibration`` (a few training rows) profiles the activation ranges that
    ``frac_width: auto`` needs; weight and bias ranges come from the parameters.
    """
    by = qcfg.get("by", "type")
    if by not in ("type", "name"):
        raise UserError(f"quantisation.by must be 'type' or 'name', got '{by}'")
    gm = fx_trace(copy.deepcopy(model), "quantisation (it rewrites the model's fx graph)")  # the float model stays untouched
    _check_keys(gm, qcfg, by)
    _check_entry_keys(qcfg)
    ranges = _ranges(gm, calibration) if uses_auto_frac(qcfg) else {}
    changes: list[NodeChange] = []
    plan = _plan(gm, qcfg, by)
    _check_layer_entries(plan, qcfg)
    for step in plan:
        node, new_type = step.node, step.type_name
        if step.replace:
            quantisers = _quantisers(step.entry, step.op, step.key, ranges.get(node.name, {}), qcfg.get("width_rate"))
            new = QUANTISED[step.op](gm.get_submodule(str(node.target)), **quantisers)
            _set_submodule(gm, str(node.target), new)
            new_type = type(new).__name__
        changes.append(NodeChange(node.name, node.name, step.op, step.type_name, new_type, step.replace))
    gm.recompile()
    return gm, changes


@dataclass
class _Step:
    """What the pass does with one node: the config ``key`` its ``entry`` comes from (``own``:
    the layer's own entry over its op's) and whether the node is replaced."""

    node: torch.fx.Node
    op: str
    type_name: str
    key: str
    entry: Mapping
    own: bool
    replace: bool


def _plan(gm: torch.fx.GraphModule, qcfg: Mapping, by: str) -> list[_Step]:
    """Each node's step."""
    module_nodes = {n for n in gm.graph.nodes if n.op == "call_module"}
    default = (qcfg.get("default") or {}).get("config") or {}
    plan = []
    for node in gm.graph.nodes:
        op, type_name = node_kind(gm, node)
        key = op if by == "type" else node.name
        explicit = key in qcfg and isinstance(qcfg[key], Mapping)
        entry = (qcfg[key].get("config") or {}) if explicit else default
        own = by == "type" and node.name != op and isinstance(qcfg.get(node.name), Mapping)
        if own:  # the layer's own widths over its op's
            entry, explicit, key = {**entry, **(qcfg[node.name].get("config") or {})}, True, node.name
        replace = node in module_nodes and entry.get("name") is not None
        if replace and op not in QUANTISED:
            if not explicit:
                replace = False  # the default only reaches ops we can quantise
            else:
                raise UserError(
                    f"quantisation: cannot quantise {key} ({type_name}); supported ops: {', '.join(QUANTISED)}"
                )
        plan.append(_Step(node, op, type_name, key, entry, own, replace))
    return plan


def _check_layer_entries(plan: list[_Step], qcfg: Mapping) -> None:
    """``by: type``: a layer's own entry (``seq_blocks_9: {config: {weight_width: 4}}``) for a
    layer the preset leaves float would change nothing: refused, listing the quantised layers."""
    for step in plan:
        if step.own and not step.replace:
            key, type_name = step.key, step.type_name
            layers = natural_sorted(s.node.name for s in plan if s.replace)
            raise UserError(f"quantisation.{key}: {key} ({type_name}) is not quantised by quantisation="
                            f"{qcfg.get('name')}, so its entry would change nothing; the quantised layers are "
                            f"{', '.join(layers) or 'none'}")


def natural_sorted(names) -> list[str]:
    """``seq_blocks_2`` before ``seq_blocks_10``."""
    return sorted(names, key=lambda n: [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", n)])


def _check_entry_keys(qcfg: Mapping) -> None:
    """An entry is ``{config: {…}}`` whose keys name a quantiser (``name``, ``<role>_name``) or
    a role's option (``weight_width``): a misspelt key (``weigth_width``) would be dropped."""
    roles = tuple(f"{r}_" for r in ROLES)
    for key, value in qcfg.items():
        if not isinstance(value, Mapping):
            continue
        if extra := sorted(set(value) - {"config"}):
            raise UserError(f"quantisation.{key}.{extra[0]}: an entry holds only config "
                            f"(quantisation.{key}.config.{extra[0]})")
        for option in value.get("config") or {}:
            if option not in META_KEYS and not str(option).startswith(roles):
                close = difflib.get_close_matches(str(option), ["name", *(f"{r}_width" for r in ROLES),
                                                                *(f"{r}_frac_width" for r in ROLES)], n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise UserError(f"quantisation.{key}.config.{option} is not a quantiser option{hint}: options are "
                                "name, <role>_name and <role>_<option> for the roles data_in, weight, bias")


def _check_keys(gm: torch.fx.GraphModule, qcfg: Mapping, by: str) -> None:
    """Every entry names a node (or, ``by: type``, an op): a misspelt layer is one line listing them."""
    layers = [n.name for n in gm.graph.nodes if n.op == "call_module"]
    names = set(layers) if by == "type" else {n.name for n in gm.graph.nodes}
    ops = {node_kind(gm, n)[0] for n in gm.graph.nodes} | set(QUANTISED) if by == "type" else set()
    unknown = [k for k in qcfg if k not in ("by", "default") and k not in names | ops and isinstance(qcfg[k], Mapping)]
    if unknown:
        close = {m for k in unknown for m in difflib.get_close_matches(k, names | ops, n=2)}
        hint = f" (did you mean {', '.join(sorted(close))}?)" if close else ""
        what, listed = ("op or layer", "layers") if by == "type" else ("node", "nodes")
        raise UserError(f"quantisation by {by}: no {what} called {', '.join(unknown)}{hint}; "
                        f"the {listed} are {', '.join(sorted(names if by == 'name' else layers))}")


def _set_submodule(gm: nn.Module, target: str, module: nn.Module) -> None:
    parent_name, _, leaf = target.rpartition(".")
    setattr(gm.get_submodule(parent_name) if parent_name else gm, leaf, module)
