"""A sweep's job configs, composed once per shape.

Hydra composes a job's config from scratch (its defaults tree, every config file) in about
0.1 s; a sweep used to do that three times per job (batch validation, the stacking key, the
group job's trials). Jobs that differ only in vector knobs (plain values: a learning rate, a
seed, a width) share one composition here, and each job's knobs are set on a copy of it by
Hydra's own override step, so its config is the one Hydra would compose.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

from omegaconf import DictConfig

from jscexp.sweep.overrides import is_vector_key, override_key

Compose = Callable[[list[str]], DictConfig]


def split_overrides(overrides: list[str]) -> tuple[list[str], list[str]]:
    """A job's overrides as (the ones that shape its config, its vector knobs)."""
    shaping = [o for o in overrides if not is_vector_key(override_key(o))]
    return shaping, [o for o in overrides if is_vector_key(override_key(o))]


def with_values(base: DictConfig, overrides: list[str]) -> DictConfig:
    """A copy of ``base`` with value ``overrides`` applied as Hydra applies them after
    composing (same grammar, same checks: the schema refuses a value of the wrong type)."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.override_parser.overrides_parser import OverridesParser

    cfg = copy.deepcopy(base)
    parsed = OverridesParser.create().parse_overrides(overrides=list(overrides))
    ConfigLoaderImpl._apply_overrides_to_config(parsed, cfg)  # Hydra's own step, private but stable since 1.1
    return cfg


class JobConfigs:
    """``compose`` with a memory: a job's config from its shape's one composition.

    A job whose knobs do not apply (a key the config lacks, a value of the wrong type) is
    composed in full, so that it fails with Hydra's own message.
    """

    def __init__(self, compose: Compose):
        self._compose = compose
        self._bases: dict[tuple[str, ...], DictConfig] = {}
        self._jobs: dict[tuple[str, ...], DictConfig] = {}  # Hydra's check and the grouping ask for each

    def __call__(self, overrides: list[str]) -> DictConfig:
        if tuple(overrides) not in self._jobs:
            self._jobs[tuple(overrides)] = self._config(list(overrides))
        return self._jobs[tuple(overrides)]

    def _config(self, overrides: list[str]) -> DictConfig:
        shaping, values = split_overrides(overrides)
        key = tuple(shaping)
        if key not in self._bases:
            self._bases[key] = self._compose(shaping)
        try:
            return with_values(self._bases[key], values)
        except Exception:  # noqa: BLE001 — Hydra's composition says what is wrong
            return self._compose(overrides)
