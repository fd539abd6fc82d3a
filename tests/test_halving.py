"""Successive halving inside a stacked group (#20): a slice the pruner freed takes a new trial,
freshly initialised, and the study hears each trial's own result."""

from __future__ import annotations

from itertools import islice

import pytest
import torch

from conftest import SMALL, cli_env, compose_cfg, mlflow_client, run_cli, runs_of, stacked_engine, stacked_steps


def test_a_refilled_slice_starts_fresh_and_steps_as_that_trial_alone_would(tmp_path):
    """After restart_trial, the slice holds the new model's initial weights and statistics,
    no optimizer state and its own schedule; its next steps equal those of a group in which
    that trial had been there from the start."""
    from jscexp import app
    from jscexp.config import plain
    from jscexp.data import load_splits
    from jscexp.group import dropout_generator
    from jscexp.train import fit

    group = stacked_engine(tmp_path, [0.05, 0.02, 0.01])
    data = list(islice(iter(fit.batches(group.device, load_splits(compose_cfg(SMALL).dataset), "train", 64)), 6))
    group.start_epoch(0)
    stacked_steps(group, data[:4])  # momentum buffers, BatchNorm statistics and the schedule all moved on
    cfg = compose_cfg([*SMALL, "learning_rate=0.03", "seed=7"])
    model, rng = app.initial_model(cfg)
    group.restart_trial(1, model, dropout_generator(group.device, 7, rng["cpu"]), plain(cfg.optimizer), cfg.scheduler)
    assert group.model.state_dict(1).keys() == model.state_dict().keys()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in group.model.state_dict(1).items())  # fresh init
    assert all(not buf[1].any() for st in group.optimizer.state.values() for buf in st.values())  # no momentum
    fresh = stacked_engine(tmp_path, [0.03, 0.05], [["seed=7"], []])  # that trial from the start, in slice 0
    group.start_epoch(1)  # the group's epoch 1 is the refilled trial's epoch 0
    fresh.start_epoch(0)
    assert group.optimizer.lr[1] == fresh.optimizer.lr[0] == 0.03
    stacked_steps(group, data[4:])
    stacked_steps(fresh, data[4:])
    assert torch.equal(group.model.flat[1], fresh.model.flat[0])
    assert all(torch.equal(buf[1], fresh.optimizer.state[name][key][0])
               for name, st in group.optimizer.state.items() for key, buf in st.items())
    assert torch.equal(group.model.generators[1].get_state(), fresh.model.generators[0].get_state())


def test_a_search_group_refills_pruned_slices_and_the_study_hears_each_trials_own_result(workdir):
    """8 trials, asked 4 at a time, aggressive successive halving: the first group's pruned
    slices take the rest of the trials, so one group job runs all 8; every trial ends COMPLETE
    or PRUNED with its own run's numbers."""
    import optuna

    result = run_cli(["-m", "sweeper=optuna", "hydra/sweeper/sampler=random", "hydra/sweeper/pruner=successive_halving",
                      "hydra.sweeper.pruner.min_resource=1", "hydra.sweeper.pruner.reduction_factor=2",
                      "hydra.sweeper.seed=0", "hydra.sweeper.n_trials=8", "hydra.sweeper.n_jobs=4",
                      "learning_rate=tag(log,interval(1e-4,1.0))", "dataset=jsc_synth", "dataset.n_rows=6000",
                      "max_epochs=4", "trainer.progress_bar=false", "data_seed=0", "experiment=halving"], workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "takes a pruned trial's slice" in result.stdout
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(workdir / "optuna-journal.log")))
    (summary,) = optuna.get_all_study_summaries(storage)
    trials = optuna.load_study(study_name=summary.study_name, storage=storage).trials
    states = {t.state.name for t in trials}
    assert len(trials) == 8 and states <= {"COMPLETE", "PRUNED"} and "PRUNED" in states, [t.state for t in trials]
    runs = {r.info.run_id: r for r in runs_of(workdir, "halving") if r.data.tags.get("jscexp.kind") != "sweep"}
    assert len(runs) == 8 and len({r.data.tags["jscexp.vector_group"] for r in runs.values()}) == 1  # one group job
    refilled = [r for r in runs.values() if "jscexp.halving.replaced" in r.data.tags]
    assert refilled and all(r.data.tags["jscexp.halving.replaced"] in runs for r in refilled)
    client = mlflow_client(workdir)
    for t in trials:  # each trial's own run, parameters and result
        run = runs[t.user_attrs["mlflow_run_id"]]
        assert float(run.data.params["learning_rate"]) == t.params["learning_rate"]
        assert run.data.tags["jscexp.optuna_trial"] == str(t.number)
        epochs = [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")]
        assert epochs == list(range(len(epochs)))  # a refilled trial counts its own epochs from 0
        if t.state.name == "COMPLETE":
            assert t.value == run.data.metrics["best_val_acc"] and run.info.status == "FINISHED" and len(epochs) == 4
        else:
            assert run.data.tags["jscexp.pruned"] == "true" and len(epochs) < 4
            assert sorted(t.intermediate_values) == epochs


@pytest.mark.slow
def test_an_interrupted_refilling_group_leaves_no_trial_or_run_running(workdir):
    """SIGTERM once a slice was refilled: the trials the group job asked for itself are told
    FAIL (interrupted) and enqueued again, like the sweeper's own; the sweeper's trial whose
    slice was refilled stays PRUNED; every run ends KILLED or FINISHED; the exit is 130."""
    import signal
    import subprocess
    import sys

    import optuna

    env = cli_env()
    proc = subprocess.Popen(
        [sys.executable, "-m", "jscexp", "-m", "sweeper=optuna", "hydra/sweeper/sampler=random",
         "hydra/sweeper/pruner=successive_halving", "hydra.sweeper.pruner.min_resource=1",
         "hydra.sweeper.pruner.reduction_factor=2", "hydra.sweeper.seed=0", "hydra.sweeper.n_trials=16",
         "hydra.sweeper.n_jobs=4", "learning_rate=tag(log,interval(1e-4,1.0))", "dataset=jsc_synth",
         "dataset.n_rows=20000", "max_epochs=40", "trainer.progress_bar=false", "data_seed=0", "experiment=halving"],
        cwd=workdir, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if "takes a pruned trial's slice" in line:
            proc.send_signal(signal.SIGTERM)
            break
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(workdir / "optuna-journal.log")))
    (summary,) = optuna.get_all_study_summaries(storage)
    trials = optuna.load_study(study_name=summary.study_name, storage=storage).trials
    assert not [t.number for t in trials if t.state.name == "RUNNING"]
    asked_by_the_job = [t for t in trials if t.number >= 4]  # the sweeper asked 0-3
    failed = [t for t in asked_by_the_job if t.state.name == "FAIL"]
    assert failed and all(t.user_attrs["fail_reason"] == "interrupted" for t in failed)
    retries = {t.user_attrs.get("retry_of") for t in trials if t.state.name == "WAITING"}
    assert {t.number for t in failed} <= retries  # each enqueued again, as the sweeper's own are
    pruned = {t.number for t in trials if t.number < 4 and t.state.name == "PRUNED"}
    assert pruned and not pruned & retries  # pruned before the interrupt: told so, not failed and trained again
    statuses = {r.info.status for r in runs_of(workdir, "halving")}
    assert "RUNNING" not in statuses and "KILLED" in statuses
