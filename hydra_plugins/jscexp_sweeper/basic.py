"""``hydra/sweeper=jscexp_basic`` (selected by jscexp's ``sweeper=grid``): Hydra's basic grid
sweeper, except that one failing job doesn't stop the others, stackable jobs go out as one
stacked group, and jobs that train one by one run in worker processes, one torch thread each,
where that is faster than Hydra's launcher running them here one after another
(``hydra.sweeper.processes``).
Registered under its own name only: other Hydra apps keep Hydra's."""

# No ``from __future__ import annotations``: see config.py.
import math
from dataclasses import dataclass
from typing import Any, List, Optional

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper, BasicSweeperConf
from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, JobStatus


@dataclass
class JscexpBasicSweeperConf(BasicSweeperConf):
    _target_: str = "hydra_plugins.jscexp_sweeper.basic.JscexpBasicSweeper"
    # Jobs that train one by one, on Hydra's in-process launcher: how many worker processes run
    # them, one torch thread each. null: one per core where the first job, timed here, says that
    # is faster; N: always N; 1: one after another here (jscexp.sweep.checks.check_processes).
    processes: Optional[int] = None


ConfigStore.instance().store(group="hydra/sweeper", name="jscexp_basic", node=JscexpBasicSweeperConf,
                             provider="jscexp")


def stacking(size: int):
    """What a job must share with its stacked group mates (``jscexp.group.stack_key``): only
    where jobs may stack (it asks the quantiser and model classes, so it loads torch; a sweep
    with trainer.vectorize=off does not)."""
    if size <= 1:
        return None
    from jscexp.group import stack_key

    return stack_key


class _OutcomeLauncher:
    """Wraps the launcher: stackable jobs go out as one group job, every job's outcome goes to
    the sweep's log, and each job comes back COMPLETED carrying its outcome, so the basic
    sweeper (which re-raises the first failure) carries on with the rest."""

    def __init__(self, launcher, size: int, compose, log):
        self._launcher, self._size, self._compose, self._log = launcher, size, compose, log

    def launch(self, job_overrides, initial_job_idx: int) -> List[JobReturn]:
        from jscexp.sweep import launch

        jobs = [list(j) for j in job_overrides]
        outcomes, _ = launch(self._launcher, jobs, initial_job_idx, self._size, self._compose, stacking(self._size))
        self._log.add(outcomes)
        return [JobReturn(overrides=o.overrides, status=JobStatus.COMPLETED, _return_value=o) for o in outcomes]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._launcher, name)


class _Pool:
    """Hydra's launcher, except that lone jobs (no stacked group among them) may go to joblib's
    process pool, each with one torch thread: a tiny model's step gains little from a second
    thread, so N one-thread jobs at once on N cores finish sooner than one after another —
    when the jobs are long enough to pay for starting the workers. With ``hydra.sweeper.processes``
    unset, the job's modules are imported here and the first job runs here, this process's CPU
    until then and the job timed, and the rest go to the pool where ``pool_is_faster``;
    with it set, every batch of lone jobs goes to that many workers."""

    def __init__(self, launcher, processes: int, chosen: bool, hydra_context, task_function, config):
        from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher

        self._here, self._processes, self._chosen = launcher, processes, chosen
        self._pool = JoblibLauncher(n_jobs=processes, prefer="processes", pre_dispatch="2*n_jobs",
                                    batch_size="auto", max_nbytes=None, mmap_mode="r", verbose=0)
        self._pool.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def launch(self, job_overrides, initial_job_idx: int) -> List[JobReturn]:
        import time

        from jscexp.sweep.overrides import GROUP_KEY, override_key

        jobs = [list(j) for j in job_overrides]
        if any(GROUP_KEY in {override_key(o) for o in j} for j in jobs) or len(jobs) < 2:
            return list(self._here.launch(jobs, initial_job_idx))
        if self._chosen:
            return self._in_pool(jobs, initial_job_idx)
        import jscexp.job  # noqa: F401 — loaded here before the first job, as each worker loads it
        # this process's CPU so far (interpreter, Hydra, imports, checks): what a worker spends
        # before its first job, whether or not the grouping had loaded torch already
        start = time.process_time()
        started = time.perf_counter()
        returns = list(self._here.launch(jobs[:1], initial_job_idx))
        one = time.perf_counter() - started
        if pool_is_faster(start, one, len(jobs) - 1, self._processes):
            return returns + self._in_pool(jobs[1:], initial_job_idx + 1)
        return returns + list(self._here.launch(jobs[1:], initial_job_idx + 1))

    def _in_pool(self, jobs: List[List[str]], initial_job_idx: int) -> List[JobReturn]:
        """``jobs`` on the workers, each worker's torch on one thread (unless the job sets
        trainer.num_threads): through the job's environment, not a knob of its own, so a job is
        the same job (its run's overrides, its saved state) wherever it runs — a resumed sweep
        finds it finished."""
        from jscexp.sweep.overrides import override_key

        one_thread = [[*j, *([] if any(override_key(o) == "trainer.num_threads" for o in j)
                             else ["+hydra.job.env_set.OMP_NUM_THREADS=1"])] for j in jobs]
        return list(self._pool.launch(one_thread, initial_job_idx))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._here, name)


