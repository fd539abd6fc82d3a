"""A plain MLP with configurable hidden sizes (hls4ml's reference is 64-32-32)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from jscexp.errors import UserError


class MLP(nn.Module):
    def __init__(self, widths: Sequence[int], batch_norm: bool, dropout: float):
        super().__init__()
        layers: list[nn.Module] = []
        for i, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Linear(w_in, w_out))
            if i < len(widths) - 2:  # no activation on the logits, unlike the lab models
                if batch_norm:
                    layers.append(nn.BatchNorm1d(w_out))
                layers.append(nn.ReLU())
                if dropout > 0:
                    layers.append(nn.Dropout(dropout))
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)


def mlp(
    *,
    num_features: int = 16,
    num_classes: int = 5,
    hidden: Sequence[int] = (64, 32, 32),
    batch_norm: bool = False,
    dropout: float = 0.0,
) -> nn.Module:
    """16-64-32-32-5 by default: 4389 trainable parameters."""
    hidden = list(hidden)
    if not hidden or any(int(h) <= 0 for h in hidden):
        raise UserError(f"model.hidden must be a non-empty list of positive widths, got {hidden}")
    return MLP([num_features, *map(int, hidden), num_classes], batch_norm, float(dropout))
