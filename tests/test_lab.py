"""``make lab`` (#21): every lab experiment as a sweep, one report from MLflow in Markdown and
self-contained HTML, and a second run that trains nothing."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import cli_env, mlflow_client

TINY = ["--dataset", "jsc_synth", "--rows", "2000", "--epochs", "1"]
SECTIONS = {  # experiment -> what its section must show (table columns, text)
    "lab1_batch_size": ["Batch-Size", "Training Accuracy", "Validation Accuracy", "Test Accuracy"],
    "lab1_max_epochs": ["Max-Epochs", "Test Accuracy"],
    "lab1_learning_rate": ["Learning-Rate", "Test Accuracy"],
    "lab1_models": ["Model", "Parameters", "Test Accuracy", "Confusion matrix of the best run"],
    "lab2_analyse": ["call_module", "Statistics profile and node-meta table", "range_quantile"],
    "lab2_int8": ["float_test_acc", "avg_weight_bits", "bops", "ebops", "quant_check", "Quantized type", "LinearQ"],
    "quant_bits": ["Test Accuracy", "BOPs", "EBOPs", "est. LUT", "EBOPs and estimated LUTs, with each Pareto front"],
    "optuna_mixed_precision": ["val acc", "EBOPs", "seq_blocks_2.weight_width", "seq_blocks_8.data_in_width"],
    "learned_widths": ["val acc", "EBOPs", "avg weight bits", "beta"],
}
# 4 sweeps x (accuracy vs knob, curves) + confusion matrix + PTQ/QAT: vs bits, curves, the fronts + 2 searched fronts
FIGURES = 14


def _lab(workdir) -> subprocess.CompletedProcess:
    env = cli_env()
    return subprocess.run([sys.executable, "-m", "jscexp.report", *TINY], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=900)


def _trained_runs(workdir) -> set[str]:
    client = mlflow_client(workdir)
    experiments = [e.experiment_id for e in client.search_experiments() if e.name != "lab"]
    return {r.info.run_id for r in client.search_runs(experiments, max_results=5000)}


@pytest.mark.slow
def test_make_lab_writes_every_section_in_both_formats_and_a_second_run_trains_nothing(workdir):
    first = _lab(workdir)
    assert first.returncode == 0, first.stderr[-3000:]
    md, page = (workdir / "reports" / "lab.md").read_text(), (workdir / "reports" / "lab.html").read_text()
    assert "synthetic stand-in: NOT physics results" in md and "Rows (train / val / test)" in md
    assert re.search(r"Commit\*\*: [0-9a-f]{40}", md)
    for key, shown in SECTIONS.items():
        for text in (md, page):
            assert f"(experiment `{key}`)" in text or f"<code>{key}</code>" in text, key
        part = md.split(f"(experiment `{key}`)")[1].split("\n## ")[0]
        assert all(s in part for s in shown), (key, [s for s in shown if s not in part])
    linked = re.findall(r"!\[[^]]*\]\((lab_files/[^)]+\.png)\)", md)
    assert len(linked) == FIGURES and all((workdir / "reports" / f).stat().st_size > 5000 for f in linked)
    assert page.count("src='data:image/png;base64,") == FIGURES and "<img" in page and "lab_files/" not in page
    client = mlflow_client(workdir)
    (lab,) = client.search_runs([client.get_experiment_by_name("lab").experiment_id])
    assert {a.path for a in client.list_artifacts(lab.info.run_id)} >= {"lab.md", "lab.html", "lab_files"}
    _opens_in_chromium(workdir / "reports" / "lab.html")

    trained = _trained_runs(workdir)
    second = _lab(workdir)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count("already done") == len(SECTIONS)
    assert _trained_runs(workdir) == trained  # nothing trained, tested or quantised again
    assert len(client.search_runs([client.get_experiment_by_name("lab").experiment_id])) == 2  # a report each time


def _opens_in_chromium(page) -> None:
    """Headless Chromium renders the page with every section and figure (CI installs it)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("JSCEXP_REQUIRE_SERVICES") == "1":
            pytest.fail("no chromium here (Debian: apt-get install chromium)")
        return
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1200,1600"]
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120,
                         check=True).stdout
    assert dom.count("<h2") == len(SECTIONS) and dom.count("<img") == FIGURES
    if shots := os.environ.get("JSCEXP_SCREENSHOTS"):  # the README's picture
        subprocess.run([*flags, f"--screenshot={os.path.abspath(shots)}/lab-report.png", page.as_uri()],
                       capture_output=True, timeout=120, check=True)


