"""Model registry: one builder per name, one conf/model/<name>.yaml each."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from jscexp.errors import UserError
from jscexp.models.jsc import jsc_10x, jsc_s, jsc_tiny, jsc_toy
from jscexp.models.mlp import mlp

MODELS: dict[str, Callable[..., nn.Module]] = {
    "jsc-tiny": jsc_tiny,
    "jsc-toy": jsc_toy,
    "jsc-10x": jsc_10x,
    "jsc-s": jsc_s,
    "mlp": mlp,
}


def build_model(name: str, *, num_features: int = 16, num_classes: int = 5, **kwargs) -> nn.Module:
    """Builds a registered model; unknown names raise UserError listing the valid ones."""
    if name not in MODELS:
        raise UserError(f"unknown model '{name}': choose one of {', '.join(MODELS)}")
    return MODELS[name](num_features=num_features, num_classes=num_classes, **kwargs)


def count_trainable(model: nn.Module) -> int:
    """Trainable parameters; BatchNorm running statistics are buffers, so they don't count."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = ["MODELS", "build_model", "count_trainable"]
