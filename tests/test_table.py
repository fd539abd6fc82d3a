"""The table command over a store filled by real sweeps: selection, presets, formats,
failed runs, seeds, plots, the sweep parent's artifacts, and the MLflow server's REST API."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import FAST, mlflow_client, run_cli, runs_of

LAB_COLUMNS = ["Dataset", "Model", "Parameters", "Learning-Rate", "Max-Epochs", "Batch-Size",
               "Training Accuracy", "Validation Accuracy", "Test Accuracy", "time (s)"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A lab sweep, a 2-seed grid, then a newer sweep whose only job failed."""
    root = tmp_path_factory.mktemp("store")
    for args in (["-m", "+sweep=lab1_batch_size", *FAST],
                 ["-m", "experiment=seeds", "seed=0,1", "batch_size=32,64", *FAST]):
        result = run_cli(args, root)
        assert result.returncode == 0, result.stderr[-2000:]
    from jscexp.tracking import TrackedRun

    uri = f"sqlite:///{root / 'mlflow.db'}"
    first_sweep = _sweep_id(root, "lab1_batch_size")
    with TrackedRun(uri, "lab1_batch_size", tags={"jscexp.kind": "sweep"}) as newer:
        pass
    with pytest.raises(RuntimeError), TrackedRun(uri, "lab1_batch_size", tags={"mlflow.parentRunId": newer.run_id,
                                                 "jscexp.overrides": "batch_size=8"}) as failed:
        failed.log_params({"batch_size": 8, "model.name": "jsc-tiny", "learning_rate": 1e-5})
        raise RuntimeError("out of memory")
    return root, first_sweep, newer.run_id


def _sweep_id(root: Path, experiment: str) -> str:
    return next(r.info.run_id for r in runs_of(root, experiment) if r.data.tags.get("jscexp.kind") == "sweep")


def table(store, *args, capsys=None) -> tuple[int, str, str]:
    from jscexp.table import main

    root = store[0]
    code = main(["--tracking-uri", f"sqlite:///{root / 'mlflow.db'}", *args])
    out, err = capsys.readouterr()
    return code, out, err


def md_rows(text: str) -> list[list[str]]:
    lines = [l for l in text.splitlines() if l.startswith("|")]
    return [[c.strip() for c in l.split("|")[1:-1]] for l in lines]


def test_lab_table_of_a_sweep_has_the_lab_columns_and_the_runs_numbers(store, capsys):
    root, first, _ = store
    code, out, _ = table(store, "-e", "lab1_batch_size", "--sweep", first, "--vary", "none", capsys=capsys)
    assert code == 0
    header, _, *rows = md_rows(out)
    assert header == LAB_COLUMNS
    assert [r[5] for r in rows] == ["32", "64", "128", "256", "512"]
    runs = {r.data.params["batch_size"]: r for r in runs_of(root, "lab1_batch_size")
            if r.data.tags.get("mlflow.parentRunId") == first}
    for row in rows:
        m = runs[row[5]].data.metrics
        assert row[:5] == ["jsc (synthetic)", "jsc-tiny", "117", "1.00E-05", "1"]
        assert row[6:9] == [f"{m['best_train_acc']:.3f}", f"{m['best_val_acc']:.3f}", f"{m['test_acc']:.3f}"]
        assert row[9] == f"{m['fit_seconds']:.1f}"
    code, out, _ = table(store, "-e", "lab1_batch_size", "--sweep", first, capsys=capsys)  # by default: what varies
    assert md_rows(out)[0][0] == "Batch-Size" and "Fixed: Dataset = jsc (synthetic), Model = jsc-tiny" in out


def test_latest_sweep_is_the_default_and_failed_runs_are_marked(store, capsys):
    code, out, _ = table(store, "-e", "lab1_batch_size", capsys=capsys)
    header, _, *rows = md_rows(out)
    assert code == 0 and len(rows) == 1
    assert header[-1] == "Status" and rows[0][-1] == "FAILED" and rows[0][5] == "8"
    code, out, err = table(store, "-e", "lab1_batch_size", "--finished-only", capsys=capsys)
    assert code == 2 and err == "error: no finished runs match: left out 1 that did not finish\n"
    code, out, err = table(store, "-e", "lab1_batch_size", "--sweep", "all", "--finished-only", capsys=capsys)
    assert code == 0 and len(md_rows(out)) == 2 + 5 and err == "note: left out 1 run(s) that did not finish\n"


def test_filter_and_all_runs(store, capsys):
    code, out, _ = table(store, "-e", "lab1_batch_size", "--sweep", "all",
                         "--filter", "params.batch_size = '64'", capsys=capsys)
    rows = md_rows(out)[2:]
    assert code == 0 and len(rows) == 1 and rows[0][5] == "64"
    code, out, _ = table(store, "-e", "lab1_batch_size", "--sweep", "all", capsys=capsys)
    assert len(md_rows(out)) - 2 == 6  # 5 finished + 1 failed; sweep parents never appear as rows


