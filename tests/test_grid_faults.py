"""A grid sweep under faults: interrupted and resumed, many jobs writing one SQLite store."""

from __future__ import annotations

import signal
import subprocess

import pytest
import torch

from conftest import FAST, mlflow_client, run_cli, runs_of, start_cli


@pytest.mark.slow
def test_sigterm_marks_the_run_killed_and_the_same_command_resumes(workdir):
    """One job after another in the sweep's own process (processes=1): the second is ended KILLED."""
    args = ["-m", "dataset=jsc_synth", "dataset.n_rows=20000", "trainer.progress_bar=false", "max_epochs=10",
            "batch_size=16", "seed=0,1,2", "hydra.sweeper.processes=1"]
    # until the second job has trained an epoch (of ten)
    proc = start_cli(args, workdir, lambda: list(workdir.glob("multirun/*/*/1/metrics.jsonl")),
                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    runs = runs_of(workdir)
    jobs = [r for r in runs if r.data.tags.get("jscexp.kind") != "sweep"]
    assert [r.info.status for r in jobs] == ["FINISHED", "KILLED"]
    assert [r.info.status for r in runs if r.data.tags.get("jscexp.kind") == "sweep"] == ["KILLED"]
    for ckpt in workdir.glob("multirun/*/*/1/checkpoints/*.ckpt"):
        assert "state_dict" in torch.load(ckpt, weights_only=True)  # whole, not half-written
    result = run_cli(args, workdir, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resuming the interrupted sweep" in result.stdout + result.stderr
    jobs = [r for r in runs_of(workdir) if r.data.tags.get("jscexp.kind") != "sweep"]
    finished = sorted(r.data.params["seed"] for r in jobs if r.info.status == "FINISHED")
    assert finished == ["0", "1", "2"]  # seed 0 was not trained again
    sweeps = [r for r in runs_of(workdir) if r.data.tags.get("jscexp.kind") == "sweep"]
    assert len(sweeps) == 1 and sweeps[0].info.status == "FINISHED"


@pytest.mark.slow
def test_sigterm_to_a_sweep_with_worker_processes_ends_every_running_job_killed_and_resumes(workdir):
    """Jobs in the pool's workers: a SIGTERM to the sweep reaches them; each ends its run KILLED
    before the sweep ends, none stays RUNNING, and the same command finishes the rest."""
    args = ["-m", "dataset=jsc_synth", "dataset.n_rows=20000", "trainer.progress_bar=false", "max_epochs=10",
            "batch_size=16", "seed=0,1,2,3", "hydra.sweeper.processes=2"]
    # until two jobs are training, one in each worker
    proc = start_cli(args, workdir, lambda: len(list(workdir.glob("multirun/*/*/*/metrics.jsonl"))) >= 2,
                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(90) == 130
    jobs = [r for r in runs_of(workdir) if r.data.tags.get("jscexp.kind") != "sweep"]
    assert jobs and "RUNNING" not in {r.info.status for r in jobs}, [r.info.status for r in jobs]
    assert "KILLED" in {r.info.status for r in jobs}
    result = run_cli(args, workdir, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    jobs = [r for r in runs_of(workdir) if r.data.tags.get("jscexp.kind") != "sweep"]
    assert sorted(r.data.params["seed"] for r in jobs if r.info.status == "FINISHED") == ["0", "1", "2", "3"]
    assert "RUNNING" not in {r.info.status for r in runs_of(workdir)}


@pytest.mark.slow
def test_a_sigkilled_sweep_leaves_nothing_running_once_resumed(workdir):
    """SIGKILL gives a job no chance to end its run; the resumed sweep ends it KILLED and says
    which run took its place (here without saved states: trainer.resume=false)."""
    args = ["-m", "dataset=jsc_synth", "dataset.n_rows=20000", "trainer.progress_bar=false", "max_epochs=4",
            "batch_size=32", "seed=0,1", "trainer.resume=false"]
    # until job 1's run exists and has an epoch
    proc = start_cli(args, workdir, lambda: list(workdir.glob("multirun/*/*/1/metrics.jsonl")),
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc.send_signal(signal.SIGKILL)
    proc.wait(60)
    assert not list(workdir.glob(".jscexp/state/*/last.pt"))
    result = run_cli(args, workdir, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    runs = runs_of(workdir)
    jobs = {r.info.status: r for r in runs if r.data.tags.get("jscexp.kind") != "sweep"}
    assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED", "FINISHED", "KILLED"]
    new = [r for r in runs if r.data.params.get("seed") == "1" and r.info.status == "FINISHED"]
    assert jobs["KILLED"].data.tags["error"] == f"lost: its process died; run again as run {new[0].info.run_id}"


@pytest.mark.slow
def test_parallel_jobs_on_one_sqlite_store_lose_nothing(workdir):
    # seeds: each its own data order, so trainer.vectorize=auto leaves them 4 parallel jobs
    result = run_cli(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=4", *FAST, "seed=0,1,2,3"], workdir,
                     timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "database is locked" not in result.stderr
    jobs = [r for r in runs_of(workdir) if r.data.tags.get("jscexp.kind") != "sweep"]
    assert sorted(r.data.params["seed"] for r in jobs) == ["0", "1", "2", "3"]
    assert all(r.info.status == "FINISHED" and "test_acc" in r.data.metrics for r in jobs)
    assert len({r.data.tags["mlflow.parentRunId"] for r in jobs}) == 1


def _log_dataset(uri: str, digest: str, barrier) -> None:
    from jscexp.tracking.run import TrackedRun

    with TrackedRun(uri, "race") as run:
        barrier.wait()  # all at once: the first dataset row is created by one of them
        run.log_dataset({"name": "jsc_synth (synthetic)", "digest": digest, "source_type": "synthetic",
                         "source": "{}", "profile": "{}"})


def test_parallel_jobs_logging_one_new_dataset_all_succeed(workdir):
    """MLflow's SQL store refuses the second of two concurrent inserts of one dataset (a unique
    key); the loser retries and links the row the winner made."""
    import multiprocessing

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    from jscexp.tracking.run import TrackedRun

    TrackedRun(uri, "race").__exit__(None, None, None)  # the store and experiment exist first
    context = multiprocessing.get_context("fork")
    for digest in ("a", "b", "c"):
        barrier = context.Barrier(6)
        procs = [context.Process(target=_log_dataset, args=(uri, digest, barrier)) for _ in range(6)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
        assert [p.exitcode for p in procs] == [0] * 6, digest
    client = mlflow_client(workdir)
    runs = client.search_runs([client.get_experiment_by_name("race").experiment_id], max_results=100)
    assert sorted(len(r.inputs.dataset_inputs) for r in runs) == [0] + [1] * 18
