"""Hydra callback: one MLflow parent run per multirun, every job a child of it.

Kept free of heavy imports at module level: Hydra instantiates it even for ``--help``.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
from typing import TYPE_CHECKING

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from jscexp.config import plain_list
from jscexp.timeline import mark

if TYPE_CHECKING:
    from jscexp.tracking.run import TrackedRun
from jscexp.tracking.names import SWEPT_ENV, sweep_name, swept_keys
from jscexp.tracking.store import PARENT_ENV, check_reachable, client, end_run, ensure_experiment, mask, tracking_uri


class MlflowSweepCallback(Callback):
    def __init__(self) -> None:
        self._parent: TrackedRun | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        from jscexp.errors import UserError
        from jscexp.tracking.resume import RESUME_ENV, WORKER_TAG, end_orphans, resumable_parent, worker_id
        from jscexp.tracking.run import TrackedRun

        mark("sweep_start")
        try:  # the sweep's own checks ran before this (jscexp.preflight): no parent run for a bad sweep
            uri = tracking_uri(config.mlflow.tracking_uri)
            check_reachable(uri)
        except UserError as err:  # Hydra would only warn about a callback's error and go on
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None

        task = plain_list(config.hydra.overrides.task, resolve=False)
        command = " ".join(task)
        search = dict(config.hydra.sweeper.get("params") or {})
        # Create the store and experiment once, here, before any job races to (mlflow #4123).
        mlflow_client = client(uri)
        end_orphans(uri)  # once for the sweep: its jobs do not each look again
        previous = resumable_parent(mlflow_client, ensure_experiment(mlflow_client, config.experiment), mask(command))
        self._parent = TrackedRun(
            uri,
            config.experiment,
            run_name=sweep_name(task, search),
            tags={"jscexp.kind": "sweep", "jscexp.sweep_overrides": command, WORKER_TAG: worker_id()},
            reopen=previous,
        )
        os.environ[PARENT_ENV] = self._parent.run_id
        os.environ[SWEPT_ENV] = json.dumps(swept_keys(task, search))  # the jobs' run names
        if previous:
            os.environ[RESUME_ENV] = "1"
            print(f"resuming the interrupted sweep {previous}: finished jobs are skipped", file=sys.stderr)
        # The sweeper may raise before on_multirun_end; never leave the parent RUNNING.
        atexit.register(self._finish, None)
        mark("parent_run")

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        """Reads the sweep's outcomes (written by the sweeper, whatever the launcher): their
        verdict is the parent run's status and the process's exit code."""
        from jscexp.sweep import OutcomeLog, verdict

        mark("sweep_end")
        result = verdict(OutcomeLog(config.hydra.sweep.dir).read())
        if summary := result.summary():
            print(f"error: {summary}", file=sys.stderr)
        if self._parent is not None:
            if result.failures:
                self._parent.client.set_tag(self._parent_id(), "jscexp.failed_jobs", "; ".join(result.failures)[:5000])
            self._publish(config)
            self._finish(result.parent_status)
        mark("sweep_closed")
        if result.exit_code:
            raise SystemExit(result.exit_code)

    def _parent_id(self) -> str:
        """Ours, unless the sweeper moved this sweep under a parent shared with other workers."""
        assert self._parent is not None
        return os.environ.get(PARENT_ENV) or self._parent.run_id

    def _publish(self, config: DictConfig) -> None:
        """The sweep's table and plot on the parent run; a reporting problem must not fail the sweep."""
        from jscexp.tracking.report import publish_sweep

        try:
            if table := publish_sweep(tracking_uri(config.mlflow.tracking_uri), config.experiment, self._parent_id()):
                print(f"\n{table}")
        except Exception as err:  # noqa: BLE001 - the runs themselves are already safely logged
            print(f"warning: could not attach the sweep table to its parent run: {err}", file=sys.stderr)

    def _finish(self, status: str | None) -> None:
        """Ends the parent run; ``None`` (at exit, without on_multirun_end) means it broke off."""
        from jscexp.errors import interrupted
        from jscexp.tracking.resume import RESUME_ENV

        if self._parent is None:
            return
        if status is None:
            status = "KILLED" if interrupted() else "FAILED"
        end_run(self._parent.client, self._parent_id(), status)
        self._parent = None
        os.environ.pop(PARENT_ENV, None)
        os.environ.pop(RESUME_ENV, None)
        os.environ.pop(SWEPT_ENV, None)
        atexit.unregister(self._finish)
