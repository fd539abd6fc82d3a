"""Graph report, statistics profile, node-meta table, their artifacts, and frac_width: auto."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import FAST, mlflow_client, run_cli, run_job, runs_of
from jscexp.analysis import graph_report, node_meta_table, profile
from jscexp.analysis.profile import batches_of
from jscexp.analysis.stats import RangeMinMax, RangeQuantile, VariancePrecise
from jscexp.errors import UserError
from jscexp.models.jsc import jsc_tiny, jsc_toy

LAB_SPEC = {
    "by": "type",
    "target_weight_nodes": ["linear"],
    "target_activation_nodes": ["relu"],
    "weight_statistics": {"variance_precise": {"device": "cpu", "dims": "all"}},
    "activation_statistics": {"range_quantile": {"device": "cpu", "dims": "all", "quantile": 0.97}},
    "num_samples": 32,
}


def test_op_counts_and_layer_types():
    tiny = graph_report(jsc_tiny())
    assert tiny.op_counts == {"placeholder": 1, "get_attr": 0, "call_function": 0, "call_method": 0,
                              "call_module": 4, "output": 1}
    assert tiny.layer_types == [
        "BatchNorm1d(16, eps=1e-05, momentum=0.1, affine=True, bias=True, track_running_stats=True)",
        "ReLU()", "Linear(in_features=16, out_features=5, bias=True)", "ReLU()"]
    toy = graph_report(jsc_toy())
    assert toy.op_counts["call_module"] == 11 and toy.op_counts["placeholder"] == 1 and toy.op_counts["output"] == 1
    assert [t.split("(")[0] for t in toy.layer_types].count("Linear") == 3
    text = tiny.text()
    assert "%seq_blocks_2 : [num_users=1] = call_module[target=seq_blocks.2]" in text
    assert "Network overview:\n{'placeholder': 1, 'get_attr': 0" in text and "Layer types:\n[BatchNorm1d(16" in text


def test_weight_statistics_equal_torch():
    model = jsc_toy()
    meta = profile(model, {**LAB_SPEC, "weight_statistics": {"variance_precise": {}, "range_min_max": {}}})
    w = model.seq_blocks[5].weight.detach().double()
    got = meta["seq_blocks_5"]["args"]["weight"]
    assert got["variance_precise"]["mean"] == pytest.approx(w.mean().item(), abs=1e-12)
    assert got["variance_precise"]["variance"] == pytest.approx(w.var(unbiased=False).item(), rel=1e-10)
    assert got["variance_precise"]["count"] == 64
    assert got["range_min_max"] == {"min": w.min().item(), "max": w.max().item(),
                                    "range": w.max().item() - w.min().item(), "count": 64}
    assert meta["seq_blocks_0"]["args"] == {}  # BatchNorm is not a target


def test_activation_quantiles_equal_torch_quantile_on_the_same_inputs():
    torch.manual_seed(0)
    model = jsc_toy().eval()
    x = torch.randn(100, 16) * 2 + 1
    meta = profile(model, LAB_SPEC, batches_of(x, 8))
    seen = x[:32]  # num_samples rows
    relu_in = model.seq_blocks[0](seen)
    expected = torch.quantile(relu_in.flatten(), torch.tensor([0.03, 0.97]))
    got = meta["seq_blocks_1"]["args"]["data_in_0"]["range_quantile"]
    assert [got["min"], got["max"]] == pytest.approx(expected.tolist(), abs=1e-6)
    assert got["count"] == 32 * 16
    assert meta["seq_blocks_4"]["args"]["data_in_0"]["range_quantile"]["count"] == 32 * 8


def test_streaming_and_one_shot_agree():
    x = torch.randn(10_000, dtype=torch.float64) * 3 + 2
    for cls in (VariancePrecise, RangeMinMax, RangeQuantile):
        one, many = cls(), cls()
        one.update(x)
        for chunk in x.split(333):
            many.update(chunk)
        a, b = one.finish(), many.finish()
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-12, abs=1e-12), (cls.name, k)
    model = jsc_toy()
    data = torch.randn(300, 16)
    spec = {**LAB_SPEC, "num_samples": 300,
            "activation_statistics": {"range_n_sigma": {"n_sigma": 3}, "variance_precise": {}}}
    streamed, at_once = profile(model, spec, batches_of(data, 7)), profile(model, spec, [data])
    for node in ("seq_blocks_1", "seq_blocks_4", "seq_blocks_7", "seq_blocks_10"):
        for stat, fields in at_once[node]["args"]["data_in_0"].items():
            for field, value in fields.items():
                assert streamed[node]["args"]["data_in_0"][stat][field] == pytest.approx(value, rel=1e-6, abs=1e-9)


def test_node_meta_table_is_a_wrapped_grid_with_one_row_per_node():
    meta = profile(jsc_tiny(), LAB_SPEC, [torch.randn(32, 16)])
    table = node_meta_table(meta, width=40)
    lines = table.splitlines()
    assert [c.strip() for c in lines[1].split("|")[1:-1]] == ["Node name", "Fx node op", "Kind", "Op", "Statistics"]
    assert all(len(line) == len(lines[0]) for line in lines)  # a grid
    assert max(len(cell) for line in lines[2:] for cell in line.split("|")[5:6]) <= 40 + 2  # wrapped
    for node in ("x", "seq_blocks_0", "seq_blocks_1", "seq_blocks_2", "seq_blocks_3", "output"):
        assert f"| {node} " in table
    assert "weight.variance_precise: mean=" in table


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"by": "name", "target_weight_nodes": ["seq_blocks_2"], "target_activation_nodes": ["seq_blocks_9"]},
         "profile target_activation_nodes: no node seq_blocks_9 in this model; choose from seq_blocks_0"),
        ({"target_weight_nodes": ["conv2d"]}, "no op conv2d in this model; choose from batch_norm1d, linear, relu"),
        ({"weight_statistics": {"median": {}}}, "unknown statistic 'median': choose one of variance_precise"),
        ({"activation_statistics": {"range_quantile": {"quantile": 3}}}, "quantile must be in [0.5, 1], got 3"),
        ({"by": "size"}, "profile.by must be 'type' or 'name', got 'size'"),
    ],
)
def test_bad_profile_specs_get_one_clear_line(spec, message):
    with pytest.raises(UserError) as err:
        profile(jsc_tiny(), {**LAB_SPEC, **spec})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_analyse_mode_prints_all_three_and_bad_names_exit_2(workdir):
    result = run_cli(["mode=analyse", "model=jsc-toy", *FAST], workdir)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Network overview:" in result.stdout and "Layer types:" in result.stdout
    assert "| seq_blocks_4 " in result.stdout and "data_in_0.range_quantile" in result.stdout
    bad = run_cli(["mode=analyse", "analysis.by=name", "analysis.target_weight_nodes=[seq_block_2]", *FAST], workdir)
    assert bad.returncode == 2 and bad.stderr.startswith("error: profile target_weight_nodes: no node seq_block_2")
    assert len(bad.stderr.strip().splitlines()) == 1


def test_every_training_run_keeps_its_analysis_in_mlflow(workdir):
    run_job(FAST, workdir / "a")
    run_job([*FAST, "analysis=off"], workdir / "b")
    with_analysis, without = runs_of(workdir)
    client = mlflow_client(workdir)
    paths = {a.path for a in client.list_artifacts(with_analysis.info.run_id, "analysis")}
    assert paths == {"analysis/graph.txt", "analysis/node_meta.txt", "analysis/profile.json", "analysis/profile.csv"}
    profile_json = json.loads(Path(client.download_artifacts(with_analysis.info.run_id, "analysis/profile.json",
                                                             str(workdir))).read_text())
    assert profile_json["seq_blocks_2"]["args"]["weight"]["variance_precise"]["count"] == 80
    assert profile_json["seq_blocks_1"]["args"]["data_in_0"]["range_quantile"]["count"] == 256 * 16
    assert client.list_artifacts(without.info.run_id, "analysis") == []


def test_frac_width_auto_comes_from_the_profiled_ranges():
    from jscexp.quant.transform import auto_frac, quantise

    assert auto_frac(8, 0.9, True) == 7 and auto_frac(8, 1.0, True) == 6 and auto_frac(8, 5.0, True) == 4
    assert auto_frac(8, 5.0, False) == 5 and auto_frac(4, 100.0, True) == 0 and auto_frac(8, 0.0, True) == 7
    torch.manual_seed(0)
    model = jsc_tiny()
    cfg = {"by": "type", "default": {"config": {"name": None}},
           "linear": {"config": {"name": "integer", "data_in_width": 8, "data_in_frac_width": "auto",
                                 "weight_width": 8, "weight_frac_width": "auto"}}}
    calibration = torch.randn(64, 16) * 10
    gm, _ = quantise(model, cfg, calibration)
    layer = gm.get_submodule("seq_blocks.2")
    relu_in = model.seq_blocks[1](model.eval().seq_blocks[0](calibration)).abs().max().item()
    assert layer.x_quantiser.frac_width == auto_frac(8, relu_in, True)
    assert layer.w_quantiser.frac_width == auto_frac(8, model.seq_blocks[2].weight.abs().max().item(), True)
    with pytest.raises(UserError, match="frac_width auto needs a profiled range"):
        quantise(model, cfg, None)
