"""A thin stateful facade over MLflow's client: one run, ended FINISHED or FAILED.

MLflow's client rides out a server that is away for a few minutes (its HTTP retries with
backoff); a store that stays away ends the run's job with one line, and the run's metrics
are on disk all the same: every batch goes to ``metrics.jsonl`` in its output folder first.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Mapping
from pathlib import Path

from jscexp.errors import UserError, deferred_interrupts, first_line, interrupted
from jscexp.tracking.store import client, end_run, ensure_experiment, mask

_MAX_PARAM_LEN = 6000  # MLflow's limit on a param value
FLUSH_SECONDS = 5.0  # a run's metrics reach the store at most this late


def flatten(tree, prefix: str = "") -> dict[str, object]:
    """``{"a": {"b": 1}, "c": [1, 2]}`` → ``{"a.b": 1, "c": "[1, 2]"}``."""
    flat: dict[str, object] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


class TrackingLost(UserError):
    """The tracking store stopped answering in the middle of a run, beyond MLflow's retries:
    one line like a user's error, but not the input's fault (exit 1)."""

    exit_code = 1


def _store_down(err: BaseException) -> bool:
    """Whether ``err`` is a lost connection to the store (MLflow wraps the HTTP error as a
    bare MlflowException whose context is the requests error)."""
    import requests
    from sqlalchemy.exc import OperationalError

    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, requests.RequestException | OperationalError | ConnectionError | TimeoutError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _root_line(err: BaseException) -> str:
    """The first line of the error at the bottom of ``err``'s chain: ``database or disk is full``,
    not SQLAlchemy's wrapper text."""
    while (inner := err.__cause__ or err.__context__) is not None:
        err = inner
    return first_line(err)


_STORE_LOGGER = "mlflow.store.db.utils"  # logs a failed write's whole traceback, then raises it


@contextlib.contextmanager
def _quiet_store():
    """While jscexp writes: a failed write is its one line (``TrackingLost``), so MLflow's own
    ERROR log of the same traceback is held back (only for the call)."""
    import logging

    logger = logging.getLogger(_STORE_LOGGER)
    hold = logging.Filter("hold")  # passes only records of a logger named "hold": none
    logger.addFilter(hold)
    try:
        yield
    finally:
        logger.removeFilter(hold)


