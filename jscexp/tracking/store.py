"""Where runs go: the tracking URI and experiments, created once and race-safe."""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from jscexp.config import cache_home

DEFAULT_URI = "sqlite:///mlflow.db"  # embedded store in the directory the user runs from
PARENT_ENV = "JSCEXP_PARENT_RUN_ID"  # set by the sweep callback, read by every job it launches
# MLflow 3 opens an experiment on the view its kind names: the runs, not the GenAI overview
EXPERIMENT_TAGS = {
    "mlflow.experimentKind": "custom_model_development",
    "mlflow.note.content": "jscexp: jet-substructure classification runs. Each sweep is a parent run with its "
                           "table (table.md) and plot; each job or trial is a child run. Tables: python -m jscexp.table",
}


def from_env(value: str | None, what: str) -> str | None:
    """``env:NAME`` stands for the URL in environment variable NAME: URLs with passwords
    stay out of config files, overrides and MLflow params."""
    if not value or not value.startswith("env:"):
        return value
    name = value[len("env:") :]
    if not os.environ.get(name):
        from jscexp.errors import UserError

        raise UserError(f"{what} is read from ${name}, which is not set: export {name}=URL "
                        "(scripts/services.sh up writes both URLs to .services/env)")
    return os.environ[name]


def tracking_uri(configured: str | None = None, base: Path | None = None) -> str:
    """Config key first (``env:NAME`` allowed), then ``MLFLOW_TRACKING_URI``, then the embedded SQLite store.

    A relative SQLite path is made absolute (from ``base``, else the working folder): MLflow
    caches one store per URI string, so a relative one would keep writing to the first
    directory a process ran from.
    """
    uri = from_env(configured, "mlflow.tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    return absolute_sqlite(uri, base)


def absolute_sqlite(url: str, base: Path | None = None) -> str:
    """A SQLite URL (``sqlite:///`` or ``sqlite+driver:///``) with a relative file path made
    absolute from ``base`` (else the working folder); any other URL as it is."""
    scheme, sep, path = url.partition(":///")
    if not sep or scheme.split("+")[0] != "sqlite" or not path or path.startswith(("/", "file:")) or path == ":memory:":
        return url
    return f"{scheme}:///{os.path.abspath(Path(base or Path.cwd()) / path)}"


def client(uri: str):
    """MLflow's client for ``uri``; on a database store each call finishes before an interrupt lands."""
    from mlflow.tracking import MlflowClient

    if uri.startswith("sqlite:///"):
        _create_sqlite_once(uri)
    mlflow_client = MlflowClient(tracking_uri=uri)
    # an HTTP server keeps its own transactions whole, and its calls may retry for minutes
    return mlflow_client if uri.startswith(("http://", "https://")) else _Uninterrupted(mlflow_client)


class _Uninterrupted:
    """An MLflow client whose calls run under ``deferred_interrupts``."""

    def __init__(self, inner) -> None:
        self._inner = inner

    def __getattr__(self, name: str):
        if name == "_inner":  # not set yet: an unpickled copy before its state is back
            raise AttributeError(name)
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            from jscexp.errors import deferred_interrupts

            with deferred_interrupts():
                return attr(*args, **kwargs)

        return call


def _create_sqlite_once(uri: str) -> None:
    """Two processes opening a fresh SQLite store both run its schema migrations and one
    fails; the first to take this lock creates the store, the others find it made. A new
    store starts as a copy of the migrated schema (no rows), made once per MLflow version:
    running MLflow's migrations took about a second per new store."""
    import fcntl

    path = uri[len("sqlite:///") :]
    if os.path.exists(path) and os.path.getsize(path) > 0 and not os.path.exists(path + ".lock"):
        return
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            from mlflow.tracking import MlflowClient

            if not os.path.exists(path) or os.path.getsize(path) == 0:
                _copy_schema(path)
            MlflowClient(tracking_uri=uri).search_experiments(max_results=1)  # creates/migrates the schema
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    with contextlib.suppress(FileNotFoundError):
        os.remove(path + ".lock")


def _copy_schema(path: str) -> None:
    """Copies the migrated, empty schema of this MLflow version to ``path`` (made first if
    missing). Where it cannot be made or copied, nothing of it is left — no temporary file, no
    half-copied store — and MLflow migrates the new store itself."""
    import shutil
    import tempfile

    import mlflow
    from mlflow.store.db.utils import _initialize_tables  # what a new store runs: tables, then migrations
    from sqlalchemy import create_engine

    schema = cache_home() / f"mlflow-{mlflow.__version__}-schema.db"
    tmp = None
    try:
        if not schema.exists():
            schema.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=schema.parent, suffix=".db")
            os.close(fd)
            engine = create_engine(f"sqlite:///{tmp}")
            try:
                _initialize_tables(engine)
            finally:
                engine.dispose()
            os.replace(tmp, schema)  # whole or absent, even with two makers at once
        shutil.copyfile(schema, path)
    except Exception:  # noqa: BLE001 — a shortcut only: MLflow's own migrations make the store
        with contextlib.suppress(OSError):
            os.remove(path)
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.remove(tmp)


