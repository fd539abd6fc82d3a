"""Run names a person can read in the MLflow UI's narrow Run Name column.

A sweep's children are named by what the sweep varies, shortest first (``bs=32``,
``lr=0.001 seed=2``, ``w=4 qat``), an Optuna trial by its number too (``#5 lr=0.003``); the
sweep's parent by the ranges (``batch_size ∈ {32,64,128}``). The swept keys travel from
the sweep callback to its jobs in ``SWEPT_ENV``, as the parent run id does.
"""

from __future__ import annotations

import json
import os

from jscexp.config import is_plumbing
from jscexp.sweep.overrides import override_pairs

SWEPT_ENV = "JSCEXP_SWEPT_KEYS"
SHORT = {"batch_size": "bs", "learning_rate": "lr", "max_epochs": "epochs", "data_seed": "dseed",
         "optimizer.weight_decay": "wd", "optimizer.momentum": "mom", "model.dropout": "p",
         "quantisation.weight_width": "w", "quantisation.data_in_width": "x", "quantisation.bias_width": "b"}
_BY_VALUE = ("mode", "model", "optimizer", "scheduler", "quantisation", "dataset")  # the value says it all


def _pairs(overrides: list[str]) -> dict[str, str]:
    """Each key and its value as shown: without quotes."""
    return {k: v.strip("'\"") for k, v in override_pairs(overrides).items()}


def short_key(key: str) -> str:
    """``batch_size`` → ``bs``; a dotted key by its last part, a layer's own knob with its
    layer (``quantisation.seq_blocks_5.config.weight_width`` → ``seq_blocks_5.weight_width``)."""
    parts = key.split(".")
    if len(parts) == 4 and parts[0] == "quantisation" and parts[2] == "config":
        return f"{parts[1]}.{parts[3]}"
    return SHORT.get(key, parts[-1])


def _short(key: str, value: str) -> str:
    if key in _BY_VALUE:
        return value
    return f"{short_key(key)}={value}"


def _plumbing(key: str) -> bool:
    return key.startswith("hydra.") or is_plumbing(key)


def run_name(model: str, overrides: list[str], trial: int | None = None) -> str:
    """A job's name: the values its sweep varies (``SWEPT_ENV``), else its own overrides
    without plumbing after the model's name; an Optuna trial's number first."""
    pairs = _pairs(overrides)
    swept = json.loads(os.environ.get(SWEPT_ENV) or "[]")
    if swept:
        parts = [_short(k, pairs[k]) for k in swept if k in pairs]
    else:
        parts = [model, *(_short(k, v) for k, v in pairs.items() if not _plumbing(k) and k != "model")]
    return " ".join([*([f"#{trial}"] if trial is not None else []), *parts])[:250]


def swept_keys(sweep_overrides: list[str], search_params: dict | None = None) -> list[str]:
    """The keys a sweep varies: its sweep overrides (``a=1,2``, ``choice(…)``, ``interval(…)``)
    and the Optuna sweeper's ``params``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(sweep_overrides))
    keys = [o.get_key_element().lstrip("+~") for o in parsed if o.is_sweep_override()]
    return list(dict.fromkeys([*keys, *(search_params or {})]))


def sweep_name(sweep_overrides: list[str], search_params: dict | None = None) -> str:
    """The parent's name: each swept key with its values or range."""
    pairs = {**(search_params or {}), **_pairs(sweep_overrides)}
    parts = []
    for key in swept_keys(sweep_overrides, search_params):
        value = str(pairs[key])
        plain_list = "(" not in value and "," in value
        parts.append(f"{key} ∈ {{{value}}}" if plain_list else f"{key} ∈ {value}")
    return ("; ".join(parts) or "sweep")[:250]
