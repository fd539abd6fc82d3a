"""Models are components: a ``model`` conf names a callable (``_target_``: a class or a function)
that takes ``num_features`` and ``num_classes`` — the dataset's — and the conf's own settings,
and returns an ``nn.Module`` that maps [batch, num_features] to [batch, num_classes] logits.
The shipped ones (conf/model/*.yaml) are no different from a user's."""

from __future__ import annotations

from collections.abc import Mapping

import torch.fx
from torch import nn

from jscexp.components import check_settings, import_target
from jscexp.errors import UserError, first_line

NOT_SETTINGS = ("_target_", "name")  # a conf's label and target; the rest are the callable's keywords


def settings_of(cfg: Mapping) -> dict:
    """A model conf's settings: the keywords its callable gets besides the data's sizes."""
    return {str(k): v for k, v in cfg.items() if k not in NOT_SETTINGS}


def build_model(cfg: Mapping, *, num_features: int, num_classes: int) -> nn.Module:
    """The module a model conf (``_target_`` + settings) describes, for data of these sizes; a
    target that does not import, a setting it does not take or a result that is not a module is a
    one-line ``UserError``."""
    target = cfg.get("_target_")
    if not target:
        raise UserError("the model conf has no _target_: add model._target_=package.module.YourModel")
    fn = import_target(str(target), "model")
    settings = settings_of(cfg)
    check_settings(fn, settings, "model", str(target), given=("num_features", "num_classes"))
    try:
        model = fn(num_features=num_features, num_classes=num_classes, **settings)
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 — a user's constructor raises anything
        raise UserError(f"model {target} could not be built with {settings or 'no settings'}: "
                        f"{err.__class__.__name__}: {first_line(err)}") from err
    if not isinstance(model, nn.Module):
        raise UserError(f"model._target_={target} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def fx_trace(model: nn.Module, needed_by: str = "the graph report"):
    """``model``'s fx graph; a model torch.fx cannot trace (data-dependent control flow, …) is a
    one-line ``UserError`` saying what needed the graph."""
    if isinstance(model, torch.fx.GraphModule):
        return model
    try:
        return torch.fx.symbolic_trace(model)
    except Exception as err:  # noqa: BLE001 — fx raises anything a model's forward does under tracing
        raise UserError(f"torch.fx cannot trace model {type(model).__name__} ({err.__class__.__name__}: "
                        f"{first_line(err)}): {needed_by} needs a traceable model") from err


def count_trainable(model: nn.Module) -> int:
    """Trainable parameters; BatchNorm running statistics are buffers, so they don't count."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = ["build_model", "count_trainable", "fx_trace", "settings_of"]
