"""The training loop: Lightning Fabric places model and data, the steps are ours.

A tiny JSC model's forward and backward cost less than the Lightning Trainer's hooks and
per-step logging around them (``make bench`` measures both), so everything a run needs
besides the step itself — metrics, best weights, early stopping, pruning, MLflow — happens
once per epoch. Nothing here reads a config: ``jscexp.train.fit`` builds the pieces.
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch.nn import functional as F
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.functional.classification import multiclass_recall

from jscexp.data.schema import class_key
from jscexp.quant.cost import WidthPenalty
from jscexp.timeline import mark


class Tally:
    """Per-trial accuracy and mean loss over an epoch, computed once at its end by torchmetrics.

    A step only keeps its predicted labels ([K, batch]) and its per-trial losses ([K]), still on
    the device: updating torchmetrics every step costs more than a tiny model's whole step.
    A single run is a tally of one trial.
    """

    def __init__(self, k: int, device: torch.device, class_names: tuple[str, ...] = ()):
        self.k, self.device = k, device
        self.class_names = class_names  # with names, also each class's accuracy (its recall): ``acc_<name>``
        # a NaN batch loss makes the mean NaN (divergence) instead of being dropped; "disable" would drop the weights
        self.loss = MeanMetric(nan_strategy=math.nan).to(device)
        self._reset()

    def _reset(self) -> None:
        self._preds: list[torch.Tensor] = []
        self._targets: list[torch.Tensor] = []
        self._losses: list[torch.Tensor] = []
        self._sizes: list[int] = []

    def update(self, logits: torch.Tensor, y: torch.Tensor, losses: torch.Tensor) -> None:
        """``logits`` [K, batch, classes], ``losses`` [K]."""
        self.classes = logits.shape[-1]  # the model's outputs: the dataset's classes
        self._preds.append(logits.detach().argmax(dim=-1))
        self._targets.append(y)
        self._losses.append(losses.detach())
        self._sizes.append(len(y))

    def compute(self, prefix: str) -> list[dict[str, float]]:
        """One ``{prefix}acc``, ``{prefix}loss`` dict per trial; starts the next epoch afresh."""
        if not self._preds:
            raise ValueError("an epoch without batches: nothing to measure")
        preds, targets = torch.cat(self._preds, dim=1), torch.cat(self._targets)
        losses = torch.stack(self._losses, dim=1)
        sizes = torch.tensor(self._sizes, dtype=torch.float32, device=self.device)
        out = []
        acc = MulticlassAccuracy(self.classes, average="micro").to(self.device)
        for k in range(self.k):
            acc.update(preds[k], targets)
            self.loss.update(losses[k], weight=sizes.clone())  # torchmetrics writes into the weights of NaN values
            out.append({f"{prefix}acc": float(acc.compute()), f"{prefix}loss": float(self.loss.compute()),
                        **self._per_class(preds[k], targets, prefix)})
            acc.reset()
            self.loss.reset()
        self._reset()
        return out


    def _per_class(self, preds: torch.Tensor, targets: torch.Tensor, prefix: str) -> dict[str, float]:
        if not self.class_names:
            return {}

        recall = multiclass_recall(preds, targets, len(self.class_names), average=None)
        return {f"{prefix}acc_{class_key(n)}": float(r) for n, r in zip(self.class_names, recall)}


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
                max_steps: int | None = None, penalty: Callable[[], torch.Tensor] | None = None) -> int:
    """One pass of optimiser steps; returns the number of steps taken. ``penalty()``, a term
    added to the loss that is minimised (learned widths' β·EBOPs), stays out of the reported loss."""
    model.train()
    steps = 0
    for steps, (x, y) in enumerate(batches, start=1):
        optimizer.zero_grad(set_to_none=True)
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        fabric.backward(loss if penalty is None else loss + penalty())
        optimizer.step()
        tally.update(logits.unsqueeze(0), y, loss.unsqueeze(0))
        if progress is not None:
            progress.step(steps - 1, loss)
        if steps == max_steps:
            break
    return steps


@torch.no_grad()  # not inference_mode: the tally is reused by training steps
def measure(model, batches: Iterable, tally: Tally) -> None:
    """The one evaluation loop: adds a model's predictions and cross-entropy over ``batches``
    to ``tally``, for one model (logits [B, C]) or K stacked trials (logits [K, B, C])."""
    model.train(False)
    for x, y in batches:
        logits = model(x)
        if logits.dim() == 2:
            tally.update(logits.unsqueeze(0), y, F.cross_entropy(logits, y).unsqueeze(0))
        else:
            tally.update(logits, y, trial_losses(logits, y))


def trial_losses(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each stacked trial's mean cross-entropy over the batch: [K]."""
    k, b, c = logits.shape
    return F.cross_entropy(logits.reshape(k * b, c), y.repeat(k), reduction="none").view(k, b).mean(dim=1)


def evaluate(model, batches: Iterable, tally: Tally, prefix: str = "") -> dict[str, float]:
    """Accuracy and cross-entropy of one ``model`` over ``batches``."""
    measure(model, batches, tally)
    return tally.compute(prefix)[0]


class Engine(Protocol):
    """How K trials take their steps; ``fit`` does the epoch bookkeeping for any of them."""

    k: int

    @property
    def device(self) -> torch.device: ...

    def start_epoch(self, epoch: int) -> None: ...

    def train_epoch(self, batches: Iterable, tally: Tally, active: torch.Tensor, progress: Progress | None) -> None: ...

    def evaluate(self, batches: Iterable, tally: Tally) -> None: ...

    def lrs(self) -> list[float]: ...

    def end_epoch(self) -> None: ...

    def widths_cost(self) -> list[dict[str, float]]:
        """Per trial, ``epoch_ebops`` (its EBOPs now) where it learns its widths, else nothing."""
        ...

    def state_dict(self, trial: int) -> dict[str, torch.Tensor]: ...

    def snapshot(self, trial: int) -> dict:
        """Trial ``trial``'s resumable state in its lone run's layout, whatever the engine:
        ``model`` (state_dict), ``optimizer`` (``steps``, torch's per-parameter buffers by
        parameter name) and ``rng`` (where its dropout draws from)."""
        ...

    def restore(self, states: list[dict], epochs_done: int) -> None:
        """Puts every trial back to its ``snapshot`` after ``epochs_done`` epochs."""
        ...


class SliceEngine(Engine, Protocol):
    """An engine whose trials are slices of one model, which an in-training search
    (``jscexp.intrain``: PBT, refilling pruned slices) may reshape between epochs."""

    def copy_trial(self, dst: int, src: int) -> None:
        """Slice ``src``'s whole state (weights, optimizer buffers, schedule, dropout RNG) into ``dst``."""
        ...

    def set_knobs(self, trial: int, knobs: dict[str, float], quantised: torch.nn.Module | None = None) -> None:
        """Slice ``trial`` goes on with new knobs (learning rate, dropout, optimizer options; widths
        through ``quantised``, a QAT model built with them) from its next step."""
        ...

    def restart_trial(self, trial: int, model: torch.nn.Module, generator: torch.Generator | None, hparams: dict,
                      scheduler, beta: float = 0.0) -> None:
        """Slice ``trial`` trains a new trial from the next epoch on (``beta``: its learned widths' penalty)."""
        ...


@dataclass
class PlainEngine:
    """One model stepped by torch's own optimizer and scheduler, placed by Lightning Fabric."""

    fabric: object
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object | None
    k: int = 1
    penalty: WidthPenalty | None = None  # learned widths: the β·EBOPs term added to the training loss

    @property
    def device(self) -> torch.device:
        return self.fabric.device  # type: ignore[attr-defined]

    def start_epoch(self, epoch: int) -> None:
        if self.penalty is not None:
            self.penalty.start_epoch(epoch)

    def train_epoch(self, batches, tally, active, progress) -> None:
        penalty = None if self.penalty is None else functools.partial(self.penalty.term, self.model)
        train_epoch(self.fabric, self.model, self.optimizer, batches, tally, progress, penalty=penalty)

    def widths_cost(self) -> list[dict[str, float]]:
        return [{} if self.penalty is None else self.penalty.cost(self.model)]

    def evaluate(self, batches, tally) -> None:
        measure(self.model, batches, tally)

    def lrs(self) -> list[float]:
        return [self.optimizer.param_groups[0]["lr"]]

    def end_epoch(self) -> None:
        if self.scheduler is not None:
            self.scheduler.step()  # type: ignore[attr-defined]

    def state_dict(self, trial: int) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def _names(self) -> list[str]:
        return [name for name, _ in self.model.module.named_parameters()]  # type: ignore[union-attr]

    def snapshot(self, trial: int) -> dict:
        saved = self.optimizer.state_dict()["state"]
        names = self._names()
        steps = next((int(s["step"]) for s in saved.values() if "step" in s), 0)
        return {
            "model": self.state_dict(trial),
            "optimizer": {"steps": steps, "state": {names[i]: {k: v.clone() for k, v in s.items()
                                                                if k != "step" and v is not None}
                                                    for i, s in saved.items()}},
            "rng": {"cpu": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None},
        }

    def restore(self, states: list[dict], epochs_done: int) -> None:
        (state,) = states
        self.model.load_state_dict(state["model"])
        saved, steps = state["optimizer"]["state"], state["optimizer"]["steps"]
        adam = isinstance(self.optimizer.optimizer, torch.optim.Adam)  # type: ignore[attr-defined]
        target = self.optimizer.state_dict()
        # a step tensor each: Adam counts in place, per parameter
        target["state"] = {i: {**saved[name], **({"step": torch.tensor(float(steps))} if adam else {})}
                           for i, name in enumerate(self._names()) if name in saved}
        self.optimizer.load_state_dict(target)
        _fast_forward(self.scheduler, epochs_done)
        if state["rng"].get("cpu") is not None:  # None: a stacked trial without dropout draws nothing
            torch.set_rng_state(state["rng"]["cpu"])
        if state["rng"].get("cuda") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])