def test_vary_moves_fixed_columns_out_and_extra_columns_sort(store, capsys):
    _, first, _ = store
    code, out, _ = table(store, "-e", "lab1_batch_size", "--sweep", first, "--vary", "batch_size",
                         "--columns", "val_loss", "--sort", "Batch-Size", "--desc", capsys=capsys)
    assert code == 0
    assert out.startswith("Fixed: Dataset = jsc (synthetic), Model = jsc-tiny, Parameters = 117, "
                          "Learning-Rate = 1.00E-05, Max-Epochs = 1")
    header, _, *rows = md_rows(out)
    assert header == ["Batch-Size", "Training Accuracy", "Validation Accuracy", "Test Accuracy", "time (s)", "val_loss"]
    assert [r[0] for r in rows] == ["512", "256", "128", "64", "32"]
    code, auto, _ = table(store, "-e", "lab1_batch_size", "--sweep", first, "--vary", "auto",
                          "--columns", "val_loss", "--sort", "Batch-Size", "--desc", capsys=capsys)
    assert auto == out


@pytest.mark.parametrize("fmt", ["csv", "json", "markdown", "latex", "html"])
def test_every_format_parses_back(store, capsys, tmp_path, fmt):
    root, first, _ = store
    target = tmp_path / f"table.{fmt}"
    code, out, _ = table(store, "-e", "lab1_batch_size", "--sweep", first, "--format", fmt,
                         "--output", str(target), capsys=capsys)
    assert code == 0 and out == ""
    text = target.read_text()
    if fmt == "csv":
        frame = pd.read_csv(io.StringIO(text))
        assert list(frame.columns) == LAB_COLUMNS and frame["Batch-Size"].tolist() == [32, 64, 128, 256, 512]
        accs = {r.data.params["batch_size"]: r.data.metrics["test_acc"] for r in runs_of(root, "lab1_batch_size")
                if r.data.tags.get("mlflow.parentRunId") == first}
        np.testing.assert_allclose(frame["Test Accuracy"], [accs[str(b)] for b in frame["Batch-Size"]])
    elif fmt == "json":
        records = json.loads(text)
        assert len(records) == 5 and set(records[0]) == set(LAB_COLUMNS)
    elif fmt == "markdown":
        assert len(md_rows(text)) == 2 + 5
    elif fmt == "latex":
        assert "\\begin{tabular}" in text and text.count("\\\\") == 1 + 5
    else:
        assert text.count("<tr") == 1 + 5 and "Batch-Size" in text


def test_seeds_give_mean_and_std(store, capsys):
    root = store[0]
    code, out, _ = table(store, "-e", "seeds", "--seeds", "--vary", "batch_size", "--format", "json", capsys=capsys)
    records = {r["Batch-Size"]: r for r in json.loads(out)}
    assert code == 0 and set(records) == {32, 64}
    for bs in (32, 64):
        accs = [r.data.metrics["test_acc"] for r in runs_of(root, "seeds")
                if r.data.params.get("batch_size") == str(bs)]
        assert records[bs]["Runs"] == 2
        assert records[bs]["Test Accuracy"] == pytest.approx(np.mean(accs))
        assert records[bs]["Test Accuracy std"] == pytest.approx(np.std(accs, ddof=1))
    code, out, _ = table(store, "-e", "seeds", "--seeds", "--vary", "batch_size", capsys=capsys)
    assert " ± " in md_rows(out)[2][3]


def test_plot_is_a_png_with_log_axis_for_lr(store, capsys, tmp_path):
    import matplotlib.image

    _, first, _ = store
    target = tmp_path / "plot.png"
    code, _, _ = table(store, "-e", "lab1_batch_size", "--sweep", first, "--vary", "auto",
                       "--plot", str(target), capsys=capsys)
    assert code == 0 and target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.image.imread(target).shape[:2] == (400, 600)
    from jscexp.tracking.query import runs_frame
    from jscexp.tracking.report import Comparison, _title, make_table

    runs = runs_frame(f"sqlite:///{store[0] / 'mlflow.db'}", "lab1_batch_size", sweep=first)
    title = _title(make_table(runs, Comparison(vary=["auto"])), runs, "Test Accuracy", "Batch-Size")
    assert title == "Test Accuracy vs Batch-Size\njsc (synthetic stand-in: not physics results)"


