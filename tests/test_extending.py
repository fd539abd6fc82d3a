"""Extending jscexp without editing it: an own model module and an own 8-feature, 3-class CSV,
outside the repo, through a sweep, a test of its checkpoint, QAT with costs, an hls4ml export
and a table; and every bad model or dataset conf is one line before training."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, run_cli, runs_of

EXAMPLES = ROOT / "examples"
QUICK = ["max_epochs=2", "trainer.progress_bar=false"]


@pytest.fixture
def outside(workdir):
    """A project of the user's own: their model module and conf dir beside their data, no jscexp file."""
    shutil.copy(EXAMPLES / "tiny_net.py", workdir / "tiny_net.py")
    shutil.copytree(EXAMPLES / "conf", workdir / "myconf")
    sys.path.insert(0, str(EXAMPLES))
    try:
        from blobs import make_csv
    finally:
        sys.path.remove(str(EXAMPLES))
    make_csv(str(workdir / "blobs.csv"), rows=3000)
    return workdir


def mine(*args: str, model: str = "tiny_net", analysis: str = "off") -> list[str]:
    return ["hydra.searchpath=[file://myconf]", f"model={model}", "dataset=blobs", f"analysis={analysis}", *QUICK, *args]


def test_an_own_model_and_dataset_sweep_test_qat_export_and_table(outside):
    sweep = run_cli(["-m", *mine("learning_rate=1e-3,1e-2", "+launcher=joblib", "trainer.vectorize=off")], outside)
    assert sweep.returncode == 0, sweep.stderr[-2000:]
    children = [r for r in runs_of(outside) if r.data.tags.get("mlflow.parentRunId")]
    assert len(children) == 2 and all(r.info.status == "FINISHED" for r in children)
    run = children[0]
    assert run.data.params["model.name"] == "tiny-net" and run.data.params["n_params"] == str(8 * 16 + 16 + 32 + 16 * 3 + 3)
    assert {"test_acc_low", "test_acc_mid", "test_acc_high"} <= set(run.data.metrics)
    assert run.data.tags["jscexp.dataset"] == "blobs" and run.data.tags["jscexp.synthetic"] == "false"

    ckpt = Path(run.data.tags["jscexp.checkpoint"])
    tested = run_cli(["hydra.searchpath=[file://myconf]", "mode=test", f"ckpt={ckpt}"], outside)
    assert tested.returncode == 0, tested.stderr[-2000:]
    assert "from the checkpoint: model=tiny-net, dataset=blobs" in tested.stdout
    assert f"test_acc={run.data.metrics['test_acc']:.4f}" in tested.stdout

    qat = run_cli(mine("mode=qat", "quantisation=int8", "hardware.export=true"), outside)
    assert qat.returncode == 0, qat.stderr[-2000:]
    assert "C simulation check passed: csim_exact=1.000000" in qat.stdout
    q = runs_of(outside)[-1]
    assert q.data.metrics["avg_weight_bits"] == 8 and q.data.metrics["ebops"] > 0

    table = subprocess.run([sys.executable, "-m", "jscexp.table", "--sweep", "all", "--filter",
                            "params.`mode` = 'train'", "--columns", "test_acc_low", "test_acc_mid", "test_acc_high"],
                           cwd=outside, capture_output=True, text=True, timeout=120)
    assert table.returncode == 0, table.stderr
    assert "test_acc_low" in table.stdout and "test_acc_high" in table.stdout and "blobs" in table.stdout


@pytest.mark.parametrize("args, message", [
    (["model._target_=tiny_net.Nowhere"], "model._target_=tiny_net.Nowhere cannot be imported"),
    (["+model.width=3"], "model.width is not a setting of tiny_net.TinyNet (it takes: hidden, depth)"),
    (["dataset.features=[f0,f1,nope]"], "lacks feature column(s) nope"),
    (["dataset.label=class"], "has no label column: add 'class'"),
    (["+dataset.colour=red"], "dataset.colour is not a setting of jscexp.data.tabular.Tabular"),
    (["dataset=tabular", "dataset.path=blobs.csv"], "dataset.features is required"),
    (["dataset.classes=['a?b','a!b',c]"], "classes 'a?b' and 'a!b' would log one metric, test_acc_a_b: rename one"),
    (["intrain._target_=nowhere.Kind"], "intrain._target_=nowhere.Kind cannot be imported"),
    (["intrain._target_=tiny_net.TinyNet"], "intrain._target_=tiny_net.TinyNet is not a jscexp.intrain.Kind subclass"),
    (["mode=qat", "quantisation=int8", "+hardware.estimator.depth=2"],
     "hardware.estimator.depth is not a setting of jscexp.quant.estimators.Da4ml"),
    (["mode=qat", "quantisation=int8", "+quantisation.linear.config.weight_name=nowhere.Q"],
     "quantiser=nowhere.Q cannot be imported"),
])
def test_a_bad_model_or_dataset_conf_is_one_line_and_no_run(outside, args, message):
    result = run_cli(mine(*args), outside)
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert runs_of(outside) == []


