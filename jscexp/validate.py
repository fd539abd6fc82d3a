"""Checks of the top-level knobs, before anything is loaded or logged."""

from __future__ import annotations

import math

from jscexp.errors import UserError


def _number(cfg, key: str) -> float:
    value = cfg[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise UserError(f"{key} must be a number, got {cfg[key]!r}") from None
    return value


def check_knobs(cfg) -> None:
    """batch_size and max_epochs positive integers, learning_rate a positive finite number."""
    for key in ("batch_size", "max_epochs"):
        value = cfg[key]
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise UserError(f"{key} must be a positive integer, got {value!r}")
    lr = _number(cfg, "learning_rate")
    if not math.isfinite(lr) or lr <= 0:
        raise UserError(f"learning_rate must be a positive number, got {cfg.learning_rate!r}")


def check_batch_fits(batch_size: int, train_rows: int) -> None:
    if batch_size > train_rows:
        raise UserError(f"batch_size {batch_size} is larger than the {train_rows} training rows: lower batch_size")
