"""New trials asked from inside a stacked group job: successive halving without a batch barrier.

When the search's pruner stops a trial of a stacked group, its slice would sit idle until the
group ends. With a ``RefillSpec`` (written by the sweeper, read by the job) the group asks the
study for a new trial while the search has trials left, and trains it in that slice. The job
then owns that trial: it keeps its heartbeat, tells the study its result and returns its
outcome after its own trials' (the sweep's verdict and failure rate count it like any other);
should the job break off, it tells the trial FAIL (and, after an interrupt, enqueues its
retry) like the sweeper does for its own.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from jscexp.errors import deferred_interrupts
from jscexp.search.liveness import Heartbeat, give_up
from jscexp.search.study import live_count, make_pruner, make_sampler, make_storage, surplus, tell_outcome


@dataclass
class RefillSpec:
    """What a group job needs to ask the sweeper's study for trials, as the sweeper would."""

    study: str
    storage: str
    space: dict[str, str]  # name -> optuna.distributions.distribution_to_json
    sampler: dict
    seed: int | None
    pruner: dict
    n_trials: int
    objectives: list[str]
    heartbeat_interval: float
    max_retries: int
    knobs: list[str] = field(default_factory=list)  # the searched config keys

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> RefillSpec:
        return cls(**json.loads(Path(path).read_text()))

    def distributions(self) -> dict:
        from optuna.distributions import json_to_distribution

        return {name: json_to_distribution(text) for name, text in self.space.items()}


class Asker:
    """Asks the study for trials on behalf of one group job and tells it how they ended."""

    def __init__(self, spec: RefillSpec):
        import optuna

        self.spec, self.space = spec, spec.distributions()
        storage = make_storage(spec.storage)
        existing = len(optuna.load_study(study_name=spec.study, storage=storage).trials)
        seed = None if spec.seed is None else spec.seed + existing  # same history, same suggestions
        self.study = optuna.load_study(
            study_name=spec.study, storage=storage, pruner=make_pruner(spec.pruner),
            sampler=make_sampler(spec.sampler, seed, self.space, len(spec.objectives)))
        self.heartbeat = Heartbeat(storage, [], spec.heartbeat_interval)
        self.open: dict[int, object] = {}  # trial number -> asked, not yet told

    def ask(self):
        """A new trial, or None once the search has n_trials (counting those in flight). An
        interrupt waits until the trial is held here (so that ``close`` ends it)."""
        if live_count(self.study) >= self.spec.n_trials:
            return None
        with deferred_interrupts():
            trial = self.study.ask(self.space)
            if surplus(self.study, trial, self.spec.n_trials):
                return None
            self.open[trial.number] = trial
            self.heartbeat.add(trial._trial_id)
        return trial

    def tell(self, number: int, outcome):
        """The trial's result to the study; returns its outcome as told (FAILED when it lacks
        an objective)."""
        with deferred_interrupts():  # told and no longer held, or still held
            outcome = tell_outcome(self.study, self.open[number], outcome, self.spec.objectives)
            del self.open[number]
        return outcome

    def close(self, err: BaseException | None) -> None:
        """Stops the heartbeat; trials still open (the job broke off) are told FAIL with the
        reason, and after an interrupt enqueued again, as the sweeper does for its own."""
        self.heartbeat.stop()
        if err is not None:
            give_up(self.study, list(self.open.values()), err, self.spec.max_retries, "the group job")
        self.open.clear()