@pytest.mark.parametrize("args, message", [
    (["--rows", "5000"], "error: --rows sizes the stand-in: use it with --dataset jsc_synth"),
    (["--dataset", "jsc_synth", "--epochs", "0"], "error: --epochs must be 1 or more, got 0"),
    (["--dataset", "cifar"], "error: --dataset must be jsc or jsc_synth, got 'cifar'"),
])
def test_bad_lab_settings_are_one_line_exit_2_and_nothing_written(workdir, args, message):
    result = subprocess.run([sys.executable, "-m", "jscexp.report", *args], cwd=workdir, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2 and result.stderr.startswith(message) and len(result.stderr.splitlines()) == 1
    assert list(workdir.iterdir()) == []


@pytest.mark.slow
def test_an_interrupted_lab_exits_130_and_leaves_no_run_running(workdir):
    """Ctrl-C (SIGINT to the process group, as a terminal sends it) during a step: the step
    ends its runs KILLED before the lab exits 130 with one line."""
    import signal
    import time

    env = cli_env()
    proc = subprocess.Popen([sys.executable, "-m", "jscexp.report", "--dataset", "jsc_synth", "--rows", "20000",
                             "--epochs", "2"], cwd=workdir, env=env, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("lab: lab1_max_epochs"):  # its first step finished, the second one starts
            break
    first_step = set(workdir.glob("multirun/**/metrics.jsonl"))  # a stacked group's are in trial_k/
    deadline = time.time() + 120
    while not set(workdir.glob("multirun/**/metrics.jsonl")) - first_step and time.time() < deadline:
        time.sleep(0.2)  # until the second step's group (40 epochs at most) trains
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130 and err.strip().splitlines()[-1].startswith("interrupted: run make lab again"), err[-3000:]
    client = mlflow_client(workdir)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=1000)
    statuses = [(r.info.status, r.data.tags.get("mlflow.runName")) for r in runs]
    assert "RUNNING" not in {s for s, _ in statuses} and "KILLED" in {s for s, _ in statuses}, (statuses, err[-3000:])


def _sweep_with_child(client, experiment: str, params: dict, tags: dict) -> str:
    """A FINISHED sweep parent with one FINISHED child, as a lab step leaves them."""
    exp = client.create_experiment(experiment)
    parent = client.create_run(exp, tags={"jscexp.kind": "sweep"}).info.run_id
    child = client.create_run(exp, tags={"mlflow.parentRunId": parent, **tags}).info.run_id
    for key, value in params.items():
        client.log_param(child, key, value)
    client.log_metric(child, "best_val_acc", 0.7)
    for run in (child, parent):
        client.set_terminated(run, "FINISHED")
    return parent


def test_lab_2_refuses_a_missing_jsc_toy_checkpoint_naming_the_step_that_made_it(workdir):
    """Never an untrained jsc-toy profiled in its place."""
    from jscexp.errors import UserError
    from jscexp.report.lab import best_checkpoint

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    client = mlflow_client(workdir)
    gone = _sweep_with_child(client, "lab1_models", {"model.name": "jsc-toy"}, {"jscexp.checkpoint": "/gone/best.ckpt"})
    with pytest.raises(UserError, match="the jsc-toy checkpoint that lab step lab1_models wrote is gone"):
        best_checkpoint(uri, gone, "jsc-toy")
    tiny_only = _sweep_with_child(client, "lab1_models_tiny", {"model.name": "jsc-tiny"}, {})
    with pytest.raises(UserError, match="lab step lab1_models .* has no finished jsc-toy run"):
        best_checkpoint(uri, tiny_only, "jsc-toy")


def test_the_reports_header_says_what_a_run_did_not_record(workdir):
    """No '?' standing in for a data hash or row counts: the header names the run that lacks them."""
    from jscexp.report.__main__ import _header
    from jscexp.report.lab import Settings

    parent = _sweep_with_child(mlflow_client(workdir), "lab1_batch_size", {"data.rows_train": "700"},
                               {"jscexp.dataset": "jsc_synth", "jscexp.synthetic": "true"})
    header = dict(_header(f"sqlite:///{workdir / 'mlflow.db'}", Settings("jsc_synth", 1000, 1), {"lab1_batch_size": parent}))
    assert header["Data hash"].startswith("not recorded (run ") and header["Rows (train / val / test)"].startswith(
        "not recorded (run ")
    assert "?" not in " ".join(header.values())
