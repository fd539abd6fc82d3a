"""The sweeper: asks the study for trials, launches them as Hydra jobs, tells the results.

Optuna is imported only when a sweep starts; Hydra imports this module on every start-up.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf

import hydra_plugins.jscexp_sweeper.config  # noqa: F401  (registers the config)
from hydra_plugins.jscexp_sweeper.basic import end_idle_workers, stacking
from jscexp.errors import UserError, deferred_interrupts
from jscexp.search.liveness import Heartbeat, beating, fail_stale, give_up
from jscexp.search.space import parse
from jscexp.search.study import (
    STORAGE_ENV,
    finished_count,
    grid,
    is_grid,
    live_count,
    make_pruner,
    make_sampler,
    make_storage,
    param_overrides,
    storage_url,
    summary,
    surplus,
    tell,
    tell_outcome,
)
from jscexp.sweep import checks
from jscexp.sweep.overrides import override_value
from jscexp.tracking.store import mask

log = logging.getLogger(__name__)


class JscexpOptunaSweeper(Sweeper):
    def __init__(self, **options: Any) -> None:
        self.o = OmegaConf.create(options)
        self.job_idx = 0

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        from jscexp.sweep import OutcomeLog, job_composer

        self.config, self.hydra_context = config, hydra_context
        self._configs = job_composer(hydra_context, config)
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )
        self.sweep_dir = Path(config.hydra.sweep.dir)
        self.outcomes = OutcomeLog(self.sweep_dir)
        self.outcomes.start()

    def sweep(self, arguments: list[str]) -> Any:
        try:
            return self._sweep(arguments)
        except UserError as err:  # one line, like the jobs' own errors (Hydra would print a traceback)
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None

    def _sweep(self, arguments: list[str]) -> Any:
        space, fixed = parse(OmegaConf.to_container(self.o.params) if self.o.params else None, arguments)
        if not space:
            raise UserError("nothing to search: give hydra.sweeper.params or sweep syntax such as lr=interval(1e-4,1e-1)")
        objectives, directions = checks.objectives(self.o)  # checked against the mode before the sweep began
        self.seed = checks.sampler_seed(self.o, list(self.config.hydra.overrides.hydra))
        self._cap_at_grid(space)
        study, url = self._open_study(space, fixed, objectives, directions)
        self._share_parent(study.study_name)
        log.info(f"Optuna study '{study.study_name}' in {mask(url)}: {live_count(study)}/{self.o.n_trials} trials done")
        self._run_trials(study, space, (fixed, self._plumbing(study.study_name, url, space, objectives)), objectives)
        end_idle_workers()  # every trial has returned: +launcher=joblib's workers have nothing left to do
        return self._report(study, objectives)

    def _cap_at_grid(self, space: dict) -> None:
        """A grid search ends with its grid: more trials would only repeat points."""
        if not is_grid(self.o.sampler):
            return
        size = 1
        for points in grid(space).values():
            size *= len(points)
        if self.o.n_trials > size:
            log.warning(f"hydra.sweeper.n_trials={self.o.n_trials} is more than the grid's {size} points: "
                        f"the search stops at {size}")
            self.o.n_trials = size

    def _pruner_cfg(self) -> dict:
        return OmegaConf.to_container(self.o.pruner, resolve=True)

    def _open_study(self, space, fixed, objectives, directions):
        import optuna

        name = self.o.study_name or self._default_study_name(space, fixed, objectives)
        # the sweeper's own storage, else the backend's; resolved here, before any job changes folder
        url = storage_url(self.o.storage or self.config.get("optuna_storage"))
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = make_storage(url)
        if mask(url) != url:  # credentials travel to the jobs by environment, never in overrides or logs
            os.environ[STORAGE_ENV] = url
            url = f"env:{STORAGE_ENV}"
        # A resumed study must not replay the suggestions of its first launch: offset the seed
        # by the trials already there (same command, same history -> same suggestions).
        seed = self.seed
        if seed is not None and name in optuna.get_all_study_names(storage):
            seed += len(optuna.load_study(study_name=name, storage=storage).trials)
        study = optuna.create_study(
            study_name=name, storage=storage, directions=directions, load_if_exists=True,
            sampler=make_sampler(OmegaConf.to_container(self.o.sampler, resolve=True), seed, space, len(objectives)),
            pruner=make_pruner(self._pruner_cfg()),
        )
        study.set_user_attr("objectives", objectives)
        _name_objectives(study, objectives)
        return study, url

    def _plumbing(self, name: str, url: str, space: dict, objectives: list[str]) -> list[str]:
        """What every trial's job needs to find its study (and its pruner) again; with a
        pruner, how a stacked group asks for trials to fill the slices it frees."""
        extra = []
        if checks.prunes(self._pruner_cfg()):
            extra.append(f"+optuna.pruner={override_value(self._pruner_cfg())}")
            if self.o.refill:
                extra.append(f"+optuna.refill={override_value(str(self._refill_spec(name, url, space, objectives)))}")
        return [f"+optuna.study={override_value(name)}", f"+optuna.storage={override_value(url)}", *extra]

    def _refill_spec(self, name: str, url: str, space: dict, objectives: list[str]) -> Path:
        from optuna.distributions import distribution_to_json

        from jscexp.search.refill import RefillSpec

        spec = RefillSpec(name, url, {k: distribution_to_json(d) for k, d in space.items()},
                          OmegaConf.to_container(self.o.sampler, resolve=True), self.seed, self._pruner_cfg(),
                          self.o.n_trials, objectives, self.o.heartbeat_interval, self.o.max_retries, sorted(space))
        return spec.save(self.sweep_dir.resolve() / f"refill.{os.getpid()}.json")

    def _run_trials(self, study, space, common: tuple[list[str], list[str]], objectives: list[str]) -> None:
        # Each launch asks at most for what was missing when it started, and for the retries of
        # other workers' lost trials, so trials that keep failing end the sweep instead of looping;
        # the next launch retries them. Other workers' running trials are waited for: should
        # their worker die, this one retries them, so the study still reaches n_trials.
        budget = self.o.n_trials - live_count(study) + self._fail_stale(study, objectives)
        told: list = []
        while True:
            while budget > 0 and (left := self.o.n_trials - live_count(study)) > 0:
                asked = self._ask_batch(study, space, min(self.o.n_jobs, left, budget))
                budget -= len(asked)
                trials = [t for t in asked if not surplus(study, t, self.o.n_trials)]
                to_run, twins = _twins([t for t in trials if not self._reuse_duplicate(study, t)]) \
                    if self.o.dedup else (trials, [])
                try:
                    if to_run:
                        told += self._launch(study, to_run, common, objectives)
                finally:
                    _tell_twins(study, twins)
                failed = sum(not o.ok for o in told)
                if told and failed / len(told) > self.o.max_failure_rate:
                    log.error(f"stopping the search: {failed} of {len(told)} trials failed, more than "
                              f"hydra.sweeper.max_failure_rate={self.o.max_failure_rate}")
                    return
                budget += self._fail_stale(study, objectives)  # another worker's lost trials, before the next ask
            if finished_count(study) >= self.o.n_trials or not beating(study):
                break
            time.sleep(self.o.heartbeat_interval)  # other workers' trials still run: wait, in case they die
            budget += self._fail_stale(study, objectives)
        if (done := finished_count(study)) < self.o.n_trials:
            print(f"warning: study '{study.study_name}' holds {done} of hydra.sweeper.n_trials={self.o.n_trials} "
                  "finished trials (the rest failed; see 'failed' in optimization_results.yaml): "
                  "the same command again retries them", file=sys.stderr)

    def _ask_batch(self, study, space, n: int) -> list:
        asked: list = []
        try:  # an interrupt between the ask and the launch must not leave them RUNNING
            for _ in range(n):
                with deferred_interrupts():
                    asked.append(self._ask(study, space))
        except BaseException as err:
            give_up(study, asked, err, self.o.max_retries)
            raise
        return asked

    def _launch(self, study, trials: list, common: tuple[list[str], list[str]], objectives: list[str]) -> list:
        """Runs ``trials`` as jobs (stacked where they can share a model) and tells the study
        each one's outcome; should the launch itself break off, its trials are told FAIL."""

        from jscexp.sweep import launch
        from jscexp.validate import group_size

        size = group_size(self.config.trainer.get("vectorize"))
        fixed, plumbing = common
        jobs = [[*fixed, *param_overrides(t), *plumbing, f"+optuna.trial={t.number}", *self._lineage(t)]
                for t in trials]
        try:
            with Heartbeat(study._storage, [t._trial_id for t in trials], self.o.heartbeat_interval):
                outcomes, launched = launch(self.launcher, jobs, self.job_idx, size, self._configs, stacking(size))
        except BaseException as err:  # Ctrl-C, SIGTERM, a launcher's own error: no trial stays RUNNING
            self._tell_ended(study, trials, getattr(err, "outcomes", []), objectives)
            give_up(study, trials, err, self.o.max_retries)
            raise
        self.job_idx += launched
        # after the launched trials' outcomes come those a group job asked for and told itself
        outcomes = [*(tell_outcome(study, trial, outcome, objectives) for trial, outcome in zip(trials, outcomes)),
                    *outcomes[len(trials):]]
        self.outcomes.add(outcomes)
        return outcomes

    def _tell_ended(self, study, trials: list, ended: list, objectives: list[str]) -> None:
        """An interrupted group job's trials that had ended (pruned, finished) are told so; only
        the rest are failed and retried."""
        from jscexp.sweep import Status
        from jscexp.sweep.overrides import override_pairs

        by_number = {int(t.number): t for t in trials}
        for outcome in ended:
            number = override_pairs(outcome.overrides).get("optuna.trial")
            if outcome.status != Status.INTERRUPTED and number is not None and int(number) in by_number:
                self.outcomes.add([tell_outcome(study, by_number[int(number)], outcome, objectives)])

    @staticmethod
    def _lineage(trial) -> list[str]:
        """A retry's job says which trial it retries (its run is tagged with it)."""
        retry_of = trial.user_attrs.get("retry_of")
        return [] if retry_of is None else [f"+optuna.retry_of={int(retry_of)}"]

    def _fail_stale(self, study, objectives: list[str]) -> int:
        """Trials whose worker died (no heartbeat for grace_period): FAIL, their runs KILLED,
        retried; one whose run had finished is told COMPLETE with its values. Returns how many
        retries it enqueued (the asks they need)."""
        from jscexp.tracking.shared import end_lost_trial_run, finished_trial_run
        from jscexp.tracking.store import tracking_uri

        uri = tracking_uri(self.config.mlflow.tracking_uri)

        def finished(trial):
            found = finished_trial_run(uri, self.config.experiment, study.study_name, trial.number, objectives)
            if found is None:
                return None
            study._storage.set_trial_user_attr(trial._trial_id, "mlflow_run_id", found[0])
            return found[1]

        retried = 0
        for lost in fail_stale(study, grace=self.o.grace_period, max_retries=self.o.max_retries, finished=finished):
            log.warning(f"trial {lost.number} {lost.reason}" + ("; retrying it" if lost.retry else ""))
            if not lost.completed:
                end_lost_trial_run(uri, self.config.experiment, study.study_name, lost.number, lost.reason)
            retried += lost.retry
        return retried

    @staticmethod
    def _ask(study, space):
        try:
            return study.ask(space)
        except ValueError as err:  # Optuna refuses to change a categorical's choices in a study
            raise UserError(
                f"study '{study.study_name}' was made for another search space ({err}): "
                "keep its parameters or pass a new hydra.sweeper.study_name"
            ) from None

    def _default_study_name(self, space, fixed, objectives) -> str:
        """``<experiment>-<searched knobs>-<hash of the search>``: readable, and unique per search."""
        from jscexp.tracking.names import short_key

        digest = hashlib.sha1(repr((sorted(map(str, space.items())), sorted(fixed), objectives)).encode())
        knobs = "+".join(short_key(k) for k in sorted(space))
        return f"{self.config.experiment}-{knobs}-{digest.hexdigest()[:6]}"

    def _reuse_duplicate(self, study, trial) -> bool:
        from optuna.trial import TrialState

        if not self.o.dedup:
            return False
        for done in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if done.params == trial.params and done.number != trial.number:
                trial.set_user_attr("duplicate_of", done.number)
                tell(study, trial, done.values)
                log.info(f"trial {trial.number} repeats trial {done.number}: reused its result")
                return True
        return False

    def _report(self, study, objectives: list[str]):
        results = summary(study, objectives)
        if failures := [o.line() for o in self.outcomes.read() if not o.ok]:
            results["failed"] = failures
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        path = self.sweep_dir / "optimization_results.yaml"
        OmegaConf.save(OmegaConf.create(results), path)
        log.info(f"Optuna results in {path}:\n{OmegaConf.to_yaml(results)}")
        self._attach_to_parent(path, study.study_name)
        return results

    def _share_parent(self, study_name: str, *, absorb: bool = False) -> str | None:
        """Workers on one study log under one MLflow parent run (jscexp.tracking.shared)."""
        from jscexp.tracking.shared import adopt_study_parent
        from jscexp.tracking.store import tracking_uri

        return adopt_study_parent(tracking_uri(self.config.mlflow.tracking_uri), study_name, absorb=absorb)

    def _attach_to_parent(self, path: Path, study_name: str) -> None:
        # again: every worker has tagged its parent by now; a dead worker's is merged in too
        parent = self._share_parent(study_name, absorb=True)
        if not parent:
            return
        from jscexp.tracking.store import client, tracking_uri

        client(tracking_uri(self.config.mlflow.tracking_uri)).log_artifact(parent, str(path))


