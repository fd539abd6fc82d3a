"""``hydra/sweeper=jscexp_basic`` (jscexp's default): Hydra's basic grid sweeper, except that
one failing job doesn't stop the others; the failures are summarised at the end."""

# No ``from __future__ import annotations``: see config.py.
import logging
from dataclasses import dataclass
from typing import Any, List

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper, BasicSweeperConf
from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, JobStatus


@dataclass
class JscexpBasicSweeperConf(BasicSweeperConf):
    _target_: str = "hydra_plugins.jscexp_sweeper.basic.JscexpBasicSweeper"


# Also under Hydra's own name "basic", which is Hydra's default sweeper: every multirun gets
# this behaviour, and a sweep file may still override hydra/sweeper (a defaults-list override
# in conf/config.yaml would win over the sweep file's).
for _name in ("jscexp_basic", "basic"):
    ConfigStore.instance().store(group="hydra/sweeper", name=_name, node=JscexpBasicSweeperConf, provider="jscexp")


log = logging.getLogger(__name__)
# Failures of the last sweep in this process; ``python -m jscexp`` exits 1 when there are any.
FAILURES: List[str] = []
# The overrides of the last sweep's failed jobs (or search trials), recorded here in the sweeper's
# process whatever the launcher (on_job_end runs in the job's own process, a joblib or submitit
# worker): the jscexp callback marks the sweep's parent run FAILED with them.
FAILED_JOBS: List[str] = []


class _KeepGoing:
    """Wraps the launcher: a failed job is recorded and handed on as an empty success, so the
    basic sweeper (which re-raises the first failure) carries on with the rest."""

    def __init__(self, launcher, failures: List[str]):
        self._launcher, self._failures = launcher, failures

    def launch(self, job_overrides, initial_job_idx: int) -> List[JobReturn]:
        results = self._launcher.launch(job_overrides, initial_job_idx=initial_job_idx)
        for idx, ret in enumerate(results):
            if ret.status == JobStatus.FAILED:
                err = ret._return_value
                self._failures.append(f"#{initial_job_idx + idx} ({' '.join(ret.overrides or [])}): "
                                      f"{type(err).__name__}: {err}")
                FAILED_JOBS.append(" ".join(ret.overrides or []))
                ret.status, ret._return_value = JobStatus.COMPLETED, None
        return results

    def __getattr__(self, name: str) -> Any:
        return getattr(self._launcher, name)


class _Vectorise:
    """Wraps the launcher: jobs that differ only in knobs a stacked model can vary per trial
    go out as one job (``jscexp.group``)."""

    def __init__(self, launcher, size: int, compose):
        self._launcher, self._size, self._compose = launcher, size, compose

    def launch(self, job_overrides, initial_job_idx: int) -> List[JobReturn]:
        from jscexp.group import grouped_jobs, per_job_returns

        jobs = [list(j) for j in job_overrides]
        if self._size == 1:
            return self._launcher.launch(jobs, initial_job_idx)
        launched, members = grouped_jobs(jobs, self._size, self._compose)
        if len(launched) < len(jobs):
            log.info(f"trainer.vectorize: {len(jobs)} jobs go out as {len(launched)} (stacked trials share a job)")
        return per_job_returns(self._launcher.launch(launched, initial_job_idx), members, jobs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._launcher, name)


class JscexpBasicSweeper(BasicSweeper):
    def setup(self, *, hydra_context, task_function, config) -> None:
        from jscexp.group import job_composer
        from jscexp.validate import group_size

        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        FAILURES.clear()
        FAILED_JOBS.clear()
        size = group_size(config.trainer.get("vectorize"))  # the jscexp callback checked it (one-line error)
        vectorise = _Vectorise(self.launcher, size, job_composer(hydra_context, config))
        self.launcher = _KeepGoing(vectorise, FAILURES)

    def sweep(self, arguments: List[str]) -> Any:
        returns = super().sweep(arguments)
        if FAILURES:
            total = sum(len(batch) for batch in returns)
            log.error(f"{len(FAILURES)} of {total} jobs failed (the others finished):\n  " + "\n  ".join(FAILURES))
        return returns
