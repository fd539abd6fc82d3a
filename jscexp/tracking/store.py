"""Where runs go: the tracking URI and experiments, created once and race-safe."""

from __future__ import annotations

import os

DEFAULT_URI = "sqlite:///mlflow.db"  # embedded store in the directory the user runs from
PARENT_ENV = "JSCEXP_PARENT_RUN_ID"  # set by the sweep callback, read by every job it launches


def tracking_uri(configured: str | None = None) -> str:
    """Config key first, then ``MLFLOW_TRACKING_URI``, then the embedded SQLite store.

    A relative SQLite path is made absolute: MLflow caches one store per URI string, so a
    relative one would keep writing to the first directory a process ran from.
    """
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        uri = prefix + os.path.abspath(uri[len(prefix) :])
    return uri


def client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def ensure_experiment(mlflow_client, name: str) -> str:
    """Returns the experiment id, creating it if needed.

    Two processes may create the same experiment at once (mlflow #4123): the loser's
    create fails and it reads the winner's.
    """
    from mlflow.exceptions import MlflowException

    found = mlflow_client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return mlflow_client.create_experiment(name)
    except MlflowException:
        found = mlflow_client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id
