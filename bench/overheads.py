"""What a job costs besides its steps, measured on the real CLI in fresh processes.

The training loop appends ``first_step``/``last_step`` wall-clock marks to the file named by
``JSCEXP_STEP_MARKS``; the gaps between them are start-up and between-job overhead.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from jscexp.timeline import MARKS_ENV


def jscexp_cli(args: list[str], workdir: Path, marks: Path | None = None, cache: Path | None = None) -> float:
    """Runs ``python -m jscexp args`` in ``workdir`` (data cache: ``cache``, else its own);
    returns the wall-clock time it was started at."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "JSCEXP_PARENT_RUN_ID")}
    env["JSCEXP_CACHE"] = str(cache or workdir / "cache")
    if marks is not None:
        env[MARKS_ENV] = str(marks)
    started = time.time()
    out = subprocess.run([sys.executable, "-m", "jscexp", *args], cwd=workdir, env=env, capture_output=True, text=True,
                         check=False)
    if out.returncode != 0:
        raise RuntimeError(f"python -m jscexp {' '.join(args)} failed:\n{out.stderr[-2000:]}")
    return started


def read_marks(marks: Path) -> list[tuple[str, float]]:
    return [(w, float(t)) for w, t in (line.split() for line in marks.read_text().splitlines())]


def measure(rows: int, grid_rows: int, grid_epochs: int, repeats: int = 3) -> dict[str, float]:
    """--help time and cold start to the first step (best of ``repeats``), and a 9-job grid's between-job gaps."""
    job = ["dataset=jsc_synth", f"dataset.n_rows={rows}", "max_epochs=1", "trainer.progress_bar=false"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        helps = []
        for _ in range(repeats):
            started = time.perf_counter()
            jscexp_cli(["--help"], work)
            helps.append(time.perf_counter() - started)
        jscexp_cli(job, work)  # writes the data cache and the MLflow store: the runs after are "cached data"
        cold = []
        for i in range(max(1, repeats - 1)):
            marks = work / f"cold{i}.marks"
            started = jscexp_cli(job, work, marks)
            cold.append(dict(read_marks(marks))["first_step"] - started)
        marks = work / "grid.marks"
        grid = ["-m", "dataset=jsc_synth", f"dataset.n_rows={grid_rows}", f"max_epochs={grid_epochs}",
                "trainer.progress_bar=false", "batch_size=64,128,256", "learning_rate=1e-3,1e-2,1e-1",
                "trainer.vectorize=off"]  # job by job: the overheads between single runs
        started = jscexp_cli(grid, work, marks)
        wall = time.time() - started
        events = read_marks(marks)
    firsts = [t for w, t in events if w == "first_step"]
    lasts = [t for w, t in events if w == "last_step"]
    if len(firsts) != 9 or len(lasts) != 9:
        raise RuntimeError(f"the 9-job grid left {len(firsts)} first-step and {len(lasts)} last-step marks")
    gaps = [b - a for a, b in zip(lasts, firsts[1:])]
    training = sum(b - a for a, b in zip(firsts, lasts))
    return {
        "help_s": min(helps),
        "cold_start_s": min(cold),
        "gap_max_s": max(gaps),
        "gap_mean_s": sum(gaps) / len(gaps),
        "grid_wall_s": wall,
        "grid_not_training_share": 1 - training / wall,
        "grid_first_step_s": firsts[0] - started,
    }
