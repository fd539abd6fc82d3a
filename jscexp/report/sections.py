"""The lab report's sections, each built only from what MLflow holds: runs, metrics, tags and
artifacts of the step's sweep (a confusion matrix evaluates the logged best checkpoint)."""

from __future__ import annotations

import io
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from jscexp.report.lab import Step
from jscexp.tracking import front
from jscexp.tracking import report as sweep_report
from jscexp.tracking.front import non_dominated
from jscexp.tracking.query import runs_frame
from jscexp.tracking.store import client as store_client


@dataclass
class Section:
    """One lab question: its tables (caption, markdown, html), figures (caption, PNG bytes) and
    preformatted texts (caption, text)."""

    key: str
    title: str
    sweep: str = ""  # the MLflow parent run it was built from
    tables: list[tuple[str, str, str]] = field(default_factory=list)
    figures: list[tuple[str, bytes]] = field(default_factory=list)
    texts: list[tuple[str, str]] = field(default_factory=list)

    def table(self, caption: str, table) -> None:
        self.tables.append((caption, table.render("markdown"), table.render("html")))

    def frame(self, caption: str, frame: pd.DataFrame) -> None:
        self.tables.append((caption, frame.to_markdown(index=False), frame.to_html(index=False)))

    def figure(self, caption: str, draw) -> None:
        """``draw(path)`` writes a PNG; its bytes are kept (the HTML embeds them)."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "figure.png"
            draw(path)
            self.figures.append((caption, path.read_bytes()))


def build(uri: str, step: Step, parent: str) -> Section:
    """The section of one lab step from its sweep ``parent``."""
    runs = runs_frame(uri, step.key, sweep=parent)
    section = Section(step.key, step.question, parent)
    if step.key == "lab2_analyse":
        _analysis(uri, section, runs)
    elif step.key == "lab2_int8":
        _int8(uri, section, runs)
    elif step.key in ("optuna_mixed_precision", "learned_widths"):
        _front(uri, section, runs)
    else:
        _sweep(uri, section, runs)
    return section


def _sweep(uri: str, section: Section, runs: pd.DataFrame) -> None:
    """A lab table, accuracy against the swept knob, training curves; for the models, the best
    run's confusion matrix; for PTQ vs QAT, accuracy against bits with its Pareto front."""
    if section.key == "quant_bits":
        runs = runs[runs["tags.jscexp.mode"].isin(["ptq", "qat"])].reset_index(drop=True)
    table = sweep_report.make_table(runs, sweep_report.Comparison(vary=["auto"]))
    section.table("The runs (fixed settings above the table)", table)
    if table.vary and table.values["Test Accuracy"].notna().any():
        section.figure("Test accuracy against the swept setting", lambda p: sweep_report.plot(table, runs, p))
    if curves := sweep_report.histories(store_client(uri), runs):
        from jscexp.tracking.plots import training_curves

        section.figure("Validation accuracy and loss per epoch", lambda p: training_curves(curves, p, section.title))
    if section.key == "lab1_models":
        best = runs.loc[runs["metrics.best_val_acc"].idxmax()]
        section.figure(f"Confusion matrix of the best run ({best['tags.mlflow.runName']}) on the test split",
                       lambda p: _confusion(uri, best["run_id"], p))
    if section.key == "quant_bits":
        section.figure("Test accuracy against weight bits, EBOPs and estimated LUTs, with each Pareto front",
                       lambda p: _pareto(runs, p))


def _front(uri: str, section: Section, runs: pd.DataFrame) -> None:
    """The sweep's accuracy–EBOPs front as a table, and drawn beside the uniform-width QAT runs
    of the same model and data (quant_bits's)."""
    from jscexp.tracking.tables import vary_columns

    on_front = front.front_of(runs)
    knobs = [k for k in vary_columns(runs, ["auto"]) if f"params.{k}" in runs]
    section.frame(f"The front: {len(on_front)} of {len(runs)} runs, none beaten on both validation accuracy and EBOPs",
                  front.table(on_front, knobs))
    reference = front.uniform_reference(store_client(uri), runs)
    section.figure("Validation accuracy against EBOPs: the runs, their front, the uniform-width QAT runs",
                   lambda p: front.plot(runs, on_front, reference, p, section.title))


