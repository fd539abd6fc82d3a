"""Resuming an interrupted sweep: the same command again skips the jobs that finished; and
finding a finished float training that a PTQ job can quantise instead of training its own.

The sweep callback reopens the newest parent run of the same sweep command when that one did
not finish, and sets ``RESUME_ENV``; each job then looks for a FINISHED child of that parent
with its own overrides.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Collection
from dataclasses import dataclass, field

from jscexp.tracking.store import PARENT_ENV, ensure_experiment, filter_string, mask
from jscexp.tracking.store import client as store_client

RESUME_ENV = "JSCEXP_RESUMING"
WORKER_TAG = "jscexp.worker"  # host:pid of the process that ran a run or a sweep


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class Earlier:
    """A job's runs in the sweep being resumed: its FINISHED one (id and metrics), if any, and
    those left RUNNING when the sweep's process died (SIGKILL, a lost node)."""

    run_id: str | None = None
    metrics: dict = field(default_factory=dict)
    lost: list[str] = field(default_factory=list)


def earlier_runs(uri: str, overrides: list[str]) -> Earlier:
    parent = os.environ.get(PARENT_ENV)
    if not parent or os.environ.get(RESUME_ENV) != "1":
        return Earlier()

    client = store_client(uri)
    experiment = client.get_run(parent).info.experiment_id
    wanted = filter_string(mask(" ".join(overrides)))
    found = client.search_runs(
        [experiment], f"tags.mlflow.parentRunId = '{parent}' and tags.`jscexp.overrides` = {wanted}",
    )
    done = [r for r in found if r.info.status == "FINISHED"]
    lost = [r.info.run_id for r in found if r.info.status == "RUNNING"]
    return Earlier(done[0].info.run_id, done[0].data.metrics, lost) if done else Earlier(lost=lost)


def sweeps_of(client, experiment_id: str, sweep_overrides: str) -> list:
    """The parent runs of this sweep command (its overrides as the callback tags them), newest first."""
    found = client.search_runs([experiment_id], "tags.`jscexp.kind` = 'sweep'", order_by=["attributes.start_time DESC"],
                               max_results=200)
    return [r for r in found if r.data.tags.get("jscexp.sweep_overrides") == sweep_overrides]


def resumable_parent(client, experiment_id: str, sweep_overrides: str) -> str | None:
    """The newest parent run of this sweep command, if it did not finish and is not another
    worker's live sweep (workers on one study start the same command side by side)."""
    same = sweeps_of(client, experiment_id, sweep_overrides)
    if same and same[0].info.status != "FINISHED" and not _live(same[0]):
        return same[0].info.run_id
    return None


def _live(run) -> bool:
    """A RUNNING sweep whose process still runs, on this host (elsewhere no one can tell)."""
    return run.info.status == "RUNNING" and _process(run) is True


def _process(run) -> bool | None:
    """Whether the process that runs ``run`` (its ``WORKER_TAG``) still runs: None where no one
    can tell (another host, no tag) and for this very process."""
    host, _, pid = run.data.tags.get(WORKER_TAG, "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def end_orphans(uri: str, claimed: Collection[str] = ()) -> list[str]:
    """Runs left RUNNING by a process of this host that is gone (SIGKILL before its first saved
    epoch, a store that filled up mid-run): ended KILLED with the reason, said in one line;
    returns their ids.
    A sweep's parent and children are left to the sweep: the same command again resumes it
    and ends them pointing at the runs that replace them; so does a job for the runs it goes on
    from (``claimed``)."""
    from jscexp.tracking.shared import kill

    if uri.startswith("sqlite:///") and not os.path.exists(uri[len("sqlite:///") :]):
        return []  # a store yet to be made holds no run
    client = store_client(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    if not ids:
        return []
    ended = []
    for run in client.search_runs(ids, "attributes.status = 'RUNNING'", max_results=1000):
        tags = run.data.tags
        if run.info.run_id in claimed or "mlflow.parentRunId" in tags or tags.get("jscexp.kind") == "sweep" \
                or _process(run) is not False:
            continue
        kill(client, run.info.run_id, f"lost: its process ({tags[WORKER_TAG]}) is gone; it never ended")
        ended.append(run.info.run_id)
    if ended:
        print(f"ended {len(ended)} run(s) that a process now gone left RUNNING: KILLED ({', '.join(ended)})")
    return ended


FLOAT_TAG = "jscexp.float_key"  # on every mode=train run: the hash of its float training


@dataclass
class FloatRun:
    """A finished float training: its run, metrics and checkpoint."""

    run_id: str
    metrics: dict
    checkpoint: str


def finished_float_run(uri: str, experiment: str, key: str) -> FloatRun | None:
    """The newest FINISHED run of ``experiment`` that trained the float model ``key`` names."""

    mlflow_client = store_client(uri)
    experiment_id = ensure_experiment(mlflow_client, experiment)  # the asking job's run is in it already
    runs = mlflow_client.search_runs([experiment_id], f"tags.`{FLOAT_TAG}` = '{key}' and attributes.status = 'FINISHED'",
                                     order_by=["attributes.start_time DESC"], max_results=1)
    if not runs or "jscexp.checkpoint" not in runs[0].data.tags:
        return None
    run = runs[0]
    return FloatRun(run.info.run_id, run.data.metrics, run.data.tags["jscexp.checkpoint"])