def _twins(trials: list) -> tuple[list, list[tuple]]:
    """Trials asked together with identical params: the first of each trains, the others are
    ``(twin, first)`` pairs told its result after the launch (as dedup does across batches)."""
    first: dict[str, Any] = {}
    twins = []
    for trial in trials:
        key = repr(sorted(trial.params.items()))
        if key in first:
            twins.append((trial, first[key]))
        else:
            first[key] = trial
    return list(first.values()), twins


def _tell_twins(study, twins: list[tuple]) -> None:
    from optuna.trial import TrialState

    for twin, original in twins:
        done = study._storage.get_trial(original._trial_id)
        twin.set_user_attr("duplicate_of", original.number)
        if done.state == TrialState.COMPLETE:
            tell(study, twin, done.values)
            log.info(f"trial {twin.number} repeats trial {original.number} (asked together): reused its result")
        elif done.state == TrialState.PRUNED:
            tell(study, twin, state=TrialState.PRUNED)
        else:
            twin.set_user_attr("fail_reason", f"repeats trial {original.number}, which ended {done.state.name}")
            tell(study, twin, state=TrialState.FAIL)


def _name_objectives(study, objectives: list[str]) -> None:
    """The objectives' names on the study: optuna-dashboard's axes say ``best_val_acc``, not
    ``Objective 0``."""
    import warnings

    with warnings.catch_warnings():  # experimental in Optuna
        warnings.simplefilter("ignore")
        if study.metric_names != objectives:
            study.set_metric_names(objectives)
