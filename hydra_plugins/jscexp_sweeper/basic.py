"""``hydra/sweeper=jscexp_basic`` (selected by jscexp's ``sweeper=grid``): Hydra's basic grid
sweeper, except that one failing job doesn't stop the others and stackable jobs go out as
one stacked group. Registered under its own name only: other Hydra apps keep Hydra's."""

# No ``from __future__ import annotations``: see config.py.
from dataclasses import dataclass
from typing import Any, List

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper, BasicSweeperConf
from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, JobStatus


@dataclass
class JscexpBasicSweeperConf(BasicSweeperConf):
    _target_: str = "hydra_plugins.jscexp_sweeper.basic.JscexpBasicSweeper"


ConfigStore.instance().store(group="hydra/sweeper", name="jscexp_basic", node=JscexpBasicSweeperConf,
                             provider="jscexp")


class _OutcomeLauncher:
    """Wraps the launcher: stackable jobs go out as one group job, every job's outcome goes to
    the sweep's log, and each job comes back COMPLETED carrying its outcome, so the basic
    sweeper (which re-raises the first failure) carries on with the rest."""

    def __init__(self, launcher, size: int, compose, log):
        self._launcher, self._size, self._compose, self._log = launcher, size, compose, log

    def launch(self, job_overrides, initial_job_idx: int) -> List[JobReturn]:
        from jscexp.group import stack_blocker
        from jscexp.sweep import launch

        jobs = [list(j) for j in job_overrides]
        outcomes, _ = launch(self._launcher, jobs, initial_job_idx, self._size, self._compose, stack_blocker)
        self._log.add(outcomes)
        return [JobReturn(overrides=o.overrides, status=JobStatus.COMPLETED, _return_value=o) for o in outcomes]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._launcher, name)


class JscexpBasicSweeper(BasicSweeper):
    def setup(self, *, hydra_context, task_function, config) -> None:
        from jscexp.sweep import OutcomeLog, job_composer
        from jscexp.validate import group_size

        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        log = OutcomeLog(config.hydra.sweep.dir)
        log.start()
        size = group_size(config.trainer.get("vectorize"))  # the jscexp callback checked it (one-line error)
        self._configs = job_composer(hydra_context, config)
        self.launcher = _OutcomeLauncher(self.launcher, size, self._configs, log)

    def validate_batch_is_legal(self, batch) -> None:
        """Hydra's check (every job composes) on the configs the grouping reuses."""
        for overrides in batch:
            self._configs(list(overrides))
