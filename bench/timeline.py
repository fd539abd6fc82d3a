"""``make bench``'s timeline: where a stacked sweep's wall time goes, stage by stage.

The sweep is ``make bench-search``'s stacked grid (learning rate x weight decay, 16 trials,
jsc-tiny), run on the real CLI in a fresh process twice: into a new folder (a new MLflow store)
and again into the same folder (the store exists). Stages come from the marks jscexp writes to
$JSCEXP_STEP_MARKS (``jscexp.timeline``); the imports a job needs are timed apart, in a fresh
interpreter. Goal (issue: fixed costs in proportion): time outside training <= training.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from overheads import jscexp_cli, read_marks

# (from mark, to mark, what happens between them)
STAGES = [
    ("start", "sweep_start", "interpreter, Hydra, the sweep's config composed, its checks (jscexp.preflight)"),
    ("sweep_start", "parent_run", "MLflow store and the sweep's parent run"),
    ("parent_run", "launch", "jobs composed (once per shape) and grouped"),
    ("launch", "job_start", "Hydra launches the group job (its config, output folder)"),
    ("job_start", "first_step", "16 trials prepared: configs, models, data, runs opened"),
    ("first_step", "last_step", "training: 8 epochs of 16 stacked trials"),
    ("last_step", "job_end", "16 trials tested, checkpointed, runs finished"),
    ("job_end", "sweep_closed", "the sweep's table and plot, parent run ended"),
    ("sweep_closed", "exit", "process exit"),
]
# What a stacked job imports (jscexp.__main__ imports only Hydra; the rest comes when a sweep starts)
JOB_MODULES = ("jscexp.__main__", "jscexp.job", "jscexp.intrain", "jscexp.group", "jscexp.train.stacked",
               "mlflow.tracking", "mlflow.store.tracking.sqlalchemy_store", "jscexp.tracking.report",
               "matplotlib.pyplot")


def _stages(args: list[str], folder: Path, cache: Path) -> dict[str, float]:
    marks = folder / "marks"
    marks.unlink(missing_ok=True)
    started = jscexp_cli(args, folder, marks, cache=cache)
    ended = time.time()
    at = {"start": started, **dict(read_marks(marks)), "exit": ended}
    return {f"{a}→{b}": at[b] - at[a] for a, b, _ in STAGES}


def import_seconds(repeats: int = 3) -> float:
    """The job's imports in a fresh interpreter, less the interpreter's own start (best of ``repeats``)."""
    def best(code: str) -> float:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True)
            times.append(time.perf_counter() - started)
        return min(times)

    exit_at_once = "; import os; os._exit(0)"  # as jscexp exits: not tearing torch's modules down
    return best("import " + ", ".join(JOB_MODULES) + exit_at_once) - best("pass" + exit_at_once)


def table(rows: int = 100000, epochs: int = 8) -> str:
    import tempfile

    import pandas as pd

    args = ["-m", "+sweep=lr_wd_grid", "dataset=jsc_synth", f"dataset.n_rows={rows}", f"max_epochs={epochs}",
            "trainer.progress_bar=false"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "warm").mkdir()
        jscexp_cli(["dataset=jsc_synth", f"dataset.n_rows={rows}", "max_epochs=1", "trainer.progress_bar=false"],
                   work / "warm", cache=work / "cache")  # the data cache and MLflow's schema, once
        (work / "sweep").mkdir()
        fresh = _stages(args, work / "sweep", work / "cache")
        again = _stages(args, work / "sweep", work / "cache")
    imports = import_seconds()
    frame = pd.DataFrame([{"stage": key, "what": what, "new store (s)": fresh[key], "existing store (s)": again[key]}
                          for key, (_, _, what) in zip(fresh, STAGES)])
    training = "first_step→last_step"
    lines = [frame.to_markdown(index=False, floatfmt=".2f"), ""]
    for name, run in (("new store", fresh), ("existing store", again)):
        total, trained = sum(run.values()), run[training]
        outside = total - trained
        lines.append(f"- {name}: wall {total:.1f} s, training {trained:.1f} s, outside training {outside:.1f} s "
                     f"(of which the job's imports {imports:.1f} s): outside / training {outside / trained:.2f} "
                     f"(goal <= 1: {'met' if outside <= trained else 'NOT met'})")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
