"""Hydra's sweep syntax → Optuna distributions.

``choice(a,b)`` / ``a,b`` → categorical; ``range(a,b[,s])`` → the values Hydra itself would
enumerate (stop excluded: the official plugin hands Optuna ``b`` as an inclusive high, a bug);
``interval(a,b)`` → float; ``int(interval(a,b))`` → int; ``tag(log, …)`` → log scale.
Anything else is a fixed value passed to every trial.
"""

from __future__ import annotations

from collections.abc import Mapping

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep

from jscexp.errors import UserError


def _range_values(sweep: RangeSweep) -> list:
    values, v = [], sweep.start
    step = sweep.step
    if step == 0 or (step > 0) != (sweep.stop > sweep.start):
        raise UserError(f"range({sweep.start}, {sweep.stop}, {step}) is empty")
    while (v < sweep.stop) if step > 0 else (v > sweep.stop):
        values.append(round(v, 12) if isinstance(v, float) else v)
        v += step
    return values


def to_distribution(override: Override):
    import optuna.distributions as d

    value = override.value()
    name = override.get_key_element()
    log = "log" in (getattr(value, "tags", None) or set())
    if isinstance(value, ChoiceSweep):
        return d.CategoricalDistribution(list(value.list))
    if isinstance(value, RangeSweep):
        values = _range_values(value)
        if all(isinstance(v, int) for v in values):
            return d.IntDistribution(values[0], values[-1], step=abs(value.step), log=log) if value.step > 0 \
                else d.CategoricalDistribution(values)
        return d.CategoricalDistribution(values)
    if isinstance(value, IntervalSweep):
        if value.start >= value.end:
            raise UserError(f"{name}: interval({value.start}, {value.end}) is empty")
        if log and value.start <= 0:
            raise UserError(f"{name}: a log interval must start above 0, got {value.start}")
        if isinstance(value.start, int) and isinstance(value.end, int):
            return d.IntDistribution(value.start, value.end, log=log)
        return d.FloatDistribution(float(value.start), float(value.end), log=log)
    raise UserError(f"{name}: cannot search over {override.input_line}")


def parse(params: Mapping[str, str] | None, arguments: list[str]) -> tuple[dict, list[str]]:
    """Returns ({key: distribution}, [fixed overrides]); command-line arguments win over params."""
    parser = OverridesParser.create()
    lines = [f"{k}={v}" for k, v in (params or {}).items()]
    overrides = parser.parse_overrides(lines) + parser.parse_overrides(list(arguments))
    space, fixed = {}, {}
    for o in overrides:
        key = o.get_key_element()
        space.pop(key, None)
        fixed.pop(key, None)
        if o.is_sweep_override():
            space[key] = to_distribution(o)
        else:
            fixed[key] = o.input_line
    return space, list(fixed.values())
