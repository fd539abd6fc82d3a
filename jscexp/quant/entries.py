"""A quantisation config read as its quantisers see it: each entry's quantiser per role and that
role's options, and where a top-level knob (``quantisation.weight_width``) lands in them.

What a knob may do — differ between stacked trials, be changed by population-based training —
is asked of the quantiser classes it reaches (``Quantiser.varies_in_stack``,
``Quantiser.explorable``), never decided from the knob's name.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from jscexp.config import plain, quantiser_names
from jscexp.quant import quantiser_class
from jscexp.quant.penalty import PER_TRIAL

ROLES = ("data_in", "weight", "bias")
META_KEYS = {"name", "data_in_name", "weight_name", "bias_name"}
_REFERENCE = re.compile(r"\$\{quantisation\.([\w.]+)\}")


def role_options(entry: Mapping) -> Iterator[tuple[str, str | None, dict]]:
    """Each role an entry's ``config`` quantises: (role, its quantiser's name, its options) —
    ``weight_width: 4`` is the weight's ``width``; a role with neither options nor a
    ``<role>_name`` is left out."""
    for role in ROLES:
        opts = {k[len(role) + 1 :]: v for k, v in entry.items() if k.startswith(f"{role}_") and k not in META_KEYS}
        if opts or f"{role}_name" in entry:
            yield role, entry.get(f"{role}_name", entry.get("name")), opts


def _raw(qcfg: DictConfig) -> dict[str, Any]:
    """The config with its interpolations unresolved: where a knob lands is read from them."""
    raw = OmegaConf.to_container(qcfg, resolve=False)
    assert isinstance(raw, dict)
    return {str(k): v for k, v in raw.items()}


def _references(value) -> set[str]:
    """The top-level knobs a value reads (``${quantisation.<knob>}``, nested ones too)."""
    return set(_REFERENCE.findall(str(value)))


def _closure(start: set[str], step: Callable[[str], set[str]]) -> set[str]:
    """``start`` and every knob ``step`` leads to from one found, and from those, and so on."""
    found, todo = set(start), list(start)
    while todo:
        for k in step(todo.pop()) - found:
            found.add(k)
            todo.append(k)
    return found


def _read_by_entries(raw: dict[str, Any]) -> set[str]:
    """The top-level knobs the entries read, directly or through another top-level knob."""
    direct = set().union(*(_references(v) for v in raw.values() if isinstance(v, dict)))
    return _closure(direct, lambda k: _references(raw.get(k, "")))


def knob_uses(qcfg: DictConfig, knob: str) -> list[tuple[str | None, str]]:
    """Where ``quantisation.<knob>`` lands: (quantiser name, option) for each role option that
    is the knob itself (``linear.config.weight_width``) or reads it through an interpolation,
    directly or through another top-level knob (``${sub:${quantisation.weight_width},1}``).
    A layer's own entry (``seq_blocks_2``) names no quantiser: its name is None."""
    raw = _raw(qcfg)
    # the knob, and the top-level knobs whose value reads one of those
    reached = _closure({knob}, lambda source: {k for k, v in raw.items()
                                               if not isinstance(v, dict) and source in _references(v)})
    uses = []
    for key, value in raw.items():
        entry = value.get("config") if isinstance(value, dict) else None
        for role, name, opts in role_options(entry or {}):
            uses += [(name, option) for option, v in opts.items()
                     if f"{key}.config.{role}_{option}" == knob or reached & _references(v)]
    return uses


def _classes(qcfg: DictConfig, name: str | None) -> list:
    """The class a role's name gives; for a layer's own entry (no name), every class the config
    names: what holds for its option must hold for each."""
    return [quantiser_class(n) for n in ([name] if name is not None else sorted(quantiser_names(qcfg)))]


def varies_in_stack(qcfg: DictConfig, knob: str) -> bool:
    """Whether stacked trials may differ in ``quantisation.<knob>``: a setting each trial takes its
    own of (``beta``), or a knob that reaches quantiser options and only options their classes
    vary per trial."""
    if knob in PER_TRIAL:
        return True
    uses = knob_uses(qcfg, knob)
    return bool(uses) and all(cls.varies_in_stack(option) for name, option in uses for cls in _classes(qcfg, name))


def explorable(qcfg: DictConfig, knob: str) -> bool:
    """Whether population-based training may change ``quantisation.<knob>`` of a member while it
    trains: it reaches quantiser options, each one its class lets a stacked trial swap."""
    uses = knob_uses(qcfg, knob)
    return bool(uses) and all(cls.explorable(option) for name, option in uses for cls in _classes(qcfg, name))


def stack_signature(qcfg: DictConfig) -> dict:
    """What stacked trials' quantisation must share: each entry's quantiser per role with the
    options its class cannot vary per trial, and the settings beside the entries (``by``,
    ``beta_warmup``) but those each trial takes its own of (``beta``) and those read only through
    an entry's interpolation (``weight_width``: compared where it lands)."""
    raw = _raw(qcfg)
    read = _read_by_entries(raw)
    signature: dict = {}
    for key, value in plain(qcfg).items():
        if isinstance(value, dict):
            signature[key] = {role: (name, {o: v for o, v in opts.items()
                                            if not all(c.varies_in_stack(o) for c in _classes(qcfg, name))})
                              for role, name, opts in role_options(value.get("config") or {})}
        elif key not in PER_TRIAL and key not in read:
            signature[key] = value
    return signature
