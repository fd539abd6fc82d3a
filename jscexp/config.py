"""Typed configuration: the schema of the top-level knobs, and helpers every layer shares
(torch-free).

No ``from __future__ import annotations`` and ``Optional`` rather than ``X | None``: OmegaConf
reads these annotations at run time.
"""

import os
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf


def cache_home() -> Path:
    """jscexp's own cache folder (processed data, the MLflow schema a new store starts from):
    $JSCEXP_CACHE, else ~/.cache/jscexp."""
    return Path(os.environ.get("JSCEXP_CACHE") or Path.home() / ".cache" / "jscexp").expanduser()


def plain(node: DictConfig, *, resolve: bool = True) -> dict[str, Any]:
    """A config group as a plain dict (interpolations resolved unless ``resolve=False``)."""
    out = OmegaConf.to_container(node, resolve=resolve)
    if not isinstance(out, dict):
        raise TypeError(f"expected a mapping, got {type(out).__name__}")
    return {str(k): v for k, v in out.items()}


def plain_list(node: ListConfig, *, resolve: bool = True) -> list[Any]:
    """A config list as a plain list."""
    out = OmegaConf.to_container(node, resolve=resolve)
    if not isinstance(out, list):
        raise TypeError(f"expected a list, got {type(out).__name__}")
    return out


# Config keys that do not decide what a run computes: where it logs and caches, how it is
# shown or grouped, which trial a search made it, which costs it adds after training. config.yaml keeps them; a run's params and
# the key its training state is saved under leave them out.
PLUMBING = (
    "analysis", "mlflow", "optuna", "optuna_storage", "experiment", "vector_trials",
    "dataset.cache_dir", "dataset.use_cache", "dataset.download_dir", "dataset.download_timeout", "dataset.cernbox_url",
    "trainer.progress_bar", "trainer.progress_refresh", "trainer.vectorize", "trainer.eval_batch_size",
    "trainer.resume", "trainer.state_dir", "hardware",
)


def quantiser_names(qcfg) -> set[str]:
    """The quantisers a quantisation config names: each entry's ``name`` and ``<role>_name``."""
    return {str(v) for entry in plain(qcfg).values() if isinstance(entry, dict)
            for k, v in (entry.get("config") or {}).items() if k.endswith("name") and v is not None}


def is_plumbing(key: str) -> bool:
    """Whether a dotted config key (an override's) is ``PLUMBING`` or under it."""
    return any(key == p or key.startswith(p + ".") for p in PLUMBING)


def without_plumbing(tree: dict, prefix: str = "") -> dict:
    """A resolved config (plain dict) without its ``PLUMBING`` keys."""
    out = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if is_plumbing(path):
            continue
        out[key] = without_plumbing(value, f"{path}.") if isinstance(value, dict) else value
    return out


ESTIMATES_TAG = "jscexp.estimates"  # on a run: JSON {metric: label} of the hardware estimates it logged


class Mode(StrEnum):
    """What a job does (``mode=``)."""

    train = "train"  # train the float model
    test = "test"  # evaluate ckpt= on the test split
    qat = "qat"  # train the quantised model (quantisation-aware)
    ptq = "ptq"  # quantise a trained float model (ckpt=, else trained first)
    transform = "transform"  # write the quantised model of ckpt= and its summaries
    analyse = "analyse"  # fx graph report, statistics profile, node-meta table


TRAINING_MODES = (Mode.train, Mode.qat)  # a model trains in the job's own run
QUANTISED_MODES = (Mode.qat, Mode.ptq, Mode.transform)  # they need quantisation=
CKPT_MODES = (Mode.test, Mode.transform)  # they need ckpt=
EXPORTED_MODES = (Mode.qat, Mode.ptq)  # a quantised model with a test split: hls4ml's C simulation checks it

# What a job of each mode returns (a search's objectives are among them): a trained model's
# numbers, and a quantised model's bit costs (a float model has none).
FIT_METRICS = ("best_epoch", "best_train_acc", "best_val_acc", "test_acc", "test_loss", "fit_seconds",
               "epoch_seconds_mean", "train_samples_per_second")
