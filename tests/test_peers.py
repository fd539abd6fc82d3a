"""jscexp's EBOPs against HGQ2's own count (docs/hardware.md): the same network, the same
weights and widths loaded into HGQ2 (``pip install -e '.[peers]'``), the same logits bit for
bit and the same EBOPs — uniform widths, a width per layer, and a width per weight (learned)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import compose_cfg
from jscexp.config import plain
from jscexp.quant.cost import quantised_linears
from jscexp.quant.learned import LearnedQuantiser
from jscexp.quant.summary import hardware_costs
from jscexp.quant.transform import quantise
from jscexp.train.fit import make_model

TWIN = Path(__file__).resolve().parent.parent / "bench" / "peers" / "hgq2_twin.py"


def _hgq2() -> None:
    import importlib.util

    if importlib.util.find_spec("hgq") is None:
        if os.environ.get("JSCEXP_REQUIRE_SERVICES") == "1":
            pytest.fail("hgq2 is not installed: pip install -e '.[peers]' (CI installs it)")
        pytest.skip("hgq2 is not installed: pip install -e '.[peers]'")


def _format(q, source) -> dict:
    """A role's formats (width, integer bits with the sign, sign bit), per value where learned."""
    if isinstance(q, LearnedQuantiser):
        shape = source.shape if source is not None else source_shape(q)
        return {key: t.expand(shape).tolist() for key, t in zip(("width", "int_bits", "signed"), q.formats(source))}
    return {"width": q.width, "int_bits": q.width - q.frac_width, "signed": int(q.signed)}


def source_shape(q: LearnedQuantiser) -> torch.Size:
    return q.scaled_frac.shape


def spec_of(gm, x: torch.Tensor) -> dict:
    """A Linear/ReLU chain as hgq2_twin.py reads it."""
    linears = quantised_linears(gm)
    return {"n_in": x.shape[1], "x": x.tolist(), "layers": [
        {"out": layer.out_features, "relu": i < len(linears) - 1, "w": layer.weight.detach().tolist(),
         "b": layer.bias.detach().tolist(),
         **{role: _format(getattr(layer, attr), getattr(layer, role) if role != "data_in" else None) for role, attr in
            (("data_in", "x_quantiser"), ("weight", "w_quantiser"), ("bias", "b_quantiser"))}}
        for i, layer in enumerate(linears)]}


def hgq2_of(spec: dict, tmp: Path) -> dict:
    path = tmp / "spec.json"
    path.write_text(json.dumps(spec))
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, str(TWIN), str(path)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _network(*overrides: str):
    cfg = compose_cfg(["model=mlp", "model.hidden=[8,8]", "mode=qat", *overrides])
    torch.manual_seed(0)
    gm, _ = quantise(make_model(cfg.model), plain(cfg.quantisation))
    return gm.eval()


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [
    ["quantisation=int8"],
    ["quantisation=int4"],
    ["quantisation=int8", "+quantisation.layers_2.config.weight_width=3", "+quantisation.layers_2.config.weight_frac_width=2",
     "+quantisation.layers_4.config.data_in_width=5", "+quantisation.layers_4.config.data_in_frac_width=1"],
    ["quantisation=learned"],
], ids=["int8", "int4", "per-layer", "learned"])
def test_ebops_equal_hgq2s_own_count_on_the_same_network(tmp_path, overrides):
    _hgq2()
    gm = _network(*overrides)
    x = torch.randn(512, 16, generator=torch.Generator().manual_seed(2)) * 2
    if overrides == ["quantisation=learned"]:  # fractional bits per weight and input feature, -1…6; input ranges traced
        generator = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for layer in quantised_linears(gm):
                for q in (layer.w_quantiser, layer.x_quantiser):
                    q.scaled_frac.copy_(torch.randint(-1, 7, q.scaled_frac.shape, generator=generator) / q.rate)
            gm.train()(x[:256])  # a training batch: each input feature's sign and integer bits
            gm.eval()
        widths = torch.cat([layer.x_quantiser.widths().flatten() for layer in quantised_linears(gm)])
        assert (widths == 0).any() and len(set(widths.tolist())) > 3  # features dropped, others at their own widths
    theirs = hgq2_of(spec_of(gm, x), tmp_path)
    with torch.no_grad():
        ours = gm(x)
    assert torch.equal(torch.tensor(theirs["logits"]), ours)  # the same network, bit for bit
    assert hardware_costs(gm)["ebops"] == theirs["ebops"]
