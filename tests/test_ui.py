"""The MLflow UI as the lab notebook (#18): a small sweep opened in headless Chromium shows
its runs by readable names, opens on the runs (not MLflow 3's GenAI overview), and a run's
page shows its name, parent, dataset and metrics.

Needs Debian's ``chromium`` (``.ci/run`` installs it, as it installs PostgreSQL). With
``JSCEXP_SCREENSHOTS=docs/img`` the test also writes the README's two screenshots there.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FAST, mlflow_client, run_cli, runs_of, start_mlflow_server

GENAI = "Detect issues"  # on MLflow 3's GenAI overview of an experiment (traces, an assistant panel)


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        reason = "no chromium here (Debian: apt-get install chromium)"
        if os.environ.get("JSCEXP_REQUIRE_SERVICES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return found


def _render(chromium: str, url: str, *, screenshot: Path | None = None, until: str = "") -> str:
    """The page's DOM after its scripts ran (20 s of virtual time), rendered again (3 tries)
    while ``until`` is not on it yet: a busy machine's server can answer after the budget;
    optionally a screenshot."""
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=20000",
             "--window-size=1400,1000"]
    for _ in range(3):
        dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True).stdout
        if until in dom:
            break
    if screenshot is not None:
        subprocess.run([*flags, f"--screenshot={screenshot}", url], capture_output=True, timeout=120, check=True)
    return dom


@pytest.mark.slow
def test_a_sweep_reads_in_the_mlflow_ui(workdir, tmp_path):
    """The links jscexp prints (a run's at its end, an experiment's by make ui) open the runs,
    not MLflow 3's GenAI overview, which the experiment's bare address still opens."""
    chromium = _chromium()
    result = run_cli(["-m", *FAST, "batch_size=32,64,128"], workdir)
    assert result.returncode == 0, result.stderr[-2000:]
    server, url = start_mlflow_server(tmp_path / "server", backend=f"sqlite:///{workdir / 'mlflow.db'}")
    shots = Path(os.environ.get("JSCEXP_SCREENSHOTS") or tmp_path)
    try:
        experiment = mlflow_client(workdir).get_experiment_by_name("jscexp").experiment_id
        bare = _render(chromium, f"{url}/#/experiments/{experiment}", until=GENAI)
        assert GENAI in bare and "Run Name" not in bare  # what a link without the view opens: why every link names it
        links = subprocess.run([sys.executable, "-m", "jscexp.tracking.links", f"sqlite:///{workdir / 'mlflow.db'}", url],
                               capture_output=True, text=True, timeout=60, check=True).stdout
        (landing,) = re.findall(r"jscexp +(\S+)", links)  # make ui's line for this experiment
        runs_page = _render(chromium, landing, screenshot=shots / "ui-runs.png", until="batch_size ∈ {32,64,128}")
        assert GENAI not in runs_page and "Run Name" in runs_page  # the runs table…
        assert "batch_size ∈ {32,64,128}" in runs_page and "<strong>4</strong> matching runs" in runs_page  # …and its parent
        child = next(r for r in runs_of(workdir) if r.info.run_name == "bs=64")
        printed = re.search(rf"run {child.info.run_id} · (\S+) \(make ui\)", result.stdout).group(1)
        run_page = _render(chromium, printed.replace("http://127.0.0.1:5000", url), screenshot=shots / "ui-run.png",
                           until="best_val_acc")
        for shown in ("bs=64", "batch_size ∈ {32,64,128}", "jsc_synth (synthetic)", "test_acc", "best_val_acc"):
            assert shown in run_page, shown
        assert (shots / "ui-runs.png").stat().st_size > 10_000 and (shots / "ui-run.png").stat().st_size > 10_000
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
