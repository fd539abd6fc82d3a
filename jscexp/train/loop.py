"""The training loop: Lightning Fabric places model and data, the steps are ours.

A tiny JSC model's forward and backward cost less than the Lightning Trainer's hooks and
per-step logging around them (``make bench`` measures both), so everything a run needs
besides the step itself — metrics, best weights, early stopping, pruning, MLflow — happens
once per epoch. Nothing here reads a config: ``jscexp.train.fit`` builds the pieces.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch.nn import functional as F
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

NUM_CLASSES = 5
MARKS_ENV = "JSCEXP_STEP_MARKS"  # file that gets "first_step <t>" / "last_step <t>" lines (make bench)

EpochHook = Callable[[int, dict[str, float]], None]


class Tally:
    """Accuracy and mean loss over an epoch, computed once at its end by torchmetrics.

    A step only keeps its predicted labels and its loss (still on the device): updating
    torchmetrics every step costs more than a tiny model's whole step.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.acc = MulticlassAccuracy(NUM_CLASSES, average="micro").to(device)
        self.loss = MeanMetric().to(device)
        self._preds, self._targets, self._losses, self._sizes = [], [], [], []

    def update(self, logits: torch.Tensor, y: torch.Tensor, loss: torch.Tensor) -> None:
        self._preds.append(logits.detach().argmax(dim=1))
        self._targets.append(y)
        self._losses.append(loss.detach())
        self._sizes.append(len(y))

    def compute(self, prefix: str) -> dict[str, float]:
        if self._preds:
            self.acc.update(torch.cat(self._preds), torch.cat(self._targets))
            sizes = torch.tensor(self._sizes, dtype=torch.float32, device=self.device)
            self.loss.update(torch.stack(self._losses), weight=sizes)
        values = {f"{prefix}acc": float(self.acc.compute()), f"{prefix}loss": float(self.loss.compute())}
        self.acc.reset()
        self.loss.reset()
        self._preds, self._targets, self._losses, self._sizes = [], [], [], []
        return values


class Progress:
    """A tqdm bar per epoch, redrawn every ``refresh`` steps (the only host syncs in an epoch)."""

    def __init__(self, enabled: bool, refresh: int):
        self.enabled, self.refresh = enabled, max(1, refresh)
        self.bar = None

    def start(self, epoch: int, total: int) -> None:
        if self.enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=f"Epoch {epoch}", dynamic_ncols=True, leave=True)

    def step(self, i: int, loss: torch.Tensor) -> None:
        if self.bar is not None and (i + 1) % self.refresh == 0:
            self.bar.update(self.refresh)
            self.bar.set_postfix(loss=f"{float(loss):.4f}", refresh=False)

    def end(self, metrics: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.update(self.bar.total - self.bar.n)
            self.bar.set_postfix({k: f"{v:.4f}" for k, v in metrics.items() if k.endswith(("acc", "loss"))})
            self.bar.close()
            self.bar = None


def train_epoch(fabric, model, optimizer, batches: Iterable, tally: Tally, progress: Progress | None = None,
                max_steps: int | None = None) -> int:
    """One pass of optimiser steps; returns the number of steps taken."""
    model.train()
    steps = 0
    for steps, (x, y) in enumerate(batches, start=1):
        optimizer.zero_grad(set_to_none=True)
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        fabric.backward(loss)
        optimizer.step()
        tally.update(logits, y, loss)
        if progress is not None:
            progress.step(steps - 1, loss)
        if steps == max_steps:
            break
    return steps


@torch.no_grad()  # not inference_mode: the tally is reused by training steps
def evaluate(model, batches: Iterable, tally: Tally, prefix: str = "") -> dict[str, float]:
    """Accuracy and cross-entropy of ``model`` over ``batches``."""
    model.eval()
    for x, y in batches:
        logits = model(x)
        tally.update(logits, y, F.cross_entropy(logits, y))
    return tally.compute(prefix)


@dataclass
class FitResult:
    history: list[dict[str, float]] = field(default_factory=list)
    best_val_acc: float = -math.inf
    best_epoch: int = -1
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    diverged_at: int | None = None
    stopped_early_at: int | None = None
    fit_seconds: float = 0.0

    @property
    def epoch_seconds(self) -> list[float]:
        return [h["epoch_seconds"] for h in self.history]


def fit(fabric, model, optimizer, scheduler, train, val, *, max_epochs: int, hooks: list[EpochHook],
        patience: int | None = None, progress: Progress | None = None) -> FitResult:
    """Trains ``max_epochs`` epochs, validating after each; keeps the best epoch's weights.

    ``hooks`` get each epoch's metrics (and may raise to stop, as pruning does). A NaN or inf
    training loss stops training: a diverged run is a result (the lab's lr=1.0 row), not a crash.
    """
    result, tally = FitResult(), Tally(fabric.device)
    start = time.perf_counter()
    mark("first_step", time.time())
    last_step = 0.0
    for epoch in range(max_epochs):
        epoch_start = time.perf_counter()
        if progress is not None:
            progress.start(epoch, len(train))
        train_epoch(fabric, model, optimizer, train, tally, progress)
        last_step = time.time()
        metrics = {**tally.compute("train_"), **evaluate(model, val, tally, "val_")}
        metrics |= {"epoch_seconds": time.perf_counter() - epoch_start, "lr": optimizer.param_groups[0]["lr"]}
        if progress is not None:
            progress.end(metrics)
        if scheduler is not None:
            scheduler.step()
        result.history.append({"epoch": epoch, **metrics})
        if metrics["val_acc"] > result.best_val_acc:
            result.best_val_acc, result.best_epoch = metrics["val_acc"], epoch
            result.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        for hook in hooks:
            hook(epoch, metrics)
        if not math.isfinite(metrics["train_loss"]):
            result.diverged_at = epoch
            break
        if patience is not None and epoch - result.best_epoch >= patience and epoch < max_epochs - 1:
            result.stopped_early_at = epoch
            break
    mark("last_step", last_step)
    result.fit_seconds = time.perf_counter() - start
    return result


def mark(what: str, when: float) -> None:
    """Appends a step mark for ``make bench`` when $JSCEXP_STEP_MARKS names a file."""
    if path := os.environ.get(MARKS_ENV):
        with open(path, "a") as f:
            f.write(f"{what} {when:.6f}\n")
