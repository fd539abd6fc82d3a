"""Epoch hooks of a run: one MLflow write per epoch, and the Optuna trial's pruning check."""

from __future__ import annotations

from jscexp.errors import Pruned


def log_epoch(run):
    """Writes each epoch's metrics to MLflow in one batch."""

    def hook(epoch: int, metrics: dict[str, float]) -> None:
        run.log_metrics(metrics, step=epoch)

    return hook


def report_to_trial(trial):
    """Reports each epoch's validation accuracy to an Optuna trial and stops it when pruned."""

    def hook(epoch: int, metrics: dict[str, float]) -> None:
        trial.report(metrics["val_acc"], epoch)
        if trial.should_prune():
            raise Pruned(epoch)

    return hook
