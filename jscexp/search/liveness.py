"""Trials whose worker died: heartbeats while they run, and failing and retrying stale ones.

Optuna's own heartbeat lives in ``RDBStorage`` only, and ``study.optimize`` records it; with
ask-and-tell and the journal file (the default storage) the sweeper beats itself: a thread
writes the time into each running trial's system attributes every ``interval`` seconds. A
RUNNING trial whose last beat is older than ``grace`` seconds lost its worker (SIGKILL, OOM,
preemption): any worker that asks for trials tells it FAIL with the reason and enqueues a retry
with the same parameters, up to ``max_retries`` times (``retry_of`` / ``retries`` user
attributes keep the lineage). Works on every Optuna storage. Trials an interrupt stopped are
retried the same way, so running the same command again finishes them.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass

HEARTBEAT = "jscexp:heartbeat"
log = logging.getLogger(__name__)


class Heartbeat:
    """While the ``with`` block runs, a daemon thread beats for ``trial_ids`` in ``storage``."""

    def __init__(self, storage, trial_ids: list[int], interval: float):
        self.storage, self.trial_ids, self.interval = storage, list(trial_ids), interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="jscexp-heartbeat", daemon=True)

    def beat(self) -> None:
        now = time.time()
        for trial_id in list(self.trial_ids):
            try:
                self.storage.set_trial_system_attr(trial_id, HEARTBEAT, now)
            except RuntimeError:  # the trial finished meanwhile (Optuna refuses to update it): nothing to keep alive
                continue
            except Exception as err:  # noqa: BLE001 — the storage is away: the next beat makes it up
                log.warning(f"heartbeat of trial {trial_id} missed: {type(err).__name__}")

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()

    def __enter__(self) -> Heartbeat:
        self.beat()
        self._thread.start()
        return self

    def add(self, trial_id: int) -> None:
        """One more trial to keep alive (a group job's own asks); the first one starts the beat."""
        self.trial_ids.append(trial_id)
        if self._thread.is_alive():
            self.beat()
        else:
            self.__enter__()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def __exit__(self, *exc) -> None:
        self.stop()


@dataclass
class Lost:
    number: int
    reason: str
    retry: bool
    completed: bool = False  # its run had finished: told COMPLETE with the run's values, not failed


def stale(study, grace: float) -> list:
    """RUNNING trials of ``study`` without a beat for ``grace`` seconds (trials that never beat,
    another tool's, are not)."""
    from optuna.trial import TrialState

    now = time.time()
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if (beat := t.system_attrs.get(HEARTBEAT)) is not None and now - beat > grace]


def beating(study) -> int:
    """How many RUNNING trials of ``study`` some worker keeps alive (or did until it died)."""
    from optuna.trial import TrialState

    return sum(HEARTBEAT in t.system_attrs for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


def fail_stale(study, *, grace: float, max_retries: int, finished=None) -> list[Lost]:
    """Fails every ``stale`` trial of ``study`` and enqueues its retry; returns what it failed.
    A trial whose worker died after its run had finished (``finished(trial)``: the run's
    objective values, else None) is told COMPLETE with them instead: one run per trial. Of two
    workers failing one trial at once, one wins and only it enqueues the retry."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    lost = []
    for trial in stale(study, grace):
        beat = trial.system_attrs[HEARTBEAT]
        if finished is not None and (values := finished(trial)) is not None:
            with contextlib.suppress(UpdateFinishedTrialError):
                if study._storage.set_trial_state_values(trial._trial_id, TrialState.COMPLETE, values):
                    lost.append(Lost(trial.number, "its worker died after its run finished: told COMPLETE "
                                     "with the run's values", False, completed=True))
            continue
        reason = f"lost: no heartbeat for {time.time() - beat:.0f} s (its worker was killed or preempted)"
        try:
            study._storage.set_trial_user_attr(trial._trial_id, "fail_reason", reason)
            if not study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
                continue
        except UpdateFinishedTrialError:
            continue
        lost.append(Lost(trial.number, reason, retry(study, trial, max_retries)))
    return lost


def retry(study, trial, max_retries: int) -> bool:
    """Enqueues ``trial``'s parameters again unless it was retried ``max_retries`` times; the
    retry's training goes on from the trial's last saved epoch (``jscexp.train.snapshots``)."""
    retries = int(trial.user_attrs.get("retries", 0))
    if retries >= max_retries:
        return False
    study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number, "retries": retries + 1},
                        skip_if_exists=False)
    return True


def give_up(study, trials: list, err: BaseException, max_retries: int, what: str = "the launch") -> None:
    """Trials asked but not told when ``err`` broke off ``what``: each still RUNNING is told
    FAIL with the reason and, after an interrupt, enqueued again (the same command goes on with it)."""
    from optuna.trial import TrialState

    from jscexp.search.study import tell

    interrupted = isinstance(err, KeyboardInterrupt)
    reason = "interrupted" if interrupted else f"{what} broke off: {type(err).__name__}: {err}"
    for trial in trials:
        if study._storage.get_trial(trial._trial_id).state != TrialState.RUNNING:
            continue  # told already (a surplus, a duplicate, a result)
        trial.set_user_attr("fail_reason", reason[:1000])
        tell(study, trial, state=TrialState.FAIL)
        if interrupted:
            retry(study, trial, max_retries)
