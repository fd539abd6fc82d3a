"""The sweeper: asks the study for trials, launches them as Hydra jobs, tells the results.

Optuna is imported only when a sweep starts; Hydra imports this module on every start-up.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.jscexp_sweeper.basic import FAILED_JOBS
from hydra_plugins.jscexp_sweeper.config import JscexpOptunaSweeperConf  # noqa: F401  (registers the config)
from jscexp.errors import Pruned, UserError
from jscexp.search.space import override_value, parse
from jscexp.search.study import (
    STORAGE_ENV,
    make_pruner,
    make_sampler,
    make_storage,
    storage_url,
)
from jscexp.tracking.store import mask

log = logging.getLogger(__name__)


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


class JscexpOptunaSweeper(Sweeper):
    def __init__(self, **options: Any) -> None:
        self.o = OmegaConf.create(options)
        self.job_idx = 0

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        FAILED_JOBS.clear()
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )
        self.sweep_dir = Path(config.hydra.sweep.dir)

    def _objectives(self) -> tuple[list[str], list[str]]:
        objectives = list(self.o.objectives) if OmegaConf.is_list(self.o.objectives) else [self.o.objectives]
        directions = list(self.o.direction) if OmegaConf.is_list(self.o.direction) else [self.o.direction]
        if len(directions) == 1 and len(objectives) > 1:
            directions *= len(objectives)
        if len(directions) != len(objectives):
            raise UserError(f"{len(objectives)} objectives {objectives} but {len(directions)} directions {directions}")
        bad = [d for d in directions if d not in ("maximize", "minimize")]
        if bad:
            raise UserError(f"direction must be maximize or minimize, got {bad[0]}")
        return objectives, directions

    def sweep(self, arguments: list[str]) -> Any:
        try:
            return self._sweep(arguments)
        except UserError as err:  # one line, like the jobs' own errors (Hydra would print a traceback)
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None

    def _sweep(self, arguments: list[str]) -> Any:
        import optuna

        # torch: not for --help
        from jscexp.group import grouped_jobs, job_composer, per_job_returns
        from jscexp.validate import group_size

        space, fixed = parse(OmegaConf.to_container(self.o.params) if self.o.params else None, arguments)
        if not space:
            raise UserError("nothing to search: give hydra.sweeper.params or sweep syntax such as lr=interval(1e-4,1e-1)")
        objectives, directions = self._objectives()
        if len(objectives) > 1 and self.o.pruner != "none":
            raise UserError("pruning needs a single objective (Optuna cannot report intermediate values otherwise)")
        name = self.o.study_name or self._default_study_name(space, fixed, objectives)
        spec = self.o.storage or self.config.get("optuna_storage")  # the sweeper's own, else the backend's
        url = storage_url(spec)
        if mask(url) != url:  # credentials travel to the jobs by environment, never in overrides or logs
            os.environ[STORAGE_ENV] = url
            url = f"env:{STORAGE_ENV}"
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = make_storage(spec)
        # A resumed study must not replay the suggestions of its first launch: offset the seed
        # by the trials already there (same command, same history -> same suggestions).
        seed = self.o.seed
        if seed is not None and name in optuna.get_all_study_names(storage):
            seed += len(optuna.load_study(study_name=name, storage=storage).trials)
        study = optuna.create_study(
            study_name=name,
            storage=storage,
            sampler=make_sampler(self.o.sampler, seed, space, len(objectives)),
            pruner=make_pruner(self.o.pruner, warmup_epochs=self.o.pruner_warmup_epochs,
                               startup_trials=self.o.pruner_startup_trials),
            directions=directions,
            load_if_exists=True,
        )
        study.set_user_attr("objectives", objectives)
        self._share_parent(name)
        log.info(f"Optuna study '{name}' in {mask(url)}: {self._count(study)}/{self.o.n_trials} trials done")
        failures: list[str] = []
        # Each launch asks at most for what was missing when it started, so trials that keep
        # failing end the sweep instead of looping; the next launch retries them.
        budget = self.o.n_trials - self._count(study)
        while budget > 0 and (left := self.o.n_trials - self._count(study)) > 0:
            trials = [self._ask(study, space) for _ in range(min(self.o.n_jobs, left, budget))]
            budget -= len(trials)
            trials = [t for t in trials if not self._surplus(study, t)]
            to_run = [t for t in trials if not self._reuse_duplicate(study, t)]
            if not to_run:
                continue
            jobs = [
                [*fixed, *(f"{k}={override_value(v)}" for k, v in t.params.items()),
                 f"+optuna.study={override_value(name)}", f"+optuna.storage={override_value(url)}",
                 f"+optuna.trial={t.number}", f"+optuna.pruner={self.o.pruner}",
                 f"+optuna.warmup={self.o.pruner_warmup_epochs}", f"+optuna.startup={self.o.pruner_startup_trials}"]
                for t in to_run
            ]
            # with trainer.vectorize, trials that can share a stacked model go out as one job
            launched, members = grouped_jobs(jobs, group_size(self.config.trainer.get("vectorize")),
                                             job_composer(self.hydra_context, self.config))
            returns = per_job_returns(self.launcher.launch(launched, initial_job_idx=self.job_idx), members, jobs)
            self.job_idx += len(launched)
            for trial, job, ret in zip(to_run, jobs, returns):
                if failed := self._tell(study, trial, ret, objectives):
                    failures += failed
                    FAILED_JOBS.append(" ".join(job))
        return self._report(study, objectives, failures)

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
        digest = hashlib.sha1(repr((sorted(map(str, space.items())), sorted(fixed), objectives)).encode())
        return f"{self.config.experiment}-{digest.hexdigest()[:8]}"

    @staticmethod
    def _live_states():
        """Trial states that count toward n_trials (finished or in someone's hands)."""
        from optuna.trial import TrialState

        return (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)

    def _count(self, study) -> int:
        return len(study.get_trials(deepcopy=False, states=self._live_states()))

    def _surplus(self, study, trial) -> bool:
        """Several workers may ask at once when one trial is left: the later numbers stand down."""
        from optuna.trial import TrialState

        live = study.get_trials(deepcopy=False, states=self._live_states())
        before = sum(t.number < trial.number for t in live)
        if before < self.o.n_trials:
            return False
        trial.set_user_attr("fail_reason", "surplus: another worker took the last slot of n_trials")
        tell(study, trial, state=TrialState.FAIL)
        return True

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

    @staticmethod
    def _tell(study, trial, ret, objectives: list[str]) -> list[str]:
        from hydra.core.utils import JobStatus
        from optuna.trial import TrialState

        value = ret._return_value
        if ret.status == JobStatus.COMPLETED:
            metrics = getattr(value, "metrics", {objectives[0]: value} if len(objectives) == 1 else {})
            missing = [o for o in objectives if o not in metrics]
            if not missing:
                tell(study, trial, [float(metrics[o]) for o in objectives])
                return []
            reason = f"the job did not return {', '.join(missing)} (it returned {', '.join(sorted(metrics))})"
        elif isinstance(value, Pruned):
            tell(study, trial, state=TrialState.PRUNED)
            return []
        else:
            reason = f"{type(value).__name__}: {value}"
        trial.set_user_attr("fail_reason", reason[:1000])
        tell(study, trial, state=TrialState.FAIL)
        log.warning(f"trial {trial.number} failed: {reason}")
        return [f"trial {trial.number}: {reason}"]

    def _report(self, study, objectives: list[str], failures: list[str]):
        from optuna.trial import TrialState

        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        results: dict[str, Any] = {"study_name": study.study_name, "objectives": objectives,
                                   "n_complete": len(complete)}
        if complete and len(objectives) == 1:
            results.update(best_params=study.best_params, best_value=study.best_value)
        elif complete:
            results["pareto_front"] = [{"number": t.number, "params": t.params, "values": t.values}
                                       for t in study.best_trials]
        if failures:
            results["failed"] = failures
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        path = self.sweep_dir / "optimization_results.yaml"
        OmegaConf.save(OmegaConf.create(results), path)
        log.info(f"Optuna results in {path}:\n{OmegaConf.to_yaml(results)}")
        self._attach_to_parent(path, study.study_name)
        return results

    def _share_parent(self, study_name: str) -> str | None:
        """Workers on one study log under one MLflow parent run (jscexp.tracking.shared)."""
        from jscexp.tracking.shared import adopt_study_parent
        from jscexp.tracking.store import tracking_uri

        return adopt_study_parent(tracking_uri(self.config.mlflow.tracking_uri), study_name)

    def _attach_to_parent(self, path: Path, study_name: str) -> None:
        parent = self._share_parent(study_name)  # again: every worker has tagged its parent by now
        if not parent:
            return
        from jscexp.tracking.store import client, tracking_uri

        client(tracking_uri(self.config.mlflow.tracking_uri)).log_artifact(parent, str(path))
