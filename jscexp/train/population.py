"""Population-based training inside one stacked model (Jaderberg et al. 2017; the settings
are Ray Tune's ``PopulationBasedTraining``'s).

Every ``interval`` epochs the members in the bottom ``quantile_fraction`` by score each copy
a member of the top quantile — weights, BatchNorm statistics, optimizer buffers, dropout
RNG: one slice of each stacked tensor into another, where Ray Tune saves and restores a
checkpoint — then explore: each knob is resampled from its range with probability
``resample_probability``, else multiplied by one of ``factors`` (an integer knob moves one
step instead). A new learning rate rebases the member's schedule: it goes on from the same
epoch as if it had started at that rate (``jscexp.train.stacked.LrSchedule.rebase``).

``plan`` decides from the scores and a ``random.Random`` alone, so the same seed gives the
same decisions; ``exploit`` carries one decision out on a ``SliceEngine``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jscexp.train.loop import SliceEngine


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


def exploit(engine: SliceEngine, decision: Exploit, quantised=None) -> None:
    """Carries ``decision`` out on a stacked engine: the source's whole state into the member's
    slice, then the member's new knobs (widths through ``quantised``: a QAT model built with
    the member's new widths, whose quantisers its slice then uses)."""
    engine.copy_trial(decision.member, decision.source)
    engine.set_knobs(decision.member, decision.knobs, quantised)


def requantises(name: str) -> bool:
    """A knob that changes a member's quantisers: a quantisation knob, which ``pbt.space``'s
    check let through only where its quantiser classes can swap it mid-training and as an
    integer range (``jscexp.sweep.checks.check_space``)."""
    return name.startswith("quantisation.")


def knob_space(space: Mapping[str, Mapping]) -> dict[str, Knob]:
    """``pbt.space`` as Knobs: each name's ``{low, high, log, integer}``."""
    return {name: Knob(float(r["low"]), float(r["high"]), bool(r.get("log", False)), bool(r.get("integer", False)))
            for name, r in space.items()}


class Population:
    """Population-based training of a ``StackedEngine``'s members, as ``loop.fit``'s
    ``after_epoch``: each epoch it reports every training member's knobs
    (``on_epoch(member, epoch, knobs)``), and every ``interval`` epochs but after the last
    it exploits and explores among the members still training (``on_exploit(decision)``).
    ``requantise(member, knobs)`` builds a member's QAT model when widths are explored.
    ``knobs_at[member][epoch]``: the knobs each member trained that epoch with."""

    def __init__(self, engine, settings: Settings, space: dict[str, Knob], values: list[dict[str, float]],
                 seed: int, last_epoch: int, on_epoch: Callable, on_exploit: Callable,
                 requantise: Callable | None = None):
        self.engine, self.settings, self.space, self.values = engine, settings, space, values
        self.rng, self.last_epoch = random.Random(seed), last_epoch
        self.on_epoch, self.on_exploit, self.requantise = on_epoch, on_exploit, requantise
        self.knobs_at: list[dict[int, dict[str, float]]] = [{} for _ in values]

    def __call__(self, epoch: int, book) -> None:
        recorded = [k for k, r in enumerate(book.results) if r.history and r.history[-1]["epoch"] == epoch]
        for k in recorded:
            self.knobs_at[k][epoch] = dict(self.values[k])
            self.on_epoch(k, epoch, self.values[k])
        # still training, or diverged just now: the worst of all, it copies a top member and goes on
        alive = [k for k in recorded if book.flags[k] or book.results[k].diverged_at == epoch]
        if (epoch + 1) % self.settings.interval or epoch >= self.last_epoch or len(alive) < 2:
            return
        scores = [math.nan if book.results[k].diverged_at is not None else book.results[k].history[-1]["val_acc"]
                  for k in alive]
        for d in plan(scores, [self.values[k] for k in alive], self.space, self.settings, epoch, self.rng):
            decision = Exploit(epoch, alive[d.member], alive[d.source], d.knobs)
            knobs = {**self.values[decision.source], **decision.knobs}
            exploit(self.engine, decision, self._quantised(decision.member, knobs))
            self.values[decision.member] = knobs
            if book.results[decision.member].diverged_at is not None:
                book.revive(decision.member)
            self.on_exploit(decision)

    def _quantised(self, member: int, knobs: dict[str, float]):
        """The member's QAT model with its new widths, when widths are explored."""
        if self.requantise is None or not any(requantises(name) for name in knobs):
            return None
        return self.requantise(member, knobs)
