"""In-training searches: what a stacked group does with its slices between epochs.

The config chooses one (``intrain=auto|pbt|halving|none``, or a user's class as ``_target_``):
a ``Kind`` says what it refuses of a trial before any run exists (``check``), starts its
``Search`` on a group (``start``; None when the group is not its kind) and says whether a trial
under it keeps resumable state (``resumes``). A ``Search`` acts between epochs: ``loop.fit``
calls ``after_epoch`` once every slice has recorded the epoch (it may stop a slice:
``EpochBook.stop``); the job calls ``before_test`` for each trial that trained to its end,
``ended`` once a trial has its outcome, and ``close`` when the group ends (with the error
that broke it off, if one did). The engine methods a search uses belong to
``jscexp.train.loop.SliceEngine``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the sweeper asks a Kind for its checks without loading torch
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
        from jscexp import app  # torch, Lightning and MLflow: a group job's, not the sweeper's

        self.trials, self.runs = list(trials), list(runs)
        self.hooks = [app.epoch_hooks(t.cfg, r) for t, r in zip(trials, runs)]
        self.trained = list(zip(trials, runs))  # every (trial, run) that trained here, refills too

    def hook(self, k: int, epoch: int, metrics: dict[str, float]) -> bool:
        """Logs slice ``k``'s epoch; a trial the search prunes ends PRUNED here, its run with it,
        at once: a later error or interrupt of the group cannot turn it into a failure."""
        from jscexp import app

        pruned = any([each(epoch, metrics) for each in self.hooks[k]])  # a list: every hook runs
        if pruned:
            self.trials[k].outcome = app.end_pruned(self.runs[k], epoch)
            self.runs[k].close()
        return pruned

    def keep(self, k: int, snapshot) -> None:
        self.trials[k].keep(snapshot)

    def replace(self, k: int, trial, run) -> None:
        from jscexp import app

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


class Kind:
    """The contract of an in-training search as the config names it (``conf/intrain``); this
    one is ``intrain=none``: no search, and ``pbt.space`` refused (it would change nothing)."""

    def check_config(self, cfg) -> None:
        """What this search refuses of a config, before the sweep's first trial: one line."""
        from jscexp.errors import UserError

        if cfg.pbt.space:
            raise UserError("pbt.space is set but intrain=none trains no population: use intrain=pbt (or auto), "
                            "or drop pbt.space")

    def check(self, trial) -> None:
        """What this search refuses of ``trial`` (its config, model, data), before its run exists."""
        self.check_config(trial.cfg)

    def start(self, group: Group) -> Search | None:
        return None

    def resumes(self, cfg) -> bool:
        """Whether a trial under this search saves its training state and goes on from it."""
        return True


class Auto(Kind):
    """``intrain=auto`` (the default): population-based training where ``pbt.space`` is set, else
    refilling pruned slices where an Optuna search refills, else none."""

    def _chosen(self, cfg) -> Kind:
        from jscexp.intrain import halving

        if cfg.pbt.space:
            from jscexp.intrain import pbt  # a population's checks ask the model: torch

            return pbt.Pbt()
        return halving.Halving() if halving.refills(cfg) else NoSearch()

    def check_config(self, cfg) -> None:
        self._chosen(cfg).check_config(cfg)

    def check(self, trial) -> None:
        self._chosen(trial.cfg).check(trial)

    def start(self, group: Group) -> Search | None:
        return self._chosen(group.trials[0].cfg).start(group)

    def resumes(self, cfg) -> bool:
        return self._chosen(cfg).resumes(cfg)


NoSearch = Kind


def kind_of(cfg) -> Kind:
    """The in-training search ``cfg.intrain`` names, built with its settings; one line if wrong."""
    from jscexp.components import build

    node = cfg.get("intrain") or {}
    return build(node, "intrain", Kind) if node.get("_target_") else Auto()


def start(group: Group) -> Search:
    """The group's in-training search (one that does nothing when none applies)."""
    return kind_of(group.trials[0].cfg).start(group) or Search()


def check(trial) -> None:
    """What the chosen in-training search refuses of ``trial``'s config, before any run exists."""
    kind_of(trial.cfg).check(trial)
