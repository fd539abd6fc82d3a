"""Bad input, failing and diverging jobs, security (interrupts and parallel writers: test_grid_faults.py)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from conftest import FAST, mlflow_client, run_cli, runs_of


@pytest.mark.parametrize(
    "args, message",
    [
        (["batch_size=0"], "error: batch_size must be a positive integer, got 0"),
        (["batch_size=100000"], "error: batch_size 100000 is larger than the 4320 training rows: lower batch_size"),
        (["max_epochs=0"], "error: max_epochs must be a positive integer, got 0"),
        (["learning_rate=-1"], "error: learning_rate must be a positive number, got -1"),
        (["learning_rate=fast"], "error: Error merging override learning_rate=fast; Value 'fast' of type 'str' could not"),
        (["mlflow.tracking_uri=http://127.0.0.1:9"], "error: MLflow server http://127.0.0.1:9 is unreachable"),
        (["mlflow.tracking_uri=sqlite:////no/such/dir/mlflow.db"], "error: MLflow store sqlite:////no/such/dir"),
        (["dataset.source=file", "dataset.path=missing.csv"], "error: data file"),
        (["trainer.vectorize=fast"], "error: trainer.vectorize must be off, auto or a group size of 1 or more, got 'fast'"),
        (["hydra.mode=MULTIRUN", "seed=0,1", "trainer.vectorize=0"], "error: trainer.vectorize must be off, auto or"),
        (["hydra.mode=MULTIRUN", "seed=0,1", "hydra.sweeper.processes=0"],
         "error: hydra.sweeper.processes must be 1 or more (1: every job in the sweep's process), got 0"),
        (["hydra.mode=MULTIRUN", "seed=0,1", "+launcher=joblib", "hydra.sweeper.processes=2"],
         "error: hydra.sweeper.processes is for Hydra's in-process launcher, but hydra_plugins.hydra_joblib_launcher"),
        (["hydra.mode=MULTIRUN", "seed=0,1", "trainer.num_threads=2", "hydra.sweeper.processes=2"],
         "error: hydra.sweeper.processes runs each job on one torch thread, but trainer.num_threads=2 is set"),
        (["+pbt.space={batch_size:{low:16,high:64}}"], "error: pbt.space.batch_size: population-based training explores"),
        (["mode=qat", "quantisation=int8", "+pbt.space={quantisation.weight_width:{low:3,high:8,integer:true}}"],
         "error: pbt.space.quantisation.weight_width = 3: quantisation linear weight: frac_width 4 is larger than width 3"),
    ],
)
def test_bad_input_on_the_cli_is_one_line_exit_2_and_no_run(workdir, args, message):
    base = FAST if "dataset.source=file" not in args else ["trainer.progress_bar=false"]
    result = run_cli([*base, *args], workdir)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.startswith(message) and len(result.stderr.strip().splitlines()) == 1
    assert runs_of(workdir) == [] and not list(workdir.glob("outputs/*/*/checkpoints/*"))


@pytest.mark.parametrize("group, name", [("model", "jsc-huge"), ("optimizer", "lamb"), ("quantisation", "int3"),
                                         ("sweep", "lab9")])
def test_unknown_group_options_list_the_valid_names_in_one_line(workdir, group, name):
    result = run_cli([*FAST, f"+{group}={name}" if group == "sweep" else f"{group}={name}"], workdir)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert f"Could not find '{group}/{name}'; Available options in '{group}': " in result.stderr
    assert runs_of(workdir) == []


def test_a_raising_and_a_diverging_job_do_not_sink_the_sweep(workdir):
    # eval_batch_size=0 raises inside training (a whole stacked group fails); learning_rate=-1 is
    # a trial's own bad knob (it fails alone, no run; its group mates train)
    result = run_cli(["-m", *FAST, "model=mlp", "optimizer=sgd", "max_epochs=3",
                      "trainer.eval_batch_size=0,4096", "learning_rate=1e3,1e-2,-1"], workdir)
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "4 of 6 jobs failed (the others finished)" in output and "ValueError" in output
    assert "learning_rate=-1: failed: learning_rate must be a positive number, got -1" in output
    runs = runs_of(workdir)
    parent = next(r for r in runs if r.data.tags.get("jscexp.kind") == "sweep")
    jobs = [r for r in runs if r is not parent]
    assert sorted(r.info.status for r in jobs) == ["FAILED", "FAILED", "FINISHED", "FINISHED"]
    assert all(r.data.tags["error"].startswith("ValueError") for r in jobs if r.info.status == "FAILED")
    diverged = [r for r in jobs if r.data.tags.get("jscexp.diverged") == "true"]
    assert len(diverged) == 1 and diverged[0].data.params["learning_rate"] == "1000.0"
    failed = parent.data.tags["jscexp.failed_jobs"].split("; ")
    assert parent.info.status == "FAILED" and len(failed) == 4
    assert sum("trainer.eval_batch_size=0 " in f for f in failed) == 3 and sum("learning_rate=-1" in f for f in failed) == 2


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


@pytest.mark.slow
def test_a_pickle_payload_checkpoint_is_refused_and_never_runs(workdir):
    with open(workdir / "evil.ckpt", "wb") as f:
        pickle.dump({"state_dict": {}, "x": _Payload()}, f)
    torch.save({"state_dict": {}, "x": _Payload()}, workdir / "evil2.ckpt")
    (workdir / "notes.ckpt").write_text("hello world\n")  # not a checkpoint at all
    (workdir / "empty.ckpt").write_bytes(b"")
    for name in ("evil.ckpt", "evil2.ckpt", "notes.ckpt", "empty.ckpt"):
        result = run_cli([*FAST, "mode=test", f"ckpt={name}"], workdir)
        assert result.returncode == 2
        assert result.stderr.startswith(f"error: checkpoint {name} is not a readable PyTorch checkpoint")
        assert len(result.stderr.strip().splitlines()) == 1
    assert not (workdir / "pwned").exists()
    assert runs_of(workdir) == []


def test_passwords_in_urls_never_reach_mlflow_or_the_terminal(workdir):
    secret = "postgresql://bob:hunter2@db.example:5432/runs"
    result = run_cli([*FAST, f"+backend.url={secret}"], workdir)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "hunter2" not in result.stdout + result.stderr
    (run,) = runs_of(workdir)
    assert run.data.params["backend.url"] == "postgresql://bob:***@db.example:5432/runs"
    assert not any("hunter2" in v for v in [*run.data.params.values(), *run.data.tags.values()])
    config = mlflow_client(workdir).download_artifacts(run.info.run_id, "config.yaml", str(workdir))
    assert "hunter2" not in Path(config).read_text()
    from jscexp.tracking.store import mask

    assert mask("x postgresql://a:b@h/d y http://h:1/p") == "x postgresql://a:***@h/d y http://h:1/p"


def _run_of(workdir: Path, pid: int, tags: dict | None = None) -> str:
    """A RUNNING run as process ``pid`` of this host would leave it."""
    import socket

    from jscexp.tracking import TrackedRun

    run = TrackedRun(f"sqlite:///{workdir / 'mlflow.db'}", "jscexp", run_name="left",
                     tags={"jscexp.worker": f"{socket.gethostname()}:{pid}", **(tags or {})})
    return run.run_id  # never closed: its process "died"


def test_a_run_whose_process_is_gone_is_ended_killed_by_the_next_command(workdir):
    """Outside a sweep nothing else would end it: it stayed RUNNING for good. A live process's
    run and a sweep's child (its sweep resumes it) are left alone."""
    import subprocess

    gone = subprocess.Popen(["true"])
    gone.wait()
    alive = subprocess.Popen(["sleep", "60"])
    try:
        dead, live = _run_of(workdir, gone.pid), _run_of(workdir, alive.pid)
        child = _run_of(workdir, gone.pid, {"mlflow.parentRunId": live})
        run_cli([*FAST], workdir)
        client = mlflow_client(workdir)
        assert client.get_run(dead).info.status == "KILLED"
        assert client.get_run(dead).data.tags["error"] == \
            f"lost: its process ({client.get_run(dead).data.tags['jscexp.worker']}) is gone; it never ended"
        assert [client.get_run(r).info.status for r in (live, child)] == ["RUNNING", "RUNNING"]
    finally:
        alive.kill()
