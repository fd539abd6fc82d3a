"""Population-based training inside one stacked model (Jaderberg et al. 2017; the settings
are Ray Tune's ``PopulationBasedTraining``'s).

Every ``interval`` epochs the members in the bottom ``quantile_fraction`` by score each copy
a member of the top quantile — weights, BatchNorm statistics, optimizer buffers, dropout
RNG: one slice of each stacked tensor into another, where Ray Tune saves and restores a
checkpoint — then explore: each knob is resampled from its range with probability
``resample_probability``, else multiplied by one of ``factors`` (an integer knob moves one
step instead). A new learning rate rebases the member's schedule: it goes on from the same
epoch as if it had started at that rate (``jscexp.group.LrSchedule.rebase``).

``plan`` decides from the scores and a ``random.Random`` alone, so the same seed gives the
same decisions; ``exploit`` carries one decision out on a ``StackedEngine``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Settings:
    interval: int = 4
    quantile_fraction: float = 0.25
    resample_probability: float = 0.25
    factors: tuple[float, ...] = (0.8, 1.2)


@dataclass(frozen=True)
class Knob:
    """An explorable knob's range: log-uniform (``log``) or uniform; ``integer`` for widths."""

    low: float
    high: float
    log: bool = False
    integer: bool = False

    def sample(self, rng: random.Random) -> float:
        if self.integer:
            return float(rng.randint(int(self.low), int(self.high)))
        if self.log:
            return math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        return rng.uniform(self.low, self.high)

    def perturb(self, value: float, factors: tuple[float, ...], rng: random.Random) -> float:
        moved = value + rng.choice((-1, 1)) if self.integer else value * rng.choice(factors)
        return min(max(moved, self.low), self.high)


@dataclass
class Exploit:
    """Member ``member`` copies member ``source`` after ``epoch`` and goes on with ``knobs``."""

    epoch: int
    member: int
    source: int
    knobs: dict[str, float] = field(default_factory=dict)


def explore(values: dict[str, float], space: dict[str, Knob], settings: Settings, rng: random.Random) -> dict[str, float]:
    """New knob values near ``values`` (or resampled), in the order of ``space``'s names."""
    out = {}
    for name in sorted(space):
        knob = space[name]
        resample = rng.random() < settings.resample_probability
        out[name] = knob.sample(rng) if resample else knob.perturb(values[name], settings.factors, rng)
    return out


def plan(scores: list[float], values: list[dict[str, float]], space: dict[str, Knob], settings: Settings,
         epoch: int, rng: random.Random) -> list[Exploit]:
    """Who copies whom after ``epoch``, and with which knobs. A non-finite score (a diverged
    member) ranks last; ties go by member number."""
    k = len(scores)
    n = min(math.ceil(k * settings.quantile_fraction), k // 2)
    order = sorted(range(k), key=lambda i: (scores[i] if math.isfinite(scores[i]) else -math.inf, i))
    top = order[k - n:]
    decisions = []
    for member in order[:n]:
        source = rng.choice(top)
        decisions.append(Exploit(epoch, member, source, explore(values[source], space, settings, rng)))
    return decisions


def exploit(engine, decision: Exploit) -> None:
    """Carries ``decision`` out on a ``StackedEngine``: the source's whole state into the
    member's slice, then the member's new knobs, in force from its next step."""
    for part in (engine.model, engine.optimizer, engine.lr_schedule):
        part.copy_trial(decision.member, decision.source)
    for name, value in decision.knobs.items():
        if name == "learning_rate":
            engine.lr_schedule.rebase(decision.member, value)
        elif name == "model.dropout":
            engine.model.set_dropout(decision.member, value)
        elif name.startswith("optimizer.") and name != "optimizer.lr":
            engine.optimizer.set_options(decision.member, {name.removeprefix("optimizer."): value})
        else:
            raise ValueError(f"population-based training cannot explore {name}: "
                             "learning_rate, optimizer.<option> or model.dropout")
    engine.optimizer.lr = engine.lr_schedule(engine.lr_schedule.epochs_done)  # the new rate from the next step
