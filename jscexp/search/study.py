"""Samplers, pruners and storages from config names, all Optuna's own; telling a study how a trial ended."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from jscexp.errors import UserError, first_line

DEFAULT_JOURNAL = "optuna-journal.log"  # beside mlflow.db: safe for several processes on one host
STORAGE_ENV = "JSCEXP_OPTUNA_STORAGE"  # how a storage URL with a password reaches the jobs
log = logging.getLogger(__name__)


def make_storage(url: str | None):
    """``None`` → the journal file beside the MLflow store; ``*.log`` → a journal file; else an RDB URL."""
    import sqlalchemy.exc
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from jscexp.tracking.store import from_env

    url = from_env(url, "the Optuna storage") or DEFAULT_JOURNAL
    if "://" not in url:
        return JournalStorage(JournalFileBackend(os.path.abspath(url)))
    from jscexp.search.reconnect import reconnecting_rdb

    for attempt in range(4):
        try:
            return reconnecting_rdb(url)
        except Exception as err:  # driver missing, server down, bad URL: all mean "fix the storage"
            # Workers opening a fresh database at once race to create its tables and types (a
            # duplicate key, or PostgreSQL's "type ... already exists"); the loser finds them
            # made on the next try.
            race = isinstance(err, sqlalchemy.exc.IntegrityError) or (
                isinstance(err, sqlalchemy.exc.ProgrammingError) and "already exists" in str(err))
            if not race or attempt == 3:
                from jscexp.tracking.store import mask

                raise UserError(f"cannot open Optuna storage {mask(url)}: {mask(first_line(err))}") from err
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable: the last attempt returns or raises")


def storage_url(url: str | None) -> str:
    """The storage as every job sees it, resolved once where the sweep starts: a journal file
    or a SQLite database by its absolute path, so a job in another folder (``hydra.job.chdir``,
    a cluster node) opens the same study, not an empty one of its own."""
    url = url or DEFAULT_JOURNAL
    if url.startswith("env:"):
        return url
    if "://" not in url:
        return str(Path(url).resolve())
    from jscexp.tracking.store import absolute_sqlite

    return absolute_sqlite(url)


def _instantiate(what: str, cfg: dict, **extra):
    """An Optuna sampler or pruner from its ``_target_`` config; a bad keyword is one line."""
    import inspect

    from hydra.utils import instantiate

    from jscexp.sweep.checks import optuna_class

    cls = optuna_class(what, cfg)
    accepted = inspect.signature(cls).parameters
    try:
        return instantiate(cfg, **{k: v for k, v in extra.items() if k in accepted}, _convert_="all")
    except Exception as err:  # noqa: BLE001 — Optuna's own check of a value, e.g. a negative reduction_factor
        raise UserError(f"{what} {cls.__name__}: {first_line(err.__cause__ or err)}") from None


def make_sampler(cfg: dict, seed: int | None, space: dict, n_objectives: int):
    """The sampler of ``hydra/sweeper/sampler`` (its config) with ``seed`` (the search's:
    ``checks.sampler_seed``, in place of the node's own); GridSampler gets the search's grid."""
    if cfg.get("_target_", "").endswith("CmaEsSampler") and n_objectives > 1:
        raise UserError("sampler cmaes is single-objective: use nsgaii or tpe for several objectives")
    cfg = {k: v for k, v in cfg.items() if k != "seed"}
    return _instantiate("sampler", cfg, seed=seed, search_space=grid(space) if is_grid(cfg) else None)


def is_grid(sampler: dict) -> bool:
    return str(sampler.get("_target_", "")).endswith("GridSampler")


def grid(space: dict) -> dict:
    """The search's points per knob, as Hydra's grid sweeper enumerates the same text."""
    import optuna.distributions as d

    points = {}
    for key, dist in space.items():
        if isinstance(dist, d.CategoricalDistribution):
            points[key] = list(dist.choices)
        elif isinstance(dist, d.IntDistribution | d.FloatDistribution) and dist.step is not None and not dist.log:
            n = round((dist.high - dist.low) / dist.step) + 1
            points[key] = [_point(dist.low + i * dist.step) for i in range(n)]
        else:
            raise UserError(f"sampler grid needs choice/range values, not an interval for {key}")
    return points


def _point(value: float | int) -> float | int:
    """A stepped value without float dust (0.30000000000000004 → 0.3), as Hydra prints it."""
    return round(value, 12) if isinstance(value, float) else value


def param_overrides(trial) -> list[str]:
    """A trial's parameters as its job's overrides (a stepped value as Hydra's grid sweeper
    would write it: ``model.dropout=0.6``, not ``0.6000000000000001``)."""
    from jscexp.sweep.overrides import override_value

    return [f"{k}={override_value(_point(v) if getattr(trial.distributions[k], 'step', None) else v)}"
            for k, v in trial.params.items()]


def make_pruner(cfg: dict):
    """The pruner of ``hydra/sweeper/pruner`` (its config)."""
    return _instantiate("pruner", cfg)


def trial_handle(study_name: str, storage: str, number: int, pruner: dict):
    """The ``optuna.trial.Trial`` a job reports to, looked up in the shared storage."""
    import optuna

    store = make_storage(storage)
    study = optuna.load_study(study_name=study_name, storage=store, pruner=make_pruner(pruner))
    trial_id = store.get_trial_id_from_study_id_trial_number(store.get_study_id_from_name(study_name), number)
    return optuna.trial.Trial(study, trial_id)


def tell(study, trial, values=None, state=None) -> None:
    """``study.tell`` for ask-and-tell use.

    GridSampler calls ``study.stop()`` once its grid is used up, which Optuna only allows
    inside ``optimize``; the result is already stored by then (Optuna writes it in a
    ``finally``), so that one error is harmless here.
    """
    try:
        study.tell(trial, values, state=state)
    except RuntimeError as err:
        if "Study.stop" not in str(err):
            raise


def tell_outcome(study, trial, outcome, objectives: list[str]):
    """Tells the study how ``trial`` ended; returns its outcome (FAILED when its job did not
    return every objective: never a made-up value)."""
    from optuna.trial import TrialState

    from jscexp.sweep import Outcome, Status

    if outcome.run_id:  # the run carries the trial's number; the trial, its run's id
        trial.set_user_attr("mlflow_run_id", outcome.run_id)
    if outcome.status == Status.PRUNED:
        tell(study, trial, state=TrialState.PRUNED)
        return outcome
    if outcome.ok:
        try:
            values = outcome.objective(objectives)
        except KeyError as err:
            outcome = Outcome(Status.FAILED, err.args[0], outcome.metrics, outcome.overrides, outcome.run_id)
        else:
            tell(study, trial, values)
            return outcome
    trial.set_user_attr("fail_reason", outcome.reason)
    tell(study, trial, state=TrialState.FAIL)
    log.warning(f"trial {trial.number} failed: {outcome.reason}")
    return outcome


def _live(study) -> list:
    """Trials that count toward n_trials (finished or in someone's hands); a WAITING
    (enqueued: a retry) trial does not: the next ask runs it."""
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING))


def live_count(study) -> int:
    return len(_live(study))


def finished_count(study) -> int:
    """Trials that reached an end n_trials counts: COMPLETE or PRUNED."""
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def surplus(study, trial, n_trials: int) -> bool:
    """Several askers may ask at once when one trial is left: the later numbers stand down
    (told FAIL, saying so)."""
    from optuna.trial import TrialState

    if sum(t.number < trial.number for t in _live(study)) < n_trials:
        return False
    trial.set_user_attr("fail_reason", "surplus: another worker took the last slot of n_trials")
    tell(study, trial, state=TrialState.FAIL)
    return True


def summary(study, objectives: list[str]) -> dict:
    """``optimization_results.yaml``: the official plugin's keys (``name``, ``best_params`` and
    ``best_value``, or ``solutions`` — each non-dominated trial once, a reused duplicate left
    out), then jscexp's (``study_name``, ``objectives``, ``n_complete``; a solution's ``number``)."""
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    results: dict = {"name": "optuna"}
    if complete and len(objectives) == 1:
        results.update(best_params=study.best_params, best_value=study.best_value)
    elif complete:
        results["solutions"] = [{"params": t.params, "values": t.values, "number": t.number}
                                for t in study.best_trials if "duplicate_of" not in t.user_attrs]
    return {**results, "study_name": study.study_name, "objectives": objectives, "n_complete": len(complete)}