def _analysis(uri: str, section: Section, runs: pd.DataFrame) -> None:
    client = store_client(uri)
    (run_id,) = runs["run_id"]
    for name, caption in (("analysis/graph.txt", "The fx graph (report_graph_analysis_pass)"),
                          ("analysis/node_meta.txt", "Statistics profile and node-meta table")):
        section.texts.append((caption, _artifact_text(client, run_id, name)))


def _int8(uri: str, section: Section, runs: pd.DataFrame) -> None:
    client = store_client(uri)
    quantised = runs[runs["tags.jscexp.mode"] == "ptq"]
    metrics = ["test_acc", "float_test_acc", "acc_drop", "avg_weight_bits", "bops", "ebops", "quant_offgrid_values"]
    summary = quantised[["params.model.name", *(f"metrics.{m}" for m in metrics), "tags.jscexp.quant_check"]]
    section.frame("int8 PTQ of each model: accuracy, bits and the grid check",
                  summary.rename(columns=lambda c: c.split(".", 1)[1]).round(4))
    for _, run in quantised.iterrows():
        model = run["params.model.name"]
        section.texts.append((f"{model}: quantised graph histogram", _artifact_text(client, run["run_id"], "quant/histogram.md")))
        nodes = pd.read_csv(io.StringIO(_artifact_text(client, run["run_id"], "quant/nodes.csv")))
        section.frame(f"{model}: each node before and after quantisation", nodes)


def _artifact_text(client, run_id: str, name: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        return Path(client.download_artifacts(run_id, name, tmp)).read_text()


def _confusion(uri: str, run_id: str, path: Path) -> Path:
    """Evaluates the run's logged best checkpoint on the test split of its logged config."""
    import torch
    from sklearn.metrics import confusion_matrix

    from jscexp.data import load_splits, schema_of
    from jscexp.train.fit import run_model

    client = store_client(uri)
    with tempfile.TemporaryDirectory() as tmp:
        cfg, model, _ = run_model(Path(client.download_artifacts(run_id, "config.yaml", tmp)),
                                  Path(client.download_artifacts(run_id, "checkpoints/best.ckpt", tmp)))
    splits = load_splits(cfg.dataset)
    x, y = splits.split("test")
    model.eval()
    with torch.no_grad():
        predicted = model(torch.from_numpy(x)).argmax(dim=1).numpy()
    classes = schema_of(cfg.dataset).classes
    matrix = confusion_matrix(y, predicted, labels=range(len(classes)), normalize="true")
    return _heatmap(matrix, list(classes), path)


def _heatmap(matrix, labels: list[str], path: Path) -> Path:
    from jscexp.tracking.plots import pyplot, save

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    for (i, j), v in pd.DataFrame(matrix).stack().items():
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="white" if v > 0.5 else "black", fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (each row sums to 1)")
    return save(fig, path)


# cost metric -> axis label, and the estimates the runs' estimators declared; a cost no run logged
# (an estimate of a model too big to trace) has no panel
PARETO_AXES = {"avg_weight_bits": "average weight bits (quantised Linear weights)", "ebops": "EBOPs (HGQ)"}


def _pareto(runs: pd.DataFrame, path: Path) -> Path:
    """Test accuracy against each cost, per mode; the front: no run that costs less is as accurate."""
    from jscexp.tracking.plots import pyplot, save
    from jscexp.tracking.tables import estimate_labels

    axes_labels = {**PARETO_AXES, **estimate_labels(runs)}
    costs = [c for c in axes_labels if f"metrics.{c}" in runs.columns]
    plt = pyplot()
    fig, axes = plt.subplots(1, len(costs), figsize=(5 * len(costs), 4), squeeze=False)
    for ax, cost in zip(axes[0], costs):
        points = runs[["tags.jscexp.mode", f"metrics.{cost}", "metrics.test_acc"]].dropna()
        points.columns = ["mode", "bits", "acc"]
        for mode, part in points.groupby("mode"):
            ax.scatter(part["bits"], part["acc"], label=mode)
        front = non_dominated(points, "acc", "bits")
        ax.plot(front["bits"], front["acc"], color="black", linestyle="--", label="Pareto front")
        ax.set_xlabel(axes_labels[cost])
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
        ax.legend()
    return save(fig, path)
