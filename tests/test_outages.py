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

from conftest import start_cli, start_mlflow_server


def _training(workdir) -> bool:
    """Whether the run has recorded an epoch (its metrics file on disk has a line)."""
    return any(p.stat().st_size for p in workdir.glob("outputs/*/*/metrics.jsonl"))


@pytest.mark.slow
def test_a_store_that_never_comes_back_fails_the_job_in_one_line_with_its_metrics_on_disk(workdir):
    server, url = start_mlflow_server(workdir / "server")
    env = {"MLFLOW_TRACKING_URI": url,  # MLflow retries for ~4 min by default; here the test gives up in seconds
           "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
           "MLFLOW_HTTP_REQUEST_TIMEOUT": "3"}
    job = start_cli(["dataset=jsc_synth", "dataset.n_rows=30000", "batch_size=16", "max_epochs=8",
                     "trainer.progress_bar=false"], workdir, lambda: _training(workdir), timeout=120, env=env,
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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
    result = subprocess.run([sys.executable, "-c", _INTERRUPT_WRITES, uri, "20"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["KILLED"] * 20


def test_a_runs_metrics_reach_the_store_in_batches_and_its_folder_at_once(tmp_path, monkeypatch):
    """Each epoch's metrics go to metrics.jsonl when logged; to MLflow with the next batch:
    every FLUSH_SECONDS while the run goes on, and all that is left when it ends."""
    from jscexp.tracking import run as tracked
    from jscexp.tracking.store import client

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setattr(tracked, "FLUSH_SECONDS", 3600.0)
    with tracked.TrackedRun(uri, "batches", local=tmp_path / "metrics.jsonl") as run:
        run.log_params({"lr": 0.1})
        for epoch in range(3):
            run.log_metrics({"val_acc": 0.1 * epoch}, step=epoch)
        run.set_tags({"stage": "training"})
        stored = client(uri).get_run(run.run_id).data
        assert stored.params == {"lr": "0.1"} and stored.metrics == {} and "stage" not in stored.tags
        assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 3  # on disk at once
        monkeypatch.setattr(tracked, "FLUSH_SECONDS", 0.0)
        run.log_metrics({"val_acc": 0.5}, step=3)  # the interval passed: all four go now, with the tag
        history = client(uri).get_metric_history(run.run_id, "val_acc")
        assert [m.step for m in history] == [0, 1, 2, 3]
        assert client(uri).get_run(run.run_id).data.tags["stage"] == "training"
        monkeypatch.setattr(tracked, "FLUSH_SECONDS", 3600.0)
        run.log_metrics({"test_acc": 0.4}, step=4)
    done = client(uri).get_run(run.run_id)
    assert done.info.status == "FINISHED" and done.data.metrics["test_acc"] == 0.4  # the rest when it ended


def test_a_run_whose_file_is_gone_when_it_ends_is_failed_not_left_running(tmp_path):
    """Files are uploaded when a run ends; one that vanished meanwhile fails the run with the
    reason (and the error goes on up), and a run that already failed keeps its own reason."""
    from jscexp.tracking.run import TrackedRun
    from jscexp.tracking.store import client

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    gone = tmp_path / "best.ckpt"
    with pytest.raises(FileNotFoundError), TrackedRun(uri, "files") as ok_run:
        gone.write_text("weights")
        ok_run.log_artifact(gone, "checkpoints")
        gone.unlink()
    with pytest.raises(ValueError, match="diverged"), TrackedRun(uri, "files") as bad_run:
        bad_run.log_artifact(gone, "checkpoints")
        raise ValueError("diverged")
    for run_id, reason in ((ok_run.run_id, "FileNotFoundError"), (bad_run.run_id, "ValueError: diverged")):
        stored = client(uri).get_run(run_id)
        assert stored.info.status == "FAILED" and stored.data.tags["error"].startswith(reason)


def test_a_tracking_server_that_holds_the_connection_is_waited_for_one_that_refuses_is_not(monkeypatch, capsys):
    """A job that starts while the MLflow server is paused waits for it (the chaos test's
    SIGSTOP); a server that never answers is one line once the patience is spent."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from jscexp.errors import UserError
    from jscexp.tracking import store

    calls = []

    class Slow(BaseHTTPRequestHandler):
        def do_GET(self):  # the first request hangs past the 5 s timeout, as a paused server does
            calls.append(time.monotonic())
            if len(calls) == 1 or self.server.hang:
                time.sleep(6)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    server.hang = False
    threading.Thread(target=server.serve_forever, daemon=True).start()
    uri = f"http://127.0.0.1:{server.server_port}"
    store.check_reachable(uri)  # the second try answers
    assert len(calls) == 2 and "does not answer" in capsys.readouterr().err
    server.hang = True
    monkeypatch.setattr(store, "SERVER_PATIENCE", 1.0)
    with pytest.raises(UserError, match=r"is unreachable \(timed out\); start it"):
        store.check_reachable(uri)
    server.shutdown()


def test_a_restarting_databases_errors_are_retried_a_bad_write_is_not():
    """What the Optuna storage retries: a connection refused, reset or closed under a call,
    or a session that must roll back after one; never a constraint violation."""
    from optuna.exceptions import StorageInternalError
    from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError, PendingRollbackError

    from jscexp.search.reconnect import _is_outage

    def wrapped(cause: Exception) -> StorageInternalError:
        err = StorageInternalError("An exception is raised during the commit.")
        err.__cause__ = cause
        return err

    lost = [OperationalError("select", {}, Exception("server closed the connection unexpectedly")),
            InterfaceError("select", {}, Exception("connection already closed")),
            PendingRollbackError("Can't reconnect until invalid transaction is rolled back")]
    assert all(_is_outage(wrapped(c)) for c in lost)
    assert not _is_outage(wrapped(IntegrityError("insert", {}, Exception("duplicate key value"))))


_INTERRUPT_AT_END = """
import os, signal, sys
from jscexp.errors import install_interrupt_handlers
from jscexp.tracking import run as tracked
from jscexp.tracking.store import client
install_interrupt_handlers()
upload = tracked.TrackedRun._upload
def upload_then_signal(self):
    os.kill(os.getpid(), signal.SIGTERM)  # lands while the run is being ended
    upload(self)
tracked.TrackedRun._upload = upload_then_signal
run = tracked.TrackedRun(sys.argv[1], "x")
try:
    with run:
        run.log_texts({"note.txt": "trained"})
except KeyboardInterrupt:
    print("interrupted", client(sys.argv[1]).get_run(run.run_id).info.status)
"""


def test_an_interrupt_while_a_run_is_being_ended_lets_it_end(tmp_path):
    """Ending a run is one step (its files, its last metrics, its status): an interrupt that
    lands in it waits until the run is ended, then stops the process; never RUNNING forever."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    result = subprocess.run([sys.executable, "-c", _INTERRUPT_AT_END, uri], capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["interrupted", "FINISHED"], result.stderr[-2000:]


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of its own, to make full or read-only (root and mount rights, as on CI's machine)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(folder, leave: int = 0) -> None:
    free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
    with open(folder / "fill", "wb") as f:
        f.truncate(0)
        f.write(b"\0" * max(free - leave, 0))


@pytest.mark.parametrize("how, message", [
    ("read-only", "is read-only ({db}): make it writable or point mlflow.tracking_uri elsewhere"),
    ("full", "the disk holding it is full ("),
])
def test_a_store_that_cannot_be_written_is_one_line_exit_2_before_any_run(workdir, small_disk, how, message):
    from conftest import FAST, run_cli

    db = small_disk / "mlflow.db"
    uri = f"sqlite:///{db}"
    subprocess.run([sys.executable, "-c", "import sys; from jscexp.tracking.store import client; "  # the store, made
                    "client(sys.argv[1]).search_experiments()", uri], check=True)  # elsewhere: this one holds no file
    if how == "read-only":
        subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    else:
        _fill(small_disk)
    result = run_cli([*FAST, f"mlflow.tracking_uri={uri}"], workdir)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: MLflow store {uri}")
    assert message.format(db=db) in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_locked_store_is_one_line_exit_2_before_any_run(workdir):
    import sqlite3

    from conftest import FAST, run_cli, runs_of

    assert run_cli([*FAST], workdir).returncode == 0
    holder = sqlite3.connect(workdir / "mlflow.db")
    holder.execute("BEGIN IMMEDIATE")  # another process's open write transaction
    try:
        result = run_cli([*FAST], workdir)
    finally:
        holder.rollback()
        holder.close()
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: MLflow store sqlite:///{workdir / 'mlflow.db'} is locked by another process: close it there or "
        "point mlflow.tracking_uri elsewhere"]
    assert len(runs_of(workdir)) == 1


@pytest.mark.slow
def test_a_disk_that_fills_mid_run_is_the_one_line_without_mlflows_traceback(workdir, small_disk):
    """The store's disk fills while the run trains: the job ends with the one line (exit 1),
    not MLflow's logged SQLAlchemy traceback above it; its metrics are on disk."""
    uri = f"sqlite:///{small_disk / 'mlflow.db'}"
    job = start_cli(["dataset=jsc_synth", "dataset.n_rows=30000", "batch_size=16", "max_epochs=20",
                     "trainer.progress_bar=false", f"mlflow.tracking_uri={uri}"], workdir, lambda: _training(workdir),
                    timeout=120, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _fill(small_disk)
    _, err = job.communicate(timeout=300)
    assert job.returncode == 1, err[-3000:]
    assert "Traceback" not in err and "SQLAlchemy" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"error: the tracking store {uri} stopped answering during run ")
    assert "(database or disk is full)" in last


def test_a_new_sqlite_store_is_mlflows_own_schema_copied_with_its_own_default_experiment(tmp_path, monkeypatch):
    """A new store starts from the migrated schema this MLflow version made once: the same
    tables and schema revision as a store MLflow migrates itself, its default experiment's
    artifacts beside it, not beside the first store."""
    import sqlite3

    import mlflow
    from mlflow.tracking import MlflowClient

    from jscexp.tracking.store import client

    monkeypatch.setenv("JSCEXP_CACHE", str(tmp_path / "cache"))
    (tmp_path / "own").mkdir()
    MlflowClient(f"sqlite:///{tmp_path / 'own' / 'mlflow.db'}").search_experiments()  # MLflow's migrations
    stores = []
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)
        stores.append(client(f"sqlite:///{tmp_path / name / 'mlflow.db'}"))
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f"mlflow-{mlflow.__version__}-schema.db"]

    def schema(path) -> tuple:
        """Each table's and index's definition, its lines sorted: MLflow's own migrations list
        a table's constraints in an order that varies from one run to the next."""
        with sqlite3.connect(path) as db:
            tables = {name: sorted(line.strip().rstrip(",") for line in (sql or "").splitlines())
                      for name, sql in db.execute("SELECT name, sql FROM sqlite_master")}
            return tables, db.execute("SELECT version_num FROM alembic_version").fetchall()

    assert schema(tmp_path / "second" / "mlflow.db") == schema(tmp_path / "own" / "mlflow.db")
    assert stores[1].get_experiment("0").artifact_location == str(tmp_path / "second" / "mlruns" / "0")
    run = stores[1].create_run(stores[1].create_experiment("x"))
    stores[1].log_metric(run.info.run_id, "acc", 0.5)
    assert stores[1].get_run(run.info.run_id).data.metrics == {"acc": 0.5}


def test_a_new_store_is_made_by_mlflow_where_the_schema_copy_cannot_be(tmp_path, monkeypatch):
    """jscexp's cache is a file, not a folder: the shortcut leaves nothing behind and MLflow's
    own migrations make the store."""
    from jscexp.tracking.store import client

    (tmp_path / "cache").write_text("not a folder")
    monkeypatch.setenv("JSCEXP_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    store = client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = store.create_run(store.create_experiment("x"))
    store.set_terminated(run.info.run_id, "FINISHED")
    assert store.get_run(run.info.run_id).info.status == "FINISHED"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "mlflow.db"]