def test_a_custom_model_without_a_target_says_so(outside):
    result = run_cli(mine(model="custom"), outside)
    assert result.returncode == 2 and "model._target_" in result.stderr, result.stderr[-2000:]


UNTRACEABLE = '''
import torch
from torch import nn

class Branchy(nn.Module):
    def __init__(self, *, num_features, num_classes):
        super().__init__()
        self.a, self.b = nn.Linear(num_features, num_classes), nn.Linear(num_features, num_classes)

    def forward(self, x):
        return self.a(x) if x.sum() > 0 else self.b(x)
'''


def test_a_model_fx_cannot_trace_is_one_line_before_training(outside):
    (outside / "branchy.py").write_text(UNTRACEABLE)
    target = "model._target_=branchy.Branchy"
    plain = run_cli(["-m", *mine(target, "learning_rate=1e-2,2e-2", model="custom")], outside)  # nothing needs its graph
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert plain.stdout.count("2 job(s) train one by one, not as one stacked model: a model that is not a") == 1
    for args, why in ((mine(target, model="custom", analysis="default"), "the analysis"),
                      (mine(target, "mode=qat", "quantisation=int8", model="custom"), "quantisation")):
        result = run_cli(args, outside)
        assert result.returncode == 2, result.stderr[-2000:]
        assert "torch.fx cannot trace model Branchy" in result.stderr and why in result.stderr
        assert "epoch" not in result.stdout  # said before training, not after


def test_an_own_power_of_two_quantiser_stacks_costs_and_exports(outside):
    shutil.copy(EXAMPLES / "pow2.py", outside / "pow2.py")
    sys.path.insert(0, str(outside))
    try:
        import torch
        from pow2 import PowerOfTwo

        q = PowerOfTwo(max_exp=0, min_exp=-6)  # by hand: 0.3 → 2^-2, -0.7 → -2^-1, 0.001 → 0, 5 → 2^0
        assert q(torch.tensor([0.3, -0.7, 0.001, 5.0])).tolist() == [0.25, -0.5, 0.0, 1.0]
        assert q.bits == 4 and (q.fixed().width, q.fixed().frac_width) == (8, 6)
    finally:
        sys.path.remove(str(outside))
    # its own option differs between the trials, yet they stack: a class without trained state
    # quantises each trial's slice with that trial's quantiser (Quantiser.varies_in_stack)
    sweep = run_cli(["-m", *mine("mode=qat", "quantisation=pow2", "quantisation.linear.config.weight_min_exp=-6,-3")],
                    outside)
    assert sweep.returncode == 0, sweep.stderr[-2000:]
    trials = [r for r in runs_of(outside) if r.data.tags.get("mlflow.parentRunId")]
    assert len(trials) == 2 and all(r.data.tags["jscexp.quant_check"] == "passed" for r in trials)
    assert len({r.data.tags.get("jscexp.vector_group") for r in trials} - {None}) == 1  # one stacked model
    assert {r.data.params["quantisation.linear.config.weight_min_exp"] for r in trials} == {"-6", "-3"}
    assert all(r.data.metrics["avg_weight_bits"] < 8 and r.data.metrics["ebops"] > 0 for r in trials)
    exported = run_cli(mine("mode=qat", "quantisation=pow2", "hardware.export=true"), outside)
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert "C simulation check passed: csim_exact=1.000000" in exported.stdout


