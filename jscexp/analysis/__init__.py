"""Analysis stage: the fx graph report, the statistics profile and the node-meta table."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from jscexp.analysis.graph import graph_report, trace
from jscexp.analysis.profile import batches_of, node_meta_table, profile, to_frame, to_json


def analyse(model: nn.Module, spec: Mapping, calibration: torch.Tensor | None) -> dict[str, str]:
    """The reports as ``{artifact file: text}``, as configured by ``spec`` (conf/analysis)."""
    texts = {}
    if spec.get("graph", True):
        texts["analysis/graph.txt"] = graph_report(model).text()
    if spec.get("profile", True):
        inputs = batches_of(calibration) if calibration is not None else ()
        meta = profile(model, spec, inputs)
        texts["analysis/node_meta.txt"] = node_meta_table(meta) + "\n"
        texts["analysis/profile.json"] = to_json(meta)
        texts["analysis/profile.csv"] = to_frame(meta).to_csv(index=False)
    return texts


def check(model: nn.Module, spec: Mapping) -> None:
    """Fails on a model fx cannot trace or an unknown node or statistic in ``spec`` now, before a
    run is created (not after its training)."""
    if spec.get("profile", True):
        profile(model, spec, ())
    elif spec.get("graph", True):
        trace(model)


__all__ = ["analyse", "check", "graph_report", "node_meta_table", "profile"]