def pool_is_faster(start: float, one: float, rest: int, processes: int) -> bool:
    """Whether ``rest`` jobs of ``one`` seconds each end sooner on ``processes`` workers than one
    after another here. A worker first does what this process did in ``start`` CPU seconds before
    its first job — measured: 2.5 x as long in wall time, the workers starting side by side — and
    is ended at once when the sweep is over."""
    return 2.5 * start + math.ceil(rest / processes) * one < rest * one


def end_idle_workers() -> None:
    """Ends joblib's worker processes (ours, or ``+launcher=joblib``'s) once the sweep's jobs have
    all returned. Left to the interpreter's exit, each ended the ordinary way, tearing torch's
    modules down first: 2-3 s more per sweep. loky keeps its executor in a module global;
    ``get_reusable_executor()`` would replace it, not return it."""
    import sys

    if "joblib.externals.loky.reusable_executor" not in sys.modules:
        return
    from joblib.externals.loky import reusable_executor

    executor = getattr(reusable_executor, "_executor", None)
    if executor is not None:
        executor.shutdown(wait=True, kill_workers=True)


def pooled(launcher, processes: Optional[int], config, hydra_context, task_function):
    """``launcher`` with lone jobs in worker processes, where it is Hydra's in-process launcher,
    there is more than one core (or ``processes`` says how many) and no trainer.num_threads is set."""
    import os

    from hydra._internal.core_plugins.basic_launcher import BasicLauncher

    count = processes if processes is not None else len(os.sched_getaffinity(0))
    if type(launcher) is not BasicLauncher or count <= 1 or config.trainer.get("num_threads"):
        return launcher
    return _Pool(launcher, count, processes is not None, hydra_context, task_function, config)


class JscexpBasicSweeper(BasicSweeper):
    def __init__(self, max_batch_size: Optional[int], params: Optional[Any] = None, processes: Optional[int] = None):
        super().__init__(max_batch_size=max_batch_size, params=params)
        self._processes = processes

    def setup(self, *, hydra_context, task_function, config) -> None:
        from jscexp.sweep import OutcomeLog, job_composer
        from jscexp.validate import group_size

        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        log = OutcomeLog(config.hydra.sweep.dir)
        log.start()
        size = group_size(config.trainer.get("vectorize"))  # the jscexp callback checked it (one-line error)
        self._configs = job_composer(hydra_context, config)
        launcher = pooled(self.launcher, self._processes, config, hydra_context, task_function)
        self.launcher = _OutcomeLauncher(launcher, size, self._configs, log)

    def sweep(self, arguments: List[str]) -> Any:
        returns = super().sweep(arguments)
        end_idle_workers()  # every job has returned: the pool's workers have nothing left to do
        return returns

    def validate_batch_is_legal(self, batch) -> None:
        """Hydra's check (every job composes) on the configs the grouping reuses."""
        for overrides in batch:
            self._configs(list(overrides))