def _fast_forward(scheduler, epochs: int) -> None:
    """A per-epoch scheduler stepped as often as the epochs done: its learning rates are then
    the uninterrupted run's to the bit (the same recursive updates in the same order)."""
    with warnings.catch_warnings():  # "scheduler stepped before optimizer": on purpose here
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(epochs if scheduler is not None else 0):
            scheduler.step()


@dataclass
class FitResult:
    """One trial's training: its per-epoch history, best epoch and why it stopped early, if it did."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_val_acc: float | None = None  # None until an epoch is validated: never a made-up score
    best_epoch: int | None = None
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    diverged_at: int | None = None
    stopped_early_at: int | None = None
    pruned_at: int | None = None
    fit_seconds: float = 0.0

    @property
    def epoch_seconds(self) -> list[float]:
        return [h["epoch_seconds"] for h in self.history]

    @property
    def stopped(self) -> bool:
        return self.diverged_at is not None or self.stopped_early_at is not None or self.pruned_at is not None


@dataclass
class Snapshot:
    """A trial's state after a complete ``epoch``, all it needs to go on as if never stopped:
    its result so far, its engine state (``Engine.snapshot``) and the data order's RNG."""

    epoch: int
    result: FitResult
    engine: dict
    data_rng: torch.Tensor
    run_id: str | None = None  # the MLflow run that recorded those epochs (the job sets it)


