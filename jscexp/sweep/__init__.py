"""Sweep stage, torch-free: what a job is (its overrides), grouping of stackable jobs into one
stacked job, and typed outcomes per job or trial that exit codes and parent runs are read from.

The Hydra sweepers in ``hydra_plugins/jscexp_sweeper`` are thin adapters over this package;
nothing here imports them, torch or MLflow.
"""

from jscexp.sweep.grouping import grouped_jobs, job_composer, job_outcomes, launch
from jscexp.sweep.outcomes import Interrupted, Outcome, OutcomeLog, Status, Verdict, verdict
from jscexp.sweep.overrides import GROUP_KEY, group_override, override_key, override_value, trial_overrides

__all__ = ["GROUP_KEY", "Interrupted", "Outcome", "OutcomeLog", "Status", "Verdict", "group_override", "grouped_jobs",
           "job_composer", "job_outcomes", "launch", "override_key", "override_value", "trial_overrides", "verdict"]
