"""What a job returns: its optimised metric as a float, carrying every final metric by name.

Any Hydra sweeper can use it as a number; ours reads ``metrics[name]`` for each objective.
"""

from __future__ import annotations


class JobResult(float):
    def __new__(cls, value: float, metrics: dict[str, float]):
        result = super().__new__(cls, value)
        result.metrics = dict(metrics)
        return result

    def __reduce__(self):  # keep the metrics when a launcher pickles the result
        return (JobResult, (float(self), self.metrics))
