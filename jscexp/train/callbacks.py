"""Lightning callbacks: epoch timing and one MLflow write per epoch."""

from __future__ import annotations

import math
import time

import pytorch_lightning as pl

from jscexp.errors import Pruned


class EpochLogger(pl.Callback):
    """Times each training epoch and writes that epoch's metrics to MLflow in one batch.

    Lightning runs validation inside the training epoch, so at ``on_train_epoch_end``
    both the train and the val numbers of the epoch are known. Lightning calls this hook
    on callbacks before the module, so the train metrics are collected from here.
    """

    def __init__(self, run):
        self.run = run
        self.epoch_seconds: list[float] = []
        self.history: list[dict[str, float]] = []
        self.diverged_at: int | None = None
        self._start = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        seconds = time.perf_counter() - self._start
        pl_module.collect("train")
        self.epoch_seconds.append(seconds)
        metrics = {
            **pl_module.epoch_metrics,
            "epoch_seconds": seconds,
            "lr": trainer.optimizers[0].param_groups[0]["lr"],
        }
        self.history.append({"epoch": trainer.current_epoch, **metrics})
        self.run.log_metrics(metrics, step=trainer.current_epoch)
        # A NaN/inf loss is a result (the lab's lr=1.0 row), not a crash: stop here.
        if not math.isfinite(metrics["train_loss"]):
            self.diverged_at = trainer.current_epoch
            trainer.should_stop = True


class TrialReporter(pl.Callback):
    """Reports each epoch's validation accuracy to an Optuna trial and stops it when pruned."""

    def __init__(self, trial):
        self.trial = trial

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # Lightning calls callbacks before the module's hooks: at validation end the module
        # has not computed val_acc yet; at train-epoch end (after validation) it has.
        self.trial.report(pl_module.epoch_metrics["val_acc"], trainer.current_epoch)
        if self.trial.should_prune():
            raise Pruned(trainer.current_epoch)