def test_an_own_cost_estimator_reaches_the_run_the_table_and_the_search(outside):
    shutil.copy(EXAMPLES / "csd_adders.py", outside / "csd_adders.py")
    sys.path.insert(0, str(outside))
    try:
        import torch
        from csd_adders import adders, csd_digits

        # by hand: 3 = 4 − 1, 5 = 4 + 1, 7 = 8 − 1 (two digits, one adder each), 0 nothing;
        # row 1 sums two products (one adder), row 0 one (none): 3 + 1 = 4
        assert [csd_digits(n) for n in (0, 1, 3, 5, 7, 11, -7)] == [0, 1, 2, 2, 2, 3, 2]
        assert adders(torch.tensor([[3.0, 0.0], [5.0, 7.0]])) == 4
    finally:
        sys.path.remove(str(outside))
    qat = run_cli(mine("mode=qat", "quantisation=int8", "hardware/estimator=csd", "experiment=csd"), outside)
    assert qat.returncode == 0, qat.stderr[-2000:]
    (run,) = runs_of(outside, "csd")
    assert run.data.metrics["csd_adders"] > 0 and "est_lut" not in run.data.metrics
    assert f"csd_adders={run.data.metrics['csd_adders']:.4g}" in qat.stdout
    table = subprocess.run([sys.executable, "-m", "jscexp.table", "-e", "csd"], cwd=outside, capture_output=True,
                           text=True, timeout=120)
    assert table.returncode == 0 and "CSD adders" in table.stdout, table.stderr
    search = ["-m", *mine("mode=qat", "quantisation=int8", "hardware/estimator=csd", "sweeper=optuna",
                          "hydra.sweeper.n_trials=1", "hydra.sweeper.objectives=[best_val_acc,csd_adders]",
                          "hydra.sweeper.direction=[maximize,minimize]", "learning_rate=interval(1e-3,1e-2)",
                          "experiment=csd_search")]
    searched = run_cli(search, outside)
    assert searched.returncode == 0, searched.stderr[-2000:]
    assert [r.data.metrics["csd_adders"] > 0 for r in runs_of(outside, "csd_search")
            if r.data.tags.get("mlflow.parentRunId")] == [True]


def test_an_estimate_asked_for_without_an_estimator_is_one_line(outside):
    result = run_cli(mine("mode=qat", "quantisation=int8", "hardware/estimator=none", "hardware.estimate=true"), outside)
    assert result.returncode == 2 and "hardware/estimator=none makes none" in result.stderr, result.stderr[-2000:]


def test_an_own_in_training_search_halves_a_stacked_group_at_its_rungs(outside):
    shutil.copy(EXAMPLES / "rungs.py", outside / "rungs.py")
    result = run_cli(["-m", *mine("intrain=rungs", "max_epochs=4", "learning_rate=1e-4,1e-3,1e-2,1e-1",
                                  "experiment=rungs")], outside)
    assert result.returncode == 0, result.stderr[-2000:]
    from conftest import mlflow_client

    client = mlflow_client(outside)
    runs = [r for r in runs_of(outside, "rungs") if r.data.tags.get("mlflow.parentRunId")]
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)
    assert len({r.data.tags.get("jscexp.vector_group") for r in runs}) == 1  # one stacked group
    stopped = {r.info.run_id: r.data.tags.get("jscexp.stopped_early_at_epoch") for r in runs}
    assert sorted(stopped.values(), key=str) == ["0", "0", "1", None]  # rungs at 1 and 2 epochs: 4 → 2 → 1

    def val_acc(run_id: str, epoch: int) -> float:
        return next(m.value for m in client.get_metric_history(run_id, "val_acc") if m.step == epoch)

    # at each rung the slices that stopped were those with the lower validation accuracy then
    first = sorted(stopped, key=lambda r: val_acc(r, 0))
    assert {stopped[r] for r in first[:2]} == {"0"}
    second = sorted((r for r in stopped if stopped[r] != "0"), key=lambda r: val_acc(r, 1))
    assert stopped[second[0]] == "1" and stopped[second[1]] is None
    assert len(client.get_metric_history(second[1], "val_acc")) == 4


@pytest.mark.parametrize("args, message", [
    (["intrain=pbt"], "intrain=pbt needs pbt.space"),
    (["intrain=none", "+pbt.space.learning_rate={low:1e-4,high:1e-1,log:true}"], "intrain=none trains no population"),
    (["intrain=halving"], "intrain=halving refills the slices an Optuna search's pruner frees"),
])
def test_an_in_training_search_that_cannot_apply_is_one_line_before_any_run(outside, args, message):
    result = run_cli(["-m", *mine(*args, "learning_rate=1e-3,1e-2", "experiment=bad")], outside)
    assert message in result.stderr, result.stderr[-2000:]
    assert result.returncode == 2 and runs_of(outside, "bad") == []  # said before the first trial


SIGMOID_NET = '''
from torch import nn

class SigmoidNet(nn.Module):
    def __init__(self, *, num_features, num_classes):
        super().__init__()
        self.a, self.act, self.b = nn.Linear(num_features, 8), nn.Sigmoid(), nn.Linear(8, num_classes)

    def forward(self, x):
        return self.b(self.act(self.a(x)))
'''


def test_an_export_of_a_layer_hls4ml_cannot_convert_is_one_line_before_training(outside):
    (outside / "sigmoid_net.py").write_text(SIGMOID_NET)
    result = run_cli(mine("model._target_=sigmoid_net.SigmoidNet", "mode=qat", "quantisation=int8",
                          "hardware.export=true", model="custom"), outside)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "act: hls4ml export handles Linear, BatchNorm1d and ReLU, not Sigmoid" in result.stderr
    assert "epoch" not in result.stdout and runs_of(outside) == []
