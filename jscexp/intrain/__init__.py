"""In-training searches: what a stacked group does with its slices between epochs.

Population-based training (``pbt``) and successive halving with refill (``halving``) are
each one module here, behind one protocol, the class ``Search`` (whose steps do nothing): ``loop.fit`` calls ``after_epoch``
once every slice has recorded the epoch; the job calls ``before_test`` for each trial that
trained to its end, ``ended`` once a trial has its outcome, and ``close`` when the group
ends (with the error that broke it off, if one did). Each module offers ``check(trial)``
(what it refuses before any run exists) and ``start(group)`` (its search, or None when the
group is not its kind). The engine methods a search uses belong to
``jscexp.train.loop.SliceEngine``.

A new in-training search is a new module here, named in ``_kinds``, with its config group.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jscexp import app
from jscexp.train.loop import EpochBook, FitResult, SliceEngine


class Search:
    """The protocol, each step doing nothing unless a search overrides it (a group without an
    in-training search runs this one)."""

    def after_epoch(self, epoch: int, book: EpochBook) -> None:
        pass

    def before_test(self, trial: Any, k: int, result: FitResult) -> None:
        """Trial ``trial`` of slice ``k`` trained to its end and is about to be tested."""

    def ended(self, trial: Any) -> None:
        """Trial ``trial`` has its outcome."""

    def close(self, err: BaseException | None) -> None:
        """The group ended (``err``: what broke it off)."""


class Slots:
    """Who trains in each slice of a group now: trial, run and epoch hooks (log, report)."""

    def __init__(self, trials: list, runs: list):
        self.trials, self.runs = list(trials), list(runs)
        self.hooks = [app.epoch_hooks(t.cfg, r) for t, r in zip(trials, runs)]
        self.trained = list(zip(trials, runs))  # every (trial, run) that trained here, refills too

    def hook(self, k: int, epoch: int, metrics: dict[str, float]) -> bool:
        """Logs slice ``k``'s epoch; a trial the search prunes ends PRUNED here, its run with it,
        at once: a later error or interrupt of the group cannot turn it into a failure."""
        pruned = any([each(epoch, metrics) for each in self.hooks[k]])  # a list: every hook runs
        if pruned:
            self.trials[k].outcome = app.end_pruned(self.runs[k], epoch)
            self.runs[k].close()
        return pruned

    def keep(self, k: int, snapshot) -> None:
        self.trials[k].keep(snapshot)

    def replace(self, k: int, trial, run) -> None:
        self.trials[k], self.runs[k], self.hooks[k] = trial, run, app.epoch_hooks(trial.cfg, run)
        self.trained.append((trial, run))


@dataclass
class Group:
    """What a search may use of the group job it runs in: its trials, their slices, the engine,
    and the job's way to take in a trial the search asked for (``join(values, number)``: the
    trial of those knob overrides, prepared, its ``error`` set if its config is bad) and to
    open a trial's run (``open_run(trial, tags)``)."""

    trials: list
    slots: Slots
    engine: SliceEngine
    join: Callable[[list[str], int], Any]
    open_run: Callable[[Any, dict], Any]


def _kinds() -> list:
    from jscexp.intrain import halving, pbt

    return [pbt, halving]  # the first that takes a group runs it


def start(group: Group) -> Search:
    """The group's in-training search (one that does nothing when none applies)."""
    for kind in _kinds():
        search = kind.start(group)
        if search is not None:
            return search
    return Search()


def check(trial) -> None:
    """What each in-training search refuses of ``trial``'s config, before any run exists."""
    for kind in _kinds():
        kind.check(trial)
