"""Outages (#17): a tracking store that never comes back ends the job with one line and
leaves the run's metrics on disk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import start_mlflow_server


@pytest.mark.slow
def test_a_store_that_never_comes_back_fails_the_job_in_one_line_with_its_metrics_on_disk(workdir):
    server, url = start_mlflow_server(workdir / "server")
    env = {**{k: v for k, v in os.environ.items() if k != "JSCEXP_PARENT_RUN_ID"}, "MLFLOW_TRACKING_URI": url,
           # MLflow retries for ~4 min by default; here the test gives up in seconds
           "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
           "MLFLOW_HTTP_REQUEST_TIMEOUT": "3"}
    job = subprocess.Popen([sys.executable, "-m", "jscexp", "dataset=jsc_synth", "dataset.n_rows=30000",
                            "batch_size=16", "max_epochs=8", "trainer.progress_bar=false"],
                           cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any(p.stat().st_size for p in workdir.glob("outputs/*/*/metrics.jsonl")) and time.monotonic() < deadline:
        time.sleep(0.1)
    os.killpg(server.pid, signal.SIGKILL)
    server.wait()
    _, err = job.communicate(timeout=120)
    (local,) = workdir.glob("outputs/*/*/metrics.jsonl")
    last = err.strip().splitlines()[-1]
    assert job.returncode == 1 and "Traceback" not in err, err[-3000:]
    assert last.startswith(f"error: the tracking store {url} stopped answering during run ")
    assert last.endswith(f"; its metrics so far are in {local.resolve()}")
    epochs = [json.loads(line) for line in local.read_text().splitlines()]
    assert [e["step"] for e in epochs] == list(range(len(epochs))) and {"val_acc", "train_loss"} <= set(epochs[0])


_INTERRUPT_WRITES = """
import os, signal, sys, threading
from jscexp.errors import install_interrupt_handlers
from jscexp.tracking.run import TrackedRun
from jscexp.tracking.store import client
install_interrupt_handlers()
uri = sys.argv[1]
for i in range(int(sys.argv[2])):
    run = TrackedRun(uri, "x")
    timer = threading.Timer(0.01 + 0.2 * i / int(sys.argv[2]), os.kill, (os.getpid(), signal.SIGTERM))
    try:
        with run:
            timer.start()
            for step in range(10**9):
                run.log_metrics({"a": 1.0, "b": 2.0}, step=step)
                run.flush()  # each batch to the store now
    except KeyboardInterrupt:
        pass
    print(client(uri).get_run(run.run_id).info.status, flush=True)
"""


def test_an_interrupt_that_lands_inside_a_store_write_still_ends_the_run_killed(tmp_path):
    """SIGTERM raised inside a SQLite transaction used to leave the file locked for the rest of
    the process, so the interrupted run stayed RUNNING (found by CI); here it lands at many
    points of a stream of writes, and every run ends KILLED."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    result = subprocess.run([sys.executable, "-c", _INTERRUPT_WRITES, uri, "20"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["KILLED"] * 20
