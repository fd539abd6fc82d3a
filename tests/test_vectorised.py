"""Vectorised trials (#11): grid points that differ only in lr/seed/optimizer knobs trained as
one stacked model, each still its own MLflow run with the numbers it would have had alone."""

from __future__ import annotations

import pytest
from conftest import mlflow_client, run_cli, runs_of

GRID = ["-m", "dataset=jsc_synth", "dataset.n_rows=6000", "max_epochs=2", "trainer.progress_bar=false",
        "model=jsc-toy", "optimizer=sgd", "data_seed=0"]


def histories(workdir, experiment: str) -> dict[tuple[str, str], dict]:
    """Per (learning_rate, seed): val_acc per epoch, final metrics, tags, params, artifacts."""
    client = mlflow_client(workdir)
    out = {}
    for r in runs_of(workdir, experiment):
        if r.data.tags.get("jscexp.kind") == "sweep":
            continue
        hist = sorted(client.get_metric_history(r.info.run_id, "val_acc"), key=lambda m: m.step)
        out[(r.data.params["learning_rate"], r.data.params["seed"])] = {
            "val_acc": [m.value for m in hist], "metrics": r.data.metrics, "tags": r.data.tags,
            "params": r.data.params, "status": r.info.status,
            "artifacts": sorted(a.path for a in client.list_artifacts(r.info.run_id)),
        }
    return out


def grid(workdir, experiment: str, *args: str) -> dict:
    result = run_cli([*GRID, f"experiment={experiment}", *args], workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    return histories(workdir, experiment)


@pytest.mark.slow
def test_a_vectorised_grid_gives_every_trial_the_numbers_and_run_it_has_alone(workdir):
    sweep = ["learning_rate=1e-2,5e-2", "seed=0,1"]
    alone = grid(workdir, "alone", *sweep)
    stacked = grid(workdir, "stacked", *sweep, "trainer.vectorize=auto")
    assert set(alone) == set(stacked) and len(stacked) == 4
    for key, one in alone.items():
        vec = stacked[key]
        assert vec["val_acc"] == one["val_acc"], key  # per epoch, SGD: bit for bit here
        assert vec["metrics"]["test_acc"] == one["metrics"]["test_acc"]
        assert vec["status"] == "FINISHED" and vec["artifacts"] == one["artifacts"]
        assert set(vec["params"]) == set(one["params"])
    groups = {v["tags"]["jscexp.vector_group"] for v in stacked.values()}
    assert len(groups) == 1 and not any("jscexp.vector_group" in v["tags"] for v in alone.values())
    assert {v["tags"]["mlflow.parentRunId"] for v in stacked.values()} != {None}


@pytest.mark.slow
def test_a_diverging_trial_leaves_the_others_untouched(workdir):
    setup = ["model=mlp", "max_epochs=3", "seed=0", "trainer.vectorize=auto"]  # lr 1e3 blows the MLP up
    calm = grid(workdir, "calm", "learning_rate=1e-2,5e-2", *setup)
    mixed = grid(workdir, "mixed", "learning_rate=1e-2,5e-2,1e3", *setup)
    for key, one in calm.items():
        assert mixed[key]["val_acc"] == one["val_acc"] and mixed[key]["metrics"]["test_acc"] == one["metrics"]["test_acc"]
    wild = mixed[("1000.0", "0")]
    assert wild["status"] == "FINISHED" and wild["tags"]["jscexp.diverged"] == "true"
    assert len({v["tags"]["jscexp.vector_group"] for v in mixed.values()}) == 1


def test_grouping_keeps_other_knobs_apart_and_respects_the_size():
    from jscexp.group import group_jobs, group_size

    jobs = [[f"batch_size={b}", f"learning_rate={lr}"] for b in (32, 64) for lr in (1e-3, 1e-2, 1e-1)]
    grouped = group_jobs(jobs, 2)
    assert grouped == [
        ["batch_size=32", "+vector_trials=['learning_rate=0.001','learning_rate=0.01']"],
        ["batch_size=32", "learning_rate=0.1"],
        ["batch_size=64", "+vector_trials=['learning_rate=0.001','learning_rate=0.01']"],
        ["batch_size=64", "learning_rate=0.1"],
    ]
    assert (group_size("off"), group_size(False), group_size("auto"), group_size(16)) == (1, 1, 64, 16)


@pytest.mark.slow
def test_an_optuna_search_asks_k_trials_at_once_and_prunes_single_slices(workdir):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    result = run_cli(["-m", "hydra/sweeper=jscexp_optuna", "dataset=jsc_synth", "dataset.n_rows=6000", "max_epochs=4",
                      "trainer.progress_bar=false", "model=jsc-toy", "experiment=vsearch", "trainer.vectorize=auto",
                      "hydra.sweeper.study_name=v", "hydra.sweeper.n_trials=8", "hydra.sweeper.n_jobs=4",
                      "hydra.sweeper.sampler=random", "hydra.sweeper.seed=0", "hydra.sweeper.pruner=median",
                      "hydra.sweeper.pruner_warmup_epochs=1", "hydra.sweeper.pruner_startup_trials=2",
                      "learning_rate=tag(log,interval(1e-5,1e-1))"], workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list(workdir.glob("multirun/*/*/[0-9]*"))) == 2  # 8 trials, 2 launched jobs of 4
    storage = JournalStorage(JournalFileBackend(str(workdir / "optuna-journal.log")))
    trials = optuna.load_study(study_name="v", storage=storage).trials
    states = {t.number: t.state.name for t in trials}
    assert sorted(states) == list(range(8)) and set(states.values()) <= {"COMPLETE", "PRUNED"}
    assert "PRUNED" in states.values() and "COMPLETE" in states.values()
    runs = {r.data.tags["jscexp.optuna_trial"]: r for r in runs_of(workdir, "vsearch")
            if r.data.tags.get("jscexp.kind") != "sweep"}
    assert sorted(int(n) for n in runs) == list(range(8))
    client = mlflow_client(workdir)
    for number, state in states.items():
        run = runs[str(number)]
        epochs = len(client.get_metric_history(run.info.run_id, "val_acc"))
        assert run.info.status == "FINISHED" and "jscexp.vector_group" in run.data.tags
        if state == "PRUNED":  # its slice stopped; its group mates trained on
            assert run.data.tags["jscexp.pruned"] == "true" and epochs < 4
        else:
            assert epochs == 4 and "test_acc" in run.data.metrics
