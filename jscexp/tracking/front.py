"""The accuracy–hardware-cost front of a sweep (docs/hardware.md): the runs no other beats on
both validation accuracy (up) and a cost (down, EBOPs by default), its hypervolume, and the
uniform-width runs of the same model and data beside it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

UNIFORM_TAG = "jscexp.uniform_widths"  # on a quantised run: one width per role in every layer, none learned
ACCURACY = "best_val_acc"  # what a search selects on; the table shows test accuracy beside it
COLUMNS = {"best_val_acc": "val acc", "test_acc": "test acc", "ebops": "EBOPs", "bops": "BOPs",
           "avg_weight_bits": "avg weight bits"}  # and the estimates the runs' estimators declared


def non_dominated(points: pd.DataFrame, acc: str, cost: str) -> pd.DataFrame:
    """The rows no other row beats: as accurate or more for less or the same cost, one of them
    strictly; ordered by cost (a tie of both keeps the first)."""
    ordered = points.sort_values([cost, acc], ascending=[True, False], kind="stable")
    best, keep = float("-inf"), []
    for i, row in ordered.iterrows():
        if row[acc] > best:
            best = row[acc]
            keep.append(i)
    return ordered.loc[keep]


def hypervolume(points: list[tuple[float, float]], reference: tuple[float, float]) -> float:
    """The area that (accuracy, cost) points dominate up to ``reference`` (an accuracy below and
    a cost above every point worth counting): the front's quality in one number, larger better."""
    ref_acc, ref_cost = reference
    inside = [(a, c) for a, c in points if a > ref_acc and c < ref_cost]
    area, best = 0.0, ref_acc
    for acc, cost in sorted(inside, key=lambda p: (p[1], -p[0])):
        if acc > best:
            area += (acc - best) * (ref_cost - cost)
            best = acc
    return area


def front_of(runs: pd.DataFrame, cost: str = "ebops") -> pd.DataFrame:
    """The finished runs on the front of validation accuracy against ``cost``, cheapest first."""
    columns = [f"metrics.{ACCURACY}", f"metrics.{cost}"]
    if not set(columns) <= set(runs.columns):
        return runs.iloc[0:0]
    done = runs[(runs["status"] == "FINISHED") & runs[columns].notna().all(axis=1)]
    return non_dominated(done, columns[0], columns[1])


def table(front: pd.DataFrame, knobs: list[str]) -> pd.DataFrame:
    """The front as a table: the run, its accuracies and costs, and the knobs that made it."""
    out = pd.DataFrame({"run": front.get("tags.mlflow.runName", front["run_id"])})
    from jscexp.tracking.tables import estimate_labels

    for metric, label in {**COLUMNS, **estimate_labels(front)}.items():
        if f"metrics.{metric}" in front:
            out[label] = front[f"metrics.{metric}"].round(4 if "acc" in metric else 1)
    for knob in knobs:  # quantisation.seq_blocks_2.config.weight_width → seq_blocks_2.weight_width
        out[knob.removeprefix("quantisation.").replace(".config.", ".")] = front.get(f"params.{knob}")
    return out.reset_index(drop=True)


def uniform_reference(client, runs: pd.DataFrame) -> pd.DataFrame:
    """Finished QAT runs in the whole store of the sweep's model, data and epochs with one
    width per role in every layer (``UNIFORM_TAG``: no layer's own widths, none learned): what a uniform-width
    sweep (``+sweep=quant_bits``) reaches, drawn beside a front."""
    first = runs.iloc[0]
    same = {k: first.get(f"params.{k}") for k in ("model.name", "dataset.name", "dataset.n_rows", "max_epochs")}
    clauses = ["tags.`jscexp.mode` = 'qat'", "attributes.status = 'FINISHED'",
               *(f"params.`{k}` = '{v}'" for k, v in same.items() if isinstance(v, str))]
    experiments = [e.experiment_id for e in client.search_experiments()]
    found = client.search_runs(experiments, " and ".join(clauses), max_results=5000)
    rows = [{"run_id": r.info.run_id, "acc": r.data.metrics.get(ACCURACY), "ebops": r.data.metrics.get("ebops"),
             "weight bits": r.data.params.get("quantisation.weight_width")}
            for r in found if r.data.tags.get(UNIFORM_TAG) == "true" and "ebops" in r.data.metrics]
    return pd.DataFrame(rows, columns=["run_id", "acc", "ebops", "weight bits"])


def quantised(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs with a quantised model's cost (not a PTQ sweep's float run)."""
    return runs[runs["metrics.ebops"].notna()] if "metrics.ebops" in runs else runs.iloc[0:0]


def plot(runs: pd.DataFrame, front: pd.DataFrame, reference: pd.DataFrame, path: Path, title: str) -> Path:
    """Validation accuracy against EBOPs: every run, the front, and the uniform-width runs."""
    from jscexp.tracking.plots import pyplot, save

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    done = runs[runs["status"] == "FINISHED"]
    ax.scatter(done["metrics.ebops"], done[f"metrics.{ACCURACY}"], color="0.6", s=18, label="this sweep's runs")
    ax.plot(front["metrics.ebops"], front[f"metrics.{ACCURACY}"], "o-", color="black", drawstyle="steps-post",
            label="its front")
    if not reference.empty:
        ax.scatter(reference["ebops"], reference["acc"], marker="s", color="tab:orange", s=30,
                   label="uniform widths (QAT runs, same model and data)")
    ax.set_xscale("log")
    ax.set_xlabel("EBOPs (HGQ)")
    ax.set_ylabel("validation accuracy")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return save(fig, path)
