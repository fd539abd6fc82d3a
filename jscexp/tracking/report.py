"""From runs to a finished comparison: table, fixed columns, plot, and a sweep's artifacts."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from jscexp.errors import UserError
from jscexp.tracking import front, tables
from jscexp.tracking.plots import metric_vs_param, population, training_curves


@dataclass
class Comparison:
    """What to show: a preset plus extra columns, the varied columns, order and grouping."""

    preset: str = "lab"
    columns: list[str] = field(default_factory=list)
    vary: list[str] = field(default_factory=list)  # ["auto"] reads them off the runs
    sort: str | None = None
    descending: bool = False
    seeds: bool = False  # mean ± std over runs that differ only in seed
    finished_only: bool = False


@dataclass
class Table:
    values: pd.DataFrame
    formats: dict
    fixed: dict
    vary: list[str]
    dropped: int  # runs left out because they did not finish

    def render(self, fmt: str) -> str:
        return tables.render(self.values, self.formats, fmt, self.fixed)


def make_table(runs: pd.DataFrame, spec: Comparison) -> Table:
    if spec.preset not in tables.PRESETS:
        raise UserError(f"unknown preset '{spec.preset}': choose one of {', '.join(tables.PRESETS)}")
    dropped = 0
    if spec.finished_only:
        finished = runs["status"] == "FINISHED"
        dropped, runs = int((~finished).sum()), runs[finished].reset_index(drop=True)
    vary = tables.vary_columns(runs, spec.vary)
    if spec.seeds and "seed" not in vary and "seed" not in spec.columns:
        spec_columns = [*spec.columns, "seed"]
    else:
        spec_columns = spec.columns
    # a population's members: the knobs they ended with beside the ones they started from
    finals = [c[len("metrics."):] for c in runs if c.startswith("metrics.pbt.")] if "auto" in spec.vary else []
    costs = tables.hardware_columns(runs) if spec.preset == "lab" else []
    names = [*tables.PRESETS[spec.preset], *costs, *spec_columns, *(f for f in finals if f not in spec_columns), *vary]
    values, formats = tables.build(runs, names)
    metrics = [c for c in values.columns if _is_metric(runs, c)]
    if spec.seeds:
        values = tables.aggregate_seeds(values, metrics)
    values = tables.sort(values, spec.sort, runs, spec.descending)
    keep = {*metrics, *(f"{m} std" for m in metrics), "Runs"}
    values, fixed = tables.split_fixed(values, vary, keep) if vary else (values, {})
    return Table(values, formats, fixed, vary, dropped)


def _is_metric(runs: pd.DataFrame, display: str) -> bool:
    source = tables.LAB[display][0] if display in tables.LAB else f"metrics.{display}"
    return isinstance(source, str) and source.startswith("metrics.") and (display in tables.LAB or source in runs)


def plot(table: Table, runs: pd.DataFrame, path: Path, *, metric: str = "Test Accuracy", x: str | None = None) -> Path:
    metric = tables.resolve(runs, metric)[0]
    x = tables.resolve(runs, x)[0] if x else (table.vary[0] if table.vary else None)
    if x is None:
        raise UserError("--plot needs a swept column: pass --vary NAME (or --vary auto) or --x NAME")
    for needed in (x, metric):
        if needed not in table.values.columns:
            raise UserError(f"cannot plot '{needed}': add it to the table with --columns {needed}")
    groups = [v for v in table.vary if v != x and v in table.values.columns]
    values = table.values[table.values[metric].notna()]
    positive = pd.to_numeric(values[x], errors="coerce")
    log_x = x in tables._LOG_AXIS or bool(positive.gt(0).all() and positive.max() / positive.min() >= 100)
    return metric_vs_param(values, x, metric, groups, path, log_x=log_x, title=_title(table, runs, metric, x))


def _title(table: Table, runs: pd.DataFrame, metric: str, x: str) -> str:
    """``Test Accuracy vs Batch-Size``, and below it the data: ``jsc (synthetic stand-in: …)``."""
    datasets = sorted(set(tables.dataset_labels(runs)) - {""})
    data = ", ".join(d.replace("(synthetic)", "(synthetic stand-in: not physics results)") for d in datasets)
    return f"{metric} vs {x}\n{data}" if data else f"{metric} vs {x}"


def publish_sweep(uri: str, experiment: str, parent_run_id: str) -> str:
    """Logs the sweep's lab table (md + csv) and, if something was varied, its plot to the
    parent run; returns the table (markdown) for the console."""
    from jscexp.tracking.query import runs_frame
    from jscexp.tracking.store import client as store_client

    runs = runs_frame(uri, experiment, sweep=parent_run_id)
    if runs.empty:
        return ""
    table = make_table(runs, Comparison(vary=["auto"]))
    client = store_client(uri)
    _record_best(client, parent_run_id, runs)
    markdown = table.render("markdown")
    client.log_text(parent_run_id, markdown, "table.md")
    client.log_text(parent_run_id, table.render("csv"), "table.csv")
    with tempfile.TemporaryDirectory() as tmp:
        if table.vary and table.values["Test Accuracy"].notna().any():
            client.log_artifact(parent_run_id, str(plot(table, runs, Path(tmp) / "plot.png")))
        _log_front(client, parent_run_id, runs, [v for v in table.vary if f"params.{v}" in runs], Path(tmp))
        if curves := histories(client, runs):
            title = "Training curves: " + ", ".join(sorted(set(tables.dataset_labels(runs)) - {""}))
            client.log_artifact(parent_run_id, str(training_curves(curves, Path(tmp) / "training_curves.png", title)))
            if exploits := _exploits(runs):
                _log_population(client, parent_run_id, curves, exploits, Path(tmp))
    return markdown


def _log_front(client, parent_run_id: str, runs: pd.DataFrame, knobs: list[str], tmp: Path) -> None:
    """A quantised sweep's accuracy–EBOPs front: front.md and front.csv (its runs, costs and
    knobs), front.png (beside it the store's uniform-width runs of the same model and data)."""

    on_front = front.front_of(runs)
    if on_front.empty:
        return
    rows = front.table(on_front, knobs)
    client.log_text(parent_run_id, rows.to_markdown(index=False) + "\n", "front.md")
    client.log_text(parent_run_id, rows.to_csv(index=False), "front.csv")
    data = ", ".join(d.replace("(synthetic)", "(synthetic stand-in: not physics results)")
                     for d in sorted(set(tables.dataset_labels(runs)) - {""}))
    title = f"Validation accuracy vs EBOPs: {len(on_front)} of {len(front.quantised(runs))} quantised runs on the front\n{data}"
    reference = front.uniform_reference(client, runs)
    client.log_artifact(parent_run_id, str(front.plot(runs, on_front, reference, tmp / "front.png", title)))


def _exploits(runs: pd.DataFrame) -> list[tuple[str, int, str]]:
    """A population's exploit events from its members' lineage tags: (member, epoch, what it did)."""
    prefix = "tags.jscexp.pbt.epoch_"
    out = []
    for _, run in runs.iterrows():
        name = str(run.get("tags.mlflow.runName") or run["run_id"])
        out += [(name, int(c[len(prefix):]), str(run[c])) for c in runs if c.startswith(prefix) and pd.notna(run[c])]
    return sorted(out, key=lambda e: (e[1], e[0]))


def _log_population(client, parent_run_id: str, histories: dict, exploits: list[tuple[str, int, str]], tmp: Path) -> None:
    """population.png (accuracy per member, exploits marked) and population_exploits.csv."""
    title = f"Population-based training: {len(histories)} members, {len(exploits)} exploits"
    marks = [(name, epoch) for name, epoch, _ in exploits]
    client.log_artifact(parent_run_id, str(population(histories, marks, tmp / "population.png", title)))
    frame = pd.DataFrame(exploits, columns=["member", "after_epoch", "exploit"])
    client.log_text(parent_run_id, frame.to_csv(index=False), "population_exploits.csv")


def histories(client, runs: pd.DataFrame) -> dict[str, list[dict[str, float]]]:
    """Each training run's per-epoch validation accuracy and loss, by run name, from the store."""
    out: dict[str, list[dict[str, float]]] = {}
    for _, run in runs.iterrows():
        if history := _per_epoch(client, run["run_id"], ["val_acc", "val_loss"]):
            out[str(run.get("tags.mlflow.runName") or run["run_id"])] = history
    return out


def _per_epoch(client, run_id: str, keys: list[str]) -> list[dict[str, float]]:
    """A run's ``keys`` metric histories as one ``{"epoch": e, key: value, …}`` per epoch, in order."""
    by_epoch: dict[int, dict[str, float]] = {}
    for key in keys:
        for m in client.get_metric_history(run_id, key):
            by_epoch.setdefault(m.step, {"epoch": m.step})[key] = m.value
    return [by_epoch[e] for e in sorted(by_epoch)]


def _record_best(client, parent_run_id: str, runs: pd.DataFrame) -> None:
    """The sweep's answer on its parent: the run with the best validation accuracy (the
    selection metric; its test accuracy is the reported one), as tags, metrics and the
    description the UI shows."""
    from mlflow.entities import Metric, RunTag

    finished = runs[(runs["status"] == "FINISHED") & runs.get("metrics.best_val_acc", pd.Series(dtype=float)).notna()]
    if finished.empty:
        return
    best = finished.loc[finished["metrics.best_val_acc"].idxmax()]
    name = best.get("tags.mlflow.runName") or best["run_id"]
    metrics = {"best_val_acc": float(best["metrics.best_val_acc"])}
    if pd.notna(best.get("metrics.test_acc")):
        metrics["best_run_test_acc"] = float(best["metrics.test_acc"])
    client.log_batch(parent_run_id, metrics=[Metric(k, v, int(time.time() * 1000), 0) for k, v in metrics.items()])
    note = (f"{len(runs)} runs, {len(finished)} finished. Best by validation accuracy: {name} "
            f"(val {metrics['best_val_acc']:.4f}"
            + (f", test {metrics['best_run_test_acc']:.4f}" if "best_run_test_acc" in metrics else "")
            + "). The comparison is table.md (and table.csv, plot.png) among this run's artifacts.")
    tags = {"jscexp.best_run_id": best["run_id"], "jscexp.best_run_name": str(name), "mlflow.note.content": note}
    if schedule := _schedule(client, best["run_id"], [c[len("metrics."):] for c in runs if c.startswith("metrics.pbt.")]):
        tags["jscexp.pbt.best_schedule"] = schedule  # a population: the knobs its best member ended up with
        tags["mlflow.note.content"] += f" Its schedule (population-based training): {schedule}."
    client.log_batch(parent_run_id, tags=[RunTag(k, v[:5000]) for k, v in tags.items()])


def _schedule(client, run_id: str, knobs: list[str]) -> str:
    """A PBT member's knobs per epoch as text, one entry per change: ``from epoch 0:
    learning_rate=0.001, …; from epoch 4: …`` (empty for a run without ``pbt.*`` metrics)."""
    changes, last = [], None
    for row in _per_epoch(client, run_id, knobs):
        knob_values = {k.removeprefix("pbt."): v for k, v in row.items() if k != "epoch"}
        if knob_values != last:
            changes.append(f"from epoch {row['epoch']}: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(knob_values.items())))
            last = knob_values
    return "; ".join(changes)
