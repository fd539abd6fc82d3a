"""Links into the MLflow UI that open on its model-training view.

MLflow 3's UI opens an experiment on its GenAI overview (traces, "Detect issues", an
assistant panel) unless the link asks for the training runs: the view is the UI's
``workflowType`` (kept in the browser once chosen), set by ``?workflowType=machine_learning``
in the link; the experiment's ``mlflow.experimentKind`` tag no longer decides it.

``python -m jscexp.tracking.links STORE_URI UI_URL`` prints each experiment's link (``make ui``).
"""

from __future__ import annotations

import sys

VIEW = "workflowType=machine_learning"


def ui_link(base: str, experiment_id: str | None = None, run_id: str | None = None) -> str:
    """The UI's page of an experiment's runs (or one run, or the experiment list) on the training view."""
    path = "" if experiment_id is None else f"experiments/{experiment_id}" + (f"/runs/{run_id}" if run_id else "")
    return f"{base.rstrip('/')}/#/{path}?{VIEW}"


def main(argv: list[str] | None = None) -> int:
    from pathlib import Path

    store, base = (argv if argv is not None else sys.argv[1:])[:2]
    if store.startswith("sqlite:///") and not Path(store[len("sqlite:///"):]).is_file():
        print(f"no runs yet in {store}; the UI: {ui_link(base)}")
        return 0
    from mlflow.tracking import MlflowClient

    experiments = MlflowClient(store).search_experiments()
    print("open an experiment's runs in the MLflow UI:")
    for e in sorted(experiments, key=lambda e: e.name):
        print(f"  {e.name:<24} {ui_link(base, e.experiment_id)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
