"""Quantisers, the fx transform, summaries, verification, costs, and the quantisation modes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from conftest import FAST, mlflow_client, run_cli, run_job, runs_of
from jscexp.errors import UserError
from jscexp.models.jsc import jsc_tiny, jsc_toy
from jscexp.quant import make_quantiser
from jscexp.quant.integer import IntegerQuantiser
from jscexp.quant.layers import LinearQ
from jscexp.quant.summary import costs, histogram, verify
from jscexp.quant.transform import natural_sorted, quantise
from jscexp.tracking.names import SWEPT_ENV, run_name, short_key


def integer_cfg(w=8, f=4, by="type", key="linear"):
    entry = {"name": "integer", "data_in_width": w, "data_in_frac_width": f, "weight_width": w,
             "weight_frac_width": f, "bias_width": w, "bias_frac_width": f}
    return {"by": by, "default": {"config": {"name": None}}, key: {"config": entry}}


@pytest.mark.parametrize("width", [1, 2, 3, 4, 6, 8, 12, 16])
def test_integer_matches_the_formula_and_torch_fake_quantize(width):
    x = torch.randn(4096, generator=torch.Generator().manual_seed(width)) * 6
    for frac in range(0, width + 1):
        q = IntegerQuantiser(width=width, frac_width=frac)(x)
        lo, hi = -(2 ** (width - 1)), 2 ** (width - 1) - 1
        by_hand = np.clip(np.round(x.numpy().astype(np.float64) * 2.0**frac), lo, hi) / 2.0**frac  # half to even
        np.testing.assert_array_equal(q.numpy(), by_hand.astype(np.float32))
        torch.testing.assert_close(q, torch.fake_quantize_per_tensor_affine(x, 2.0**-frac, 0, lo, hi), rtol=0, atol=0)


def test_lab_example_8_4_is_multiples_of_a_sixteenth_in_range():
    x = torch.linspace(-20, 20, 10001)
    q = make_quantiser("integer", width=8, frac_width=4)(x)
    assert torch.all(q * 16 == torch.round(q * 16))
    assert q.min() == -8 and q.max() == 7.9375
    assert make_quantiser("integer", width=8, frac_width=4)(torch.tensor([0.03125, 0.09375])).tolist() == [0.0, 0.125]
    unsigned = make_quantiser("integer", width=4, frac_width=2, signed=False)(torch.tensor([-1.0, 5.0]))
    assert unsigned.tolist() == [0.0, 3.75]


@pytest.mark.parametrize(
    "name, opts",
    [("integer", {"width": 8, "frac_width": 4}), ("minifloat", {"width": 8, "exponent_width": 4}),
     ("binary", {}), ("ternary", {})],
)
def test_gradients_pass_straight_through(name, opts):
    x = (torch.rand(64) - 0.5).requires_grad_()
    make_quantiser(name, **opts)(x).mul(torch.arange(64.0)).sum().backward()
    torch.testing.assert_close(x.grad, torch.arange(64.0))


def test_minifloat_e4m3_values_denormals_and_saturation():
    q = make_quantiser("minifloat", width=8, exponent_width=4)  # bias 7, 3 mantissa bits
    assert q.max_value == 480.0
    out = q(torch.tensor([1.0, 1.06, 1.07, 0.1, 2.0**-9, 2.0**-10 * 1.5, 1e6, -1e6, 0.0]))
    assert out.tolist() == [1.0, 1.0, 1.125, 0.1015625, 2.0**-9, 2.0**-9, 480.0, -480.0, 0.0]
    grid = q(torch.randn(1000) * 50)
    assert q.on_grid(grid, None).all()
    off = torch.tensor([1.01, 1.0 + 2**-4, 496.0, 2.0**-10 * 1.5, 2.0**-11])  # mantissa, range, denormal spacing
    assert not q.on_grid(off, None).any()


def _ulp_off(values: torch.Tensor, index: int = 0) -> torch.Tensor:
    out = values.clone()
    out[index] = torch.nextafter(out[index], torch.tensor(1e9))
    return out


@pytest.mark.parametrize("name, opts", [("binary", {}), ("ternary", {"threshold": 0.7}),
                                        ("integer", {"width": 4, "frac_width": 2}),
                                        ("minifloat", {"width": 8, "exponent_width": 4})])
def test_each_format_check_catches_a_value_the_format_cannot_hold(name, opts):
    """The verification reads the format's definition, so it fails for a value one ulp off,
    a level too many, or a value beyond the range — whatever the quantiser produced."""
    w = torch.randn(128, generator=torch.Generator().manual_seed(1))
    q = make_quantiser(name, **opts)
    out = q(w).detach()
    assert q.on_grid(out, w).all()
    assert not q.on_grid(_ulp_off(out), w)[0]
    assert not q.on_grid(out * 1.5, w).all()  # another scale: other levels, or past the range
    if name in ("binary", "ternary"):  # exactly two / three values, from the float weights
        assert not q.on_grid(out, w * 2)[out != 0].any()
    if name == "integer":
        assert not q.on_grid(torch.tensor([2.0, -2.25, 0.125]), None).any()  # past 7/4, past -8/4, finer than 1/4


def test_binary_and_ternary_values():
    w = torch.tensor([-0.9, -0.05, 0.0, 0.02, 0.4, 1.1])
    b = make_quantiser("binary")(w)
    assert b.abs().tolist() == pytest.approx([w.abs().mean().item()] * 6)
    assert (torch.sign(b) == torch.where(w >= 0, 1.0, -1.0)).all()
    t = make_quantiser("ternary", threshold=0.7)(w)
    delta = 0.7 * w.abs().mean()
    alpha = w.abs()[w.abs() > delta].mean().item()
    assert t.tolist() == pytest.approx([-alpha, 0, 0, 0, alpha, alpha])


def _counts(changes):
    table = histogram(changes)
    return {r["Original type"]: (r["Total"], r["Changed"], r["Unchanged"]) for _, r in table.iterrows()}


def test_by_type_changes_exactly_the_linears():
    gm, changes = quantise(jsc_toy(), integer_cfg())
    assert [c.ori_name for c in changes if c.changed] == ["seq_blocks_2", "seq_blocks_5", "seq_blocks_8"]
    assert sum(isinstance(m, LinearQ) for m in gm.modules()) == 3
    counts = _counts(changes)
    assert counts["Linear"] == (3, 3, 0) and counts["BatchNorm1d"] == (4, 0, 4) and counts["ReLU"] == (4, 0, 4)
    assert list(histogram(changes).columns) == ["Original type", "OP", "Total", "Changed", "Unchanged"]
    _, tiny = quantise(jsc_tiny(), integer_cfg())
    counts = _counts(tiny)
    assert counts["Linear"] == (1, 1, 0) and counts["BatchNorm1d"] == (1, 0, 1) and counts["ReLU"] == (2, 0, 2)
    assert counts["x"] == (1, 0, 1) and counts["output"] == (1, 0, 1)


def test_by_name_changes_exactly_the_named_node():
    gm, changes = quantise(jsc_toy(), integer_cfg(by="name", key="seq_blocks_5"))
    assert [c.ori_name for c in changes if c.changed] == ["seq_blocks_5"]
    assert isinstance(gm.get_submodule("seq_blocks.5"), LinearQ)
    assert not isinstance(gm.get_submodule("seq_blocks.2"), LinearQ)


def test_quantised_output_equals_float_model_on_quantised_inputs_and_weights():
    torch.manual_seed(0)
    model = jsc_tiny().eval()
    model.seq_blocks[2].weight.data.mul_(3)  # spread the weights over the 8/4 grid
    gm, _ = quantise(model, integer_cfg())
    gm.eval()
    x = torch.randn(256, 16) * 3
    q = IntegerQuantiser(width=8, frac_width=4)
    bn, relu, linear = model.seq_blocks[0], model.seq_blocks[1], model.seq_blocks[2]
    by_hand = torch.relu(nn.functional.linear(q(relu(bn(x))), q(linear.weight), q(linear.bias)))
    torch.testing.assert_close(gm(x), by_hand, rtol=0, atol=0)
    assert not torch.equal(gm(x), model(x))  # it really is quantised


def test_verification_passes_and_catches_an_off_grid_weight():
    gm, _ = quantise(jsc_toy(), integer_cfg())
    assert verify(gm)["off grid"].sum() == 0 and verify(gm)["values"].sum() == 128 + 8 + 64 + 8 + 40 + 5

    class Nudged(IntegerQuantiser):
        def quantise(self, x):
            out = super().quantise(x).clone()
            out.view(-1)[3] += 0.01
            return out

    gm.get_submodule("seq_blocks.5").w_quantiser = Nudged(width=8, frac_width=4)
    report = verify(gm)
    assert report["off grid"].sum() == 1
    assert report.loc[report["off grid"] == 1, ["layer", "tensor"]].values.tolist() == [["seq_blocks.5", "weight"]]


def test_costs_of_jsc_tiny_by_hand():
    assert costs(jsc_tiny()) == {}  # a float model: no bit costs, never a made-up 32
    gm, _ = quantise(jsc_tiny(), integer_cfg())
    # Linear weight 80 and bias 5 at 8 bits, BatchNorm's 32 parameters stay float; EBOPs count
    # every weight, as HGQ2 does (tests/test_hardware_costs.py: more)
    assert costs(gm) == {"avg_weight_bits": 8.0, "model_size_bits": 80 * 8 + 5 * 8 + 32 * 32,
                         "avg_param_bits": (80 * 8 + 5 * 8 + 32 * 32) / 117, "linear_bitops": 16 * 5 * 8 * 8,
                         "bops": 6720, "ebops": 80 * 64 + 5 * 8}


def test_avg_weight_bits_tells_the_bit_widths_apart():
    """Binary, int4 and int8 jsc-toy differ by their weights' bits, not drowned by BatchNorm's floats."""
    bits = {name: costs(quantise(jsc_toy(), cfg)[0])["avg_weight_bits"]
            for name, cfg in (("binary", {"name": "binary", "by": "type", "default": {"config": {"name": None}},
                                          "linear": {"config": {"name": "binary", "weight_scaling": True}}}),
                              ("int4", integer_cfg(4, 2)), ("int8", integer_cfg()))}
    assert bits == {"binary": 1.0, "int4": 4.0, "int8": 8.0}


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["quantisation.linear.config.name=foo"], "unknown quantiser 'foo': choose one of integer, minifloat"),
        (["quantisation.weight_width=0"], "width must be a positive integer, got 0"),
        (["quantisation.weight_frac_width=9"], "frac_width 9 is larger than width 8"),
        (["quantisation=minifloat8", "quantisation.linear.config.weight_exponent_width=8"],
         "exponent_width 8 leaves no sign bit in width 8"),
        (["quantisation.by=name", "~quantisation.linear", "+quantisation.seq_block_2.config.name=integer"],
         "no node called seq_block_2 (did you mean seq_blocks_2, seq_blocks_3?); the nodes are output, seq_blocks_0"),
        (["+quantisation.seq_block_2.config.weight_width=4"],  # a layer's own width, misspelt
         "quantisation by type: no op or layer called seq_block_2 (did you mean seq_blocks_2, seq_blocks_3?); "
         "the layers are seq_blocks_0, seq_blocks_1, seq_blocks_2, seq_blocks_3"),
        (["quantisation=none"], "mode=qat needs a quantisation: add quantisation=int8"),
        (["+quantisation.seq_blocks_0.config.weight_width=4"],  # a layer int8 leaves float: it would change nothing
         "quantisation.seq_blocks_0: seq_blocks_0 (BatchNorm1d) is not quantised by quantisation=int8, so its "
         "entry would change nothing; the quantised layers are seq_blocks_2"),
        (["+quantisation.seq_blocks_2.config.weigth_width=4"],  # a typo in a layer's config: it would be dropped
         "quantisation.seq_blocks_2.config.weigth_width is not a quantiser option (did you mean weight_width?)"),
        (["+quantisation.linear.config.weight_widht=4"],
         "quantisation linear weight: bad options ['frac_width', 'widht', 'width'] for 'integer'"),
        (["+quantisation.seq_blocks_2.weight_width=4"],  # config. left out
         "quantisation.seq_blocks_2.weight_width: an entry holds only config "
         "(quantisation.seq_blocks_2.config.weight_width)"),
    ],
)
def test_bad_quantisation_input_is_refused_before_any_run(workdir, overrides, message):
    with pytest.raises(UserError, match=re.escape(message)):
        run_job([*FAST, "mode=qat", "quantisation=int8", *overrides], workdir / "out")
    assert runs_of(workdir) == []


def test_an_unquantised_layer_is_refused_listing_the_quantised_ones_in_natural_order():
    cfg = {**integer_cfg(), "seq_blocks_9": {"config": {"weight_width": 4}}}
    with pytest.raises(UserError, match=re.escape("seq_blocks_9 (BatchNorm1d) is not quantised by quantisation=None, "
                                                  "so its entry would change nothing; the quantised layers are "
                                                  "seq_blocks_2, seq_blocks_5, seq_blocks_8")):
        quantise(jsc_toy(), cfg)
    assert natural_sorted(["seq_blocks_11", "seq_blocks_2", "seq_blocks_10"]) == [
        "seq_blocks_2", "seq_blocks_10", "seq_blocks_11"]


def test_a_layers_own_knob_keeps_its_layer_in_run_and_study_names(monkeypatch):
    keys = ["quantisation.seq_blocks_5.config.weight_width", "quantisation.seq_blocks_2.config.weight_width"]
    monkeypatch.setenv(SWEPT_ENV, json.dumps(keys))
    assert run_name("jsc-toy", [f"+{keys[0]}=4", f"+{keys[1]}=2"], 3) == \
        "#3 seq_blocks_5.weight_width=4 seq_blocks_2.weight_width=2"
    assert [short_key(k) for k in keys] == ["seq_blocks_5.weight_width", "seq_blocks_2.weight_width"]
    assert short_key("quantisation.weight_width") == "w" and short_key("optimizer.weight_decay") == "wd"


def test_bad_quantisation_on_the_cli_is_one_line(workdir):
    result = run_cli([*FAST, "mode=qat", "quantisation=int8", "quantisation.weight_frac_width=9"], workdir)
    assert result.returncode == 2
    assert result.stderr == "error: quantisation linear weight: frac_width 9 is larger than width 8\n"
    assert runs_of(workdir) == []


def test_qat_run_logs_costs_summaries_and_a_passed_check(workdir):
    run_job([*FAST, "mode=qat", "quantisation=int8", "model=jsc-toy"], workdir / "out")
    (run,) = runs_of(workdir)
    m = run.data.metrics
    assert run.info.status == "FINISHED" and run.data.tags["jscexp.quant_check"] == "passed"
    assert m["quant_offgrid_values"] == 0 and m["quant_checked_values"] == 253
    assert m["avg_weight_bits"] == 8.0 and m["avg_param_bits"] == pytest.approx((253 * 8 + 74 * 32) / 327)
    client = mlflow_client(workdir)
    assert {a.path for a in client.list_artifacts(run.info.run_id, "quant")} == {
        "quant/histogram.md", "quant/nodes.csv", "quant/verification.csv"}
    hist = Path(client.download_artifacts(run.info.run_id, "quant/histogram.md", str(workdir))).read_text()
    assert "| Linear          | linear       |       3 |         3 |           0 |" in hist


def test_ptq_from_a_checkpoint_logs_float_and_quantised_accuracy(workdir):
    run_job([*FAST, "max_epochs=2"], workdir / "float")
    ckpt = runs_of(workdir)[0].data.tags["jscexp.checkpoint"]
    float_test = runs_of(workdir)[0].data.metrics["test_acc"]
    run_job([*FAST, "mode=ptq", f"ckpt={ckpt}", "quantisation=int8", "quantisation.weight_width=3",
             "quantisation.weight_frac_width=2"], workdir / "ptq")
    m = runs_of(workdir)[-1].data.metrics
    assert m["float_test_acc"] == pytest.approx(float_test)
    assert m["acc_drop"] == pytest.approx(m["float_test_acc"] - m["test_acc"])
    assert m["float_test_loss"] == pytest.approx(runs_of(workdir)[0].data.metrics["test_loss"])
    assert m["test_loss"] != m["float_test_loss"]  # the quantised model was the one evaluated


def test_transform_writes_a_loadable_quantised_model(workdir):
    run_job(FAST, workdir / "float")
    ckpt = runs_of(workdir)[0].data.tags["jscexp.checkpoint"]
    run_job([*FAST, "mode=transform", f"ckpt={ckpt}", "quantisation=int8"], workdir / "t")
    saved = torch.load(workdir / "t" / "quantised.pt", weights_only=True)
    assert saved["jscexp"]["quantisation"]["weight_width"] == 8 and "seq_blocks.2.weight" in saved["state_dict"]
    run = runs_of(workdir)[-1]
    assert run.data.tags["jscexp.mode"] == "transform" and run.data.tags["jscexp.quant_check"] == "passed"
    paths = {a.path for a in mlflow_client(workdir).list_artifacts(run.info.run_id, "quantised")}
    assert paths == {"quantised/quantised.pt"}


def test_bit_width_sweep_file_sets_frac_from_width():
    from conftest import compose_cfg

    cfg = compose_cfg(["+sweep=quant_bits", "quantisation.weight_width=3"])
    assert cfg.quantisation.linear.config.weight_width == 3
    assert cfg.quantisation.linear.config.weight_frac_width == 2 and cfg.quantisation.bias_frac_width == 2
    assert cfg.model.name == "jsc-toy" and cfg.experiment == "quant_bits"


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["qat", "ptq"])  # ptq without ckpt=: trains the float model first
@pytest.mark.parametrize("preset", ["int8", "int4", "minifloat8", "ternary", "binary"])
def test_every_preset_runs_and_passes_its_own_format_check(workdir, preset, mode):
    outcome = run_job([*FAST, f"mode={mode}", f"quantisation={preset}", "model=jsc-toy"], workdir / "out")
    (run,) = [r for r in runs_of(workdir) if r.data.tags["jscexp.mode"] == mode]  # ptq: and its float run
    assert outcome.status.value == "finished" and run.info.status == "FINISHED"
    assert run.data.tags["jscexp.quant_check"] == "passed" and run.data.metrics["quant_offgrid_values"] == 0
    assert run.data.metrics["quant_checked_values"] > 0
    assert run.data.metrics["avg_weight_bits"] == {"int8": 8, "int4": 4, "minifloat8": 8, "ternary": 2, "binary": 1}[preset]
    assert 0 < outcome.metrics["test_acc"] <= 1


def test_ptq_whose_float_training_is_pruned_ends_pruned_and_quantises_nothing(workdir):
    """A search prunes the float training of a PTQ trial: the trial is PRUNED with its epochs
    so far, never told a quantised accuracy of a half-trained model."""
    from conftest import compose_cfg
    from jscexp.app import run_mode
    from jscexp.sweep import Status
    class Run:
        run_id, tags, metrics = "r", {}, {}

        def set_tags(self, tags):
            self.tags.update(tags)

        def log_metrics(self, metrics, step=None):
            self.metrics.update(metrics)

    cfg = compose_cfg([*FAST, "mode=ptq", "quantisation=int8"])
    run = Run()
    outcome = run_mode(cfg, jsc_tiny(), None, None, None, run, workdir, lambda model: 1)
    assert outcome.status == Status.PRUNED and outcome.metrics == {} and outcome.run_id == "r"
    assert run.tags == {"jscexp.pruned": "true", "jscexp.pruned_at_epoch": 1} and run.metrics == {}


def test_a_ptq_width_sweep_trains_the_float_model_once_with_the_numbers_of_job_by_job(workdir):
    """One float run (mode=train), K quantised runs pointing at it; each quantised run's numbers
    are those of a PTQ job that trains its own float model (here: alone in its experiment)."""
    widths = (4, 8)
    quant = ["mode=ptq", "quantisation=int8", "quantisation.weight_frac_width=3"]
    result = run_cli(["-m", *FAST, *quant, "experiment=once", f"quantisation.weight_width={','.join(map(str, widths))}"],
                     workdir)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("not trained again") == len(widths) - 1
    runs = [r for r in runs_of(workdir, "once") if r.data.tags.get("jscexp.kind") != "sweep"]
    (float_run,) = [r for r in runs if r.data.tags["jscexp.mode"] == "train"]
    ptq = {r.data.params["quantisation.weight_width"]: r for r in runs if r.data.tags["jscexp.mode"] == "ptq"}
    assert sorted(ptq) == ["4", "8"] and "quantisation.weight_width" not in float_run.data.params
    assert {r.data.tags["jscexp.float_run_id"] for r in ptq.values()} == {float_run.info.run_id}
    assert all(r.info.status == "FINISHED" for r in runs)
    for w in widths:
        run_job([*FAST, *quant, f"experiment=apart{w}", f"quantisation.weight_width={w}"], workdir / f"apart{w}")
        alone = {r.data.tags["jscexp.mode"]: r for r in runs_of(workdir, f"apart{w}")}
        assert untimed(alone["train"].data.metrics) == untimed(float_run.data.metrics)
        assert alone["ptq"].data.metrics == ptq[str(w)].data.metrics, w  # accuracies, drop, bits: all equal


def untimed(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if "seconds" not in k and k != "train_samples_per_second"}


@pytest.mark.slow
def test_parallel_ptq_jobs_train_their_float_model_once(workdir):
    """Two joblib workers quantising the same float model at two widths: the lock under
    trainer.state_dir lets one train it; the other waits and quantises that run's checkpoint."""
    result = run_cli(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *FAST, "mode=ptq", "quantisation=int8",
                      "quantisation.weight_frac_width=3", "quantisation.weight_width=4,8"], workdir, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    runs = [r for r in runs_of(workdir) if r.data.tags.get("jscexp.kind") != "sweep"]
    (float_run,) = [r for r in runs if r.data.tags["jscexp.mode"] == "train"]
    ptq = [r for r in runs if r.data.tags["jscexp.mode"] == "ptq"]
    assert len(ptq) == 2 and {r.data.tags["jscexp.float_run_id"] for r in ptq} == {float_run.info.run_id}
    assert len({r.data.tags["jscexp.worker"] for r in ptq}) == 2  # they did run in two processes


