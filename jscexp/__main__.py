"""``python -m jscexp``: the Hydra entry point. One job = one run (or one stacked group of runs).

Only Hydra is imported here; the job imports torch and friends when it starts.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import cast

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig
from omegaconf.errors import OmegaConfBaseException

from jscexp.config import plain_list, register_schema
from jscexp.errors import UserError, config_error_line, in_worker, install_interrupt_handlers
from jscexp.sweep import Outcome, trial_overrides, verdict

register_schema()  # before @hydra.main composes: conf/config.yaml starts from the typed schema


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> Outcome | list[Outcome]:
    """A job's outcome (a group job's, one per trial). Alone, its verdict is the exit code; in
    a sweep, bad input fails this job only and the sweeper carries on."""
    hc = HydraConfig.get()
    overrides = plain_list(cast(ListConfig, hc.overrides.task), resolve=False)  # a group's trials quote ${…} values
    if in_worker():  # a pool's worker: an interrupt ends its run KILLED, as in the sweep's own process
        install_interrupt_handlers()
        worker_progress_lock()
    try:
        outcome = _job(cfg, Path(hc.runtime.output_dir), overrides, Path(hc.runtime.cwd))
    except KeyboardInterrupt:
        if in_worker():  # the run is ended; the worker ends with the sweep that passed the signal on
            os._exit(130)
        raise
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        if hc.mode == RunMode.MULTIRUN:
            return [Outcome.failed(str(err)) for _ in trial_overrides(cfg, overrides)] \
                if cfg.get("vector_trials") else Outcome.failed(str(err))
        raise SystemExit(err.exit_code) from None
    if hc.mode != RunMode.MULTIRUN and (code := verdict(outcome if isinstance(outcome, list) else [outcome]).exit_code):
        raise SystemExit(code)
    return outcome


def _job(cfg: DictConfig, out_dir: Path, overrides: list[str], launch_dir: Path) -> Outcome | list[Outcome]:
    from jscexp.job import run  # torch and friends: only once a job runs

    return run(cfg, out_dir, overrides, launch_dir)


def entry() -> None:
    """``main`` with Hydra's own errors (an unknown option or key, a value of the wrong type)
    as one line and exit 2, like jscexp's (HYDRA_FULL_ERROR=1 still shows Hydra's trace), and
    an interrupt as one line and exit 130."""
    wants_trace = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra then re-raises instead of printing and exiting 1
    try:
        main()
    except (HydraException, OmegaConfBaseException) as err:
        if wants_trace:
            raise
        print(f"error: {config_error_line(err)}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the runs and trials in flight are already ended
        print("interrupted: the run in progress is recorded KILLED (its search trial FAIL); "
              "run the same command again to resume", file=sys.stderr)
        raise SystemExit(130) from None


def worker_progress_lock() -> None:
    """A worker's progress bars lock with a thread lock, not tqdm's default multiprocessing one:
    the sweep ends its idle workers at once, and each killed worker's lock was left to the
    resource tracker, which warned of leaked semaphores at the sweep's end. A worker's bars
    are its own process's."""
    import threading

    from tqdm.std import tqdm

    tqdm.set_lock(threading.RLock())


def exit_now(code: int | str | None) -> None:
    """Exits without tearing the interpreter down module by module: by now the runs are ended
    and the files written, and freeing torch's, Lightning's and MLflow's modules took 1.5–2 s
    more per command. Exit handlers still run (log files are flushed); while another thread
    is alive, a normal exit waits for it."""
    import atexit
    import threading

    if threading.active_count() > 1:
        raise SystemExit(code)
    if isinstance(code, str):  # SystemExit("text"): the text on stderr, status 1
        print(code, file=sys.stderr)
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else 0 if code is None else 1)


if __name__ == "__main__":
    install_interrupt_handlers()
    try:
        entry()
    except SystemExit as done:
        exit_now(done.code)
    exit_now(0)
