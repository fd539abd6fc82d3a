"""Comparison tables from a frame of MLflow runs (``mlflow.search_runs`` output).

A table is built with typed values (numbers stay numbers, so csv/json round-trip and
sorting is numeric) and formatted in the lab report's style only when rendered as text.
"""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Callable

import numpy as np
import pandas as pd

from jscexp.config import ESTIMATES_TAG, is_plumbing
from jscexp.errors import UserError
from jscexp.sweep.overrides import override_pairs

FORMATS = ("markdown", "csv", "latex", "html", "json")


def dataset_labels(runs: pd.DataFrame) -> pd.Series:
    """Each run's data as the Dataset column shows it: ``jsc`` or ``jsc (synthetic)``."""
    name = runs.get("params.dataset.name", pd.Series("", index=runs.index)).fillna("")
    base = name.where(~name.str.startswith("jsc"), "jsc")
    synthetic = runs.get("tags.jscexp.synthetic", pd.Series("", index=runs.index)) == "true"
    return base.where(~synthetic, base + " (synthetic)")


def _acc(v) -> str:
    return f"{v:.3f}"


def _seconds(seconds) -> str:
    return f"{seconds:.1f}"


# Display name -> (source column or a function of the runs frame, value type, text format).
LAB: dict[str, tuple[str | Callable, type, Callable]] = {
    "Dataset": (dataset_labels, str, str),
    "Model": ("params.model.name", str, str),
    "Parameters": ("params.n_params", int, str),
    "Learning-Rate": ("params.learning_rate", float, lambda v: f"{v:.2E}"),
    "Max-Epochs": ("params.max_epochs", int, str),
    "Batch-Size": ("params.batch_size", int, str),
    # the best epoch's, as are validation and test (the test runs the best epoch's weights)
    "Training Accuracy": ("metrics.best_train_acc", float, _acc),
    "Validation Accuracy": ("metrics.best_val_acc", float, _acc),
    "Test Accuracy": ("metrics.test_acc", float, _acc),
    "time (s)": ("metrics.fit_seconds", float, _seconds),
}
# A quantised run's hardware cost (docs/hardware.md): lab tables show those their runs logged.
HARDWARE: dict[str, tuple[str | Callable, type, Callable]] = {
    "BOPs": ("metrics.bops", float, lambda v: f"{v:,.0f}"),
    "EBOPs": ("metrics.ebops", float, lambda v: f"{v:,.0f}"),
}  # and each estimate a run's hardware estimator declared (its ESTIMATES_TAG): ``estimate_labels``
PRESETS = {"lab": list(LAB), "none": []}


def estimate_labels(runs: pd.DataFrame) -> dict[str, str]:
    """{metric: label} of the estimates ``runs`` logged, as their estimators declared them."""
    labels: dict[str, str] = {}
    for text in runs.get(f"tags.{ESTIMATES_TAG}", pd.Series(dtype=object)).dropna():
        labels.update(json.loads(text))
    return {m: label for m, label in labels.items() if f"metrics.{m}" in runs.columns}


def hardware_columns(runs: pd.DataFrame) -> list[str]:
    """The hardware-cost columns some of ``runs`` logged (a float sweep: none)."""
    return [*(name for name, (source, _, _) in HARDWARE.items() if source in runs.columns),
            *estimate_labels(runs).values()]
# Override keys a user sweeps -> the lab column that shows them.
_OVERRIDE_COLUMN = {
    "model": "Model",
    "batch_size": "Batch-Size",
    "learning_rate": "Learning-Rate",
    "max_epochs": "Max-Epochs",
    "dataset": "Dataset",
}
_LOG_AXIS = ("Learning-Rate", "learning_rate", "lr", "weight_decay")