class TrackedRun:
    """Context manager around one MLflow run, writing through explicit run ids in batches."""

    def __init__(
        self, uri: str, experiment: str, *, run_name: str | None = None, tags: Mapping | None = None,
        reopen: str | None = None, local: Path | None = None,
    ):
        """Creates a run, or with ``reopen=<run id>`` marks an existing one RUNNING again;
        ``local`` is the file its metrics also go to."""
        self.uri, self.local = uri, local
        self._pending: list = []  # metrics not yet in the store
        self._tags: dict[str, object] = {}  # tags not yet in the store
        self._params: list = []  # params not yet in the store
        self._texts: dict[str, str] = {}  # text artifacts not yet in the store
        self._files: dict[str, Path] = {}  # artifact name -> file, not yet in the store
        self._flushed = time.monotonic()
        self._ended = False
        self.client = client(uri)
        self.experiment_id = ensure_experiment(self.client, experiment)
        self.run_id: str = ""
        try:
            with deferred_interrupts():  # a run that exists is held here, to be ended
                run = self._reopen(reopen, tags) if reopen else self._create(run_name, tags)
                self.run_id, self.artifact_uri = run.info.run_id, run.info.artifact_uri
        except KeyboardInterrupt as err:
            if self.run_id:
                self.__exit__(KeyboardInterrupt, err, None)
            raise

    def _reopen(self, run_id: str, tags: Mapping | None):
        """RUNNING again, with ``tags`` as they are now (the worker that reopened it)."""
        from mlflow.entities import RunTag

        self.client.update_run(run_id, status="RUNNING")
        if tags:
            self.client.log_batch(run_id, tags=[RunTag(k, mask(str(v))) for k, v in tags.items()])
        return self.client.get_run(run_id)

    def _create(self, run_name: str | None, tags: Mapping | None):
        from mlflow.tracking.context.registry import resolve_tags

        # resolve_tags: the source, user and git fields MLflow's own runs carry
        return self.client.create_run(
            self.experiment_id, run_name=mask(run_name or "") or None,
            tags={k: mask(str(v)) for k, v in resolve_tags(dict(tags or {})).items()},
        )

    @property
    def link(self) -> str:
        """Where the run opens in the MLflow UI (for a local store, once ``make ui`` serves it)."""
        from jscexp.tracking.links import ui_link

        base, later = (self.uri, "") if self.uri.startswith("http") else ("http://127.0.0.1:5000", " (make ui)")
        return ui_link(base, self.experiment_id, self.run_id) + later

    def __enter__(self) -> TrackedRun:
        return self

    def close(self) -> None:
        """Ends the run now (FINISHED), before its ``with`` block does (then a no-op)."""
        self.__exit__(None, None, None)

    def __exit__(self, exc_type, exc, tb) -> None:
        if isinstance(exc, TrackingLost) or self._ended:  # nobody to tell: the store is away; or ended already
            return
        self._ended = True
        try:
            with deferred_interrupts():  # its files, last metrics and end are one step: not RUNNING forever
                self._end(exc_type, exc)
        except Exception as err:
            if not _store_down(err):
                raise
            if exc is None:
                raise self._lost(err) from err
            # else the run's own error goes on up: the store could not record it

    def _end(self, exc_type, exc) -> None:
        try:
            self._upload()
        except Exception as err:  # a file the run named is gone, a full disk: ended all the same
            if _store_down(err):
                raise
            if exc is None:  # the run could not store its own files: that is how it failed
                self._fail(type(err), err)
                raise
        if exc is None:
            self.flush()
            end_run(self.client, self.run_id, "FINISHED")
        else:
            self._fail(exc_type, exc)

    def _fail(self, exc_type, exc) -> None:
        # SystemExit: submitit requeues a preempted job from its signal handler by exiting
        status = "KILLED" if isinstance(exc, KeyboardInterrupt | SystemExit) or interrupted() else "FAILED"
        reason = f"interrupted: the process exited ({exc})" if isinstance(exc, SystemExit) else f"{exc_type.__name__}: {exc}"
        self.flush({"error": reason[:5000]})  # with the run's last metrics, in one batch
        end_run(self.client, self.run_id, status)

    def _lost(self, err: BaseException) -> TrackingLost:
        kept = f"; its metrics so far are in {self.local}" if self.local else ""
        return TrackingLost(f"the tracking store {mask(self.uri)} stopped answering during run {self.run_id} "
                            f"({mask(_root_line(err))}){kept}")

    def _store(self, call, *args, **kwargs) -> None:
        try:
            with _quiet_store():
                call(*args, **kwargs)
        except Exception as err:
            if _store_down(err):
                raise self._lost(err) from err
            raise

    def log_params(self, params: Mapping[str, object]) -> None:
        """Now, with whatever else is pending: a run killed before its first metrics keeps
        the knobs that say what it was."""
        from mlflow.entities import Param

        self._params += [Param(k, mask(str(v))[:_MAX_PARAM_LEN]) for k, v in params.items()]
        self.flush()

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """To ``local`` at once; to the store in batches (with the tags set meanwhile): when
        the run ends, or once ``FLUSH_SECONDS`` have passed (a stacked group's K runs would
        otherwise each write every epoch)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        if self.local is not None:  # first: on disk whatever the store does
            self.local.parent.mkdir(parents=True, exist_ok=True)
            with self.local.open("a") as f:
                f.write(json.dumps({"step": step or 0, "timestamp": now, **{k: float(v) for k, v in metrics.items()}}) + "\n")
        self._pending += [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
        if time.monotonic() - self._flushed >= FLUSH_SECONDS:
            self.flush()

    def flush(self, tags: Mapping[str, object] | None = None) -> None:
        """Writes the pending params, metrics and tags, and ``tags``, to the store."""
        from mlflow.entities import RunTag

        metrics, params = self._pending, self._params
        tagged = [RunTag(k, mask(str(v))) for k, v in {**self._tags, **(tags or {})}.items()]
        self._pending, self._params, self._tags = [], [], {}
        while metrics or params or tagged:  # MLflow's limits per batch
            self._store(self.client.log_batch, self.run_id, metrics=metrics[:1000], params=params[:100], tags=tagged[:100])
            metrics, params, tagged = metrics[1000:], params[100:], tagged[100:]
        self._flushed = time.monotonic()

    def log_dataset(self, dataset: Mapping[str, str], context: str = "training") -> None:
        """An MLflow dataset input (name, digest, source_type, source, profile)."""
        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.exceptions import MlflowException

        entry = DatasetInput(Dataset(**dataset), tags=[InputTag("mlflow.data.context", context)])
        for attempt in range(3):
            try:
                return self._store(self.client.log_inputs, self.run_id, datasets=[entry])
            except MlflowException as err:
                # Parallel jobs logging one dataset race to create its row (a SQL store's
                # unique key); the loser finds it made on the next try.
                if attempt == 2 or not any(s in str(err) for s in ("UNIQUE constraint", "duplicate key", "IntegrityError")):
                    raise
                time.sleep(0.2 * (attempt + 1))

    def set_tags(self, tags: Mapping[str, object]) -> None:
        """With the next batch of metrics (at the latest when the run ends)."""
        self._tags.update(tags)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """The file ``path`` (read when the run ends), under ``artifact_path``."""
        self._files[f"{artifact_path}/{Path(path).name}" if artifact_path else Path(path).name] = Path(path)

    def log_texts(self, texts: Mapping[str, str]) -> None:
        """``{artifact file: text}``."""
        self._texts.update({name: mask(text) for name, text in texts.items()})

    def _upload(self) -> None:
        """The run's files and texts in one upload when it ends (a failed run's too): one
        store call, not one per file."""
        import shutil
        import tempfile

        texts, files, self._texts, self._files = self._texts, self._files, {}, {}
        if not texts and not files:
            return
        with tempfile.TemporaryDirectory() as tmp:
            for name in [*texts, *files]:
                (Path(tmp) / name).parent.mkdir(parents=True, exist_ok=True)
            for name, text in texts.items():
                (Path(tmp) / name).write_text(text)
            for name, path in files.items():
                shutil.copyfile(path, Path(tmp) / name)
            self._store(self.client.log_artifacts, self.run_id, tmp)
