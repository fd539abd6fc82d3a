"""Resume inside a trial (#17): a trial killed after some epochs goes on from its last
complete epoch, and ends with the numbers it would have had if it had never stopped."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import compose_cfg, mlflow_client, run_cli, runs_of, start_cli

SMALL = ["dataset=jsc_synth", "dataset.n_rows=6000", "max_epochs=4", "trainer.progress_bar=false", "data_seed=0"]


def _train(tmp_path: Path, overrides: list[list[str]], resume=None):
    """The trials trained together in this process as a job trains them; every epoch's
    snapshot, read back from its state file, per (trial, epoch)."""
    from jscexp import app
    from jscexp.data import load_splits
    from jscexp.group import engine_for
    from jscexp.job import Trial
    from jscexp.train import fit
    from jscexp.train.snapshots import StateFile

    trials = [Trial(compose_cfg(o), o, tmp_path) for o in overrides]
    for t in trials:
        t.model, t.rng = app.initial_model(t.cfg)
    snapshots = {}

    def keep(k, snapshot):
        state = StateFile(tmp_path / "states", f"{len(trials)}-{k}-{snapshot.epoch}")
        state.save(snapshot)
        snapshots[(k, snapshot.epoch)] = state.load()

    cfg = trials[0].cfg
    fit.train(cfg, engine_for(trials), load_splits(cfg.dataset), lambda k, e, m: False, resume, keep)
    return snapshots


def _same_state(a, b) -> bool:
    tensors = lambda s: [*s.engine["model"].values(), *(t for p in s.engine["optimizer"]["state"].values()  # noqa: E731
                                                          for t in p.values())]
    return (a.epoch == b.epoch and a.engine["optimizer"]["steps"] == b.engine["optimizer"]["steps"]
            and torch.equal(a.data_rng, b.data_rng)
            and all(torch.equal(x, y) for x, y in zip(tensors(a), tensors(b), strict=True))
            and [{k: v for k, v in h.items() if k != "epoch_seconds"} for h in a.result.history]
            == [{k: v for k, v in h.items() if k != "epoch_seconds"} for h in b.result.history])


@pytest.mark.parametrize("trials", [
    [["model=jsc-tiny"]],                                                         # Adam, one model
    [["model=mlp", "model.dropout=0.3", "optimizer=sgd", "learning_rate=0.05"]],
    [["model=mlp", "model.dropout=0.3", "optimizer=sgd", f"learning_rate={lr}", f"seed={s}"]
     for lr, s in ((0.05, 0), (0.02, 1))],                                         # a stacked group
], ids=["adam", "sgd-dropout", "stacked"])
def test_a_resumed_training_is_bit_for_bit_the_uninterrupted_one(workdir, trials):
    """Weights, BatchNorm statistics, optimizer buffers, RNGs and history after epochs 2 and 3
    of a run resumed after epoch 1 (two of four done) equal the uninterrupted run's."""
    trials = [[*SMALL, *t] for t in trials]
    whole = _train(workdir, trials)
    resumed = _train(workdir, trials, resume=[whole[(k, 1)] for k in range(len(trials))])
    assert sorted(resumed) == [(k, e) for k in range(len(trials)) for e in (2, 3)]
    for key, snapshot in resumed.items():
        assert _same_state(snapshot, whole[key]), key


def test_a_trial_of_a_stacked_group_resumes_alone_from_its_slice(workdir):
    """An Optuna retry need not land in the same group: a slice's state is a lone run's."""
    common = [*SMALL, "model=jsc-toy", "optimizer=sgd"]
    a, b = [*common, "learning_rate=0.05"], [*common, "learning_rate=0.01"]
    group = _train(workdir, [a, b])
    alone = _train(workdir, [a])
    resumed = _train(workdir, [a], resume=[group[(0, 1)]])
    val = lambda s: [h["val_acc"] for h in s.result.history]  # noqa: E731
    assert val(resumed[(0, 3)]) == val(alone[(0, 3)])  # SGD: the same accuracies, stacked or not