def test_a_quantised_batchnorm_trains_on_its_folded_grids_and_tracks_statistics_as_batchnorm_does():
    """Training, BatchNormQ computes x·s + t with s and t folded from the batch's statistics and
    on their grids (what evaluating and the firmware compute), while its running statistics move
    exactly as nn.BatchNorm1d's do on the same batches."""
    from jscexp.quant.integer import IntegerQuantiser
    from jscexp.quant.layers import BatchNormQ

    torch.manual_seed(0)
    bn = nn.BatchNorm1d(4)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2.0)
        bn.bias.uniform_(-1.0, 1.0)
    q = BatchNormQ(bn, weight=IntegerQuantiser(width=6, frac_width=3), bias=IntegerQuantiser(width=6, frac_width=3))
    for _ in range(3):
        x = torch.randn(64, 4) * 3 + 1
        out = q.train()(x)
        bn.train()(x)
        mean, var = x.mean(0), x.var(0, unbiased=False)
        scale = bn.weight / torch.sqrt(var + bn.eps)
        s, t = IntegerQuantiser(width=6, frac_width=3)(scale), IntegerQuantiser(width=6, frac_width=3)(bn.bias - mean * scale)
        assert torch.allclose(out, x * s + t, atol=1e-6) and ((s * 8) == (s * 8).round()).all()
    assert torch.allclose(q.running_mean, bn.running_mean) and torch.allclose(q.running_var, bn.running_var)
    assert int(q.num_batches_tracked) == int(bn.num_batches_tracked) == 3
