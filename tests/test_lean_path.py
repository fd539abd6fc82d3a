"""The lean training path (#8): same numbers as the Lightning Trainer path it replaced,
early stopping, and the benchmark's smoke run."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT, run_job, runs_of

# Recorded from the Lightning Trainer path at commit de5c45b (the last before the Fabric loop)
# with exactly these overrides: the faster path must give the same numbers, bit for bit.
TRAINER_PATH = {
    "tiny": (["max_epochs=3", "batch_size=64"],
             [0.4229166805744171, 0.4937500059604645, 0.5166666507720947],
             [1.5536320209503174, 1.429131269454956, 1.3614890575408936],
             0.5058333277702332, 1.3214783668518066),
    "toy_sgd": (["model=jsc-toy", "max_epochs=2", "optimizer=sgd", "learning_rate=0.05", "batch_size=32", "seed=3"],
                [0.49791666865348816, 0.6958333253860474],
                [1.211412787437439, 1.0355875492095947],
                0.7066666483879089, 0.8259562253952026),
    "qat_int8": (["mode=qat", "quantisation=int8", "max_epochs=2", "batch_size=128"],
                 [0.34166666865348816, 0.375],
                 [1.5845988988876343, 1.5221976041793823],
                 0.34833332896232605, 1.526802659034729),
}
DATA = ["dataset=jsc_synth", "dataset.n_rows=6000", "trainer.progress_bar=false"]


def _history(client, run_id: str, key: str) -> list[float]:
    return [m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


@pytest.mark.parametrize("case", sorted(TRAINER_PATH))
def test_same_numbers_as_the_lightning_trainer_path(workdir, case):
    from conftest import mlflow_client

    overrides, val_acc, train_loss, test_acc, test_loss = TRAINER_PATH[case]
    result = run_job(DATA + overrides, workdir / "out")
    (run,) = runs_of(workdir)
    client = mlflow_client(workdir)
    assert _history(client, run.info.run_id, "val_acc") == val_acc
    # the epoch loss is now one weighted mean, not a running sum: float reassociation only
    assert _history(client, run.info.run_id, "train_loss") == pytest.approx(train_loss, rel=1e-6)
    assert result.metrics["test_acc"] == test_acc
    assert result.metrics["test_loss"] == pytest.approx(test_loss, rel=1e-6)
    assert result.metrics["best_val_acc"] == max(val_acc)


def test_early_stopping_stops_after_patience_epochs_without_improvement(workdir):
    from conftest import mlflow_client

    # lr 1e-12 leaves the weights alone: only BatchNorm's running stats move val_acc, and not for long
    run_job(DATA + ["max_epochs=8", "learning_rate=1e-12", "scheduler=none", "trainer.early_stopping_patience=2"],
            workdir / "out")
    (run,) = runs_of(workdir)
    val_acc = _history(mlflow_client(workdir), run.info.run_id, "val_acc")
    best_epoch = max(range(len(val_acc)), key=lambda e: (val_acc[e], -e))  # the first epoch at the best value
    assert len(val_acc) < 8, "never stopped early"
    assert len(val_acc) - 1 - best_epoch == 2
    assert run.data.tags["jscexp.stopped_early_at_epoch"] == str(len(val_acc) - 1)


SWEEP_ROWS = ("lr x 4 seeds (24 trials), job by job: wall / training (s)",
              "lr x 4 seeds (24 trials), stacked: wall / training (s)", "speed-up",
              "per-trial overhead (ms) (group job's time besides its steps, 24 vs 6 trials)",
              "epochs 1…8 (4 trials): job by job / stacked wall (s)",
              "PTQ at 4 widths: float trainings (job by job: 4)")


def _cells(stdout: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in stdout.splitlines() if line.startswith("| ")]


def _is_number(text: str) -> bool:
    try:
        float(text.rstrip("%x"))
    except ValueError:
        return False
    return True


@pytest.mark.slow
def test_bench_smoke_prints_every_row(tmp_path):
    """The tables' shape only: every row and a number in every timed cell. Timing values are
    never asserted (the machine is shared; a 3-step ratio may print as 0.0)."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench.py"), "--steps", "5", "--warmup", "2", "--repeats", "1",
         "--stacked-steps", "3", "--rows", "20000", "--grid-rows", "3000", "--grid-epochs", "1",
         "--sweep-rows", "3000", "--sweep-epochs", "1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = _cells(out.stdout)
    timed = {(r[0], r[1], r[2]): r[3] for r in rows if len(r) == 6 and r[0] != "model"}
    assert set(timed) == {(m, b, p) for m in ("jsc-tiny", "jsc-toy") for b in ("32", "256")
                          for p in ("a MASE-style", "b raw loop", "c jscexp")}
    ratios = [r for r in rows if len(r) == 7 and r[0] != "model"]
    stacked = {(r[0], r[1], r[2]): r[5] for r in rows if len(r) == 8 and r[0] != "model"}
    assert set(stacked) == {(m, b, k) for m in ("jsc-tiny", "jsc-toy") for b in ("32", "256")
                            for k in ("1", "4", "16", "64")}
    assert len(ratios) == 4 and all(r[6] in ("yes", "NO") for r in ratios)
    overheads = {r[0]: r[1] for r in rows if len(r) == 4 and r[0] != "overhead" and r[2] != "goal"}
    sweeps = {r[0]: r for r in rows if len(r) == 4 and r[0] in SWEEP_ROWS}
    overheads = {k: v for k, v in overheads.items() if k not in sweeps}
    assert set(sweeps) == set(SWEEP_ROWS)
    assert all(r[3] in ("yes", "NO") for r in sweeps.values() if r[2])  # each goal says whether it was met
    assert sweeps[SWEEP_ROWS[-1]][1].startswith("1, in ")  # the PTQ width sweep trained one float model
    assert {"python -m jscexp --help", "cold start to first step (cached data)",
            "between jobs, last step to next first step (max)", "9-job grid share not training"} <= set(overheads)
    assert all(_is_number(v) for v in [*timed.values(), *stacked.values(), *overheads.values()])
    assert all(_is_number(r[2]) and _is_number(r[4]) for r in ratios)