COST_METRICS = ("avg_weight_bits", "model_size_bits", "avg_param_bits", "linear_bitops", "bops", "ebops")
_RETURNS = {
    Mode.train: FIT_METRICS,
    Mode.qat: FIT_METRICS + COST_METRICS,
    Mode.ptq: ("float_val_acc", "float_test_acc", "float_test_loss", "best_val_acc", "test_acc", "test_loss",
               "acc_drop") + COST_METRICS,  # and float_train_acc when it trained the float model itself
    Mode.test: ("test_acc", "test_loss"),
    Mode.transform: COST_METRICS,
    Mode.analyse: (),
}


def returned_metrics(mode: str) -> tuple[str, ...]:
    """The metrics every finished job of ``mode`` returns."""
    return _RETURNS[Mode(mode)]


@dataclass
class TrainerConf:
    """``conf/trainer``: where and how a job trains (its values and units are in default.yaml)."""

    accelerator: str = "cpu"
    devices: Any = 1
    num_threads: Optional[int] = None
    deterministic: bool = True
    progress_bar: bool = True
    progress_refresh: int = 50
    eval_batch_size: int = 8192
    early_stopping_patience: Optional[int] = None
    vectorize: Any = "auto"  # off | auto | a group size (jscexp.validate.group_size checks it)
    resume: bool = True
    state_dir: str = ".jscexp/state"


@dataclass
class PbtConf:
    """``pbt``: population-based training inside one stacked group (docs/stacked-trials.md),
    on when ``space`` maps an explored knob to its range (``{low, high, log}``)."""

    interval: int = 4  # epochs between exploit/explore steps
    quantile_fraction: float = 0.25  # the bottom fraction copies the top fraction
    resample_probability: float = 0.25  # a knob is resampled from its range, else perturbed
    factors: list[float] = field(default_factory=lambda: [0.8, 1.2])
    seed: int = 0  # the decisions' RNG: same seed, same decisions
    space: dict[str, Any] = field(default_factory=dict)


@dataclass
class HardwareConf:
    """``hardware``: a quantised run's hardware cost (docs/hardware.md). ``bops`` and ``ebops``
    are always logged; da4ml's ``est_lut``/``est_latency`` trace the fixed-point layers, which
    costs 0.02 s for jsc-toy but 0.35 s for jsc-10x (docs/speed.md): ``auto`` estimates models
    whose quantised Linear layers hold at most ``estimate_max_weights`` weights, ``true`` every one."""

    estimate: Any = "auto"  # auto | true | false
    estimate_max_weights: int = 1024
    estimator: Any = None  # conf/hardware/estimator: the class that estimates (jscexp.quant.estimators)
    export: bool = False  # at the end of every quantised run: hls4ml export + C-simulation check (~15 s each)


@dataclass
class JscexpConf:
    """The top-level knobs, typed: a value of the wrong type is Hydra's one-line error, exit 2.
    The groups (model, dataset, …) keep their own keys; conf/config.yaml sets the defaults."""

    model: Any = MISSING
    dataset: Any = MISSING
    optimizer: Any = MISSING
    scheduler: Any = MISSING
    trainer: TrainerConf = field(default_factory=TrainerConf)
    quantisation: Any = MISSING
    analysis: Any = MISSING
    intrain: Any = MISSING  # conf/intrain: the in-training search of a stacked group (jscexp.intrain.Kind)
    mlflow: Any = MISSING
    optuna_storage: Optional[str] = None
    mode: Mode = Mode.train
    ckpt: Optional[str] = None
    experiment: str = "jscexp"
    seed: int = 0
    data_seed: int = 0
    batch_size: int = 128
    max_epochs: int = 10
    learning_rate: float = 1e-3
    pbt: PbtConf = field(default_factory=PbtConf)
    hardware: HardwareConf = field(default_factory=HardwareConf)


SCHEMA = "jscexp_schema"


def register_schema() -> None:
    """Makes ``jscexp_schema`` (conf/config.yaml's first default) known to Hydra. Called by
    jscexp's own entry points, never at import: other Hydra apps see nothing of it."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name=SCHEMA, node=JscexpConf)
