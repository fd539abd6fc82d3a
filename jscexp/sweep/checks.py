"""What a sweep can know is wrong before its first trial, checked when it starts: before its
MLflow parent run or its Optuna study exists (``jscexp.preflight`` calls ``check_sweep``), so a
mistake costs one line and exit 2, never a run or a trial per job.

Checked: the group size; a search's settings (no key its schema lacks), objectives against
what its jobs' mode returns, its sampler and pruner (config groups, not strings, each option
one its Optuna class takes), one seed, its numbers; a population's size, settings and
explored knobs; the data (downloaded here, once, when it must be).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from omegaconf import DictConfig, OmegaConf

from jscexp.config import QUANTISED_MODES, plain, plain_list, returned_metrics
from jscexp.errors import UserError
from jscexp.sweep.searchconf import JscexpOptunaSweeperConf
from jscexp.validate import check_hardware, group_size

DEFAULT_OBJECTIVE = "best_val_acc"  # a search without hydra.sweeper.objectives maximises it
OPTUNA_SWEEPER = "hydra_plugins.jscexp_sweeper.sweeper.JscexpOptunaSweeper"
GRID_SWEEPER = "hydra_plugins.jscexp_sweeper.basic.JscexpBasicSweeper"
IN_PROCESS_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
EXPLORABLE = ("learning_rate", "model.dropout", "optimizer.", "quantisation.")  # what PBT may explore
ONE_MEMBER = "pbt trains a population: sweep two or more trials that stack (-m learning_rate=1e-3,1e-2)"
# The official hydra-optuna-sweeper's options this sweeper lacks, and what to use instead.
OFFICIAL_ONLY = {
    "custom_search_space": "a Python-defined (conditional) space is not supported: give every knob in "
                           "hydra.sweeper.params or as sweep syntax",
    "search_space": "the official plugin's deprecated form: give the space as hydra.sweeper.params (sweep syntax)",
    "experiment_sequence": "not supported: the sweeper asks its study for trials itself",
}


def check_sweep(config: DictConfig) -> None:
    """The sweep's config (the command's fixed knobs, its sweeper's settings): one line if wrong."""
    group_size(config.trainer.get("vectorize"))
    if not swept(config, "mode") and not swept(config, "quantisation"):
        check_hardware(config)
    sweeper = config.hydra.sweeper
    if sweeper.get("_target_") == GRID_SWEEPER and sweeper.get("processes") is not None:
        check_processes(config)
    if sweeper.get("_target_") == OPTUNA_SWEEPER:
        _check_keys(sweeper)
        _check_search(sweeper, objectives(sweeper, str(config.mode), estimated(config))[0],
                      plain_list(config.hydra.overrides.hydra))
    if config.pbt.space:
        check_population(config)
    if not swept(config, "dataset"):  # one dataset for every job: on disk before the first, or one line
        from jscexp.data import fetch_source

        fetch_source(config.dataset)



def check_processes(config: DictConfig) -> None:
    """``hydra.sweeper.processes``: 1 or more, and only where it decides something — on Hydra's
    in-process launcher (another launcher runs the jobs itself) and without trainer.num_threads
    (the workers run one torch thread each)."""
    processes, launcher = config.hydra.sweeper.processes, config.hydra.launcher.get("_target_")
    if processes < 1:
        raise UserError(f"hydra.sweeper.processes must be 1 or more (1: every job in the sweep's process), "
                        f"got {processes}")
    if launcher != IN_PROCESS_LAUNCHER:
        raise UserError(f"hydra.sweeper.processes is for Hydra's in-process launcher, but {launcher} runs the "
                        "jobs itself: drop hydra.sweeper.processes (a joblib launcher's count is hydra.launcher.n_jobs)")
    if config.trainer.get("num_threads") is not None:
        raise UserError(f"hydra.sweeper.processes runs each job on one torch thread, but trainer.num_threads="
                        f"{config.trainer.num_threads} is set: drop one of them")


def estimated(config: DictConfig) -> tuple[str, ...]:
    """The metrics the configured hardware estimator declares, where the mode's jobs may log them."""
    from jscexp.quant.estimators import make_estimator

    hardware = config.get("hardware") or {}
    if config.get("mode") not in QUANTISED_MODES or hardware.get("estimate") is False:
        return ()
    estimator = make_estimator(hardware.get("estimator"))
    return tuple(estimator.metrics) if estimator else ()


