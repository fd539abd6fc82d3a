"""A jscexp quantised Linear/ReLU chain as ``hgq2_twin.py`` reads it (JSON), and HGQ2's answer
for it: the logits and EBOPs of the same network in HGQ2 (run in its own process, Keras on JAX).
Used by tests/test_peers.py and ``make bench-peers``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from jscexp.quant.cost import quantised_linears
from jscexp.quant.learned import LearnedQuantiser

TWIN = Path(__file__).resolve().parent / "hgq2_twin.py"


def _format(q, source: torch.Tensor | None) -> dict:
    """A role's formats (width, integer bits with the sign, sign bit), per value where learned."""
    if isinstance(q, LearnedQuantiser):
        shape = source.shape if source is not None else q.scaled_frac.shape
        return {key: t.expand(shape).tolist() for key, t in zip(("width", "int_bits", "signed"), q.formats(source))}
    return {"width": q.width, "int_bits": q.width - q.frac_width, "signed": int(q.signed)}


def spec_of(gm, x: torch.Tensor) -> dict:
    """A Linear/ReLU chain (a ReLU after every Linear but the last) with ``x`` to run through it."""
    linears = quantised_linears(gm)
    roles = (("data_in", "x_quantiser"), ("weight", "w_quantiser"), ("bias", "b_quantiser"))
    return {"n_in": x.shape[1], "x": x.tolist(), "layers": [
        {"out": layer.out_features, "relu": i < len(linears) - 1, "w": layer.weight.detach().tolist(),
         "b": layer.bias.detach().tolist(),
         **{role: _format(getattr(layer, attr), getattr(layer, role) if role != "data_in" else None)
            for role, attr in roles}}
        for i, layer in enumerate(linears)]}


def hgq2_of(spec: dict, tmp: Path) -> dict:
    """HGQ2's ``{"ebops": …, "logits": […]}`` for the network ``spec`` describes."""
    path = tmp / "spec.json"
    path.write_text(json.dumps(spec))
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, str(TWIN), str(path)], capture_output=True, text=True, env=env, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"the HGQ2 twin failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
