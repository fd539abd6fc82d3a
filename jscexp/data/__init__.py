"""Data stage: JSC sources and the synthetic stand-in, one recipe, in-memory batches."""

from __future__ import annotations

from jscexp.errors import UserError
from jscexp.data.recipe import Splits, apply_recipe
from jscexp.data.schema import CLASSES, FEATURES

SOURCES = ("synthetic",)


def load_splits(cfg) -> Splits:
    """Loads the dataset described by the ``dataset`` config group and applies the recipe."""
    source = cfg.source
    if source == "synthetic":
        from jscexp.data.synth import generate

        frame = generate(int(cfg.n_rows), seed=int(cfg.generator_seed))
    else:
        raise UserError(f"unknown dataset.source '{source}': choose one of {', '.join(SOURCES)}")
    splits = apply_recipe(
        frame,
        drop_duplicates=bool(cfg.drop_duplicates),
        test_size=float(cfg.test_size),
        val_size=float(cfg.val_size),
    )
    splits.info = {
        "name": cfg.name,
        "source": source,
        "synthetic": bool(cfg.synthetic),
        **splits.info,
    }
    return splits


__all__ = ["CLASSES", "FEATURES", "Splits", "apply_recipe", "load_splits"]
