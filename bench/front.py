"""``make bench-front``: three ways to the accuracy–EBOPs front of jsc-toy, side by side on the
synthetic stand-in (costs compare; accuracies are not physics results).

- the uniform-width grid: QAT at weight (and bias) widths 2…8, inputs 8 bits (``+sweep=quant_bits
  mode=qat``), one stacked job;
- the Optuna search: NSGA-II over each layer's weight and input width, two objectives
  (``+sweep=optuna_mixed_precision``), the same number of trials, asked and stacked all at once;
- the learned widths: one β per trial (``+sweep=learned_widths``), the same number, one stacked job.

Each runs in a fresh process and folder (the data cache shared), same data, epochs, batch size
and learning rate. For each: the hypervolume of its (validation accuracy, EBOPs) front against
one fixed reference point, the wall time, the number of front points; front.md and front.png
beside it (``--out``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import pandas as pd
from overheads import jscexp_cli

from jscexp.tracking.front import hypervolume, non_dominated
from sweeps import run_in_folder, trial_runs

# chance accuracy of the 5 classes; EBOPs of jsc-toy at 8 bits everywhere (15 016) rounded up
REFERENCE = (0.2, 16000.0)
BETAS = (1e-6, 3e-6, 1e-5, 2e-5, 3e-5, 5e-5, 7e-5)  # learned_widths.yaml's without 0 (its points cost > REFERENCE)
WIDTHS = (2, 3, 4, 5, 6, 7, 8)


def searches(k: int) -> dict[str, list[str]]:
    widths = ",".join(str(w) for w in WIDTHS[:k])
    betas = ",".join(f"{b:g}" for b in BETAS[:k])
    return {
        f"uniform grid, widths {widths}": ["+sweep=quant_bits", "mode=qat", f"quantisation.weight_width={widths}"],
        f"Optuna NSGA-II, {k} trials": ["+sweep=optuna_mixed_precision", f"hydra.sweeper.n_trials={k}",
                                        f"hydra.sweeper.n_jobs={k}"],
        f"learned widths, beta {betas}": ["+sweep=learned_widths", f"quantisation.beta={betas}"],
    }


def _points(folder: Path) -> pd.DataFrame:
    rows = [{"run": r.data.tags.get("mlflow.runName"), "acc": r.data.metrics["best_val_acc"],
             "ebops": r.data.metrics["ebops"]} for r in trial_runs(folder) if r.info.status == "FINISHED"]
    return pd.DataFrame(rows, columns=["run", "acc", "ebops"])


def measure(work: Path, rows: int, epochs: int, k: int) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    common = ["dataset=jsc_synth", f"dataset.n_rows={rows}", f"max_epochs={epochs}", "trainer.progress_bar=false",
              "learning_rate=1e-3", "batch_size=256"]
    (work / "warm").mkdir()  # one run first writes the data cache: every search starts from cached data
    jscexp_cli(["dataset=jsc_synth", f"dataset.n_rows={rows}", "max_epochs=1", "trainer.progress_bar=false"],
               work / "warm", cache=work / "cache")
    out, fronts = [], {}
    for i, (name, args) in enumerate(searches(k).items()):
        folder, _, wall = run_in_folder(["-m", *args, *common], work, f"s{i}")
        points = _points(folder)
        front = non_dominated(points, "acc", "ebops")
        fronts[name] = front
        out.append({"search": name, "trials": len(points), "front points": len(front),
                    "hypervolume": hypervolume(list(zip(front["acc"], front["ebops"])), REFERENCE),
                    "wall (s)": wall})
    frame = pd.DataFrame(out)
    frame["vs grid"] = frame["hypervolume"] / frame["hypervolume"].iloc[0]
    return frame, fronts


def _plot(fronts: dict[str, pd.DataFrame], path: Path, title: str) -> None:
    """The three fronts, whole (left) and above 0.6 validation accuracy (right)."""
    from jscexp.tracking.plots import pyplot, save

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, low in zip(axes, (None, 0.6)):
        for (name, front), marker in zip(fronts.items(), "so^"):
            shown = front if low is None else front[front["acc"] >= low]
            ax.plot(shown["ebops"], shown["acc"], marker=marker, drawstyle="steps-post", label=name)
        ax.set_xscale("log")
        ax.set_xlabel("EBOPs (HGQ)")
        ax.set_ylabel("validation accuracy")
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    save(fig, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=100000, help="stand-in rows (default 100000)")
    p.add_argument("--epochs", type=int, default=5, help="epochs per trial (default 5)")
    p.add_argument("--k", type=int, default=7, help="trials per search (default 7: the grid's widths 2…8)")
    p.add_argument("--out", type=Path, default=None, help="also write front.md and front.png into this folder")
    args = p.parse_args(argv)
    if not 2 <= args.k <= len(WIDTHS):
        p.error(f"--k must be 2…{len(WIDTHS)} (the grid's widths)")
    with tempfile.TemporaryDirectory() as tmp:
        frame, fronts = measure(Path(tmp), args.rows, args.epochs, args.k)
    title = (f"jsc-toy, {args.epochs} epochs, synthetic stand-in of {args.rows} rows (not physics results);\n"
             f"hypervolume against (val acc {REFERENCE[0]}, EBOPs {REFERENCE[1]:g})")
    text = f"# jscexp front bench: {title.replace(chr(10), ' ')}\n\n" + frame.to_markdown(index=False, floatfmt=".4g")
    grid, optuna, learned = frame.iloc[0], frame.iloc[1], frame.iloc[2]
    text += (f"\n\nGoals: learned hypervolume >= 1.2 x the grid's (here {learned['vs grid']:.2f} x) in no more than "
             f"the grid's wall time (here {learned['wall (s)']:.0f} s against {grid['wall (s)']:.0f} s); Optuna's >= "
             f"the grid's at the same trial count (here {optuna['vs grid']:.2f} x).\n")
    for name, front in fronts.items():
        text += f"\n## Front: {name}\n\n" + front.to_markdown(index=False, floatfmt=".4g") + "\n"
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "front.md").write_text(text)
        _plot(fronts, args.out / "front.png", title)
    return 0


if __name__ == "__main__":
    sys.exit(main())
