"""Any classification table: a CSV, Parquet or NPZ file with named feature columns and one label
column (class names or indices), through the same recipe as the JSC data."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from jscexp.data.schema import Schema
from jscexp.data.source import Raw, Source, file_stat
from jscexp.errors import UserError


class Tabular(Source):
    """``features``: the columns the model reads, in order; ``classes``: the class names in label
    order (a label column may hold these names or their indices); ``label``: that column."""

    def __init__(self, *, path: str, features: Sequence[str], classes: Sequence[str], label: str = "label"):
        features, classes = tuple(map(str, features)), tuple(map(str, classes))
        if not features or len(set(features)) < len(features):
            raise UserError(f"dataset.features must name distinct columns, got {list(features)}")
        if len(classes) < 2 or len(set(c.lower() for c in classes)) < len(classes):
            raise UserError(f"dataset.classes must name two or more distinct classes, got {list(classes)}")
        if label in features:
            raise UserError(f"dataset.label '{label}' is also a feature column: name the label column")
        self.schema = Schema(features, classes)
        self.label_columns = (label,)
        self.path = Path(path).expanduser().resolve()

    def identity(self) -> dict | None:
        if not self.path.is_file():
            return None
        return {**file_stat(self.path), "features": self.schema.features, "classes": self.schema.classes,
                "label": self.label_columns[0]}

    def read(self) -> Raw:
        from jscexp.data import download, files

        return Raw(files.read_raw(self.path, self.schema.features), f"data file {self.path}",
                   download.file_sha256(self.path), str(self.path))