TrialHook = Callable[[int, int, dict[str, float]], bool]  # (trial, epoch, metrics) -> stop this trial


class EpochBook:
    """Every trial's history, best epoch and state, and why it stops: pruned by its hook, a
    non-finite training loss (a diverged run is a result: the lab's lr=1.0 row), or no better
    validation accuracy for ``patience`` epochs. A stopped trial leaves ``active``.

    A slice can take a new trial (``restart``): its epochs count from the group epoch it
    started in (``offsets``), its training time from then (``started``)."""

    def __init__(self, k: int, device: torch.device, *, max_epochs: list[int], hook: TrialHook | None = None,
                 patience: int | None = None):
        self.results = [FitResult() for _ in range(k)]
        self.active = torch.ones(k, dtype=torch.bool, device=device)
        self._flags = [True] * k  # the mask's host copy: no device sync per trial
        self.max_epochs, self.hook, self.patience = list(max_epochs), hook, patience
        self.offsets = [0] * k
        self.started = [time.perf_counter()] * k

    @property
    def end(self) -> int:
        """The group epoch after every trial's last."""
        return max(o + m for o, m in zip(self.offsets, self.max_epochs))

    def restart(self, k: int, next_epoch: int, max_epochs: int) -> None:
        """Slice ``k`` trains a new trial from group epoch ``next_epoch``, for ``max_epochs``."""
        self.results[k], self.offsets[k], self.max_epochs[k] = FitResult(), next_epoch, max_epochs
        self.started[k] = time.perf_counter()
        self._flags[k] = True
        self.active[k] = True

    def revive(self, k: int) -> None:
        """Slice ``k``, stopped by a non-finite loss, trains on (population-based training put
        another member's state into it)."""
        self.results[k].diverged_at = None
        self._flags[k] = True
        self.active[k] = True

    def stop(self, k: int, epoch: int) -> None:
        """Trial ``k`` stops after its own ``epoch`` (an in-training search's decision): it keeps
        its best epoch so far, is tested with it and is tagged stopped early."""
        if self._flags[k]:
            self.results[k].stopped_early_at = epoch
            self._flags[k] = False
            self.active[k] = False

    def any_active(self) -> bool:
        return any(self._flags)

    @property
    def flags(self) -> list[bool]:
        """Which trials are still training (a copy)."""
        return list(self._flags)

    def resume(self, results: list[FitResult]) -> None:
        """Takes the trials' results so far; their epochs go through the hook again (into a
        new run, a new Optuna trial), and a trial that had stopped stays stopped."""
        for k, result in enumerate(results):
            self.results[k] = result
            for h in result.history:
                stop = self.hook is not None and self.hook(k, int(h["epoch"]), {m: v for m, v in h.items() if m != "epoch"})
                if stop and not result.stopped:
                    result.pruned_at = int(h["epoch"])
            if result.stopped or len(result.history) >= self.max_epochs[k]:
                self._flags[k] = False
                self.active[k] = False

    def record(self, group_epoch: int, metrics: list[dict[str, float]], state_dict: Callable[[int], dict]) -> None:
        for k, (result, m) in enumerate(zip(self.results, metrics)):
            if not self._flags[k]:
                continue
            epoch = group_epoch - self.offsets[k]  # the trial's own
            result.history.append({"epoch": epoch, **m})
            if result.best_val_acc is None or m["val_acc"] > result.best_val_acc:
                result.best_val_acc, result.best_epoch = m["val_acc"], epoch
                result.best_state = state_dict(k)
            if self.hook is not None and self.hook(k, epoch, m):
                result.pruned_at = epoch
            elif not math.isfinite(m["train_loss"]):
                result.diverged_at = epoch
            elif self._patience_ran_out(result, epoch, self.max_epochs[k]):
                result.stopped_early_at = epoch
            elif epoch < self.max_epochs[k] - 1:
                continue
            self._flags[k] = False  # stopped, or its last epoch done: its slice stays as it is
            self.active[k] = False

    def _patience_ran_out(self, result: FitResult, epoch: int, max_epochs: int) -> bool:
        return (self.patience is not None and result.best_epoch is not None and epoch - result.best_epoch >= self.patience
                and epoch < max_epochs - 1)


