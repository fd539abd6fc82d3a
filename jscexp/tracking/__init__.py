"""Tracking stage: MLflow run lifecycle, parent run per sweep."""

from jscexp.tracking.run import TrackedRun, flatten
from jscexp.tracking.store import DEFAULT_URI, PARENT_ENV, ensure_experiment, tracking_uri

__all__ = ["DEFAULT_URI", "PARENT_ENV", "TrackedRun", "ensure_experiment", "flatten", "tracking_uri"]
