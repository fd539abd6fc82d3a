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


def _cells(stdout: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in stdout.splitlines() if line.startswith("| ")]


def _is_number(text: str) -> bool:
    try:
        float(text.rstrip("%x"))
    except ValueError:
        return False
    return True


def test_bench_prints_every_step_row_in_seconds(tmp_path):
    """The step and stacked tables' shape from a real run of a few steps (the benchmark itself
    is make bench). Timing values are never asserted: the machine is shared."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench.py"), "--steps", "3", "--warmup", "1", "--repeats", "1",
         "--stacked-steps", "2", "--rows", "3000", "--no-overheads", "--no-sweeps", "--no-hardware"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
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
    assert all(_is_number(v) for v in [*timed.values(), *stacked.values()])
    assert all(_is_number(r[2]) and _is_number(r[4]) for r in ratios)


def test_the_sweep_and_overhead_tables_read_their_goals_from_the_numbers(monkeypatch):
    """make bench's sweep table: a stacked sweep's wall <= 1.5 x (training + one cold start),
    <= 50 ms per trial; the cold start is shown without a goal (the goal was withdrawn)."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import bench
    import sweeps

    measured = {"epochs": 3, "cold_s": 4.6, "by_job_wall_s": 22.7, "by_job_training_s": 13.8, "stacked_wall_s": 8.2,
                "stacked_training_s": 1.2, "trials": 24, "small_trials": 6, "overhead_ms": 46.0,
                "epochs_by_job_wall_s": 20.0, "epochs_stacked_wall_s": 8.0, "ptq_wall_s": 9.0, "ptq_floats": 1}
    rows = {r["measure"]: r for r in sweeps.table_rows(measured)}
    assert rows["wall / (training + cold start) (stacked; cold start 4.6 s)"] == {
        "measure": "wall / (training + cold start) (stacked; cold start 4.6 s)", "value": "1.41", "goal": "<= 1.5",
        "met": "yes"}  # 8.2 / (1.2 + 4.6)
    assert rows["per-trial overhead (ms) (group job's time besides its steps, 24 vs 6 trials)"]["met"] == "yes"
    assert rows["stacked faster than job by job"]["value"] == "2.77x" and "goal" not in rows["stacked faster than job by job"]
    assert rows["PTQ at 4 widths: float trainings (job by job: 4)"]["value"] == "1, in 9.0 s"
    slower = sweeps.table_rows({**measured, "stacked_wall_s": 9.0, "overhead_ms": 51.0})  # 9.0 / 5.8 = 1.55
    assert [r["met"] for r in slower if "met" in r] == ["NO", "NO"]
    overhead = bench.overhead_table({"help_s": 1.2, "cold_start_s": 4.6, "gap_max_s": 0.5, "gap_mean_s": 0.3,
                                     "grid_wall_s": 30.0, "grid_not_training_share": 0.4}).set_index("overhead")
    assert overhead.loc["cold start to first step (cached data)", "target"] == ""
    assert overhead.loc["python -m jscexp --help", "met"] == "yes"


def test_a_training_without_a_validated_epoch_has_no_best_score_and_no_made_up_result(tmp_path):
    """best_val_acc and best_epoch are None until an epoch is validated (not -inf, -1), and
    such a training is a failure with its reason, never a test of a model nobody chose."""
    from jscexp import app
    from jscexp.errors import UserError
    from jscexp.train.loop import FitResult

    empty = FitResult()
    assert empty.best_val_acc is None and empty.best_epoch is None
    with pytest.raises(UserError, match="no epoch was trained and validated"):
        app._record_fit(None, None, None, None, tmp_path, empty)
