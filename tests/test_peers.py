"""jscexp's EBOPs against HGQ2's own count (docs/hardware.md): the same network, the same
weights and widths loaded into HGQ2 (``pip install -e '.[peers]'``), the same logits bit for
bit and the same EBOPs — uniform widths, a width per layer, and a width per weight (learned)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from conftest import compose_cfg
from jscexp.config import plain
from jscexp.quant.cost import quantised_linears
from jscexp.quant.summary import hardware_costs
from jscexp.quant.transform import quantise
from jscexp.train.fit import make_model

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench" / "peers"))
from twin_spec import hgq2_of, spec_of  # noqa: E402


def _hgq2() -> None:
    import importlib.util

    if importlib.util.find_spec("hgq") is None:
        if os.environ.get("JSCEXP_REQUIRE_SERVICES") == "1":
            pytest.fail("hgq2 is not installed: pip install -e '.[peers]' (CI installs it)")
        pytest.skip("hgq2 is not installed: pip install -e '.[peers]'")


def _network(*overrides: str):
    cfg = compose_cfg(["model=mlp", "model.hidden=[8,8]", "mode=qat", *overrides])
    torch.manual_seed(0)
    gm, _ = quantise(make_model(cfg), plain(cfg.quantisation))
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
