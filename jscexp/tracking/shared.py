"""Several sweeper processes (workers) on one Optuna study share one MLflow parent run.

Each worker's sweep callback starts its own parent. Once the study is known, every worker
tags its parent with the study and adopts the earliest-started parent so tagged (ties by run
id): the workers agree without talking to each other. A worker checks again before it
reports, when every worker has tagged its parent, and moves its children to the parent
all of them chose if an early race had it pick its own. The runs of workers that died
without ending them are ended KILLED here too.
"""

from __future__ import annotations

import contextlib
import os

from jscexp.tracking.store import PARENT_ENV, client, end_run, filter_string

STUDY_TAG = "jscexp.optuna_study"


def adopt_study_parent(uri: str, study_name: str, *, absorb: bool = False) -> str | None:
    """Joins this process's sweep to the study's shared parent run; returns its id. With
    ``absorb`` (a worker's last call, when every worker has tagged its parent) any other
    parent of the study is merged into it too: a worker killed before its own last call
    could not move its children itself."""
    own = os.environ.get(PARENT_ENV)
    if not own:
        return None
    mlflow_client = client(uri)
    own_run = mlflow_client.get_run(own)
    if own_run.info.lifecycle_stage == "active":  # else another worker merged it already
        mlflow_client.set_tag(own, STUDY_TAG, study_name)
    experiment = own_run.info.experiment_id
    tagged = mlflow_client.search_runs(
        [experiment], f"tags.`jscexp.kind` = 'sweep' and tags.`{STUDY_TAG}` = {filter_string(study_name)}", max_results=1000
    )
    if not tagged:
        return own
    leader = min(tagged, key=lambda r: (r.info.start_time, r.info.run_id)).info
    others = {r.info.run_id for r in tagged} - {leader.run_id} if absorb else set()
    for merged in others | ({own} - {leader.run_id}):
        _merge(mlflow_client, experiment, merged, leader.run_id)
    if own != leader.run_id and leader.status != "RUNNING":
        mlflow_client.update_run(leader.run_id, status="RUNNING")
    os.environ[PARENT_ENV] = leader.run_id
    return leader.run_id


def _merge(mlflow_client, experiment: str, parent: str, into: str) -> None:
    """Moves ``parent``'s children under ``into`` and deletes ``parent``."""
    from mlflow.exceptions import MlflowException

    for child in mlflow_client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent}'", max_results=10000):
        mlflow_client.set_tag(child.info.run_id, "mlflow.parentRunId", into)
    with contextlib.suppress(MlflowException):  # another worker merged it first
        mlflow_client.set_tag(parent, "jscexp.merged_into", into)
        end_run(mlflow_client, parent, "FINISHED")  # its children live on under ``into``: no RUNNING left
        mlflow_client.delete_run(parent)


def _trial_runs(mlflow_client, experiment: str, study_name: str, number: int, status: str) -> list:
    found = mlflow_client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return mlflow_client.search_runs(
        [found.experiment_id],
        f"tags.`{STUDY_TAG}` = {filter_string(study_name)} and tags.`jscexp.optuna_trial` = '{number}' "
        f"and attributes.status = '{status}'",
    )


def end_lost_trial_run(uri: str, experiment: str, study_name: str, number: int, reason: str) -> None:
    """The MLflow run of a search trial whose worker died: ended KILLED with the reason."""
    mlflow_client = client(uri)
    for run in _trial_runs(mlflow_client, experiment, study_name, number, "RUNNING"):
        kill(mlflow_client, run.info.run_id, reason)


def finished_trial_run(uri: str, experiment: str, study_name: str, number: int, metrics: list[str]):
    """A search trial's run that ended FINISHED with every one of ``metrics``: ``(run id, their
    values)``, else None (its worker died before it could tell the study)."""
    for run in _trial_runs(client(uri), experiment, study_name, number, "FINISHED"):
        if all(m in run.data.metrics for m in metrics):
            return run.info.run_id, [run.data.metrics[m] for m in metrics]
    return None


SUPERSEDED_TAG = "jscexp.superseded_by"  # on a lost run: the run that did its work again (tables leave it out)


def end_if_running(uri: str, run_id: str, reason: str, superseded_by: str | None = None) -> None:
    """A run whose process died without ending it (SIGKILL, OOM): ended KILLED with the reason
    and, where one does its work again, the run that supersedes it."""
    from mlflow.exceptions import MlflowException

    mlflow_client = client(uri)
    try:
        running = mlflow_client.get_run(run_id).info.status == "RUNNING"
    except MlflowException:  # written while logging to another store: not ours to end
        return
    if running:
        if superseded_by:
            mlflow_client.set_tag(run_id, SUPERSEDED_TAG, superseded_by)
        kill(mlflow_client, run_id, reason)


def kill(mlflow_client, run_id: str, reason: str) -> None:
    end_run(mlflow_client, run_id, "KILLED", reason)
