"""Runs out of MLflow as a pandas frame, through MLflow's own search."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from jscexp.errors import UserError, deferred_interrupts, first_line


def latest_sweep_id(client, experiment_id: str) -> str | None:
    found = client.search_runs(
        [experiment_id], "tags.`jscexp.kind` = 'sweep'", order_by=["attributes.start_time DESC"], max_results=1
    )
    return found[0].info.run_id if found else None


def runs_frame(uri: str, experiment: str, *, sweep: str | None = "latest", filter_string: str = "") -> pd.DataFrame:
    """One row per run of ``experiment``: its params, metrics, tags and status.

    ``sweep`` is a parent run id, ``latest`` for the newest sweep, or None for every run
    that is not itself a sweep parent.
    """
    import mlflow

    from jscexp.tracking.store import client as store_client

    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).is_file():
        raise UserError(f"no MLflow store at {uri}: run from the directory holding mlflow.db or pass --tracking-uri")
    client = store_client(uri)  # an interrupted read would leave a SQLite store locked
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = ", ".join(e.name for e in client.search_experiments())
        raise UserError(f"no MLflow experiment '{experiment}' in {uri}: choose one of {names or '(none yet)'}")
    clauses = [filter_string] if filter_string else []
    if sweep == "latest":
        sweep = latest_sweep_id(client, exp.experiment_id)
    if sweep:
        clauses.append(f"tags.mlflow.parentRunId = '{sweep}'")
    mlflow.set_tracking_uri(uri)
    try:
        with deferred_interrupts():
            frame = mlflow.search_runs(
                [exp.experiment_id], " and ".join(clauses), order_by=["attributes.start_time ASC"], output_format="pandas"
            )
    except mlflow.exceptions.MlflowException as err:
        if not filter_string:
            raise
        raise UserError(f"--filter {filter_string!r} is not an MLflow filter ({first_line(err)}): write e.g. "
                        "\"params.batch_size = '64'\", a dotted name in backquotes: params.`model.name`") from None
    if "tags.jscexp.kind" in frame:
        frame = frame[frame["tags.jscexp.kind"] != "sweep"]
    return in_sweep_order(frame[~superseded(frame)])


def in_sweep_order(frame: pd.DataFrame) -> pd.DataFrame:
    """Runs in the order of their sweep's jobs (``jscexp.job_num``; a stacked group's trials in
    the order they were opened), sweeps in the order they started: jobs in worker processes
    start in no fixed order."""
    if frame.empty or "tags.jscexp.job_num" not in frame:
        return frame.reset_index(drop=True)
    parent = frame.get("tags.mlflow.parentRunId", pd.Series(index=frame.index, dtype=object)).fillna(frame["run_id"])
    keys = pd.DataFrame({"sweep": parent.map({p: i for i, p in enumerate(dict.fromkeys(parent))}),
                         "job": pd.to_numeric(frame["tags.jscexp.job_num"], errors="coerce"),
                         "start": range(len(frame))}, index=frame.index)
    order = keys.sort_values(["sweep", "job", "start"], na_position="last", kind="stable").index
    return frame.loc[order].reset_index(drop=True)


def superseded(frame: pd.DataFrame) -> pd.Series:
    """Runs whose work another run did again, never a result: KILLED ones that a resumed or
    rerun job points at (``jscexp.superseded_by``), or whose search trial a retry ran again."""
    from jscexp.tracking.shared import STUDY_TAG, SUPERSEDED_TAG

    def tag(name: str) -> pd.Series:
        return frame.get(f"tags.{name}", pd.Series(None, index=frame.index, dtype=object))

    killed = frame.get("status", pd.Series("", index=frame.index)) == "KILLED"
    retried = {(s, n) for s, n in zip(tag(STUDY_TAG), tag("jscexp.retry_of")) if isinstance(n, str)}
    again = pd.Series([isinstance(n, str) and (s, n) in retried
                       for s, n in zip(tag(STUDY_TAG), tag("jscexp.optuna_trial"))], index=frame.index, dtype=bool)
    return killed & (tag(SUPERSEDED_TAG).notna() | again)
