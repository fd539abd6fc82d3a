"""Successive halving inside a stacked group of an Optuna search (ASHA without a batch barrier).

A search's pruner (``successive_halving``, ``hyperband``, ``median``…) stops a stacked trial
after an epoch; its slice used to sit masked until the whole group ended. With
``hydra.sweeper.refill`` (on by default) the group asks the study for a new trial while the
search has trials left, and trains it in that slice from the next epoch: freshly initialised
(its own seed), its optimizer state empty, its schedule from its own epoch 0, its epochs
counted from there; it reports to its own Optuna trial and is recorded in its own MLflow
run (tag ``jscexp.halving.replaced``: the run whose slice it took). The trial it replaced
ends PRUNED at once. A refilled trial sees the group's later batch orders, so it is not
bit-identical to the same trial run alone (the group's original trials still are).

Only searches whose every knob can differ inside a stacked group refill (a new batch size
could not join the group); a refilled trial keeps no resumable state (an interrupted one is
retried from its first epoch).
"""

from __future__ import annotations

from collections.abc import Callable

from jscexp import app
from jscexp.sweep.overrides import is_vector_key


class Slots:
    """Who trains in each slice of a group now: trial, run and epoch hooks (log, report)."""

    def __init__(self, trials: list, runs: list):
        self.trials, self.runs = list(trials), list(runs)
        self.hooks = [app.epoch_hooks(t.cfg, r) for t, r in zip(trials, runs)]
        self.trained = list(zip(trials, runs))  # every (trial, run) that trained here, refills too

    def hook(self, k: int, epoch: int, metrics: dict[str, float]) -> bool:
        """Logs slice ``k``'s epoch; a trial the search prunes ends PRUNED here, at once, so that
        a later error of the group cannot turn it into a failure."""
        pruned = any([each(epoch, metrics) for each in self.hooks[k]])  # a list: every hook runs
        if pruned:
            self.trials[k].outcome = app.end_pruned(self.runs[k], epoch)
        return pruned

    def keep(self, k: int, snapshot) -> None:
        self.trials[k].keep(snapshot)

    def replace(self, k: int, trial, run) -> None:
        self.trials[k], self.runs[k], self.hooks[k] = trial, run, app.epoch_hooks(trial.cfg, run)
        self.trained.append((trial, run))


class Refill:
    """``loop.fit``'s ``after_epoch``: each slice whose trial was pruned in this epoch takes a
    new trial, while the study gives one. ``start(asked, k)`` builds, prepares and opens the
    new trial's run in slice ``k`` (None when its config fails: told FAIL already)."""

    def __init__(self, asker, slots: Slots, engine, start: Callable):
        self.asker, self.slots, self.engine, self.start = asker, slots, engine, start

    def __call__(self, epoch: int, book) -> None:
        from jscexp.config import plain
        from jscexp.group import dropout_generator

        for k, result in enumerate(book.results):
            if result.pruned_at is None or result.pruned_at != epoch - book.offsets[k]:
                continue  # training, done, or freed earlier
            asked = self.asker.ask()
            if asked is None:
                return  # the search has its trials: the slice stays free
            self.finish(k)
            t = self.start(asked, k)
            if t is None:
                continue
            generator = dropout_generator(self.engine.device, int(t.cfg.seed), t.rng["cpu"])
            self.engine.restart_trial(k, t.net, generator, plain(t.cfg.optimizer), t.cfg.scheduler)
            book.restart(k, epoch + 1, int(t.cfg.max_epochs))
            print(f"trial {asked.number} takes a pruned trial's slice from epoch {epoch + 1}")

    def finish(self, k: int) -> None:
        """The slice's pruned trial (PRUNED since its hook): its run closed, told (when this job asked it)."""
        self.slots.runs[k].close()
        self.tell(self.slots.trials[k])

    def tell(self, t) -> None:
        """A trial this job asked for: its outcome to the study (FAILED if it lacks an objective)."""
        number = int(t.cfg.optuna.trial)
        if number in self.asker.open:
            t.outcome = self.asker.tell(number, t.outcome)


def refills(cfg) -> bool:
    """Whether a group of this search refills its freed slices: a refill spec from the sweeper
    and only knobs that can differ inside one stacked model."""
    from jscexp.search.refill import RefillSpec

    spec = cfg.get("optuna", {}).get("refill")
    return bool(spec) and all(is_vector_key(k) for k in RefillSpec.load(spec).knobs)
