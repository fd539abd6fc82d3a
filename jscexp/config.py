"""Configuration helpers shared by every layer (torch-free)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf


def plain(node: DictConfig, *, resolve: bool = True) -> dict[str, Any]:
    """A config group as a plain dict (interpolations resolved unless ``resolve=False``)."""
    out = OmegaConf.to_container(node, resolve=resolve)
    if not isinstance(out, dict):
        raise TypeError(f"expected a mapping, got {type(out).__name__}")
    return {str(k): v for k, v in out.items()}


def plain_list(node: ListConfig, *, resolve: bool = True) -> list[Any]:
    """A config list as a plain list."""
    out = OmegaConf.to_container(node, resolve=resolve)
    if not isinstance(out, list):
        raise TypeError(f"expected a list, got {type(out).__name__}")
    return out
