"""Epoch hooks of a run: one MLflow write per epoch, and the Optuna trial's pruning check.

Each returns whether the run stops after this epoch.
"""

from __future__ import annotations


def log_epoch(run):
    """Writes each epoch's metrics to MLflow in one batch."""

    def hook(epoch: int, metrics: dict[str, float]) -> bool:
        run.log_metrics(metrics, step=epoch)
        return False

    return hook


def report_to_trial(trial):
    """Reports each epoch's validation accuracy to an Optuna trial; stops the run when pruned."""

    def hook(epoch: int, metrics: dict[str, float]) -> bool:
        trial.report(metrics["val_acc"], epoch)
        return bool(trial.should_prune())

    return hook
