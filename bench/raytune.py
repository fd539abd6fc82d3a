"""``make bench-peers``' search section: ``make bench-search``'s learning-rate x weight-decay grid
(16 trials, jsc-tiny) in jscexp and in Ray Tune, on one data file, side by side.

Ray Tune (``ray[tune]``, the peers extra) runs ``bench/peers/ray_search.py`` — a plain PyTorch
training function, 2 trials at a time — with its defaults and with ``reuse_actors=True``; jscexp
runs the grid stacked (its default) and job by job (``trainer.vectorize=off``). Every side reads
the split jscexp's recipe makes (Ray from an .npz of it) and seeds weights and batch order alike,
so they find the same best trial. For each: wall time, CPU time of its whole process tree, the
best validation accuracy and where; then the ratios against the tuned Ray Tune and their goals.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
GRID = ["-m", "+sweep=lr_wd_grid", "trainer.progress_bar=false"]
TUNED = "Ray Tune, reuse_actors=True"
# jscexp's side against the tuned Ray Tune: (wall ratio, CPU ratio) goals, higher is better
GOALS = {"jscexp stacked (default)": (4.0, 5.0), "jscexp job by job (trainer.vectorize=off)": (1.0, None)}


def _reaped_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_tree(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, str]:
    """Runs ``cmd``; returns its wall time, the CPU time of its whole process tree and its stdout.

    The CPU is the larger of two counts that can each only miss time: the rusage of the
    children this process reaped (with their reaped descendants), and the sum over every
    process of the tree of its user + system time, sampled every 50 ms (which sees workers
    that nobody reaps, such as Ray's, but not their last 50 ms).
    """
    import psutil

    before, seen = _reaped_cpu(), {}
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=err, text=True)
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            with contextlib.suppress(psutil.Error):
                for p in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        t = p.cpu_times()
                        seen[(p.pid, p.create_time())] = t.user + t.system
            time.sleep(0.05)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{err.read()[-3000:]}")
        return wall, max(_reaped_cpu() - before, sum(seen.values())), out.read()


def ray_side(splits: Path, work: Path, epochs: int, reuse: bool) -> dict:
    cmd = [sys.executable, str(HERE / "peers" / "ray_search.py"), "--data", str(splits), "--epochs", str(epochs),
           "--batch-size", "128", *(["--reuse-actors"] if reuse else [])]
    wall, cpu, out = run_tree(cmd, work, {**os.environ, "RAY_AUTH_MODE": "disabled"})
    found = json.loads(out.strip().splitlines()[-1])
    best = max(range(len(found["best_val_acc"])), key=lambda i: found["best_val_acc"][i])
    params = found["params"][best]
    return {"wall": wall, "cpu": cpu, "best": found["best_val_acc"][best], "at": f"lr {params['lr']:g}, wd {params['wd']:g}",
            "trials": len(found["best_val_acc"])}


def jscexp_side(work: Path, name: str, data: list[str], epochs: int, extra: list[str]) -> dict:
    from sweeps import trial_runs

    folder = work / name
    folder.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "JSCEXP_PARENT_RUN_ID")}
    env["JSCEXP_CACHE"] = str(work / "cache")  # the split the .npz holds, cached by splits_file
    cmd = [sys.executable, "-m", "jscexp", *GRID, *data, f"max_epochs={epochs}", *extra]
    wall, cpu, _ = run_tree(cmd, folder, env)
    runs = [r for r in trial_runs(folder) if r.info.status == "FINISHED"]
    best = max(runs, key=lambda r: r.data.metrics["best_val_acc"])
    at = f"lr {float(best.data.params['learning_rate']):g}, wd {float(best.data.params['optimizer.weight_decay']):g}"
    return {"wall": wall, "cpu": cpu, "best": best.data.metrics["best_val_acc"], "at": at, "trials": len(runs)}


def compare(work: Path, splits: Path, data: list[str], rows: int, epochs: int) -> str:
    """The four sides on ``splits`` (the .npz of the split jscexp's recipe makes from the
    overrides ``data``, its cache under ``work``), side by side."""
    import pandas as pd

    sides = {"Ray Tune, FIFO, defaults": ray_side(splits, work, epochs, reuse=False),
             TUNED: ray_side(splits, work, epochs, reuse=True),
             "jscexp stacked (default)": jscexp_side(work, "stacked", data, epochs, []),
             "jscexp job by job (trainer.vectorize=off)": jscexp_side(work, "by_job", data, epochs,
                                                                      ["trainer.vectorize=off"])}
    tuned = sides[TUNED]
    frame = pd.DataFrame([{"side": name, "trials": s["trials"], "wall (s)": round(s["wall"], 1),
                           "CPU (s)": round(s["cpu"], 1), "best val acc": f"{s['best']:.4f}", "best trial": s["at"],
                           "wall: tuned Ray / this": f"{tuned['wall'] / s['wall']:.2f}x",
                           "CPU: tuned Ray / this": f"{tuned['cpu'] / s['cpu']:.2f}x"} for name, s in sides.items()])
    lines = [f"# jscexp beside Ray Tune: learning rate x weight decay, 16 trials, jsc-tiny, {epochs} epochs, batch 128, "
             f"2 at a time; synthetic stand-in of {rows} rows (not physics results)", "", frame.to_markdown(index=False), ""]
    for name, (wall_goal, cpu_goal) in GOALS.items():
        s = sides[name]
        checks = [f"wall {tuned['wall'] / s['wall']:.2f}x (goal >= {wall_goal:g}x: "
                  f"{'met' if tuned['wall'] / s['wall'] >= wall_goal else 'NOT met'})"]
        if cpu_goal is not None:
            checks.append(f"CPU {tuned['cpu'] / s['cpu']:.2f}x (goal >= {cpu_goal:g}x: "
                          f"{'met' if tuned['cpu'] / s['cpu'] >= cpu_goal else 'NOT met'})")
        lines.append(f"- {name} against {TUNED}: " + ", ".join(checks))
    trials, values = {s["at"] for s in sides.values()}, [s["best"] for s in sides.values()]
    # one thread (Ray's workers) or two sum floats in another order: a validation sample may flip
    agree = len(trials) == 1 and max(values) - min(values) <= 0.0005
    lines.append(f"- the same best trial on every side, its value within 0.0005: {'yes' if agree else 'NO'} "
                 f"({', '.join(sorted(trials))}; {min(values):.6f}…{max(values):.6f})")
    return "\n".join(lines) + "\n"
