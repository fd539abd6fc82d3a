"""Data stage: a dataset conf names a ``Source`` (the JSC sources, any table, a user's class);
one recipe splits and scales its rows, a cache keeps the result, batches live in memory."""

from __future__ import annotations

from pathlib import Path

from jscexp.config import cache_home
from jscexp.data import cache, files
from jscexp.data.recipe import Splits, apply_recipe
from jscexp.data.schema import CLASSES, FEATURES, JSC, Schema
from jscexp.data.source import Raw, Source, make_source, recipe_of


def schema_of(cfg) -> Schema:
    """The feature and class names a dataset conf describes, without reading any data."""
    return make_source(cfg).schema


def fetch_source(cfg) -> None:
    """Puts the raw data ``cfg`` reads on disk, downloading it if it must. A sweep calls this
    before its first job: data nobody can load is said once, not once per job."""
    make_source(cfg).fetch()


def cache_dir_of(recipe: dict) -> Path:
    return Path(recipe["cache_dir"]).expanduser() if recipe["cache_dir"] else cache_home()


def load_splits(cfg) -> Splits:
    """Loads the dataset the ``dataset`` config group describes, through the processed cache."""
    source, recipe = make_source(cfg), recipe_of(cfg)
    cache_dir = cache_dir_of(recipe)
    split = {"test_size": float(recipe["test_size"]), "val_size": float(recipe["val_size"]),
             "dedup": recipe["drop_duplicates"]}

    def key_of(identity: dict | None) -> str | None:
        if identity is None:
            return None
        kind = f"{type(source).__module__}.{type(source).__qualname__}"
        return cache.cache_key({"source": source.kind, "class": kind, **identity, **split})

    key = key_of(source.identity())
    if key and recipe["use_cache"] and (hit := cache.load(cache_dir, key)) is not None:
        return hit
    splits = _build(source, source.read(), split, str(recipe["name"] or ""))
    if recipe["use_cache"] and (key := key or key_of(source.identity())):  # a download is keyed once on disk
        cache.store(cache_dir, key, splits)
    return splits


def _build(source: Source, raw: Raw, split: dict, name: str) -> Splits:

    frame, dedup = raw.frame, raw.dedup if split["dedup"] is None else bool(split["dedup"])
    if dedup:
        frame = frame.drop_duplicates(ignore_index=True)  # on every column, as LogicNets and MASE do
    splits = apply_recipe(files.to_canonical(frame, raw.label, source.schema, source.label_columns),
                          source.schema, test_size=split["test_size"], val_size=split["val_size"])
    splits.info = {"name": name, "source": source.kind, "path": raw.path, "synthetic": source.synthetic,
                   "raw_sha256": raw.sha256, "rows_raw": len(raw.frame), "dedup": dedup, **splits.info}
    return splits


__all__ = ["CLASSES", "FEATURES", "JSC", "Schema", "Source", "Splits", "apply_recipe", "fetch_source",
           "load_splits", "make_source", "schema_of"]
