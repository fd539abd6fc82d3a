"""Checks of the top-level knobs, before anything is loaded or logged."""

from __future__ import annotations

import math

from jscexp.errors import UserError


def check_knobs(cfg) -> None:
    """Values the schema's types cannot rule out (jscexp.config types them): batch_size and
    max_epochs positive, learning_rate positive and finite, trainer.vectorize off / auto / K,
    hardware.estimate auto / true / false."""
    for key in ("batch_size", "max_epochs"):
        if cfg[key] <= 0:
            raise UserError(f"{key} must be a positive integer, got {cfg[key]!r}")
    if not math.isfinite(cfg.learning_rate) or cfg.learning_rate <= 0:
        raise UserError(f"learning_rate must be a positive number, got {cfg.learning_rate!r}")
    group_size(cfg.trainer.get("vectorize"))  # a bad value fails single runs too, not only sweeps
    if cfg.hardware.estimate not in ("auto", True, False):
        raise UserError(f"hardware.estimate must be auto, true or false, got {cfg.hardware.estimate!r}")


def group_size(setting) -> int:
    """``trainer.vectorize``: off → 1, auto → 64, or a positive number (trials per stacked model)."""
    if setting is None or setting is False or setting == "off":  # not `in`: 0 == False
        return 1
    if setting == "auto":
        return 64
    if isinstance(setting, bool) or not isinstance(setting, int) or setting < 1:
        raise UserError(f"trainer.vectorize must be off, auto or a group size of 1 or more, got {setting!r}")
    return setting


def check_batch_fits(batch_size: int, train_rows: int) -> None:
    if batch_size > train_rows:
        raise UserError(f"batch_size {batch_size} is larger than the {train_rows} training rows: lower batch_size")
