"""The dataset contract. A ``dataset`` conf names a class (``_target_``) and its settings; the
class says what the data is (its ``Schema``), where its raw rows come from and what keys them.
Everything after that — label and feature checks, dedup, split, scaler, cache — is jscexp's
recipe, the same for every source (``jscexp.data.load_splits``)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import OmegaConf

from jscexp.data.schema import Schema
from jscexp.errors import UserError

if TYPE_CHECKING:
    import pandas as pd

# The recipe's keys, shared by every dataset conf and never handed to its class; a conf may leave
# any of them out for these defaults (cache_dir: $JSCEXP_CACHE, else ~/.cache/jscexp).
RECIPE = {"name": None, "test_size": 0.2, "val_size": 0.1, "drop_duplicates": None, "use_cache": True,
          "cache_dir": None}


@dataclass
class Raw:
    """A source's rows as read: every column (the schema's and the label are taken from them)."""

    frame: pd.DataFrame
    label: str  # how messages name the data ("data file jets.csv")
    sha256: str = ""  # of the raw bytes or frame ("" for generated data)
    path: str = ""
    dedup: bool = False  # whether duplicate rows are dropped when drop_duplicates is null


class Source(ABC):
    """One dataset. Subclasses set ``schema`` (class attribute or in ``__init__``), take their
    conf's settings as keyword arguments and implement ``identity`` and ``read``."""

    schema: Schema
    kind = "file"  # logged as dataset info "source"
    synthetic = False  # runs on it are tagged synthetic in MLflow and in every table
    label_columns: tuple[str, ...] = ("label",)  # the first one a file has holds the labels

    def fetch(self) -> None:  # noqa: B027 — optional: a source with nothing to download has nothing to do
        """Puts the raw data on disk, downloading it if it must (a sweep calls this once, first)."""

    @abstractmethod
    def identity(self) -> dict | None:
        """What the processed splits are keyed by (a file's path, size and mtime; a generator's
        seed); None while it cannot be known without reading (a file not yet downloaded)."""

    @abstractmethod
    def read(self) -> Raw:
        """The raw rows; a bad file is a one-line ``UserError``."""


def recipe_of(cfg) -> dict:
    """The recipe keys of a dataset conf, with their defaults."""
    return {key: cfg.get(key, default) for key, default in RECIPE.items()}


def make_source(cfg) -> Source:
    """The ``Source`` a dataset conf names, built from its settings (the keys outside ``RECIPE``);
    a setting the class does not take is refused in one line, not ignored."""
    from jscexp.components import check_settings, import_target

    target = cfg.get("_target_")
    if not target:
        raise UserError("the dataset conf has no _target_: name its Source class, e.g. _target_: jscexp.data.tabular.Tabular")
    cls = import_target(str(target), "dataset", Source)
    keys = [str(k) for k in cfg if k != "_target_" and k not in RECIPE]
    if missing := [k for k in keys if OmegaConf.is_missing(cfg, k)]:
        raise UserError(f"dataset.{missing[0]} is required by {target}: add dataset.{missing[0]}=…")
    settings = {k: _plain(cfg[k]) for k in keys}
    check_settings(cls, settings, "dataset", str(target))
    return cls(**settings)


def _plain(value):
    """Settings reach a user's class as plain lists and dicts, not OmegaConf containers."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def file_stat(path: Path) -> dict:
    stat = path.stat()
    return {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
