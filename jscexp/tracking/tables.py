"""Comparison tables in the lab report's layout."""

from __future__ import annotations

import pandas as pd


def _mmss(seconds: float) -> str:
    if pd.isna(seconds):
        return ""
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes:02d}:{secs:02d}"


def _dataset(row) -> str:
    name = "jsc" if str(row.get("params.dataset.name", "")).startswith("jsc") else row.get("params.dataset.name")
    return f"{name} (synthetic)" if row.get("tags.jscexp.synthetic") == "true" else name


def _acc(value) -> str:
    return "" if pd.isna(value) else f"{value:.3f}"


def lab_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Dataset | Model | Parameters | Learning-Rate | … | time, one row per run.

    Validation Accuracy is the best epoch's, the one whose checkpoint gave Test Accuracy.
    A run that did not finish says so in the Status column instead of passing for a result.
    """

    def col(name):
        return runs[name] if name in runs else pd.Series([float("nan")] * len(runs), index=runs.index)

    table = pd.DataFrame(
        {
            "Dataset": [_dataset(r) for _, r in runs.iterrows()],
            "Model": col("params.model_name"),
            "Parameters": col("params.n_params"),
            "Learning-Rate": [f"{float(v):.2E}" for v in col("params.learning_rate")],
            "Max-Epochs": col("params.max_epochs"),
            "Batch-Size": col("params.batch_size"),
            "Training Accuracy": col("metrics.train_acc").map(_acc),
            "Validation Accuracy": col("metrics.best_val_acc").map(_acc),
            "Test Accuracy": col("metrics.test_acc").map(_acc),
            "time": col("metrics.fit_seconds").map(_mmss),
        }
    )
    if (runs["status"] != "FINISHED").any():
        table["Status"] = runs["status"].values
    return table
