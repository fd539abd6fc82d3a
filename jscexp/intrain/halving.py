"""Successive halving inside a stacked group of an Optuna search (ASHA without a batch barrier).

A search's pruner (``successive_halving``, ``hyperband``, ``median``…) stops a stacked trial
after an epoch; its slice used to sit masked until the whole group ended. With
``hydra.sweeper.refill`` (on by default) the group asks the study for a new trial while the
search has trials left, and trains it in that slice from the next epoch: freshly initialised
(its own seed), its optimizer state empty, its schedule from its own epoch 0, its epochs
counted from there; it reports to its own Optuna trial and is recorded in its own MLflow
run (tag ``jscexp.halving.replaced``: the run whose slice it took). The trial it replaced
ended PRUNED when its hook pruned it. A refilled trial sees the group's later batch orders,
so it is not bit-identical to the same trial run alone (the group's original trials still are).

Only searches whose every knob can differ inside a stacked group refill (a new batch size
could not join the group); a refilled trial keeps no resumable state (an interrupted one is
retried from its first epoch). The job returns the outcomes of the trials it asked for after
its own: the sweep counts them like any other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from jscexp.intrain import Group, Kind, Search
from jscexp.sweep.overrides import is_vector_key

if TYPE_CHECKING:  # Auto asks refills() in the sweeper, without torch
    from jscexp.train.loop import EpochBook


class Halving(Kind):
    """``intrain=halving``: an Optuna search's groups refill the slices its pruner frees."""

    def check_config(self, cfg) -> None:
        """A sweep's config names its sweeper; a job's carries its Optuna trial (``optuna``)."""
        from omegaconf import OmegaConf

        from jscexp.errors import UserError
        from jscexp.sweep.checks import OPTUNA_SWEEPER

        sweeper = OmegaConf.select(cfg, "hydra.sweeper._target_", default=None)
        if (sweeper is not None and sweeper != OPTUNA_SWEEPER) or (sweeper is None and not cfg.get("optuna")):
            raise UserError("intrain=halving refills the slices an Optuna search's pruner frees: run it with "
                            "sweeper=optuna and a pruner (docs/optuna.md)")

    def start(self, group: Group) -> Refill | None:
        return start(group)


def refills(cfg) -> bool:
    """Whether a group of this search refills its freed slices: a refill spec from the sweeper
    and only knobs that can differ inside one stacked model."""
    from jscexp.search.refill import RefillSpec

    spec = cfg.get("optuna", {}).get("refill")
    if not spec:
        return False
    knobs = RefillSpec.load(spec).knobs
    if not all(is_vector_key(k) for k in knobs):
        return False
    quantisation = [k.removeprefix("quantisation.") for k in knobs if k.startswith("quantisation.")]
    if not quantisation:
        return True
    from jscexp.quant.entries import varies_in_stack  # its quantiser classes say: torch, only here

    return all(varies_in_stack(cfg.quantisation, k) for k in quantisation)


def start(group: Group) -> Refill | None:
    """In a search whose groups refill, the search that fills the slices its pruner frees."""
    if group.engine.k == 1 or not refills(group.trials[0].cfg):
        return None
    from jscexp.search.refill import Asker, RefillSpec

    return Refill(Asker(RefillSpec.load(group.trials[0].cfg.optuna.refill)), group)


class Refill(Search):
    """After each epoch, each slice whose trial was pruned in it takes a new trial, while the
    study gives one; the job then owns that trial (its heartbeat, its result to the study)."""

    def __init__(self, asker, group: Group):
        self.asker, self.group = asker, group

    def after_epoch(self, epoch: int, book: EpochBook) -> None:
        from jscexp.config import plain
        from jscexp.group import dropout_generator
        from jscexp.quant.learned import beta_of

        slots, engine = self.group.slots, self.group.engine
        for k, result in enumerate(book.results):
            if result.pruned_at is None or result.pruned_at != epoch - book.offsets[k]:
                continue  # training, done, or freed earlier
            asked = self.asker.ask()
            if asked is None:
                return  # the search has its trials: the slice stays free
            self.ended(slots.trials[k])  # it ended PRUNED, its run with it, when its hook pruned it
            t = self._take(asked, k)
            if t is None:
                continue
            generator = dropout_generator(engine.device, int(t.cfg.seed), t.rng["cpu"])
            engine.restart_trial(k, t.net, generator, plain(t.cfg.optimizer), t.cfg.scheduler,
                                 beta_of(t.cfg.quantisation))
            book.restart(k, epoch + 1, int(t.cfg.max_epochs))
            print(f"trial {asked.number} takes a pruned trial's slice from epoch {epoch + 1}")

    def _take(self, asked, k: int):
        """The asked trial, prepared and recorded in its own run in slice ``k``; None when its
        config is bad (told FAIL, with its one-line reason)."""
        import sys

        from jscexp.search.study import param_overrides

        t = self.group.join(param_overrides(asked), asked.number)
        if t.error is not None:
            print(f"error: trial {asked.number}: {t.error}", file=sys.stderr)
            self.ended(t)
            return None
        run = self.group.open_run(t, {"jscexp.halving.replaced": self.group.slots.runs[k].run_id})
        self.group.slots.replace(k, t, run)
        return t

    def ended(self, trial) -> None:
        """A trial this job asked for: its outcome to the study (FAILED if it lacks an objective)."""
        number = int(trial.cfg.optuna.trial)
        if number in self.asker.open:
            trial.outcome = self.asker.tell(number, trial.outcome)

    def close(self, err: BaseException | None) -> None:
        self.asker.close(err)
