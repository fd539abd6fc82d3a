"""``make bench``'s hardware table: what a quantised run's cost metrics and its firmware twin cost.

Measured in this process on trained-shape models (random weights, the lab's widths): the bit
operations every quantised run logs, da4ml's estimate (per run: it depends on the weights), and
the hls4ml export with its C simulation over 2 000 jets (jscexp/export).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from jscexp.export import csim_check
from jscexp.models.jsc import jsc_10x, jsc_toy
from jscexp.quant.cost import estimate, hardware_costs
from jscexp.quant.transform import quantise

GOALS = {"bops + ebops": ("ms", 5.0), "da4ml estimate": ("s", 0.3), "export + C simulation": ("s", 30.0)}


def _integer(with_bn: bool) -> dict:
    widths = {"data_in_width": 8, "data_in_frac_width": 4, "weight_width": 8, "weight_frac_width": 4,
              "bias_width": 8, "bias_frac_width": 4}
    cfg = {"by": "type", "default": {"config": {"name": None}}, "linear": {"config": {"name": "integer", **widths}}}
    if with_bn:
        cfg["batch_norm1d"] = {"config": {"name": "integer", **widths}}
        cfg["relu"] = {"config": {"name": "integer", "data_in_width": 8, "data_in_frac_width": 4}}
    return cfg


def _median(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def table(repeats: int = 3) -> pd.DataFrame:
    torch.manual_seed(0)
    rows = []
    for model, build in (("jsc-toy", jsc_toy), ("jsc-10x", jsc_10x)):
        gm, _ = quantise(build(), _integer(False))
        rows.append(("bops + ebops", model, 1000 * _median(lambda gm=gm: hardware_costs(gm), repeats)))
        rows.append(("da4ml estimate", model, _median(lambda gm=gm: estimate(gm), repeats)))
    gm, _ = quantise(jsc_toy(), _integer(True))
    x = (np.random.default_rng(0).standard_normal((2000, 16)) * 2).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        check = csim_check(gm.eval(), x, Path(tmp) / "prj")
    rows.append(("export + C simulation", "jsc-toy int8_all", check.seconds))
    frame = pd.DataFrame(rows, columns=["what", "model", "measured"])
    frame["unit"] = frame["what"].map(lambda w: GOALS[w][0])
    frame["goal (jsc-toy)"] = frame["what"].map(lambda w: f"≤ {GOALS[w][1]:g}")
    frame["measured"] = frame["measured"].round(3)
    return frame
