"""``python -m jscexp -m ...``: every job a child of one MLflow parent run."""

import subprocess
import sys

from conftest import FAST, mlflow_client, run_cli, runs_of


def test_multirun_makes_children_of_one_parent(workdir):
    result = run_cli(["-m", *FAST, "batch_size=32,64"], workdir)
    assert result.returncode == 0, result.stderr[-2000:]
    runs = runs_of(workdir)
    parents = [r for r in runs if r.data.tags.get("jscexp.kind") == "sweep"]
    children = [r for r in runs if r not in parents]
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert sorted(r.data.params["batch_size"] for r in children) == ["32", "64"]
    assert all(r.info.status == "FINISHED" for r in children)


def test_help_needs_no_torch(workdir):
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "jscexp", "--help"],
        cwd=workdir, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0 and "model: jsc-10x, jsc-s, jsc-tiny, jsc-toy, mlp" in out.stdout
    imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines()}
    assert "torch" not in imported and "mlflow" not in imported


def test_sweep_file_runs_the_lab_grid_and_the_table_shows_it(workdir, capsys):
    from jscexp.table import main as table

    result = run_cli(["-m", "+sweep=lab1_batch_size", *FAST], workdir)
    assert result.returncode == 0, result.stderr[-2000:]
    assert table(["--experiment", "lab1_batch_size", "--tracking-uri", f"sqlite:///{workdir}/mlflow.db"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [c.strip() for c in lines[0].split("|")[1:-1]] == [
        "Dataset", "Model", "Parameters", "Learning-Rate", "Max-Epochs", "Batch-Size",
        "Training Accuracy", "Validation Accuracy", "Test Accuracy", "time"]
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in lines[2:]]
    assert [r[5] for r in rows] == ["32", "64", "128", "256", "512"]
    assert all(r[0] == "jsc (synthetic)" and r[1] == "jsc-tiny" and r[3] == "1.00E-05" for r in rows)


def test_table_for_a_missing_store_or_experiment_is_one_line(workdir, capsys):
    from jscexp.table import main as table

    assert table(["--tracking-uri", f"sqlite:///{workdir}/mlflow.db"]) == 2
    assert capsys.readouterr().err.startswith("error: no MLflow store at")
    assert not (workdir / "mlflow.db").exists()
    mlflow_client(workdir).create_experiment("other")
    capsys.readouterr()
    assert table(["--experiment", "nope", "--tracking-uri", f"sqlite:///{workdir}/mlflow.db"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no MLflow experiment 'nope'") and len(err.splitlines()) == 1