def ensure_experiment(mlflow_client, name: str) -> str:
    """Returns the experiment id, creating it if needed.

    Two processes may create the same experiment at once (mlflow #4123): the loser's
    create fails and it reads the winner's.
    """
    from mlflow.exceptions import MlflowException

    key = (mlflow_client.tracking_uri, name)
    if key in _EXPERIMENT_IDS:  # a stacked group opens K runs in one experiment
        return _EXPERIMENT_IDS[key]
    found = mlflow_client.get_experiment_by_name(name)
    if found is None:
        try:
            found = mlflow_client.get_experiment(mlflow_client.create_experiment(name, tags=EXPERIMENT_TAGS))
        except MlflowException:
            found = mlflow_client.get_experiment_by_name(name)
            if found is None:
                raise
    if found.lifecycle_stage == "active":
        _EXPERIMENT_IDS[key] = found.experiment_id
    return found.experiment_id


_EXPERIMENT_IDS: dict[tuple[str, str], str] = {}  # (tracking URI, name) -> id, per process


def mask(text: str) -> str:
    """Hides the password of any ``scheme://user:password@host`` in ``text``."""
    return _CREDENTIALS.sub(r"\1***@", text)


_CREDENTIALS = re.compile(r"(://[^:/@\s]+:)[^@\s]+@")


def check_reachable(uri: str) -> None:
    """Fails fast with one line where MLflow itself would retry for minutes or create junk."""
    from jscexp.errors import UserError

    if uri.startswith("sqlite:///"):
        folder = os.path.dirname(uri[len("sqlite:///") :]) or "."
        if not os.path.isdir(folder):
            raise UserError(f"MLflow store {uri}: folder {folder} does not exist; fix mlflow.tracking_uri")
        _check_writable(uri[len("sqlite:///") :], folder)
    elif uri.startswith(("http://", "https://")):
        _wait_for_server(uri)


MIN_FREE_BYTES = 16 * 2**20  # a run's params, metrics and small artifacts; less and it would fail mid-run
LOCK_PATIENCE = 15.0  # seconds another writer may hold the SQLite store before it counts as locked


def _check_writable(path: str, folder: str) -> None:
    """A SQLite store that cannot take a write — read-only, on a full disk, locked by another
    process — is one line before any run (else: a SQLAlchemy traceback, or a run left RUNNING)."""
    import sqlite3

    from jscexp.errors import UserError

    where = f"MLflow store sqlite:///{path}"
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise UserError(f"{where} is read-only ({path if os.path.exists(path) else folder}): "
                        "make it writable or point mlflow.tracking_uri elsewhere")
    disk = os.statvfs(folder)
    free = disk.f_bavail * disk.f_frsize
    if free < MIN_FREE_BYTES:
        raise UserError(f"{where}: the disk holding it is full ({free // 1024} KiB free): free some space "
                        "or point mlflow.tracking_uri elsewhere")
    if not os.path.exists(path):
        return
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=LOCK_PATIENCE)) as db:
            db.execute("BEGIN IMMEDIATE")  # the write lock a run's first write takes, then let go
            db.rollback()
    except sqlite3.DatabaseError as err:
        why = "locked by another process" if "locked" in str(err) else f"not writable ({err})"
        raise UserError(f"{where} is {why}: close it there or point mlflow.tracking_uri elsewhere") from None


SERVER_PATIENCE = 120.0  # seconds a server that takes connections but does not answer is waited for


def _wait_for_server(uri: str) -> None:
    """A refused or unresolvable server is one line at once; one that holds the connection
    without answering (paused, overloaded, restarting) is waited for — MLflow's own client
    retries such a server for minutes — and only then is one line."""
    import sys
    import time
    import urllib.request

    from jscexp.errors import UserError

    deadline = time.monotonic() + SERVER_PATIENCE
    while True:
        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5)
            return
        except OSError as err:
            reason = getattr(err, "reason", err)
            if not isinstance(reason, TimeoutError) or time.monotonic() >= deadline:
                raise UserError(
                    f"MLflow server {mask(uri)} is unreachable ({reason}); start it or fix mlflow.tracking_uri"
                ) from None
            print(f"MLflow server {mask(uri)} does not answer ({reason}): waiting", file=sys.stderr, flush=True)


def end_run(mlflow_client, run_id: str, status: str, reason: str | None = None) -> None:
    """The one way a run ends: FINISHED, FAILED or KILLED, with its one-line ``reason`` as its
    ``error`` tag where it did not finish (a run's own end, a dead process's, a sweep's parent)."""
    if reason is not None:
        mlflow_client.set_tag(run_id, "error", reason)
    mlflow_client.set_terminated(run_id, status)


def filter_string(text: str) -> str:
    """``text`` as a string literal in an MLflow search filter (single quotes, a quote escaped)."""
    return "'" + text.replace("'", "\\'") + "'"
