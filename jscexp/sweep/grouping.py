"""Which jobs of a sweep go out together as one stacked group job, and how its outcomes come back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from omegaconf import DictConfig, open_dict

from jscexp.sweep.configs import Compose, JobConfigs, split_overrides
from jscexp.sweep.outcomes import Outcome
from jscexp.sweep.overrides import group_override
from jscexp.timeline import mark

# ("alone", why) for a job that cannot be a stacked trial; ("with", what its group mates must share)
StackKey = Callable[[DictConfig], "tuple[str, str]"]


def grouped_jobs(job_overrides: list[list[str]], size: int, compose: Compose | None = None,
                 stack_key: StackKey | None = None) -> tuple[list[list[str]], list[list[int]]]:
    """Jobs equal but for vector knobs become one job of up to ``size`` trials; returns the
    jobs to launch and, per launched job, the indices of the jobs it stands for.

    With ``compose`` (a job's config) and ``stack_key``, a job that cannot be a stacked trial
    stays alone, and trials are only grouped when their configs share what one stacked model
    shares (a ``data_seed``: one batch order, so each keeps the numbers of its own run; the
    quantisers but the options their classes vary per trial).
    """
    keys: list[tuple] = [_fixed(overrides) for overrides in job_overrides]
    if compose is not None and stack_key is not None and size > 1:
        counts = {k: keys.count(k) for k in set(keys)}
        reasons: dict[str, int] = {}
        keys = [(k, _stack_key(compose, stack_key, o, i, reasons)) if counts[k] > 1 else k
                for i, (k, o) in enumerate(zip(keys, job_overrides))]
        for reason, n in reasons.items():  # once per launch, not once per job
            print(f"{n} job(s) train one by one, not as one stacked model: {reason} (docs/stacked-trials.md)")
    groups: dict[tuple, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    jobs, members = [], []
    for indices in groups.values():
        for start in range(0, len(indices), max(1, size)):
            chunk = indices[start : start + max(1, size)]
            jobs.append(list(job_overrides[chunk[0]]) if len(chunk) == 1 else _group_job(job_overrides, chunk))
            members.append(chunk)
    return jobs, members


def _fixed(overrides: list[str]) -> tuple:
    return tuple(split_overrides(overrides)[0])


def _group_job(job_overrides: list[list[str]], chunk: list[int]) -> list[str]:
    trials = [split_overrides(job_overrides[i])[1] for i in chunk]
    return [*_fixed(job_overrides[chunk[0]]), group_override(trials)]


def _stack_key(compose: Compose, stack_key: StackKey, overrides: list[str], index: int, reasons: dict[str, int]):
    """What a job must share with its group mates; a job that cannot stack, nothing (its
    reason counted in ``reasons``)."""
    try:
        kind, text = stack_key(compose(overrides))
        if kind == "with":
            return (kind, text)
        reasons[text] = reasons.get(text, 0) + 1
        return ("alone", index)
    except Exception:  # noqa: BLE001 — a job whose config does not compose fails on its own, with its own message
        return ("alone", index)


def has_dropout(cfg: DictConfig) -> bool:
    """Whether the model has Dropout layers (they exist only for p > 0): stacked trials share
    an architecture, so p = 0 and p > 0 never stack together."""
    return bool(cfg.model.get("dropout"))


def job_outcomes(returns: list, members: list[list[int]], jobs: list[list[str]]) -> list[Outcome]:
    """The launched jobs' Hydra returns as one Outcome per original job, in their order: a
    group job's outcomes split per trial; a job that raised, FAILED with its one-line reason.
    After them, the outcomes of trials a group job asked the search for itself (refill)."""
    from hydra.core.utils import JobStatus

    out: list[Outcome | None] = [None] * len(jobs)
    asked: list[Outcome] = []
    for ret, indices in zip(returns, members):
        value = ret._return_value
        if ret.status != JobStatus.COMPLETED:
            values = [Outcome.of_exception(value)] * len(indices)
        elif isinstance(value, Outcome):
            values = [value]
        elif isinstance(value, list) and len(value) >= len(indices) and all(isinstance(v, Outcome) for v in value):
            values, asked = value[: len(indices)], asked + value[len(indices) :]
        else:
            values = [Outcome.failed(f"the job returned {type(value).__name__}, not an outcome")] * len(indices)
        for i, outcome in zip(indices, values):
            out[i] = replace(outcome, metrics=dict(outcome.metrics), overrides=list(jobs[i]))
    return [o for o in out if o is not None] + asked


def launch(launcher, jobs: list[list[str]], initial_job_idx: int, size: int, compose: Compose | None = None,
           stack_key: StackKey | None = None) -> tuple[list[Outcome], int]:
    """Launches ``jobs`` (stackable ones grouped); returns one Outcome per job (then one per
    trial a group job asked for itself) and how many jobs went out."""
    launched, members = grouped_jobs(jobs, size, compose, stack_key)
    mark("launch")
    returns = launcher.launch(launched, initial_job_idx=initial_job_idx)
    return job_outcomes(returns, members, jobs), len(launched)


def job_composer(hydra_context, config: DictConfig) -> Compose:
    """``compose`` inside a sweeper: a job's config as its launcher will build it, composed
    once per shape (``jscexp.sweep.configs``)."""

    def compose(overrides: list[str]) -> DictConfig:
        cfg = hydra_context.config_loader.load_sweep_config(config, list(overrides))
        with open_dict(cfg):  # a job's task config has no hydra node (HydraConfig holds it), and
            del cfg["hydra"]  # copying it made each job's config ten times dearer
        return cfg

    return JobConfigs(compose)
