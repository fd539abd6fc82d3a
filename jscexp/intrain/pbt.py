"""Population-based training as an in-training search (``pbt.space`` set on a stacked group):
the knobs from each trial's config, the members' MLflow records, and QAT widths rebuilt.

The population itself (who copies whom, the explored knobs) is ``jscexp.train.population``.
An interrupted population starts over: its members keep no resumable state, since a
resumed member would go on with its first knobs and a fresh decision RNG, which the
uninterrupted population would not have done.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from jscexp.config import plain
from jscexp.errors import UserError
from jscexp.intrain import Group, Kind, Search
from jscexp.sweep.checks import ONE_MEMBER, check_space
from jscexp.train.loop import EpochBook, FitResult
from jscexp.train.population import Population, Settings, knob_space, requantises


class Pbt(Kind):
    """``intrain=pbt``: the group's trials as a population (``pbt.*`` settings). Its members keep
    no resumable state (the module docstring says why)."""

    def check_config(self, cfg) -> None:
        if not cfg.pbt.space:
            raise UserError("intrain=pbt needs pbt.space: the knobs the population explores, e.g. "
                            "+pbt.space.learning_rate={low:1e-4,high:1e-1,log:true}")

    def check(self, trial) -> None:
        self.check_config(trial.cfg)
        check(trial)

    def start(self, group: Group) -> PbtSearch | None:
        return start(group)

    def resumes(self, cfg) -> bool:
        return False


def check(t) -> None:
    """``pbt.space`` against trial ``t``'s config, before any run exists: one line if wrong;
    an explored width is built at both ends of its range (frac_width must still fit)."""
    from jscexp.quant.transform import quantise

    space = plain(t.cfg.pbt.space)
    check_space(space, t.cfg)
    for name, knob in knob_space(space).items():
        for end in {knob.low, knob.high} if requantises(name) else ():
            try:
                quantise(t.model, plain(with_knobs(t.cfg, {name: end}).quantisation), t.calibration)
            except UserError as err:
                raise UserError(f"pbt.space.{name} = {end:g}: {err}") from None


def with_knobs(cfg: DictConfig, knobs: dict[str, float]) -> DictConfig:
    """A copy of ``cfg`` with the knobs set (widths as integers), as the overrides of a job would
    set them (``with_values``); interpolations follow them."""
    from jscexp.sweep.configs import with_values

    return with_values(cfg, [f"{name}={int(value) if requantises(name) else repr(float(value))}"
                             for name, value in knobs.items()])


def start(group: Group) -> PbtSearch | None:
    """The group's trials as a population when ``pbt.space`` is set: each member's knobs per
    epoch as ``pbt.<knob>`` metrics, each exploit as tags on the run that copied."""
    trials, runs = group.trials, group.slots.runs
    pbt = trials[0].cfg.pbt
    if not pbt.space:
        return None
    if group.engine.k == 1:  # the sweep's check refuses a grid of one; this is a group that did not stack
        raise UserError(ONE_MEMBER)
    space = knob_space(plain(pbt.space))
    values = [{name: float(OmegaConf.select(t.cfg, name)) for name in space} for t in trials]
    settings = Settings(int(pbt.interval), float(pbt.quantile_fraction), float(pbt.resample_probability),
                        tuple(float(f) for f in pbt.factors))

    def on_epoch(k: int, epoch: int, knobs: dict[str, float]) -> None:
        runs[k].log_metrics({f"pbt.{name}": value for name, value in knobs.items()}, step=epoch)

    def on_exploit(d) -> None:
        knobs = ", ".join(f"{name}={value:.4g}" for name, value in d.knobs.items())
        runs[d.member].set_tags({f"jscexp.pbt.epoch_{d.epoch}": f"copied run {runs[d.source].run_id}, then {knobs}",
                                 "jscexp.pbt.copied_from": runs[d.source].run_id})

    last = max(int(t.cfg.max_epochs) for t in trials) - 1
    return PbtSearch(Population(group.engine, settings, space, values, int(pbt.seed), last, on_epoch, on_exploit,
                                lambda k, knobs: _qat_model(trials[k], knobs)[0]))


class PbtSearch(Search):
    """The population between epochs; a member is tested with the widths of its best epoch."""

    def __init__(self, population: Population):
        self.population = population

    def after_epoch(self, epoch: int, book: EpochBook) -> None:
        self.population(epoch, book)

    def before_test(self, trial, k: int, result: FitResult) -> None:
        """A member whose widths were explored is tested and summarised with the widths it had
        in its best epoch (the weights kept are that epoch's)."""
        if result.best_epoch is None or not any(requantises(name) for name in self.population.space):
            return
        trial.quantised = _qat_model(trial, self.population.knobs_at[k][result.best_epoch])


def _qat_model(t, knobs: dict[str, float]):
    from jscexp.quant.transform import quantise

    return quantise(t.model, plain(with_knobs(t.cfg, knobs).quantisation), t.calibration)
