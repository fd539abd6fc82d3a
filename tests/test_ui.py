"""The MLflow UI as the lab notebook (#18): a small sweep opened in headless Chromium shows
its runs by readable names, opens on the runs (not MLflow 3's GenAI overview), and a run's
page shows its name, parent, dataset and metrics.

Needs Debian's ``chromium`` (``.ci/run`` installs it, as it installs PostgreSQL). With
``JSCEXP_SCREENSHOTS=docs/img`` the test also writes the README's two screenshots there.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import FAST, mlflow_client, run_cli, runs_of, start_mlflow_server


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        reason = "no chromium here (Debian: apt-get install chromium)"
        if os.environ.get("JSCEXP_REQUIRE_SERVICES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return found


def _render(chromium: str, url: str, *, screenshot: Path | None = None) -> str:
    """The page's DOM after its scripts ran (20 s of virtual time); optionally a screenshot."""
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=20000",
             "--window-size=1400,1000"]
    if screenshot is not None:
        subprocess.run([*flags, f"--screenshot={screenshot}", url], capture_output=True, timeout=120, check=True)
    return subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True).stdout


@pytest.mark.slow
def test_a_sweep_reads_in_the_mlflow_ui(workdir, tmp_path):
    chromium = _chromium()
    result = run_cli(["-m", *FAST, "batch_size=32,64,128"], workdir)
    assert result.returncode == 0, result.stderr[-2000:]
    server, url = start_mlflow_server(tmp_path / "server", backend=f"sqlite:///{workdir / 'mlflow.db'}")
    shots = Path(os.environ.get("JSCEXP_SCREENSHOTS") or tmp_path)
    try:
        experiment = mlflow_client(workdir).get_experiment_by_name("jscexp").experiment_id
        runs_page = _render(chromium, f"{url}/#/experiments/{experiment}/runs", screenshot=shots / "ui-runs.png")
        assert "Training runs" in runs_page  # the experiment kind: its runs, not the GenAI overview
        assert "batch_size ∈ {32,64,128}" in runs_page  # the sweep's parent, named by what varies
        child = next(r for r in runs_of(workdir) if r.info.run_name == "bs=64")
        run_page = _render(chromium, f"{url}/#/experiments/{experiment}/runs/{child.info.run_id}",
                           screenshot=shots / "ui-run.png")
        for shown in ("bs=64", "batch_size ∈ {32,64,128}", "jsc_synth (synthetic)", "test_acc", "best_val_acc"):
            assert shown in run_page, shown
        assert (shots / "ui-runs.png").stat().st_size > 10_000 and (shots / "ui-run.png").stat().st_size > 10_000
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