def resolve(runs: pd.DataFrame, name: str) -> tuple[str, str | Callable, type, Callable]:
    """Maps a user's column name to (display name, source, type, text format)."""
    if name in LAB:
        return (name, *LAB[name])
    if name in HARDWARE:
        return (name, *HARDWARE[name])
    if name in (by_label := {label: m for m, label in estimate_labels(runs).items()}):
        return (name, f"metrics.{by_label[name]}", float, lambda v: f"{v:,.0f}")
    if name in _OVERRIDE_COLUMN:
        return (_OVERRIDE_COLUMN[name], *LAB[_OVERRIDE_COLUMN[name]])
    # A config group swept by option (model=jsc-tiny,jsc-toy) shows as its name; the optimizer
    # and scheduler are params of their own (their class names).
    for prefix, suffix in (("metrics.", ""), ("params.", ""), ("tags.", ""), ("", ""), ("params.", ".name")):
        if f"{prefix}{name}{suffix}" in runs.columns:
            source = f"{prefix}{name}{suffix}"
            numeric = prefix == "metrics." or _is_numeric(runs[source])
            return (name, source, float if numeric else str, (lambda v: f"{v:.4g}") if numeric else str)
    import difflib

    known = sorted(c.split(".", 1)[1] for c in runs.columns if c.startswith(("metrics.", "params.")))
    close = difflib.get_close_matches(name, [*LAB, *known], n=5, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else f"choose a lab column ({', '.join(LAB)}) or a param or metric"
    raise UserError(f"unknown column '{name}': {hint} ({len(known)} params and metrics in these runs)")


def _is_numeric(values: pd.Series) -> bool:
    return pd.to_numeric(values.dropna(), errors="coerce").notna().all() and values.notna().any()


def build(runs: pd.DataFrame, columns: list[str]) -> tuple[pd.DataFrame, dict[str, Callable]]:
    """The table with typed values, plus each column's text format."""
    table, formats = pd.DataFrame(index=runs.index), {}
    for name in dict.fromkeys(columns):
        display, source, kind, fmt = resolve(runs, name)
        values = source(runs) if callable(source) else runs.get(source, pd.Series(np.nan, index=runs.index))
        if kind in (int, float):
            values = pd.to_numeric(values, errors="coerce")
            if kind is int and values.notna().all():
                values = values.astype(int)
        table[display], formats[display] = values, fmt
    status = runs["status"].copy()
    for tag, word in (("tags.jscexp.diverged", "DIVERGED"), ("tags.jscexp.pruned", "PRUNED")):
        if tag in runs:
            status = status.where(runs[tag] != "true", word)
    if (status != "FINISHED").any():
        table["Status"], formats["Status"] = status, str
    return table.reset_index(drop=True), formats


def swept(runs: pd.DataFrame) -> list[str]:
    """Override keys whose value differs between the runs (what the sweep varied)."""
    if "tags.jscexp.overrides" not in runs:
        return []
    per_run = [override_pairs(shlex.split(s or "")) for s in runs["tags.jscexp.overrides"].fillna("")]
    keys = dict.fromkeys(k for d in per_run for k in d)
    # plumbing (optuna.* trial numbers, progress bars) is not a setting, nor a param to show
    return [k for k in keys if not is_plumbing(k) and len({d.get(k) for d in per_run}) > 1]


def vary_columns(runs: pd.DataFrame, vary: list[str]) -> list[str]:
    """Display names of the varied columns; ``["auto"]`` reads them off the runs' overrides."""
    if vary != ["auto"]:
        return [resolve(runs, n)[0] for n in vary]
    shown = []
    for name in swept(runs):  # a key with no column of its own (+sweep=<file>) varies nothing shown
        try:
            shown.append(resolve(runs, name)[0])
        except UserError:
            continue
    return shown


def split_fixed(table: pd.DataFrame, vary: list[str], keep: set[str]) -> tuple[pd.DataFrame, dict]:
    """Moves the columns that hold one value in every row (and are not varied) out of the table."""
    fixed = {
        c: table[c].iloc[0]
        for c in table.columns
        if c not in vary and c not in keep and len(table) > 0 and table[c].nunique(dropna=False) == 1
    }
    return table.drop(columns=list(fixed)), fixed


def aggregate_seeds(table: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """One row per config: mean and std of each metric over the runs that share it."""
    keys = [c for c in table.columns if c not in metrics and c.lower() not in ("seed", "status")]
    grouped = table.groupby(keys, dropna=False, sort=False)
    out = grouped[metrics].mean()
    for m in metrics:
        out[f"{m} std"] = grouped[m].std(ddof=1)
    out["Runs"] = grouped.size()
    return out.reset_index()


def sort(table: pd.DataFrame, by: str | None, runs: pd.DataFrame, descending: bool) -> pd.DataFrame:
    if not by:
        return table
    column = by if by in table.columns else resolve(runs, by)[0]
    if column not in table.columns:
        raise UserError(f"cannot sort by '{by}': it is not a column of this table ({', '.join(table.columns)})")
    return table.sort_values(column, ascending=not descending, kind="stable").reset_index(drop=True)


def as_text(table: pd.DataFrame, formats: dict[str, Callable]) -> pd.DataFrame:
    """Lab-style strings; ``X`` with an ``X std`` column becomes ``mean ± std``."""
    text = pd.DataFrame(index=table.index)
    for c in table.columns:
        if c.endswith(" std"):
            continue
        fmt = formats.get(c, str)
        cell = table[c].map(lambda v, fmt=fmt: "" if _missing(v) else fmt(v))
        if f"{c} std" in table:
            std = table[f"{c} std"].map(lambda v, fmt=fmt: "" if _missing(v) else f" ± {fmt(v)}")
            cell = cell + std
        text[c] = cell
    return text


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def render(table: pd.DataFrame, formats: dict[str, Callable], fmt: str, fixed: dict | None = None) -> str:
    if fmt not in FORMATS:
        raise UserError(f"unknown format '{fmt}': choose one of {', '.join(FORMATS)}")
    if fmt == "csv":
        return table.to_csv(index=False)
    if fmt == "json":
        return table.to_json(orient="records", indent=2)
    text = as_text(table, formats)
    caption = ", ".join(f"{k} = {formats.get(k, str)(v)}" for k, v in (fixed or {}).items())
    if fmt == "markdown":
        body = text.to_markdown(index=False, disable_numparse=True)
        return f"Fixed: {caption}\n\n{body}" if caption else body
    if fmt == "latex":
        return text.to_latex(index=False, caption=f"Fixed: {caption}" if caption else None)
    html = text.to_html(index=False)
    return f"<p>Fixed: {caption}</p>\n{html}" if caption else html
