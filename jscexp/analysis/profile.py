"""The statistics profile (MASE's ``profile_statistics_analysis_pass``) and the node-meta table.

Config mirrors the lab's ``pass_args``: ``by`` (type | name), ``target_weight_nodes``,
``target_activation_nodes``, ``weight_statistics``, ``activation_statistics``,
``num_samples``. Weight statistics read each target's parameters; activation statistics
stream the target's input (``data_in_0``) over ``num_samples`` rows, batch by batch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import pandas as pd
import torch
from tabulate import tabulate
from torch import nn

from jscexp.analysis.graph import node_kind, trace
from jscexp.analysis.stats import make_stat
from jscexp.errors import UserError

if TYPE_CHECKING:
    import pandas as pd

_KINDS = {"call_module": "module", "call_function": "function", "call_method": "method", "get_attr": "attribute"}


def _targets(gm: torch.fx.GraphModule, by: str, wanted: list[str], what: str) -> list[torch.fx.Node]:
    nodes = [n for n in gm.graph.nodes if n.op == "call_module"]
    keys = {n: (node_kind(gm, n)[0] if by == "type" else n.name) for n in nodes}
    available = sorted(set(keys.values()))
    unknown = [w for w in wanted if w not in available]
    if unknown:
        kind = "op" if by == "type" else "node"
        raise UserError(f"{what}: no {kind} {', '.join(unknown)} in this model; choose from {', '.join(available)}")
    return [n for n in nodes if keys[n] in wanted]


def profile(model: nn.Module, spec: Mapping, inputs: Iterable[torch.Tensor] = ()) -> dict[str, dict]:
    """Returns ``{node name: {"op", "kind", "args": {tensor: {stat: {...}}}}}`` for every node."""
    by = spec.get("by", "type")
    if by not in ("type", "name"):
        raise UserError(f"profile.by must be 'type' or 'name', got '{by}'")
    gm = trace(model)
    weight_nodes = _targets(gm, by, list(spec.get("target_weight_nodes") or []), "profile target_weight_nodes")
    act_nodes = _targets(gm, by, list(spec.get("target_activation_nodes") or []), "profile target_activation_nodes")
    w_stats = dict(spec.get("weight_statistics") or {})
    a_stats = dict(spec.get("activation_statistics") or {})
    for name, opts in [*w_stats.items(), *a_stats.items()]:
        make_stat(name, opts, "profile")  # unknown names and options fail before any work
    meta = {}
    for node in gm.graph.nodes:
        op, _ = node_kind(gm, node)
        meta[node.name] = {"op": op, "kind": _KINDS.get(node.op, node.op), "fx_op": node.op, "args": {}}
    for node in weight_nodes:
        for pname, param in gm.get_submodule(str(node.target)).named_parameters(recurse=False):
            collected = {}
            for name, opts in w_stats.items():
                stat = make_stat(name, opts, "profile")
                stat.update(param)
                collected[name] = stat.finish()
            meta[node.name]["args"][pname] = collected
    if act_nodes and a_stats:
        _profile_activations(gm, act_nodes, a_stats, inputs, int(spec.get("num_samples", 256)), meta)
    return meta


def _profile_activations(gm, nodes, a_stats, inputs, num_samples, meta) -> None:
    live = {n.name: {name: make_stat(name, opts, "profile") for name, opts in a_stats.items()} for n in nodes}
    hooks = []
    for node in nodes:
        def hook(module, args, _stats=live[node.name]):
            for stat in _stats.values():
                stat.update(args[0])

        hooks.append(gm.get_submodule(node.target).register_forward_pre_hook(hook))
    seen = 0
    was_training = gm.training
    gm.eval()
    try:
        with torch.no_grad():
            for batch in inputs:
                if seen >= num_samples:
                    break
                batch = batch[: num_samples - seen]
                gm(batch)
                seen += len(batch)
    finally:
        for h in hooks:
            h.remove()
        gm.train(was_training)
    for name, stats in live.items():
        meta[name]["args"]["data_in_0"] = {s: stat.finish() for s, stat in stats.items()}


def batches_of(x: torch.Tensor, size: int = 256) -> Iterable[torch.Tensor]:
    return (x[i : i + size] for i in range(0, len(x), size))


def _cell(args: dict) -> str:
    lines = []
    for tensor, stats in args.items():
        for stat, values in stats.items():
            fields = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
            lines.append(f"{tensor}.{stat}: {fields}")
    return "\n".join(lines)


def node_meta_table(meta: dict[str, dict], width: int = 72) -> str:
    """One row per node: name, fx op, kind, op, statistics — a grid that wraps long cells."""
    rows = [(name, m["fx_op"], m["kind"], m["op"], _cell(m["args"])) for name, m in meta.items()]
    return tabulate(
        rows, headers=["Node name", "Fx node op", "Kind", "Op", "Statistics"], tablefmt="grid",
        maxcolwidths=[None, None, None, None, width],
    )


def to_frame(meta: dict[str, dict]) -> pd.DataFrame:
    """Flat rows: node, op, tensor, statistic, field, value (for CSV and comparisons)."""
    rows = [
        (name, m["op"], tensor, stat, field, value)
        for name, m in meta.items()
        for tensor, stats in m["args"].items()
        for stat, values in stats.items()
        for field, value in values.items()
    ]
    return pd.DataFrame(rows, columns=["node", "op", "tensor", "statistic", "field", "value"])


def to_json(meta: dict[str, dict]) -> str:
    return json.dumps(meta, indent=2)