def objectives(sweeper: DictConfig, mode: str | None = None, extra: tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
    """The search's objectives and one direction each; with ``mode``, each objective must be a
    metric a job of that mode returns (else every trial would train, then fail). Without
    ``objectives`` the search maximises best_val_acc: a ported config's ``direction: minimize``
    would minimise accuracy, so it is refused."""
    directions = list(sweeper.direction) if OmegaConf.is_list(sweeper.direction) else [sweeper.direction]
    if sweeper.objectives is None:
        if directions != ["maximize"]:
            would = (f"would {directions[0]} {DEFAULT_OBJECTIVE} (the default objective)" if len(directions) == 1
                     else f"gives {len(directions)} directions for the one default objective, {DEFAULT_OBJECTIVE}")
            raise UserError(f"hydra.sweeper.direction={_text(sweeper.direction)} without hydra.sweeper.objectives "
                            f"{would}: name the metric for each direction, e.g. hydra.sweeper.objectives=[test_loss]")
        names = [DEFAULT_OBJECTIVE]
    else:
        names = list(sweeper.objectives) if OmegaConf.is_list(sweeper.objectives) else [sweeper.objectives]
    if len(directions) == 1 and len(names) > 1:
        directions *= len(names)
    if len(directions) != len(names):
        raise UserError(f"{len(names)} objectives {names} but {len(directions)} directions {directions}")
    if bad := [d for d in directions if d not in ("maximize", "minimize")]:
        raise UserError(f"direction must be maximize or minimize, got {bad[0]}")
    returned = (*returned_metrics(mode), *extra) if mode is not None else None
    if returned is not None and (unknown := [n for n in names if n not in returned]):
        offer = f"it returns {', '.join(returned)}" if returned else "it returns no metric to search on"
        raise UserError(f"hydra.sweeper.objectives: {unknown[0]!r} is not a metric a mode={mode} job returns; {offer}")
    return names, directions


def _text(value) -> str:
    return str(list(value)).replace("'", "") if OmegaConf.is_list(value) else str(value)


def prunes(pruner: Mapping) -> bool:
    """Whether the search's pruner stops trials (Optuna's NopPruner does not)."""
    return not str(pruner.get("_target_", "")).endswith("NopPruner")


def _check_keys(o: DictConfig) -> None:
    """The sweeper's config is strict: a key its schema lacks (a typo after ``+hydra.sweeper.``,
    an official option this sweeper does not have) would otherwise be ignored."""
    valid = [f.name for f in dataclasses.fields(JscexpOptunaSweeperConf) if not f.name.startswith("_")]
    if unknown := [str(k) for k in o if k not in valid and not str(k).startswith("_")]:
        why = OFFICIAL_ONLY.get(unknown[0], f"it has {', '.join(k for k in valid if k != 'defaults')}")
        raise UserError(f"hydra.sweeper.{unknown[0]} is not a setting of jscexp's Optuna sweeper: {why}")


def sampler_seed(o: DictConfig, command: list[str] | None = None) -> int | None:
    """The search's seed, from ``hydra.sweeper.seed`` or (the official plugin's place)
    ``hydra.sweeper.sampler.seed``. Where they differ, the one the command line sets
    (``command``: its hydra overrides) wins over a sweep file's; two given together are refused,
    never one silently dropped."""
    own, node = o.get("seed"), o.sampler.get("seed")
    if own is not None and node is not None and own != node:
        keys = {str(c).split("=", 1)[0].lstrip("+~") for c in command or []}
        named = [seed for key, seed in (("hydra.sweeper.seed", own), ("hydra.sweeper.sampler.seed", node)) if key in keys]
        if len(named) == 1:
            return named[0]
        raise UserError(f"two seeds, hydra.sweeper.seed={own} and hydra.sweeper.sampler.seed={node}: give one")
    return own if own is not None else node


def optuna_class(what: str, cfg: Mapping) -> type:
    """The Optuna sampler or pruner class a ``_target_`` config names; an option the class does
    not take is one line listing those it does."""
    import inspect

    from hydra.utils import get_class

    target = cfg.get("_target_", "")
    try:
        cls = get_class(target)
    except Exception:  # noqa: BLE001 — any unimportable target means "fix the config"
        raise UserError(f"{what} _target_ '{target}' is not an Optuna class: pick one of hydra/sweeper/{what}") from None
    accepted = inspect.signature(cls).parameters
    if unknown := sorted(set(cfg) - {"_target_"} - set(accepted)):
        raise UserError(f"{cls.__name__} has no option {', '.join(unknown)}: it takes {', '.join(accepted) or 'none'}")
    return cls


def _check_search(o: DictConfig, names: list[str], command: list[str]) -> None:
    for group in ("sampler", "pruner"):
        node = o.get(group)
        if not isinstance(node, DictConfig) or "_target_" not in node:
            raise UserError(f"hydra.sweeper.{group} is a config group, not a value: choose it with "
                            f"hydra/sweeper/{group}={node} (and set its options as hydra.sweeper.{group}.<option>=…)")
        optuna_class(group, node)
    sampler_seed(o, command)
    if len(names) > 1 and prunes(o.pruner):
        raise UserError("pruning needs a single objective (Optuna cannot report intermediate values otherwise)")
    if not 0 <= o.max_failure_rate <= 1:
        raise UserError(f"hydra.sweeper.max_failure_rate must be between 0 and 1, got {o.max_failure_rate}")
    if not 0 < o.heartbeat_interval < o.grace_period:
        raise UserError("hydra.sweeper.heartbeat_interval must be above 0 and below grace_period, got "
                        f"{o.heartbeat_interval} and {o.grace_period}")
    if o.n_trials < 1 or o.n_jobs < 1:
        raise UserError(f"hydra.sweeper.n_trials and n_jobs must be 1 or more, got {o.n_trials} and {o.n_jobs}")


def check_population(config: DictConfig) -> None:
    """Population-based training: two members or more, its settings in range, its knobs explorable."""
    if config.hydra.sweeper.get("_target_") != OPTUNA_SWEEPER and grid_size(config) < 2:
        raise UserError(ONE_MEMBER)
    pbt = config.pbt
    if pbt.interval < 1:
        raise UserError(f"pbt.interval must be 1 or more epochs, got {pbt.interval}")
    if not 0 < pbt.quantile_fraction <= 0.5:
        raise UserError(f"pbt.quantile_fraction must be above 0 and at most 0.5, got {pbt.quantile_fraction}")
    if not 0 <= pbt.resample_probability <= 1:
        raise UserError(f"pbt.resample_probability must be between 0 and 1, got {pbt.resample_probability}")
    if not pbt.factors or any(f <= 0 for f in pbt.factors):
        raise UserError(f"pbt.factors must be positive numbers, got {list(pbt.factors)}")
    check_space(plain(pbt.space), config)


def grid_size(config: DictConfig) -> int:
    """How many jobs a grid sweep of this command makes."""
    size = 1
    for override in _overrides(config).values():
        if override.is_sweep_override():
            size *= len(list(override.sweep_string_iterator()))
    return size


def swept(config: DictConfig, group: str) -> bool:
    """Whether the sweep varies ``group`` (or a key under it) from job to job."""
    return any(o.is_sweep_override() and key.split(".")[0] == group for key, o in _overrides(config).items())


def _overrides(config: DictConfig) -> dict:
    """The sweep's overrides by key: its sweeper's ``params``, then the command's (which win)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = config.hydra.sweeper.get("params") or {}
    texts = [f"{k}={v}" for k, v in params.items()] + plain_list(config.hydra.overrides.task, resolve=False)
    return {o.key_or_group: o for o in OverridesParser.create().parse_overrides(texts)}


def _explorable(cfg, name: str) -> bool:
    from jscexp.quant.entries import explorable  # its quantiser classes say: torch, only for a quantisation knob

    return explorable(cfg.quantisation, name.removeprefix("quantisation."))


def check_space(space: Mapping[str, Mapping], cfg) -> None:
    """``pbt.space`` against a config, before any run exists: one line if wrong."""
    for name, r in space.items():
        if not name.startswith(EXPLORABLE) or name == "optimizer.lr" or OmegaConf.select(cfg, name) is None \
                or (name.startswith("quantisation.") and not _explorable(cfg, name)):
            raise UserError(f"pbt.space.{name}: population-based training explores learning_rate, model.dropout, "
                            "an optimizer option the config sets (optimizer.weight_decay, optimizer.momentum) "
                            "or, with mode=qat, a quantiser option its class lets a member change while it "
                            "trains (integer's width and frac_width: quantisation.weight_width)")
        if not isinstance(r, Mapping) or not {"low", "high"} <= set(r) or not float(r["low"]) <= float(r["high"]):
            raise UserError(f"pbt.space.{name} must be {{low: L, high: H}} with L <= H (and log: true for a log range)")
        if r.get("log") and float(r["low"]) <= 0:
            raise UserError(f"pbt.space.{name}: a log range needs low > 0, got {r['low']}")
        if name.startswith("quantisation.") and (cfg.mode != "qat" or not r.get("integer")):
            raise UserError(f"pbt.space.{name}: a width is explored in QAT as an integer range: mode=qat and "
                            "{low: L, high: H, integer: true}")
