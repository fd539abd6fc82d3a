"""Hydra's sweep syntax → Optuna distributions.

``choice(a,b)`` / ``a,b`` → categorical; ``range(a,b[,s])`` → a stepped int or float
distribution over the values Hydra itself would enumerate (stop excluded: the official
plugin hands Optuna ``b`` as an inclusive high, a bug), ordered, so TPE and CMA-ES can model
it; ``shuffle(range(…))`` → categorical, as in the official plugin; ``interval(a,b)`` → float;
``int(interval(a,b))`` → int; ``tag(log, …)`` → log scale. Anything else is a fixed value
passed to every trial.
"""

from __future__ import annotations

from collections.abc import Mapping

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, QuotedString, RangeSweep

from jscexp.errors import UserError


def _range_values(sweep: RangeSweep) -> list:
    """The values Hydra's grid sweeper enumerates for the same text (its own ``range()``),
    without float dust."""
    values = [] if sweep.step == 0 else [round(v, 12) if isinstance(v, float) else v for v in sweep.range()]
    if not values:
        raise UserError(f"range({sweep.start}, {sweep.stop}, {sweep.step}) is empty")
    return values


def _choice(name: str, value) -> None | bool | int | float | str:
    """One choice as Optuna stores it: a quoted string's text, a number, a bool or null."""
    if isinstance(value, QuotedString):
        return value.text
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise UserError(f"{name}: choice {value!r} is not a number, string, boolean or null, which is all a search "
                    "can choose from: sweep it with the grid sweeper (sweeper=grid) instead")


def _range_distribution(name: str, sweep: RangeSweep, log: bool):
    import optuna.distributions as d

    values = _range_values(sweep)
    if log and sweep.step not in (None, 1):
        raise UserError(f"{name}: a log range cannot have a step: use tag(log, int(interval(a, b)))")
    if sweep.shuffle:
        return d.CategoricalDistribution(values)
    low, high, step = min(values), max(values), abs(sweep.step or 1)
    if all(isinstance(v, int) for v in values):
        return d.IntDistribution(low, high, step=int(step), log=log)
    return d.FloatDistribution(float(low), float(high), step=None if log else float(step), log=log)


def to_distribution(override: Override):
    import optuna.distributions as d

    value = override.value()
    name = override.get_key_element()
    log = "log" in (getattr(value, "tags", None) or set())
    if isinstance(value, ChoiceSweep):
        return d.CategoricalDistribution([_choice(name, v) for v in value.list])
    if isinstance(value, RangeSweep):
        return _range_distribution(name, value, log)
    if isinstance(value, IntervalSweep):
        start, end = value.start, value.end
        assert start is not None and end is not None  # Hydra's grammar needs both
        if start >= end:
            raise UserError(f"{name}: interval({start}, {end}) is empty")
        if log and start <= 0:
            raise UserError(f"{name}: a log interval must start above 0, got {start}")
        if isinstance(start, int) and isinstance(end, int):
            return d.IntDistribution(start, end, log=log)
        return d.FloatDistribution(float(start), float(end), log=log)
    raise UserError(f"{name}: cannot search over {override.input_line}")


def parse(params: Mapping[str, str] | None, arguments: list[str]) -> tuple[dict, list[str]]:
    """Returns ({key: distribution}, [fixed overrides]); command-line arguments win over params."""
    parser = OverridesParser.create()
    lines = [f"{k}={v}" for k, v in (params or {}).items()]
    overrides = parser.parse_overrides(lines) + parser.parse_overrides(list(arguments))
    space: dict[str, object] = {}
    fixed: dict[str, str] = {}
    for o in overrides:
        key = o.get_key_element()
        space.pop(key, None)
        fixed.pop(key, None)
        if o.is_sweep_override():
            space[key] = to_distribution(o)
        else:
            fixed[key] = str(o.input_line)
    return space, list(fixed.values())