def fit(engine: Engine, train, val, *, max_epochs: list[int], hook: TrialHook | None = None,
        patience: int | None = None, progress: Progress | None = None, resume: list[Snapshot] | None = None,
        keep: Callable[[int, Snapshot], None] | None = None,
        after_epoch: Callable[[int, EpochBook], None] | None = None) -> list[FitResult]:
    """Trains trial k of ``engine`` for ``max_epochs[k]`` epochs, validating after each (a
    trial whose epochs are done stops updating while the others go on); one result per
    trial, each with its best epoch's weights in ``best_state``.

    ``hook(trial, epoch, metrics)`` sees each epoch's metrics (logging, pruning) and returns
    whether that trial stops. ``keep(trial, snapshot)`` gets each trial's resumable state
    after each of its epochs; ``resume`` (one snapshot per trial, all after the same epoch)
    goes on from there. A trial's ``fit_seconds`` is the group's until it stopped: they
    trained together. ``after_epoch(epoch, book)`` runs once every trial has recorded the
    epoch (population-based training's exploit and explore).
    """
    book, tally = EpochBook(engine.k, engine.device, max_epochs=max_epochs, hook=hook, patience=patience), \
        Tally(engine.k, engine.device)
    epoch = _resume(engine, train, book, resume) if resume else 0
    book.started = [time.perf_counter() - r.fit_seconds for r in book.results]  # a resumed trial's time goes on
    mark("first_step", time.time())
    last_step = 0.0
    while epoch < book.end and book.any_active():
        training = book.flags
        last_step = _epoch(engine, train, val, tally, book, epoch, progress)
        for k in (k for k, result in enumerate(book.results) if training[k]):
            book.results[k].fit_seconds = time.perf_counter() - book.started[k]
            if keep is not None:
                keep(k, Snapshot(epoch, book.results[k], engine.snapshot(k), train.rng_state))
        if after_epoch is not None:
            after_epoch(epoch, book)
        epoch += 1
    mark("last_step", last_step)
    return book.results


def _resume(engine: Engine, train, book: EpochBook, snapshots: list[Snapshot]) -> int:
    """Puts the trials back to their snapshots; returns the first epoch still to train."""
    (epoch,) = {s.epoch for s in snapshots}  # a group resumes from one epoch
    engine.restore([s.engine for s in snapshots], epoch + 1)
    train.rng_state = snapshots[0].data_rng  # a shared batch order: one data_seed per group
    book.resume([s.result for s in snapshots])
    return epoch + 1


def _epoch(engine: Engine, train, val, tally: Tally, book: EpochBook, epoch: int, progress: Progress | None) -> float:
    """One epoch of every active trial: steps, validation, the book; returns the last step's time."""
    epoch_start = time.perf_counter()
    engine.start_epoch(epoch)
    if progress is not None:
        progress.start(epoch, len(train))
    engine.train_epoch(train, tally, book.active, progress)
    last_step = time.time()
    train_metrics = tally.compute("train_")
    engine.evaluate(val, tally)
    seconds, lrs = time.perf_counter() - epoch_start, engine.lrs()
    metrics = [{**t, **v, **c, "epoch_seconds": seconds, "lr": lr}
               for t, v, lr, c in zip(train_metrics, tally.compute("val_"), lrs, engine.widths_cost())]
    if progress is not None:
        progress.end(metrics[0])
    engine.end_epoch()
    book.record(epoch, metrics, engine.state_dict)
    return last_step