def test_sweep_parent_gets_table_and_plot(store):
    root, first, _ = store
    client = mlflow_client(root)
    assert {a.path for a in client.list_artifacts(first)} == {"table.md", "table.csv", "plot.png", "training_curves.png"}
    # the curves are drawn once, on the parent, not per run (a figure per trial cost 0.2 s each)
    children = [r for r in runs_of(root, "lab1_batch_size") if r.data.tags.get("mlflow.parentRunId") == first]
    assert not any(a.path.endswith(".png") for a in client.list_artifacts(children[0].info.run_id))
    csv = pd.read_csv(client.download_artifacts(first, "table.csv", str(root)))
    assert csv["Batch-Size"].tolist() == [32, 64, 128, 256, 512]
    # the answer on the parent: the best run by validation accuracy, and a description naming it
    parent = client.get_run(first)
    best = max((r for r in runs_of(root, "lab1_batch_size") if r.data.tags.get("mlflow.parentRunId") == first),
               key=lambda r: r.data.metrics["best_val_acc"])
    assert parent.data.tags["jscexp.best_run_id"] == best.info.run_id
    assert parent.data.metrics["best_val_acc"] == best.data.metrics["best_val_acc"]
    assert parent.data.metrics["best_run_test_acc"] == best.data.metrics["test_acc"]
    assert parent.data.tags["mlflow.note.content"].startswith(f"5 runs, 5 finished. Best by validation accuracy: "
                                                              f"{best.info.run_name} (val ")


@pytest.mark.parametrize(
    "args, message",
    [
        (["-e", "nope"], "error: no MLflow experiment 'nope'"),
        (["-e", "seeds", "--columns", "xyzzy"], "error: unknown column 'xyzzy': choose a lab column"),
        (["-e", "seeds", "--columns", "val_accuracy"], "error: unknown column 'val_accuracy': did you mean val_acc"),
        (["-e", "seeds", "--format", "xlsx"], "error: unknown format 'xlsx': choose one of markdown"),
        (["-e", "seeds", "--sort", "nope"], "error: unknown column 'nope'"),
        (["-e", "seeds", "--vary", "none", "--plot", "x.png"], "error: --plot needs a swept column"),
        (["-e", "seeds", "--filter", "params.batch_size = '7'"], "error: no runs match"),
        (["-e", "seeds", "--filter", "params.\\`model.name\\` = 'jsc-toy'"],
         "error: --filter \"params.\\\\`model.name\\\\` = 'jsc-toy'\" is not an MLflow filter"),
    ],
)
def test_bad_requests_get_one_line(store, capsys, tmp_path, args, message):
    code, out, err = table(store, *args, capsys=capsys)
    assert code == 2 and out == "" and err.startswith(message) and len(err.strip().splitlines()) == 1
    assert not Path("x.png").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_mlflow_server_serves_the_runs_over_rest(store):
    root, first, _ = store
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                if urllib.request.urlopen(f"{base}/health", timeout=1).status == 200:
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("mlflow server did not come up")
        query = urllib.request.Request(f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=lab1_batch_size")
        exp = json.load(urllib.request.urlopen(query, timeout=10))["experiment"]
        body = json.dumps({"experiment_ids": [exp["experiment_id"]],
                           "filter": f"tags.mlflow.parentRunId = '{first}'"}).encode()
        search = urllib.request.Request(f"{base}/api/2.0/mlflow/runs/search", data=body,
                                        headers={"Content-Type": "application/json"})
        runs = json.load(urllib.request.urlopen(search, timeout=10))["runs"]
    finally:
        server.terminate()
        server.wait(30)
    assert len(runs) == 5
    params = [{p["key"]: p["value"] for p in r["data"]["params"]} for r in runs]
    assert sorted(int(p["batch_size"]) for p in params) == [32, 64, 128, 256, 512]
    assert all(r["info"]["status"] == "FINISHED" for r in runs)
    assert all(any(m["key"] == "test_acc" for m in r["data"]["metrics"]) for r in runs)


def test_a_superseded_run_is_never_listed_as_a_result():
    """A KILLED run that a resumed job or a retried trial did again is left out of tables and
    fronts; a KILLED run nothing replaced stays, with its status."""
    import numpy as np
    import pandas as pd

    from jscexp.tracking.query import superseded

    runs = pd.DataFrame({
        "status": ["KILLED", "FINISHED", "KILLED", "KILLED", "KILLED"],
        "tags.jscexp.optuna_study": ["s", "s", np.nan, np.nan, "t"],
        "tags.jscexp.optuna_trial": ["1", "2", np.nan, np.nan, "1"],
        "tags.jscexp.retry_of": [np.nan, "1", np.nan, np.nan, np.nan],  # trial 2 retried study s's trial 1
        "tags.jscexp.superseded_by": [np.nan, np.nan, "abc", np.nan, np.nan],
    })
    assert superseded(runs).tolist() == [True, False, True, False, False]
