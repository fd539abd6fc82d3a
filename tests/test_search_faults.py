"""Failures in an Optuna search belong to their trials: a failing or invalid trial, a job
without the objective, an interrupt, a killed worker, several workers on one study."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import SWEEP, children, cli_env, runs_of, start_cli, states, study, sweep


def test_dedup_reuses_an_identical_config_and_a_failing_trial_does_not_end_the_sweep(workdir):
    failed = sweep(workdir, "hydra.sweeper.study_name=dup", "hydra.sweeper.n_trials=2", "hydra/sweeper/sampler=grid",
                   "batch_size=choice(64)", "trainer.eval_batch_size=choice(4096,0)", check=False)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    trials = {t.params["trainer.eval_batch_size"]: t for t in study(workdir, "dup").trials}
    assert trials[4096].state.name == "COMPLETE"
    assert trials[0].state.name == "FAIL" and "ValueError" in trials[0].user_attrs["fail_reason"]
    assert sorted(r.info.status for r in children(workdir)) == ["FAILED", "FINISHED"]
    sweep(workdir, "hydra.sweeper.study_name=one_point", "hydra.sweeper.n_trials=2", "batch_size=choice(64)")
    again = study(workdir, "one_point").trials
    assert [t.state.name for t in again] == ["COMPLETE", "COMPLETE"] and again[1].user_attrs["duplicate_of"] == 0
    assert again[1].value == again[0].value
    assert len([r for r in children(workdir) if r.data.tags["jscexp.optuna_study"] == "one_point"]) == 1  # not retrained


@pytest.mark.slow
def test_two_workers_on_one_storage_finish_n_distinct_trials(workdir):

    cmd = [sys.executable, "-m", "jscexp", *SWEEP, "hydra.sweeper.study_name=shared", "hydra.sweeper.n_trials=5",
           "learning_rate=interval(1e-3,1e-2)", "hydra/sweeper/sampler=random"]
    workers = [subprocess.Popen(cmd, cwd=workdir, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    for w in workers:
        _, err = w.communicate(timeout=600)
        assert w.returncode == 0, err[-3000:]
    st = study(workdir, "shared")
    complete = [t for t in st.trials if t.state.name == "COMPLETE"]
    assert len(complete) == 5 and len({t.number for t in complete}) == 5
    assert all(t.state.name in ("COMPLETE", "FAIL") for t in st.trials)  # FAIL only for a surplus ask
    assert len({t.params["learning_rate"] for t in complete}) == 5
    assert len([r for r in children(workdir) if r.info.status == "FINISHED"]) == 5


def test_an_invalid_sample_fails_its_trial_and_the_search_goes_on(workdir):
    """A bit-width search samples a frac width larger than the width: that trial FAILs with
    the reason, nothing stays RUNNING, the valid point completes, the sweep exits 1."""
    result = sweep(workdir, "hydra.sweeper.study_name=bits", "hydra/sweeper/sampler=grid", "hydra.sweeper.n_trials=2",
                   "mode=qat", "quantisation=int8", "quantisation.weight_frac_width=choice(3,10)", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    trials = {t.params["quantisation.weight_frac_width"]: t for t in study(workdir, "bits").trials}
    assert trials[3].state.name == "COMPLETE"
    assert trials[10].state.name == "FAIL"
    assert "frac_width 10 is larger than width 8" in trials[10].user_attrs["fail_reason"]
    (parent,) = [r for r in runs_of(workdir, "search") if r.data.tags.get("jscexp.kind") == "sweep"]
    assert parent.info.status == "FAILED" and "frac_width 10" in parent.data.tags["jscexp.failed_jobs"]
    assert [r.info.status for r in children(workdir)] == ["FINISHED"]  # the bad sample made no run


def test_max_failure_rate_stops_asking_once_too_many_trials_failed(workdir):
    """Every sampled frac width is above the width: 1 of 1 failed > 0.5, no second ask. (A job
    of a mode that cannot return the objective is refused before any trial: test_preflight.)"""
    result = sweep(workdir, "hydra.sweeper.study_name=report", "hydra.sweeper.n_trials=3", "mode=qat",
                   "quantisation=int8", "hydra.sweeper.max_failure_rate=0.5",
                   "quantisation.weight_frac_width=choice(10,11,12)", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (trial,) = study(workdir, "report").trials
    assert trial.state.name == "FAIL" and "is larger than width 8" in trial.user_attrs["fail_reason"]
    assert "stopping the search: 1 of 1 trials failed" in result.stdout


def _start_until_trial_1_trains(workdir, args: list[str], **popen) -> subprocess.Popen:
    """The search started, returned once its second trial has saved its first epoch's state — its
    job folder comes once the first trial ended, whose state is gone by then: it trains on for
    more epochs, which is when the test strikes."""
    def trained() -> bool:
        return bool(list(workdir.glob("multirun/*/*/1")) and list(workdir.glob(".jscexp/state/*/last.pt")))

    proc = start_cli([*SWEEP, *args], workdir, trained, **popen)
    assert trained(), f"trial 1 never trained (sweep exit {proc.poll()})"
    return proc


@pytest.mark.slow
def test_an_interrupted_search_leaves_nothing_running_and_the_same_command_completes_it(workdir):
    """SIGTERM mid-trial: that trial is told FAIL (interrupted), its run and the sweep's parent
    end KILLED, the exit is one line; the same command again completes the study to n_trials."""
    import signal

    args = ["hydra.sweeper.study_name=intr", "hydra.sweeper.n_trials=2", "hydra.sweeper.seed=0",
            "dataset.n_rows=20000", "max_epochs=10", "batch_size=16", "learning_rate=interval(1e-3,1e-2)"]
    proc = _start_until_trial_1_trains(workdir, args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("interrupted: the run in progress is recorded KILLED")
    assert states(study(workdir, "intr")) == ["COMPLETE", "FAIL", "WAITING"]  # its retry, enqueued
    assert study(workdir, "intr").trials[1].user_attrs["fail_reason"] == "interrupted"
    assert sorted(r.info.status for r in children(workdir)) == ["FINISHED", "KILLED"]

    sweep(workdir, *args)
    trials = study(workdir, "intr").trials
    assert states(study(workdir, "intr")) == ["COMPLETE", "FAIL", "COMPLETE"]
    assert trials[2].params == trials[1].params and trials[2].user_attrs["retry_of"] == 1
    runs = {r.data.tags["jscexp.optuna_trial"]: r for r in children(workdir)}
    assert [runs[n].info.status for n in "012"] == ["FINISHED", "KILLED", "FINISHED"]
    assert "jscexp.resumed_after_epoch" in runs["2"].data.tags  # the retry went on from trial 1's last epoch
    parents = [r for r in runs_of(workdir, "search") if r.data.tags.get("jscexp.kind") == "sweep"]
    assert [p.info.status for p in parents] == ["FINISHED"]  # the interrupted sweep's parent, resumed


@pytest.mark.slow
def test_a_killed_workers_trial_is_failed_and_retried_with_its_parameters(workdir):
    """SIGKILL leaves no chance to clean up: the trial stops beating, and the next ask (here the
    same command again) fails it as lost, ends its run KILLED and retries its parameters."""
    import signal
    import time

    args = ["hydra.sweeper.study_name=lost", "hydra.sweeper.n_trials=2", "hydra.sweeper.seed=0",
            "hydra.sweeper.heartbeat_interval=0.5", "hydra.sweeper.grace_period=2", "dataset.n_rows=20000",
            "max_epochs=10", "batch_size=16", "learning_rate=interval(1e-3,1e-2)"]
    proc = _start_until_trial_1_trains(workdir, args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc.send_signal(signal.SIGKILL)
    proc.wait(60)
    assert states(study(workdir, "lost")) == ["COMPLETE", "RUNNING"]  # nothing could tell it otherwise
    time.sleep(3)  # past the grace period

    sweep(workdir, *args)
    trials = study(workdir, "lost").trials
    assert states(study(workdir, "lost")) == ["COMPLETE", "FAIL", "COMPLETE"]
    assert trials[1].user_attrs["fail_reason"].startswith("lost: no heartbeat for")
    assert trials[2].params == trials[1].params and trials[2].user_attrs["retry_of"] == 1
    runs = {r.data.tags["jscexp.optuna_trial"]: r for r in children(workdir)}
    assert runs["1"].info.status == "KILLED" and runs["1"].data.tags["error"].startswith("lost: no heartbeat")
    assert runs["2"].info.status == "FINISHED" and runs["2"].data.tags["jscexp.retry_of"] == "1"
    assert "jscexp.resumed_after_epoch" in runs["2"].data.tags


def test_identical_params_asked_together_train_once(workdir):
    """n_jobs=2 on a one-point space: both asks get the same params; the second reuses the first's
    result (one run, one solution), as dedup does across batches."""
    sweep(workdir, "hydra.sweeper.study_name=twins", "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2",
          "batch_size=choice(64)")
    trials = study(workdir, "twins").trials
    assert states(study(workdir, "twins")) == ["COMPLETE", "COMPLETE"]
    assert trials[1].user_attrs["duplicate_of"] == 0 and trials[1].value == trials[0].value
    assert len(children(workdir)) == 1


def test_a_lost_trial_whose_run_had_finished_is_told_complete_with_the_runs_values():
    """The worker died between its run ending FINISHED and telling the study: the trial is told
    COMPLETE with the run's values, not failed and trained again; a lost trial without one is
    failed and retried."""
    import optuna

    from jscexp.search.liveness import HEARTBEAT, fail_stale

    st = optuna.create_study(directions=["maximize", "minimize"])
    done, lost = st.ask(), st.ask()
    for trial in (done, lost):
        st._storage.set_trial_system_attr(trial._trial_id, HEARTBEAT, 0.0)  # beat long ago
    runs = {done.number: [0.7, 1200.0]}
    ended = fail_stale(st, grace=60, max_retries=1, finished=lambda t: runs.get(t.number))
    assert [(e.number, e.completed, e.retry) for e in ended] == [(0, True, False), (1, False, True)]
    assert states(st) == ["COMPLETE", "FAIL", "WAITING"] and st.trials[0].values == [0.7, 1200.0]


def test_a_finished_trial_run_is_found_with_its_objectives(workdir):
    from jscexp.tracking import TrackedRun
    from jscexp.tracking.shared import STUDY_TAG, finished_trial_run

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    tags = {STUDY_TAG: "s", "jscexp.optuna_trial": "3"}
    with TrackedRun(uri, "search", run_name="#3", tags=tags) as run:
        run.log_metrics({"best_val_acc": 0.7})
    assert finished_trial_run(uri, "search", "s", 3, ["best_val_acc"]) == (run.run_id, [0.7])
    assert finished_trial_run(uri, "search", "s", 3, ["best_val_acc", "ebops"]) is None  # an objective missing
    assert finished_trial_run(uri, "search", "s", 4, ["best_val_acc"]) is None


@pytest.mark.slow
def test_a_survivor_completes_the_study_when_the_other_worker_is_killed(workdir):
    """Two workers on one journal study, one SIGKILLed mid-trial: the survivor fails the lost
    trial, retries it and ends with n_trials COMPLETE (its budget pays for the retry), one
    FINISHED run per trial and none left RUNNING."""
    import signal

    args = ["hydra.sweeper.study_name=survivor", "hydra.sweeper.n_trials=3", "hydra.sweeper.seed=0",
            "hydra.sweeper.heartbeat_interval=0.5", "hydra.sweeper.grace_period=2", "dataset.n_rows=20000",
            "max_epochs=6", "batch_size=16", "learning_rate=interval(1e-3,1e-2)"]
    killed = start_cli([*SWEEP, *args], workdir, lambda: bool(list(workdir.glob(".jscexp/state/*/last.pt"))),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    survivor = subprocess.Popen([sys.executable, "-m", "jscexp", *SWEEP, *args], cwd=workdir, env=cli_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    import time

    time.sleep(1)
    killed.send_signal(signal.SIGKILL)
    killed.wait(60)
    out, err = survivor.communicate(timeout=600)
    assert survivor.returncode == 0, err[-3000:]
    st = study(workdir, "survivor")
    assert states(st).count("COMPLETE") == 3 and "RUNNING" not in states(st)
    assert any(t.user_attrs.get("fail_reason", "").startswith("lost: no heartbeat") for t in st.trials)
    runs = children(workdir)
    assert "RUNNING" not in [r.info.status for r in runs]
    finished = [r.data.tags["jscexp.optuna_trial"] for r in runs if r.info.status == "FINISHED"]
    assert sorted(finished) == sorted(str(t.number) for t in st.trials if t.state.name == "COMPLETE")
