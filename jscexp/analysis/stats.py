"""Streaming statistics: fed batch by batch, the result equals the one-shot computation.

A registry like the quantisers': each statistic is a small class with ``update`` and
``finish``; options come from the YAML (``quantile: 0.97``, ``n_sigma: 3``).
"""

from __future__ import annotations

import torch

from jscexp.errors import UserError


class Stat:
    name = ""

    def update(self, x: torch.Tensor) -> None:
        raise NotImplementedError

    def finish(self) -> dict[str, float]:
        raise NotImplementedError


class VariancePrecise(Stat):
    """Mean, population variance and count, merged across batches (Chan et al.) in float64."""

    name = "variance_precise"

    def __init__(self):
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().double().flatten()
        n = x.numel()
        if n == 0:
            return
        mean = x.mean().item()
        m2 = ((x - mean) ** 2).sum().item()
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta**2 * self.count * n / total
        self.count = total

    def finish(self) -> dict[str, float]:
        return {"mean": self.mean, "variance": self.m2 / self.count if self.count else float("nan"),
                "count": self.count}


class RangeMinMax(Stat):
    """Exact min, max and range."""

    name = "range_min_max"

    def __init__(self):
        self.min, self.max, self.count = float("inf"), float("-inf"), 0

    def update(self, x: torch.Tensor) -> None:
        if x.numel():
            self.min = min(self.min, x.min().item())
            self.max = max(self.max, x.max().item())
            self.count += x.numel()

    def finish(self) -> dict[str, float]:
        return {"min": self.min, "max": self.max, "range": self.max - self.min, "count": self.count}


class RangeQuantile(Stat):
    """min = the (1−q) quantile, max = the q quantile of every value seen (``torch.quantile``).

    Exact while at most ``max_values`` values have been seen; beyond that a uniform reservoir
    sample of that size stands in for them.
    """

    name = "range_quantile"

    def __init__(self, quantile: float = 0.97, max_values: int = 1_000_000):
        if not 0.5 <= float(quantile) <= 1:
            raise UserError(f"range_quantile: quantile must be in [0.5, 1], got {quantile!r}")
        self.quantile, self.max_values = float(quantile), int(max_values)
        self._values: list[torch.Tensor] = []
        self.count = 0
        self._generator = torch.Generator().manual_seed(0)

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().float().flatten().cpu()
        self._values.append(x)
        self.count += x.numel()
        kept = sum(v.numel() for v in self._values)
        if kept > self.max_values:
            pool = torch.cat(self._values)
            pick = torch.randperm(pool.numel(), generator=self._generator)[: self.max_values]
            self._values = [pool[pick]]

    def finish(self) -> dict[str, float]:
        values = torch.cat(self._values) if self._values else torch.empty(0)
        if values.numel() == 0:
            return {"min": float("nan"), "max": float("nan"), "range": float("nan"), "count": 0}
        q = torch.tensor([1 - self.quantile, self.quantile], dtype=values.dtype)
        low, high = torch.quantile(values, q).tolist()
        return {"min": low, "max": high, "range": high - low, "count": self.count}


class RangeNSigma(Stat):
    """mean ± n_sigma standard deviations (streaming, via ``variance_precise``)."""

    name = "range_n_sigma"

    def __init__(self, n_sigma: float = 3.0):
        self.n_sigma = float(n_sigma)
        self._var = VariancePrecise()

    def update(self, x: torch.Tensor) -> None:
        self._var.update(x)

    def finish(self) -> dict[str, float]:
        v = self._var.finish()
        half = self.n_sigma * v["variance"] ** 0.5
        return {"min": v["mean"] - half, "max": v["mean"] + half, "range": 2 * half, "count": v["count"]}


STATS: dict[str, type[Stat]] = {s.name: s for s in (VariancePrecise, RangeMinMax, RangeQuantile, RangeNSigma)}


def make_stat(name: str, options: dict | None, where: str) -> Stat:
    if name not in STATS:
        raise UserError(f"{where}: unknown statistic '{name}': choose one of {', '.join(STATS)}")
    opts = {k: v for k, v in (options or {}).items() if k not in ("device", "dims")}  # MASE keys, no-ops here
    try:
        return STATS[name](**opts)
    except TypeError as err:
        raise UserError(f"{where}: bad options {sorted(opts)} for statistic '{name}' ({err})") from None