def _kill_after(cmd: list[str], cwd: Path, epoch: int, timeout: float = 120) -> int:
    """Starts the CLI, SIGKILLs it once a training state after ``epoch`` is on disk; the epoch it had."""
    def done() -> list[int]:
        return [torch.load(p, weights_only=True)["epoch"] for p in (cwd / ".jscexp" / "state").glob("*/last.pt")]

    proc = start_cli(cmd, cwd, lambda: bool(done()) and min(done()) >= epoch, timeout,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert done() and min(done()) >= epoch, f"no state after epoch {epoch} before the run ended (rc {proc.returncode})"
    return min(done())


def _histories(workdir: Path, experiment: str) -> dict[str, dict]:
    client = mlflow_client(workdir)
    out = {}
    for r in runs_of(workdir, experiment):
        if r.data.tags.get("jscexp.kind") == "sweep":
            continue
        series = {k: [(m.step, m.value) for m in sorted(client.get_metric_history(r.info.run_id, k), key=lambda m: m.step)]
                  for k in ("val_acc", "val_loss", "train_acc", "train_loss", "lr")}
        out.setdefault(r.data.params["learning_rate"], []).append(
            {"status": r.info.status, "tags": r.data.tags, "series": series, "test_acc": r.data.metrics.get("test_acc")})
    return out


@pytest.mark.slow
@pytest.mark.parametrize("grid", [["learning_rate=0.01"], ["-m", "learning_rate=0.01,0.05"]], ids=["single", "stacked"])
def test_a_run_killed_after_epoch_2_of_4_resumes_with_the_uninterrupted_numbers(workdir, grid):
    # ~1 s epochs (batch 16), so the kill lands while it trains
    common = [*grid, "dataset=jsc_synth", "dataset.n_rows=30000", "batch_size=16", "max_epochs=4",
              "trainer.progress_bar=false", "optimizer=sgd", "data_seed=0"]
    whole = run_cli([*common, "experiment=whole"], workdir)
    assert whole.returncode == 0, whole.stderr[-2000:]
    killed_at = _kill_after([*common, "experiment=killed"], workdir, epoch=1)
    assert killed_at < 3, "killed after its last epoch: nothing left to resume"
    again = run_cli([*common, "experiment=killed"], workdir)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"after epoch {killed_at}" in again.stdout
    assert not list((workdir / ".jscexp" / "state").glob("*/last.pt"))  # a finished trial removes its state
    expected, got = _histories(workdir, "whole"), _histories(workdir, "killed")
    assert set(got) == set(expected) and len(got) == len(grid[-1].split(","))
    for lr, (one,) in expected.items():
        resumed, lost = sorted(got[lr], key=lambda r: r["status"])  # FINISHED < KILLED
        assert (resumed["status"], lost["status"]) == ("FINISHED", "KILLED")
        assert lost["tags"]["error"].startswith(f"lost after epoch {killed_at}: resumed in run")
        assert resumed["tags"]["jscexp.resumed_after_epoch"] == str(killed_at)
        assert resumed["series"] == one["series"], lr  # every epoch's metrics, the first two from the state
        assert resumed["test_acc"] == one["test_acc"]


@pytest.mark.slow
def test_a_preempted_submitit_job_requeues_itself_and_resumes(workdir):
    """SLURM's pre-emption signal (USR2, as submitit's local executor sends it) makes submitit
    checkpoint and requeue the job; the requeued job goes on from its last epoch."""
    cmd = ["-m", "+launcher=submitit_local", "dataset=jsc_synth", "dataset.n_rows=30000", "batch_size=16",
           "max_epochs=4", "trainer.progress_bar=false", "experiment=preempted"]
    sweep = start_cli(cmd, workdir, lambda: bool(list((workdir / ".jscexp" / "state").glob("*/last.pt"))), 120,
                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # this test's job only: its pickles live under this working directory
    signalled = subprocess.run(["pkill", "-USR2", "-f", f"submitit.core._submit {workdir}"])
    out, _ = sweep.communicate(timeout=180)
    assert signalled.returncode == 0 and sweep.returncode == 0, out[-2000:]
    client = mlflow_client(workdir)
    runs = {r.info.status: r for r in runs_of(workdir, "preempted") if r.data.tags.get("jscexp.kind") != "sweep"}
    assert set(runs) == {"KILLED", "FINISHED"}
    assert runs["KILLED"].data.tags["error"].startswith("interrupted: the process exited")
    resumed = runs["FINISHED"]
    assert "jscexp.resumed_after_epoch" in resumed.data.tags
    assert sorted(m.step for m in client.get_metric_history(resumed.info.run_id, "val_acc")) == [0, 1, 2, 3]


def test_a_running_sweep_of_a_live_process_is_another_workers_not_an_interrupted_one(tmp_path):
    """Workers on one study start the same command side by side: a RUNNING parent whose process
    still runs on this host is left to it; once that process is gone, the command resumes it."""
    import socket

    from jscexp.tracking.resume import WORKER_TAG, resumable_parent
    from jscexp.tracking.store import client as store_client

    client = store_client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("sweeps")
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        parent = client.create_run(experiment, tags={"jscexp.kind": "sweep", "jscexp.sweep_overrides": "lr=1,2",
                                                     WORKER_TAG: f"{socket.gethostname()}:{other.pid}"}).info.run_id
        assert resumable_parent(client, experiment, "lr=1,2") is None
    finally:
        other.kill()
        other.wait()
    assert resumable_parent(client, experiment, "lr=1,2") == parent
