"""``make bench``'s sweep table: whole sweeps on the real CLI, job by job against stacked.

Each sweep runs in a fresh process and working directory (the data cache shared, so every
sweep starts from cached data, as a user's second sweep does). Wall time is the process's;
training time is what the runs logged (``fit_seconds``: per run job by job, per stacked
group once), read back from the sweep's MLflow store.
"""

from __future__ import annotations

import time
from pathlib import Path

from overheads import jscexp_cli, read_marks

# A stacked sweep costs its training and one process start, plus at most half that again; each
# more trial in a group costs at most 50 ms besides its steps.
GOALS = {"wall / (training + cold start)": 1.5, "per-trial overhead (ms)": 50.0}


def run_in_folder(args: list[str], work: Path, name: str) -> tuple[Path, float, float]:
    """Runs ``python -m jscexp args`` in its own folder ``work/name`` (step marks in its
    ``marks``, the data cache shared); returns (the folder, the time it started, wall s)."""
    folder = work / name
    folder.mkdir()
    started = jscexp_cli(args, folder, folder / "marks", cache=work / "cache")
    return folder, started, time.time() - started


def _sweep(args: list[str], work: Path, name: str) -> tuple[float, float, int]:
    """Runs ``python -m jscexp args`` in its own folder; returns (wall s, training s, runs)."""
    folder, _, wall = run_in_folder(args, work, name)
    runs = trial_runs(folder)
    # stacked trials share their group's fit_seconds: count each group once
    groups = {r.data.tags.get("jscexp.vector_group") or r.info.run_id: r.data.metrics.get("fit_seconds", 0.0)
              for r in runs}
    return wall, sum(groups.values()), len(runs)


def folder_client(folder: Path):
    """The MLflow client of the store a command run in ``folder`` wrote."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")


def trial_runs(folder: Path) -> list:
    client = folder_client(folder)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return [r for r in client.search_runs(experiments, max_results=10000) if r.data.tags.get("jscexp.kind") != "sweep"]


def _group_overhead(folder: Path) -> float:
    """Seconds a sweep's one group job spent besides its training steps: preparing every
    trial, opening and finishing its run (test, checkpoint, MLflow)."""
    marks = dict(read_marks(folder / "marks"))
    if len(marks) != 4:
        raise RuntimeError(f"expected one stacked job's marks, got {marks}")
    start, end, first, last = (marks[k] for k in ("job_start", "job_end", "first_step", "last_step"))
    return (end - start) - (last - first)


def _cold_start(work: Path, rows: int) -> float:
    """Seconds from the process start to a single run's first step, with cached data."""
    folder = work / "cold"
    folder.mkdir()
    args = ["dataset=jsc_synth", f"dataset.n_rows={rows}", "max_epochs=1", "trainer.progress_bar=false"]
    jscexp_cli(args, folder, cache=work / "cache")
    # the second run: the store and experiment exist, as in a user's next run
    started = jscexp_cli(args, folder, folder / "marks", cache=work / "cache")
    return dict(read_marks(folder / "marks"))["first_step"] - started


def measure(work: Path, rows: int, epochs: int) -> dict[str, float]:
    """Every number of the sweep table (see ``table_rows``), each sweep in a fresh process."""
    common = ["dataset=jsc_synth", f"dataset.n_rows={rows}", "trainer.progress_bar=false", "data_seed=0"]
    lr = ["-m", "+sweep=lab1_learning_rate", *common, f"max_epochs={epochs}"]
    cold = _cold_start(work, rows)
    by_job = _sweep([*lr, "seed=0,1,2,3", "trainer.vectorize=off"], work, "lr_by_job")
    stacked = _sweep([*lr, "seed=0,1,2,3"], work, "lr_stacked")
    small = _sweep([*lr, "seed=0"], work, "lr_stacked_small")
    ep = ["-m", "+sweep=lab1_max_epochs", *common, f"max_epochs={','.join(str(e * epochs) for e in (1, 2, 4, 8))}"]
    ep_by_job = _sweep([*ep, "trainer.vectorize=off"], work, "epochs_by_job")
    ep_stacked = _sweep(ep, work, "epochs_stacked")
    ptq = _sweep(["-m", "+sweep=quant_bits", *common, f"max_epochs={epochs}", "mode=ptq",
                  "quantisation.weight_width=2,4,6,8"], work, "ptq_widths")
    # the slope between a group of 24 and one of 6: what each more trial costs, fixed costs apart
    overhead = (_group_overhead(work / "lr_stacked") - _group_overhead(work / "lr_stacked_small")) \
        / (stacked[2] - small[2]) * 1000
    return {"epochs": epochs, "cold_s": cold, "by_job_wall_s": by_job[0], "by_job_training_s": by_job[1],
            "stacked_wall_s": stacked[0], "stacked_training_s": stacked[1], "trials": stacked[2], "small_trials": small[2],
            "overhead_ms": overhead, "epochs_by_job_wall_s": ep_by_job[0], "epochs_stacked_wall_s": ep_stacked[0],
            "ptq_wall_s": ptq[0],
            "ptq_floats": sum(r.data.tags.get("jscexp.mode") == "train" for r in trial_runs(work / "ptq_widths"))}


def table_rows(m: dict[str, float]) -> list[dict]:
    """The sweep table from ``measure``'s numbers: what each sweep took, and the goals met or not."""
    n, epochs = int(m["trials"]), int(m["epochs"])
    return [
        {"measure": f"lr x 4 seeds ({n} trials), job by job: wall / training (s)",
         "value": f"{m['by_job_wall_s']:.1f} / {m['by_job_training_s']:.1f}"},
        {"measure": f"lr x 4 seeds ({n} trials), stacked: wall / training (s)",
         "value": f"{m['stacked_wall_s']:.1f} / {m['stacked_training_s']:.1f}"},
        {"measure": "stacked faster than job by job", "value": f"{m['by_job_wall_s'] / m['stacked_wall_s']:.2f}x"},
        _goal("wall / (training + cold start)", m["stacked_wall_s"] / (m["stacked_training_s"] + m["cold_s"]), "",
              note=f"(stacked; cold start {m['cold_s']:.1f} s)"),
        _goal("per-trial overhead (ms)", m["overhead_ms"], " ms",
              note=f"(group job's time besides its steps, {n} vs {int(m['small_trials'])} trials)"),
        {"measure": f"epochs {epochs}…{8 * epochs} (4 trials): job by job / stacked wall (s)",
         "value": f"{m['epochs_by_job_wall_s']:.1f} / {m['epochs_stacked_wall_s']:.1f} "
                  f"({m['epochs_by_job_wall_s'] / m['epochs_stacked_wall_s']:.1f}x)"},
        {"measure": "PTQ at 4 widths: float trainings (job by job: 4)",
         "value": f"{int(m['ptq_floats'])}, in {m['ptq_wall_s']:.1f} s"},
    ]


def _goal(what: str, value: float, unit: str, *, higher: bool = False, note: str = "") -> dict:
    goal = GOALS[what]
    met = value >= goal if higher else value <= goal
    return {"measure": f"{what} {note}".strip(), "value": f"{value:.2f}{unit}",
            "goal": f"{'>=' if higher else '<='} {goal:g}{unit.strip()}", "met": "yes" if met else "NO"}


def table(rows: int, epochs: int) -> str:
    import tempfile

    import pandas as pd

    with tempfile.TemporaryDirectory() as tmp:
        frame = pd.DataFrame(table_rows(measure(Path(tmp), rows, epochs))).fillna("")
    return frame.to_markdown(index=False)
