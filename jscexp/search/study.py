"""Samplers, pruners and storages from config names, all Optuna's own."""

from __future__ import annotations

import os
import time
from pathlib import Path

from jscexp.errors import UserError, first_line

SAMPLERS = ("tpe", "random", "grid", "cmaes", "qmc", "nsgaii")
PRUNERS = ("none", "median", "hyperband", "successive_halving")
DEFAULT_JOURNAL = "optuna-journal.log"  # beside mlflow.db: safe for several processes on one host
STORAGE_ENV = "JSCEXP_OPTUNA_STORAGE"  # how a storage URL with a password reaches the jobs


def make_storage(url: str | None):
    """``None`` → the journal file beside the MLflow store; ``*.log`` → a journal file; else an RDB URL."""
    import optuna
    import sqlalchemy.exc
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from jscexp.tracking.store import from_env

    url = from_env(url, "the Optuna storage") or DEFAULT_JOURNAL
    if "://" not in url:
        return JournalStorage(JournalFileBackend(os.path.abspath(url)))
    for attempt in range(3):
        try:
            return optuna.storages.RDBStorage(url)
        except sqlalchemy.exc.IntegrityError:
            # Workers opening a fresh database at once race to create its tables; the loser
            # finds them made on the next try.
            time.sleep(0.5 * (attempt + 1))
        except Exception as err:  # driver missing, server down, bad URL: all mean "fix the storage"
            from jscexp.tracking.store import mask

            raise UserError(f"cannot open Optuna storage {mask(url)}: {mask(first_line(err))}") from err
    return optuna.storages.RDBStorage(url)


def storage_url(url: str | None) -> str:
    """The storage as the job sees it (absolute, so a job running elsewhere opens the same file)."""
    url = url or DEFAULT_JOURNAL
    return url if "://" in url or url.startswith("env:") else str(Path(url).resolve())


def make_sampler(name: str, seed: int | None, space: dict, n_objectives: int):
    import optuna

    if name not in SAMPLERS:
        raise UserError(f"unknown sampler '{name}': choose one of {', '.join(SAMPLERS)}")
    if name == "grid":
        grid = {}
        for key, dist in space.items():
            if isinstance(dist, optuna.distributions.CategoricalDistribution):
                grid[key] = list(dist.choices)
            elif isinstance(dist, optuna.distributions.IntDistribution) and not dist.log:
                grid[key] = list(range(dist.low, dist.high + 1, dist.step))
            else:
                raise UserError(f"sampler grid needs choice/range values, not an interval for {key}")
        return optuna.samplers.GridSampler(grid, seed=seed)
    if name == "cmaes" and n_objectives > 1:
        raise UserError("sampler cmaes is single-objective: use nsgaii or tpe for several objectives")
    return {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=seed),
        "qmc": lambda: optuna.samplers.QMCSampler(seed=seed),
        "nsgaii": lambda: optuna.samplers.NSGAIISampler(seed=seed),
    }[name]()


def make_pruner(name: str, *, warmup_epochs: int = 1, startup_trials: int = 2):
    import optuna

    if name not in PRUNERS:
        raise UserError(f"unknown pruner '{name}': choose one of {', '.join(PRUNERS)}")
    return {
        "none": lambda: optuna.pruners.NopPruner(),
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=warmup_epochs),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(),
        "successive_halving": lambda: optuna.pruners.SuccessiveHalvingPruner(),
    }[name]()


def trial_handle(study_name: str, storage: str, number: int, pruner: str, warmup: int, startup: int):
    """The ``optuna.trial.Trial`` a job reports to, looked up in the shared storage."""
    import optuna

    store = make_storage(storage)
    study = optuna.load_study(
        study_name=study_name, storage=store, pruner=make_pruner(pruner, warmup_epochs=warmup, startup_trials=startup)
    )
    trial_id = store.get_trial_id_from_study_id_trial_number(store.get_study_id_from_name(study_name), number)
    return optuna.trial.Trial(study, trial_id)
