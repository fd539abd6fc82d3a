"""Quantised drop-ins for the layers the transform replaces.

They keep the float parameters (QAT trains them) under the same names, so a float
checkpoint loads into a quantised model and back.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from jscexp.quant._base import Quantiser


def _apply(q: Quantiser | None, x: torch.Tensor | None) -> torch.Tensor | None:
    return x if q is None or x is None else q(x)


class LinearQ(nn.Linear):
    """Fake-quantises input, weight and bias separately (MASE's LinearInteger and kin)."""

    def __init__(self, linear: nn.Linear, *, data_in=None, weight=None, bias=None):
        super().__init__(linear.in_features, linear.out_features, bias=linear.bias is not None)
        self.load_state_dict(linear.state_dict())
        self.x_quantiser, self.w_quantiser, self.b_quantiser = data_in, weight, bias

    def effective_weight(self) -> torch.Tensor:
        return self.weight if self.w_quantiser is None else self.w_quantiser(self.weight)

    def effective_bias(self) -> torch.Tensor | None:
        return _apply(self.b_quantiser, self.bias)

    def forward(self, x):
        return F.linear(_apply(self.x_quantiser, x), self.effective_weight(), self.effective_bias())

    def extra_repr(self) -> str:
        parts = [super().extra_repr()]
        for role, q in (("data_in", self.x_quantiser), ("weight", self.w_quantiser), ("bias", self.b_quantiser)):
            if q is not None:
                parts.append(f"{role}={q.describe()}")
        return ", ".join(parts)


class ReLUQ(nn.ReLU):
    """Quantises its input with an unsigned quantiser (negatives clamp to 0), then ReLU."""

    def __init__(self, relu: nn.ReLU | None = None, *, data_in=None, weight=None, bias=None):
        super().__init__()
        self.x_quantiser = data_in

    def forward(self, x):
        return F.relu(_apply(self.x_quantiser, x))

    def extra_repr(self) -> str:
        return f"data_in={self.x_quantiser.describe()}" if self.x_quantiser else ""


# fx op name of a module type -> its quantised replacement
QUANTISED = {"linear": LinearQ, "relu": ReLUQ}
# Roles whose quantiser must be unsigned (ReLU's input is meant to be non-negative).
UNSIGNED_ROLES = {"relu": {"data_in"}}
