"""Checks of the top-level knobs, before anything is loaded or logged."""

from __future__ import annotations

import math

from jscexp.config import EXPORTED_MODES, quantiser_names
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
    check_hardware(cfg)
    check_learned(cfg)


def check_learned(cfg) -> None:
    """Learned widths (a quantiser class that ``learns_widths``, ``quantisation.beta``): trained, so mode=qat;
    fixed point in every role beside them; β ≥ 0 and only where some width is learned."""
    from jscexp.quant import quantiser_class  # the quant package loads torch: the job's, not the sweeper's
    from jscexp.quant.penalty import check_beta, check_warmup

    names = quantiser_names(cfg.quantisation)
    beta = cfg.quantisation.get("beta")
    if not any(quantiser_class(n).learns_widths for n in names):
        for key in ("beta", "beta_warmup"):
            if cfg.quantisation.get(key) is not None:
                raise UserError(f"quantisation.{key} is for the penalty on learned widths, but quantisation="
                                f"{cfg.quantisation.name} learns none: use quantisation=learned (fixed point)")
        return
    if beta is not None:
        check_beta(beta)
    if (warmup := cfg.quantisation.get("beta_warmup")) is not None:
        check_warmup(warmup)
    if other := not_fixed_point(names):
        raise UserError(f"learned widths are fixed point: quantise every other role with integer, "
                        f"not {', '.join(other)}")
    if cfg.mode != "qat":
        raise UserError(f"quantisation={cfg.quantisation.name} learns its widths in training: use mode=qat, "
                        f"not mode={cfg.mode}")


def check_hardware(cfg) -> None:
    """``hardware.*``: an estimate setting it knows; an export only of quantised fixed-point
    runs, and only where g++ can build the C simulation."""
    if cfg.hardware.estimate not in ("auto", True, False):
        raise UserError(f"hardware.estimate must be auto, true or false, got {cfg.hardware.estimate!r}")
    if cfg.hardware.estimate is True and not (cfg.hardware.get("estimator") or {}).get("_target_"):
        raise UserError("hardware.estimate=true asks for an estimate, but hardware/estimator=none makes none: "
                        "choose an estimator (hardware/estimator=da4ml) or drop hardware.estimate=true")
    if not cfg.hardware.export:
        return
    if cfg.mode not in EXPORTED_MODES:
        raise UserError(f"hardware.export=true exports quantised runs: mode=qat or mode=ptq, not mode={cfg.mode}")
    if other := not_fixed_point(quantiser_names(cfg.quantisation)):
        raise UserError(f"hardware.export=true: hls4ml has no type for the {', '.join(other)} "
                        "format: export fixed-point (integer) presets, e.g. quantisation=int8 or int8_all")
    check_gxx("hardware.export=true: ")


def check_gxx(prefix: str = "") -> None:
    """hls4ml compiles its C simulation with g++: without it, one line saying so."""
    import shutil

    if shutil.which("g++") is None:
        raise UserError(f"{prefix}g++ is not installed: hls4ml compiles the C simulation with it (apt-get install g++)")


def not_fixed_point(names: set[str]) -> list[str]:
    """The quantisers among ``names`` that do not declare fixed-point values (``Quantiser.fixed_point``)."""
    from jscexp.quant import quantiser_class

    return sorted(n for n in names if not quantiser_class(n).fixed_point)


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
