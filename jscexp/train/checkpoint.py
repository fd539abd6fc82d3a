"""Loading a train run's checkpoint without executing anything stored in it."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from jscexp.errors import UserError, first_line

_PREFIX = "model."  # kept from the Lightning-module layout, so older checkpoints still load


def saved_recipe(path: Path) -> dict:
    """What the checkpoint says it was trained as (``model``, ``dataset``: config groups); empty
    when it says nothing or cannot be read (``load_weights`` then says why)."""
    try:
        meta = _read(path).get("jscexp")
    except UserError:
        return {}
    return {k: v for k, v in (meta or {}).items() if k in ("model", "dataset") and isinstance(v, dict)}


def _read(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist: pass ckpt= a train run's checkpoints/best.ckpt")
    try:
        with warnings.catch_warnings():  # torch warns about the file it is about to refuse
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 — torch.load raises anything (KeyError for a text file): not a checkpoint
        raise UserError(
            f"checkpoint {path} is not a readable PyTorch checkpoint of tensors ({err.__class__.__name__}); "
            "nothing in it was run"
        ) from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise UserError(f"checkpoint {path} has no state_dict: it was not written by a jscexp train run")
    return ckpt


def load_weights(model: torch.nn.Module, path: Path, model_name: str) -> dict[str, torch.Tensor]:
    """Loads ``path``'s weights into the float ``model``; any mismatch is a one-line UserError.
    Returns what else a QAT checkpoint holds: its learned widths (``….w_quantiser.scaled_frac``, traced input ranges),
    for the quantised model built from ``model``."""
    ckpt = _read(path)
    saved = (ckpt.get("jscexp") or {}).get("model", {}).get("name")
    if saved is not None and saved != model_name:
        raise UserError(f"checkpoint {path} is for model={saved}, not model={model_name}: add model={saved}")
    state = {k[len(_PREFIX):]: v for k, v in ckpt["state_dict"].items() if k.startswith(_PREFIX)}
    weights = {k: v for k, v in state.items() if "_quantiser." not in k}
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise UserError(f"checkpoint {path} does not fit model={model_name}: {first_line(err)}") from err
    return {k: v for k, v in state.items() if k not in weights}


def save_weights(model: torch.nn.Module, path: Path, meta: dict, **extra) -> Path:
    """Writes ``model``'s weights in the layout ``load_weights`` reads (tensors only, safe to load)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {_PREFIX + k: v.detach().cpu() for k, v in model.state_dict().items()}
    tmp = path.with_suffix(".part")
    torch.save({"state_dict": state, "jscexp": meta, **extra}, tmp)
    tmp.replace(path)  # a reader never sees half a checkpoint
    return path
