"""The learned widths' EBOPs penalty knobs (``quantisation.beta``, ``beta_warmup``), checked
without torch: the config checks and the learned quantiser both read them."""

from __future__ import annotations

import math

from jscexp.errors import UserError

# The settings each trial of a stacked model takes its own of (the engine keeps one β per
# trial); beta_warmup is the stack's one schedule.
PER_TRIAL = frozenset({"beta"})


def check_beta(beta) -> float:
    """``quantisation.beta``: a number ≥ 0."""
    if isinstance(beta, bool) or not isinstance(beta, int | float) or not math.isfinite(beta) or beta < 0:
        raise UserError(f"quantisation.beta must be a number ≥ 0 (the EBOPs penalty's strength), got {beta!r}")
    return float(beta)


def check_warmup(warmup) -> int:
    """``quantisation.beta_warmup``: whole epochs ≥ 0."""
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise UserError(f"quantisation.beta_warmup must be a whole number of epochs ≥ 0, got {warmup!r}")
    return warmup
