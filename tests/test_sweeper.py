"""The jscexp_optuna Hydra sweeper on the tiny stand-in: syntax, samplers and pruners, resume,
pruning, dedup, multi-objective, MLflow parent runs, Optuna's own CLI (failures:
tests/test_search_faults.py)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import children, run_cli, runs_of, states, study, sweep


def test_each_syntax_maps_to_the_right_distribution():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from jscexp.search.space import parse

    space, fixed = parse(
        {"a": "choice(1,2,3)", "b": "range(1,10,2)", "c": "interval(0.1,1)", "d": "int(interval(1,10))",
         "e": "tag(log,interval(1e-5,1))", "f": "jsc-tiny,jsc-toy", "g": "range(0.1,0.5,0.1)", "h": "range(0,10)"},
        ["h=range(0,4)", "max_epochs=3"],
    )
    assert space["a"] == CategoricalDistribution([1, 2, 3])
    assert space["b"] == IntDistribution(1, 9, step=2)  # Hydra's stop is exclusive
    assert space["c"] == FloatDistribution(0.1, 1.0)
    assert space["d"] == IntDistribution(1, 10)
    assert space["e"] == FloatDistribution(1e-5, 1.0, log=True)
    assert space["f"] == CategoricalDistribution(["jsc-tiny", "jsc-toy"])
    assert space["g"] == FloatDistribution(0.1, 0.4, step=0.1)  # ordered, the stop excluded as Hydra does
    assert space["h"] == IntDistribution(0, 3)  # the command line wins over params
    assert fixed == ["max_epochs=3"]
    quoted, _ = parse(None, ["+note='a b','c'", "x=choice(\"it's\",true,1.5)"])
    assert quoted == {"+note": CategoricalDistribution(["a b", "c"]), "x": CategoricalDistribution(["it's", True, 1.5])}

@pytest.mark.parametrize("argument, message", [
    ("x=choice([1,2],3)", "x: choice [1, 2] is not a number, string, boolean or null"),
    ("x=tag(log,range(1,10,2))", "x: a log range cannot have a step"),
    ("x=interval(2,1)", "x: interval(2.0, 1.0) is empty"),
    ("x=range(5,1)", "range(5, 1, 1) is empty"),
])
def test_a_search_space_optuna_cannot_hold_is_refused_in_one_line(argument, message):
    from jscexp.errors import UserError
    from jscexp.search.space import parse

    with pytest.raises(UserError, match=re.escape(message)):
        parse(None, [argument])

def test_quoted_values_reach_their_trials_verbatim(workdir):
    sweep(workdir, "hydra.sweeper.study_name=quoted", "hydra/sweeper/sampler=grid", "hydra.sweeper.n_trials=2",
          "+note='a b','c'")
    assert [t.state.name for t in study(workdir, "quoted").trials] == ["COMPLETE", "COMPLETE"]
    assert sorted(r.data.params["note"] for r in children(workdir)) == ["a b", "c"]

@pytest.mark.slow
def test_a_tpe_search_resumes_and_counts_the_study_total(workdir):
    args = ["hydra.sweeper.n_trials=6", "hydra.sweeper.seed=1", "hydra.sweeper.study_name=tpe",
            "learning_rate=tag(log,interval(1e-4,1e-1))", "batch_size=choice(32,64,128)"]
    sweep(workdir, *args)
    st = study(workdir, "tpe")
    assert states(st) == ["COMPLETE"] * 6
    runs = children(workdir)
    parents = [r for r in runs_of(workdir, "search") if r.data.tags.get("jscexp.kind") == "sweep"]
    assert len(runs) == 6 and len(parents) == 1
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parents[0].info.run_id}
    assert parents[0].data.tags["jscexp.optuna_study"] == "tpe"
    by_trial = {int(r.data.tags["jscexp.optuna_trial"]): r for r in runs}
    for t in st.trials:
        assert t.value == pytest.approx(by_trial[t.number].data.metrics["best_val_acc"])
        assert float(by_trial[t.number].data.params["learning_rate"]) == pytest.approx(t.params["learning_rate"])
        assert t.user_attrs["mlflow_run_id"] == by_trial[t.number].info.run_id  # and the run names its trial
    assert st.metric_names == ["best_val_acc"]  # optuna-dashboard's axis

    sweep(workdir, *args)  # the same command again: nothing left to do
    assert len(study(workdir, "tpe").trials) == 6 and len(children(workdir)) == 6
    sweep(workdir, *args[:-3], "hydra.sweeper.n_trials=8", *args[-3:])
    assert states(study(workdir, "tpe")) == ["COMPLETE"] * 8 and len(children(workdir)) == 8

    optuna_cli = str(Path(sys.executable).with_name("optuna"))
    out = subprocess.run([optuna_cli, "trials", "--study-name", "tpe", "--storage",
                          str(workdir / "optuna-journal.log"), "--storage-class", "JournalFileBackend", "-f", "json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert [t["number"] for t in json.loads(out.stdout)] == list(range(8))

@pytest.mark.slow
def test_median_pruner_stops_a_bad_trial_early(workdir):
    common = ["hydra.sweeper.study_name=prune", "hydra/sweeper/pruner=median", "hydra/sweeper/sampler=random",
              "hydra.sweeper.pruner.n_warmup_steps=1", "hydra.sweeper.pruner.n_startup_trials=2", "max_epochs=4"]
    sweep(workdir, *common, "hydra.sweeper.n_trials=2", "learning_rate=interval(0.005,0.02)")
    # the same study, now asked for an obviously bad learning rate
    sweep(workdir, *common, "hydra.sweeper.n_trials=3", "learning_rate=interval(1e-9,2e-9)")
    st = study(workdir, "prune")
    assert states(st) == ["COMPLETE", "COMPLETE", "PRUNED"]
    bad = next(r for r in children(workdir) if r.data.tags["jscexp.optuna_trial"] == "2")
    assert bad.info.status == "FINISHED" and bad.data.tags["jscexp.pruned"] == "true"
    from conftest import mlflow_client

    epochs = mlflow_client(workdir).get_metric_history(bad.info.run_id, "val_acc")
    assert len(epochs) < 4

def test_multi_objective_gives_a_pareto_front(workdir):
    result = sweep(workdir, "hydra/sweeper/sampler=nsgaii",  # the default study name
                   "hydra.sweeper.seed=0", "hydra.sweeper.n_trials=4",
                   "hydra.sweeper.objectives=[best_val_acc,avg_weight_bits]",
                   "hydra.sweeper.direction=[maximize,minimize]", "mode=qat", "quantisation=int8",
                   "quantisation.weight_frac_width=1", "quantisation.bias_frac_width=1",
                   "quantisation.weight_width=choice(2,4,8)", "quantisation.bias_width=choice(2,8)")
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    (name,) = optuna.get_all_study_names(JournalStorage(JournalFileBackend(str(workdir / "optuna-journal.log"))))
    assert re.fullmatch(r"search-b\+w-[0-9a-f]{6}", name)  # the experiment, the searched knobs, a hash
    st = study(workdir, name)
    assert st.metric_names == ["best_val_acc", "avg_weight_bits"]
    assert len(st.directions) == 2 and states(st) == ["COMPLETE"] * 4
    front = {t.number for t in st.best_trials}
    for t in st.trials:
        dominated = any(o.values[0] >= t.values[0] and o.values[1] <= t.values[1] and o.values != t.values
                        for o in st.trials)
        assert (t.number in front) == (not dominated)
    results = next(workdir.glob("multirun/*/*/optimization_results.yaml")).read_text()
    assert "solutions:" in results and "avg_weight_bits" in results
    assert "Optuna results" in result.stdout

def test_bad_search_settings_are_one_line(workdir):
    result = sweep(workdir, "+hydra.sweeper.sampler.n_startup=3", "learning_rate=interval(1e-3,1e-2)", check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        "error: TPESampler has no option n_startup: it takes consider_prior, ")
    result = sweep(workdir, "hydra/sweeper/pruner=successive_halving", "hydra.sweeper.pruner.reduction_factor=1",
                   "learning_rate=interval(1e-3,1e-2)", check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        "error: pruner SuccessiveHalvingPruner: The value of `reduction_factor` is 1, but must be")
    unreachable = sweep(workdir, "hydra.sweeper.storage=postgresql://bob:hunter2@127.0.0.1:1/optuna",
                        "learning_rate=interval(1e-3,1e-2)", check=False)
    assert unreachable.returncode == 2 and "hunter2" not in unreachable.stdout + unreachable.stderr
    assert unreachable.stderr.strip().splitlines()[-1].startswith(
        "error: cannot open Optuna storage postgresql://bob:***@127.0.0.1:1/optuna")
    sweep(workdir, "hydra.sweeper.study_name=space", "hydra.sweeper.n_trials=1", "batch_size=choice(64)")
    changed = sweep(workdir, "hydra.sweeper.study_name=space", "hydra.sweeper.n_trials=2", "batch_size=choice(32)",
                    check=False)
    assert changed.returncode == 2
    assert changed.stderr.strip().splitlines()[-1].startswith("error: study 'space' was made for another search space")

def test_plugin_is_discovered_from_outside_the_repo(workdir):
    out = run_cli(["--info", "plugins"], workdir)
    assert out.returncode == 0 and "JscexpOptunaSweeper" in out.stdout

@pytest.mark.parametrize("name, objectives", [("optuna_lr_bs", ["best_val_acc"]),
                                              ("optuna_bits_pareto", ["best_val_acc", "avg_weight_bits"])])
def test_search_sweep_files_select_our_sweeper(name, objectives):
    from hydra import compose, initialize_config_dir

    from conftest import CONF
    from jscexp.search.space import parse

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"+sweep={name}"], return_hydra_config=True)
    assert cfg.hydra.sweeper._target_ == "hydra_plugins.jscexp_sweeper.sweeper.JscexpOptunaSweeper"
    assert list(cfg.hydra.sweeper.objectives) == objectives and cfg.experiment == name
    space, _ = parse(dict(cfg.hydra.sweeper.params), [])
    assert len(space) == 2

@pytest.mark.slow
@pytest.mark.parametrize("sampler, pruner", [("cmaes", "hyperband"), ("qmc", "successive_halving")])
def test_every_sampler_and_pruner_runs_a_search(workdir, sampler, pruner):
    sweep(workdir, "hydra.sweeper.study_name=s", f"hydra/sweeper/sampler={sampler}", f"hydra/sweeper/pruner={pruner}",
          "hydra.sweeper.n_trials=3", "hydra.sweeper.seed=0", "max_epochs=2", "learning_rate=interval(1e-3,1e-2)")
    trials = study(workdir, "s").trials
    assert len(trials) == 3 and {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"}
    assert len({t.params["learning_rate"] for t in trials}) == 3

@pytest.mark.slow
def test_a_search_on_joblibs_workers_records_each_trial_once(workdir):
    """+launcher=joblib: the trials run in worker processes, two at a time, each one Optuna trial
    and one MLflow run, and the sweep ends its idle workers once every trial has returned."""
    result = sweep(workdir, "hydra.sweeper.study_name=j", "+launcher=joblib", "hydra.launcher.n_jobs=2",
                   "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2", "hydra.sweeper.seed=0",
                   "learning_rate=interval(1e-3,1e-1)")
    assert "leaked" not in result.stderr, result.stderr[-2000:]
    assert states(study(workdir, "j")) == ["COMPLETE"] * 4
    runs = children(workdir)
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}
    assert sorted(r.data.params["learning_rate"] for r in runs) == sorted(
        repr(t.params["learning_rate"]) for t in study(workdir, "j").trials)


def test_sampler_and_pruner_configs_expose_every_optuna_keyword():
    """Each conf/hydra/sweeper/{sampler,pruner} file names Optuna's class and every keyword it
    takes (GridSampler's space comes from the search)."""
    import inspect

    from hydra.utils import get_class
    from omegaconf import OmegaConf

    from conftest import CONF

    files = sorted((CONF / "hydra" / "sweeper").glob("*/*.yaml"))
    assert {f.stem for f in files} >= {"tpe", "random", "grid", "cmaes", "qmc", "nsgaii", "none", "median",
                                       "hyperband", "successive_halving"}
    for f in files:
        cfg = OmegaConf.to_container(OmegaConf.load(f))
        params = inspect.signature(get_class(cfg.pop("_target_"))).parameters
        assert set(cfg) == set(params) - {"search_space"}, f.name
        defaults = {k: p.default for k, p in params.items()}
        changed = {k for k, v in cfg.items() if v != defaults[k]}
        assert changed <= ({"n_startup_trials", "n_warmup_steps"} if f.stem == "median" else set()), f.name
