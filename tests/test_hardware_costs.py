"""BOPs and EBOPs (docs/hardware.md) against values worked by hand."""

from __future__ import annotations

import pytest
import torch

from jscexp.models.jsc import jsc_10x, jsc_tiny, jsc_toy
from jscexp.quant.summary import costs, hardware_costs
from jscexp.quant.transform import quantise


def integer(w: int = 8, f: int = 4, x: int = 8, xf: int = 4) -> dict:
    """Every Linear at w-bit weights and biases and x-bit inputs."""
    return {"by": "type", "default": {"config": {"name": None}},
            "linear": {"config": {"name": "integer", "data_in_width": x, "data_in_frac_width": xf, "weight_width": w,
                                  "weight_frac_width": f, "bias_width": w, "bias_frac_width": f}}}


def _set_weights(gm, value: float, zeros: int = 0, tiny: int = 0) -> None:
    """Every Linear weight ``value``; in the first, ``zeros`` of them 0 and ``tiny`` of them
    0.01, which an f=4 grid (step 1/16) rounds to 0 as well."""
    linears = [m for m in gm.modules() if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for m in linears:
            m.weight.fill_(value)
        flat = linears[0].weight.view(-1)
        flat[:zeros] = 0.0
        flat[zeros:zeros + tiny] = 0.01


def test_jsc_tiny_at_int8_is_the_issues_worked_value():
    """16→5 at 8 bits: 80·(8·8 + 8 + 8 + log2 16) = 6720 BOPs (the anchors' worked value);
    EBOPs: 80·64 = 5120 multiplications' bits, plus the bias term 5·8."""
    gm, _ = quantise(jsc_tiny(), integer())
    _set_weights(gm, 0.5)
    assert hardware_costs(gm) == {"bops": 6720.0, "ebops": 5120.0 + 40}


def test_a_weight_quantised_to_zero_still_counts_as_hgq2_counts_it():
    """HGQ2 counts every weight of width > 0 whatever its value (a 0-bit weight is what costs
    nothing): 7 zeros and 3 values that round to 0 change no EBOPs."""
    gm, _ = quantise(jsc_tiny(), integer())
    _set_weights(gm, 0.5, zeros=7, tiny=3)
    assert hardware_costs(gm) == {"bops": 6720.0, "ebops": 80 * 64.0 + 40}


def test_jsc_toy_at_two_presets_by_hand():
    """16-8-8-5, n = 16, 8, 8 (log2: 4, 3, 3); 128 + 64 + 40 multiplications, 8 + 8 + 5 biases."""
    int8, _ = quantise(jsc_toy(), integer())
    _set_weights(int8, 0.5)
    assert hardware_costs(int8) == {"bops": 128 * 84 + 64 * 83 + 40 * 83.0, "ebops": 232 * 64 + 21 * 8.0}
    # 6-bit weights and biases, 6-bit inputs: the anchors' 16→8→5 at b = 6 gives 8696 for its two layers
    int6, _ = quantise(jsc_toy(), integer(6, 3, 6, 3))
    _set_weights(int6, 0.5)
    assert hardware_costs(int6) == {"bops": 128 * 52 + 64 * 51 + 40 * 51.0, "ebops": 232 * 36 + 21 * 6.0}
    assert 128 * 52 + 40 * 51 == 8696


def test_log2_n_is_rounded_up_for_a_width_that_is_no_power_of_two():
    """jsc-10x's 60→32 layer: ⌈log2 60⌉ = 6 adder levels."""
    gm, _ = quantise(jsc_10x(), integer())
    _set_weights(gm, 0.5)
    per_mult = 64 + 8 + 8
    assert hardware_costs(gm)["bops"] == 16 * 60 * (per_mult + 4) + 60 * 32 * (per_mult + 6) + 32 * 5 * (per_mult + 5)


def test_an_unquantised_input_counts_at_its_dtypes_32_bits():
    cfg = integer()
    del cfg["linear"]["config"]["data_in_width"], cfg["linear"]["config"]["data_in_frac_width"]
    gm, _ = quantise(jsc_tiny(), cfg)
    _set_weights(gm, 0.5)
    assert hardware_costs(gm) == {"bops": 80 * (32 * 8 + 32 + 8 + 4.0), "ebops": 80 * 32 * 8 + 40.0}


@pytest.mark.parametrize("model", [jsc_tiny, jsc_toy])
def test_a_float_model_has_no_hardware_cost(model):
    assert costs(model()) == {}  # no bops, no ebops: never a made-up number


def test_the_estimate_traces_the_arithmetic_the_model_computes():
    """da4ml's trace of a quantised Linear predicts, bit for bit, what jscexp's layer gives on
    inputs on its input grid: the estimate is of this model's arithmetic, not another's."""
    from da4ml.trace import FixedVariableArrayInput, comb_trace
    from da4ml.trace.ops import quantize

    from jscexp.quant.cost import estimate

    gm, _ = quantise(jsc_toy(), integer())
    layer = gm.get_submodule("seq_blocks.2")
    inp = FixedVariableArrayInput((16,))
    w, b = layer.effective_weight().detach().double().numpy().T, layer.effective_bias().detach().double().numpy()
    logic = comb_trace(inp, quantize(inp, 1, 3, 4) @ w + b)
    x = layer.x_quantiser(torch.randn(256, 16) * 4)
    assert (logic.predict(x.double().numpy()) == layer(x).double().detach().numpy()).all()
    found = estimate(gm)
    assert set(found) == {"est_lut", "est_latency"} and found["est_lut"] > logic.cost > 0


def test_every_quantised_run_logs_its_costs_and_a_float_run_none(workdir):
    from conftest import FAST, run_job

    qat = run_job([*FAST, "model=jsc-toy", "mode=qat", "quantisation=int8"], workdir / "qat")
    assert {"bops", "ebops", "est_lut", "est_latency"} <= set(qat.metrics) and qat.metrics["bops"] == 19384
    big = run_job([*FAST, "model=jsc-10x", "mode=qat", "quantisation=int8"], workdir / "big")
    assert "ebops" in big.metrics and "est_lut" not in big.metrics  # 3040 weights: opt-in (hardware.estimate=true)
    trained = run_job([*FAST, "model=jsc-toy"], workdir / "float")
    assert not {"bops", "ebops", "est_lut", "est_latency"} & set(trained.metrics)

    from jscexp.tracking.query import runs_frame
    from jscexp.tracking.report import Comparison, make_table

    values = make_table(runs_frame(f"sqlite:///{workdir / 'mlflow.db'}", "jscexp"), Comparison(vary=["Model"])).values
    by_model = {(m, b == b): row for m, b, row in zip(values["Model"], values["BOPs"], values.to_dict("records"))}
    assert by_model[("jsc-toy", True)]["BOPs"] == 19384 and by_model[("jsc-toy", True)]["est. LUT"] == qat.metrics["est_lut"]
    assert by_model[("jsc-10x", True)]["EBOPs"] == big.metrics["ebops"]


def test_the_int4_preset_of_jsc_toy_by_hand():
    """conf/quantisation/int4: 4-bit weights and biases, 8-bit Linear inputs (b_a·b_w = 32)."""
    from conftest import compose_cfg
    from jscexp.config import plain

    gm, _ = quantise(jsc_toy(), plain(compose_cfg(["quantisation=int4"]).quantisation))
    _set_weights(gm, 0.5)
    assert hardware_costs(gm) == {"bops": 128 * 48 + 64 * 47 + 40 * 47.0, "ebops": 232 * 32 + 21 * 4.0}


def test_a_layer_given_its_own_widths_costs_its_own():
    """Per-layer widths by fx node name over the op's (jsc-toy's middle Linear at 4-bit weights)."""
    cfg = integer()
    cfg["seq_blocks_5"] = {"config": {"weight_width": 4, "weight_frac_width": 2}}
    gm, changes = quantise(jsc_toy(), cfg)
    _set_weights(gm, 0.5)
    bits = {name: m.w_quantiser.width for name, m in gm.named_modules() if hasattr(m, "w_quantiser")}
    assert bits == {"seq_blocks.2": 8, "seq_blocks.5": 4, "seq_blocks.8": 8}
    assert hardware_costs(gm) == {"bops": 128 * 84 + 64 * (32 + 8 + 4 + 3) + 40 * 83.0,
                                  "ebops": 128 * 64 + 64 * 32 + 40 * 64 + 21 * 8.0}


def test_learned_widths_count_each_weight_and_input_feature_at_its_own_width_and_a_zero_width_at_nothing():
    """jsc-tiny's 16→5 with learned formats (f = 7 for weights, 4 for inputs): weights 0.25 (n = 32:
    6 bits and the sign), one 0 (0 bits) and one -2^-7 (the sign bit alone); input features
    traced unsigned with 2 integer bits (6 bits) but feature 0, whose range is empty (0 bits);
    biases 8 bits: EBOPs = 6·(0 + 1 + 3·7 + 14·5·7) + 5·8."""
    from conftest import compose_cfg
    from jscexp.config import plain
    from jscexp.quant.cost import quantised_linears

    gm, _ = quantise(jsc_tiny(), plain(compose_cfg(["mode=qat", "quantisation=learned"]).quantisation))
    (layer,) = quantised_linears(gm)
    with torch.no_grad():
        layer.weight.fill_(0.25)
        layer.weight[0, 1], layer.weight[1, 1] = 0.0, -(2.0**-7)
        layer.x_quantiser.traced_int.fill_(2.0)
        layer.x_quantiser.traced_int[0] = -4.0
    assert layer.x_quantiser.widths().tolist() == [0.0] + [6.0] * 15
    assert hardware_costs(gm)["ebops"] == 6 * (0 + 1 + 3 * 7 + 14 * 5 * 7) + 5 * 8
