"""``make bench-search``: four ways to search the learning-rate x weight-decay space of jsc-tiny,
side by side in one run on the synthetic stand-in (not physics results).

- the 16-point grid job by job (``+sweep=lr_wd_grid trainer.vectorize=off``),
- the same grid as one stacked model (``+sweep=lr_wd_grid``),
- TPE, 16 trials one at a time (``+sweep=optuna_lr_wd``),
- population-based training, 16 members in one stacked model (``+sweep=pbt_lr_wd``).

Each runs in a fresh process and folder (the data cache shared). For each: the best
validation accuracy any trial reached, the wall time, and when (seconds from its start) a
trial first logged a validation accuracy at least the stacked grid's best — read from the
timestamps of the ``val_acc`` metrics in its MLflow store.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from overheads import jscexp_cli

from sweeps import folder_client, run_in_folder, trial_runs

SEARCHES = {
    "grid 4 lr x 4 wd, job by job": ["+sweep=lr_wd_grid", "trainer.vectorize=off"],
    "grid 4 lr x 4 wd, stacked": ["+sweep=lr_wd_grid"],
    "TPE, 16 trials one at a time": ["+sweep=optuna_lr_wd"],
    "PBT, 16 members stacked": ["+sweep=pbt_lr_wd"],
}


def _search(args: list[str], work: Path, name: str) -> dict:
    """Runs one search in its own folder: its start, wall time and every trial's val_acc over time."""
    folder, started, wall = run_in_folder(["-m", *args], work, name)
    client = folder_client(folder)
    curves = [[(m.timestamp / 1000 - started, m.value) for m in client.get_metric_history(r.info.run_id, "val_acc")]
              for r in trial_runs(folder)]
    return {"wall": wall, "curves": curves, "trials": len(curves)}


def _first_reaching(curves: list[list[tuple[float, float]]], target: float) -> float | None:
    times = [t for curve in curves for t, acc in curve if acc >= target]
    return min(times) if times else None


def measure(work: Path, rows: int, epochs: int, interval: int) -> list[dict]:
    common = ["dataset=jsc_synth", f"dataset.n_rows={rows}", f"max_epochs={epochs}", "trainer.progress_bar=false",
              f"pbt.interval={interval}"]
    (work / "warm").mkdir()  # one run first writes the data cache: every search starts from cached data
    jscexp_cli(["dataset=jsc_synth", f"dataset.n_rows={rows}", "max_epochs=1", "trainer.progress_bar=false"],
               work / "warm", cache=work / "cache")
    found = {name: _search([*args, *common], work, f"s{i}") for i, (name, args) in enumerate(SEARCHES.items())}
    target = max(acc for curve in found["grid 4 lr x 4 wd, stacked"]["curves"] for _, acc in curve)
    grid_wall = found["grid 4 lr x 4 wd, stacked"]["wall"]
    rows_out = []
    for name, f in found.items():
        best = max(acc for curve in f["curves"] for _, acc in curve)
        reached = _first_reaching(f["curves"], target)
        rows_out.append({
            "search": name, "trials": f["trials"], "best val acc": f"{best:.4f}", "wall (s)": f"{f['wall']:.1f}",
            "reached the grid's best after (s)": "never" if reached is None else f"{reached:.1f}",
            "share of the stacked grid's wall": "" if reached is None else f"{reached / grid_wall:.2f}",
        })
    return rows_out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=100000, help="stand-in rows (default 100000)")
    p.add_argument("--epochs", type=int, default=8, help="epochs per trial / member (default 8)")
    p.add_argument("--interval", type=int, default=2, help="PBT: epochs between exploits (default 2)")
    args = p.parse_args(argv)
    import pandas as pd

    with tempfile.TemporaryDirectory() as tmp:
        frame = pd.DataFrame(measure(Path(tmp), args.rows, args.epochs, args.interval))
    print(f"# jscexp search bench: lr x weight decay, jsc-tiny, {args.epochs} epochs, synthetic stand-in of "
          f"{args.rows} rows (not physics results); PBT exploits every {args.interval} epochs\n")
    print(frame.to_markdown(index=False))
    pbt, grid = frame.iloc[3], frame.iloc[1]
    share = pbt["share of the stacked grid's wall"] or "never"
    print(f"\nGoal: PBT reaches the stacked grid's best validation accuracy in <= 1/4 of its wall time (here: {share}),"
          f" or a better one in the same time (here: {pbt['best val acc']} in {pbt['wall (s)']} s against"
          f" {grid['best val acc']} in {grid['wall (s)']} s).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
