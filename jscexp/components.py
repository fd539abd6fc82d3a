"""Components a conf names by ``_target_`` (a model, a dataset, a quantiser, a cost estimator,
an in-training search): one way to import them and to build them with the conf's settings,
where a target that does not import, is not of the contract's class, or does not take a
setting is one line naming the key (torch-free)."""

from __future__ import annotations

import inspect
from collections.abc import Callable

from jscexp.errors import UserError, first_line


def import_target(target: str, where: str, base: type | None = None, label: str | None = None):
    """The object ``target`` names (``package.module.Name``); with ``base``, a subclass of it.
    Messages name it as ``label`` (default ``<where>._target_``)."""
    label = label or f"{where}._target_"
    from hydra.utils import get_object

    try:
        found = get_object(target)
    except Exception as err:  # noqa: BLE001 — Hydra wraps import errors of every kind
        raise UserError(f"{label}={target} cannot be imported ({first_line(err)}): is its package on "
                        "PYTHONPATH or in the directory you run from?") from None
    if base is not None and not (isinstance(found, type) and issubclass(found, base)):
        raise UserError(f"{label}={target} is not a {base.__module__}.{base.__qualname__} subclass")
    if not callable(found):
        raise UserError(f"{label}={target} is not a class or function")
    return found


def check_settings(fn: Callable, settings: dict, where: str, target: str, given: tuple[str, ...] = ()) -> None:
    """``fn`` takes every setting and needs no other but ``given`` (what jscexp passes itself)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a builtin without a signature: the call will say
        return
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    if lacking := [n for n in given if n not in params]:
        raise UserError(f"{where} {target} must take {' and '.join(lacking)} as keyword arguments")
    if unknown := sorted(set(settings) - set(params)):
        takes = ", ".join(n for n in params if n not in ("self", "what", *given)) or "no settings"
        raise UserError(f"{where}.{unknown[0]} is not a setting of {target} (it takes: {takes}): remove it")
    if missing := [n for n, p in params.items() if p.default is p.empty and p.kind is p.KEYWORD_ONLY
                   and n not in settings and n not in given]:
        raise UserError(f"{where}.{missing[0]} is required by {target}: add {where}.{missing[0]}=…")


def build(node, where: str, base: type | None = None, skip: tuple[str, ...] = ()):
    """The component a conf node names (``_target_`` + settings, minus ``skip``), built."""
    target = str(node["_target_"])
    cls = import_target(target, where, base)
    settings = {str(k): v for k, v in dict(node).items() if k != "_target_" and k not in skip}
    check_settings(cls, settings, where, target)
    return cls(**settings)
