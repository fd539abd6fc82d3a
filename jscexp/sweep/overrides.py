"""Override text: the one place that reads and writes Hydra override strings for sweeps."""

from __future__ import annotations

import re

from omegaconf import DictConfig

from jscexp.config import plain_list

# Knobs that can differ between the trials of one stacked model; quantisation knobs may too,
# where their quantiser classes say so (``jscexp.group.stack_key`` asks them).
VECTOR_KEYS = ("learning_rate", "seed", "data_seed", "max_epochs", "optimizer.lr", "optimizer.weight_decay", "optimizer.betas",
               "optimizer.momentum", "optimizer.dampening", "optimizer.eps", "optimizer.nesterov", "model.dropout",
               "optuna.trial")
GROUP_KEY = "vector_trials"


def override_key(override: str) -> str:
    """``+a.b=1`` → ``a.b``."""
    return override.split("=", 1)[0].lstrip("+~")


def override_pairs(overrides: list[str]) -> dict[str, str]:
    """``["+a.b=1", "c='x y'"]`` → ``{"a.b": "1", "c": "'x y'"}``: each key and its value text."""
    return {override_key(o): o.split("=", 1)[1] for o in overrides if "=" in o}


def hydra_quoted(text: str) -> str:
    """``text`` as a quoted string in Hydra's override grammar, which reads it back unchanged: a
    quote is escaped, and so are the backslashes right before a quote or at the end (the only
    ones Hydra reads as escapes; one elsewhere is itself)."""
    escaped = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, text)
    return "'" + escaped.replace("'", "\\'") + "'"


def override_value(value) -> str:
    """A value as Hydra override text (strings quoted so commas/spaces stay literal; dicts and
    lists in Hydra's own grammar)."""
    if isinstance(value, str):
        return hydra_quoted(value)
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{override_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(override_value(v) for v in value) + "]"
    return repr(value) if isinstance(value, float) else str(value)


def is_vector_key(key: str) -> bool:
    """A knob that may differ between stacked trials: VECTOR_KEYS, or a quantisation knob — a
    value inside the chosen quantisation config, which the stacking decides on from the
    quantiser classes it reaches (``jscexp.group.stack_key``)."""
    return key in VECTOR_KEYS or key.startswith("quantisation.")


def group_override(trials: list[list[str]]) -> str:
    """``+vector_trials=[['lr=0.1','seed=0'],…]``: each trial's overrides, quoted for Hydra's grammar."""
    return f"+{GROUP_KEY}=[" + ",".join("[" + ",".join(hydra_quoted(o) for o in t) + "]" for t in trials) + "]"


def trial_overrides(cfg: DictConfig, overrides: list[str]) -> list[list[str]]:
    """Each trial's overrides in a group job (one trial for a plain job): the job's own, less
    the group, plus the trial's."""
    if not cfg.get(GROUP_KEY):
        return [list(overrides)]
    common = [o for o in overrides if override_key(o) != GROUP_KEY]
    # unresolved: a trial override may hold an interpolation meant for its own config (${sub:…})
    return [[*common, *t] for t in plain_list(cfg[GROUP_KEY], resolve=False)]
