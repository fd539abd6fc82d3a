"""Typed outcomes: what became of each job or search trial, and what a sweep makes of them.

A job returns an ``Outcome`` (a stacked group job, one per trial); a job that raised becomes
a FAILED outcome in the sweeper. Both sweepers append every outcome to the sweep's
``OutcomeLog`` in their own process, whatever the launcher; the sweep's exit code and its
MLflow parent status are read from that log through ``verdict``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path


class Status(StrEnum):
    FINISHED = "finished"
    DIVERGED = "diverged"  # a result (the lab's lr=1.0 row): its epochs before the NaN count
    PRUNED = "pruned"  # stopped by the search after an epoch: a result, not a failure
    FAILED = "failed"
    INTERRUPTED = "interrupted"


_OK = (Status.FINISHED, Status.DIVERGED, Status.PRUNED)


@dataclass
class Outcome:
    """One job's or trial's end: its status, a one-line reason when it did not finish, its
    final metrics (never a made-up value: a metric it did not measure is absent)."""

    status: Status
    reason: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)
    run_id: str | None = None

    @classmethod
    def finished(cls, metrics: dict[str, float], run_id: str | None = None, *, diverged: bool = False) -> Outcome:
        return cls(Status.DIVERGED if diverged else Status.FINISHED, "", {k: float(v) for k, v in metrics.items()},
                   run_id=run_id)

    @classmethod
    def failed(cls, reason: str, run_id: str | None = None) -> Outcome:
        return cls(Status.FAILED, one_line(reason), run_id=run_id)

    @classmethod
    def pruned(cls, epoch: int, run_id: str | None = None) -> Outcome:
        return cls(Status.PRUNED, f"pruned by the search after epoch {epoch}", run_id=run_id)

    @classmethod
    def of_exception(cls, err: BaseException) -> Outcome:
        from jscexp.errors import UserError

        if isinstance(err, KeyboardInterrupt):
            return cls(Status.INTERRUPTED, "interrupted")
        return cls.failed(str(err) if isinstance(err, UserError) else f"{type(err).__name__}: {err}")

    @property
    def ok(self) -> bool:
        return self.status in _OK

    def objective(self, names: list[str]) -> list[float]:
        """The named metrics, in order; ``KeyError`` with a one-line reason when one is missing."""
        missing = [n for n in names if n not in self.metrics]
        if missing:
            got = ", ".join(sorted(self.metrics)) or "no metrics"
            raise KeyError(f"the job did not return {', '.join(missing)} (it returned {got})")
        return [self.metrics[n] for n in names]

    def line(self) -> str:
        return f"{' '.join(self.overrides) or '(no overrides)'}: {self.status.value}" + \
            (f": {self.reason}" if self.reason else "")


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM broke off a group job: the outcomes its trials had already, each with
    its overrides, so that a trial pruned or finished before is told so, not failed and retried."""

    def __init__(self, outcomes: list[Outcome]):
        super().__init__("interrupted")
        self.outcomes = outcomes

    def __reduce__(self):  # a launcher may carry it across processes
        return Interrupted, (self.outcomes,)


def one_line(text: str) -> str:
    lines = str(text).strip().splitlines()
    return (lines[0] if lines else "no reason given")[:1000]


@dataclass
class Verdict:
    exit_code: int
    parent_status: str  # the sweep parent run's MLflow status
    failures: list[str]
    total: int

    def summary(self) -> str | None:
        if not self.failures:
            return None
        return f"{len(self.failures)} of {self.total} jobs failed (the others finished):\n  " + "\n  ".join(self.failures)


def verdict(outcomes: list[Outcome]) -> Verdict:
    """Exit 0 and FINISHED when every job has a result; 1 and FAILED when one failed;
    130 and KILLED when one was interrupted."""
    failures = [o.line() for o in outcomes if not o.ok]
    if any(o.status == Status.INTERRUPTED for o in outcomes):
        return Verdict(130, "KILLED", failures, len(outcomes))
    return Verdict(1 if failures else 0, "FAILED" if failures else "FINISHED", failures, len(outcomes))


class OutcomeLog:
    """The outcomes of this process's sweep, as JSON lines in its sweep dir."""

    def __init__(self, sweep_dir: str | Path):
        self.path = Path(sweep_dir) / f"outcomes.{os.getpid()}.jsonl"

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("")

    def add(self, outcomes: list[Outcome]) -> None:
        with self.path.open("a") as f:
            for o in outcomes:
                f.write(json.dumps({**asdict(o), "status": o.status.value}) + "\n")

    def read(self) -> list[Outcome]:
        if not self.path.exists():
            return []
        rows = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
        return [Outcome(**{**r, "status": Status(r["status"])}) for r in rows]
