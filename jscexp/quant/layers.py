"""Quantised drop-ins for the layers the transform replaces.

They keep the float parameters (QAT trains them) under the same names, so a float
checkpoint loads into a quantised model and back.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from jscexp.quant._base import Quantiser
from jscexp.quant.learned import LearnedQuantiser


def _described(base: str, **roles: Quantiser | None) -> str:
    """A layer's repr with each role's quantiser: ``16, 5, data_in=integer(width=8, …)``."""
    return ", ".join([base, *(f"{role}={q.describe()}" for role, q in roles.items() if q is not None)])


def _apply(q: Quantiser | None, x: torch.Tensor | None) -> torch.Tensor | None:
    return x if q is None or x is None else q(x)


class LinearQ(nn.Linear):
    """Fake-quantises input, weight and bias separately (MASE's LinearInteger and kin)."""

    def __init__(self, linear: nn.Linear, *, data_in=None, weight=None, bias=None):
        super().__init__(linear.in_features, linear.out_features, bias=linear.bias is not None)
        self.load_state_dict(linear.state_dict())
        shapes = ((data_in, (linear.in_features,)), (weight, self.weight.shape),
                  (bias, self.bias.shape if self.bias is not None else None))
        for q, shape in shapes:
            if isinstance(q, LearnedQuantiser) and shape is not None:
                q.bind(torch.Size(shape))  # a format per weight, per bias, per input feature
        self.x_quantiser, self.w_quantiser, self.b_quantiser = data_in, weight, bias

    def effective_weight(self) -> torch.Tensor:
        return self.weight if self.w_quantiser is None else self.w_quantiser(self.weight)

    def effective_bias(self) -> torch.Tensor | None:
        return _apply(self.b_quantiser, self.bias)

    def forward(self, x):
        return F.linear(_apply(self.x_quantiser, x), self.effective_weight(), self.effective_bias())

    def extra_repr(self) -> str:
        return _described(super().extra_repr(), data_in=self.x_quantiser, weight=self.w_quantiser, bias=self.b_quantiser)


class ReLUQ(nn.ReLU):
    """Quantises its input with an unsigned quantiser (negatives clamp to 0), then ReLU."""

    def __init__(self, relu: nn.ReLU | None = None, *, data_in=None, weight=None, bias=None):
        super().__init__()
        self.x_quantiser = data_in

    def forward(self, x):
        return F.relu(_apply(self.x_quantiser, x))

    def extra_repr(self) -> str:
        return f"data_in={self.x_quantiser.describe()}" if self.x_quantiser else ""


def batch_statistics(x: torch.Tensor, running_mean: torch.Tensor, running_var: torch.Tensor, factor: float,
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and (biased) variance of each column of ``x`` [batch, N], which training
    normalises by, and the running ones updated as ``F.batch_norm`` updates them (in place:
    ``factor`` of the batch's, the variance unbiased). One function for a lone BatchNorm and K
    stacked ones ([batch, K·C]), so both compute the same numbers."""
    var, mean = torch.var_mean(x, dim=0, unbiased=False)
    with torch.no_grad():
        n = x.shape[0]
        running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
        running_var.mul_(1 - factor).add_(var.detach() * (n / max(n - 1, 1)), alpha=factor)
    return mean, var


class BatchNormQ(nn.BatchNorm1d):
    """Fake-quantises its input and computes y = x·s + t with its folded scale s = γ/√(σ²+ε)
    and shift t = β − μ·s on their grids (roles ``weight`` and ``bias``), which is what hls4ml's
    BatchNormalization computes — training too, from the batch's statistics (updating the
    running ones as BatchNorm does), so training sees the arithmetic the firmware runs."""

    def __init__(self, bn: nn.BatchNorm1d, *, data_in=None, weight=None, bias=None):
        super().__init__(bn.num_features, eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                         track_running_stats=bn.track_running_stats)
        self.load_state_dict(bn.state_dict())
        self.x_quantiser, self.w_quantiser, self.b_quantiser = data_in, weight, bias

    def folded(self, mean: torch.Tensor | None = None, var: torch.Tensor | None = None,
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift) on their grids, from ``mean`` and ``var`` (default: the running ones)."""
        assert self.running_var is not None and self.running_mean is not None, "BatchNormQ tracks running statistics"
        mean = self.running_mean if mean is None else mean
        scale = self.weight / torch.sqrt((self.running_var if var is None else var) + self.eps)
        shift = self.bias - mean * scale
        return (scale if self.w_quantiser is None else self.w_quantiser(scale),
                shift if self.b_quantiser is None else self.b_quantiser(shift))

    def forward(self, x):
        x = _apply(self.x_quantiser, x)
        if not self.training:
            scale, shift = self.folded()
            return x * scale + shift
        assert self.running_var is not None and self.running_mean is not None and self.num_batches_tracked is not None
        self.num_batches_tracked.add_(1)
        factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        scale, shift = self.folded(*batch_statistics(x, self.running_mean, self.running_var, factor))
        return x * scale + shift

    def extra_repr(self) -> str:
        return _described(super().extra_repr(), data_in=self.x_quantiser, scale=self.w_quantiser, shift=self.b_quantiser)


# fx op name of a module type -> its quantised replacement
QUANTISED = {"linear": LinearQ, "relu": ReLUQ, "batch_norm1d": BatchNormQ}
# Roles whose quantiser must be unsigned (ReLU's input is meant to be non-negative).
UNSIGNED_ROLES = {"relu": {"data_in"}}
