"""Reading tabular data in its real formats (the JSC h5, CSV, Parquet, NPZ) into one raw frame, the
schema's columns out of it, and naming what is wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from jscexp.data.schema import Schema
from jscexp.errors import UserError, first_line

H5_KEY = "t_allpar_new"  # the CERNBox file's structured array
SUFFIXES = (".h5", ".hdf5", ".z", ".csv", ".parquet", ".npz")


def read_raw(path: Path, features: tuple[str, ...]) -> pd.DataFrame:
    """Reads an h5 (``t_allpar_new``), CSV, Parquet or NPZ file into a frame, all columns kept;
    an NPZ's ``X`` matrix gets ``features`` as its column names."""
    if not path.is_file():
        raise UserError(f"data file {path} does not exist: fix dataset.path")
    if is_hdf5(path):
        return _read_h5(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            frame = pd.read_csv(path)
        elif suffix == ".parquet":
            frame = pd.read_parquet(path)
        elif suffix == ".npz":
            frame = _read_npz(path, features)
        elif suffix in (".h5", ".hdf5", ".z"):
            raise UserError(f"data file {path} is not HDF5 (truncated or another format)")
        else:
            raise UserError(f"data file {path}: unsupported format '{suffix}', use one of {', '.join(SUFFIXES)}")
    except UserError:
        raise
    except Exception as err:  # every parser has its own error types; all mean "bad file"
        raise UserError(f"data file {path} could not be read as {suffix[1:]}: {first_line(err)}") from err
    if frame.empty:
        raise UserError(f"data file {path} has no rows")
    return frame


def to_canonical(raw: pd.DataFrame, source: str, schema: Schema, label_columns: tuple[str, ...]) -> pd.DataFrame:
    """The schema's features in order plus an int ``label`` (index into its classes), read from
    the first of ``label_columns`` the frame has or from the schema's one-hot columns."""
    missing = [f for f in schema.features if f not in raw.columns]
    if missing:
        raise UserError(f"{source} lacks feature column(s) {', '.join(missing)}")
    try:
        features = raw[list(schema.features)].astype(np.float32)
    except (TypeError, ValueError) as err:
        raise UserError(f"{source} has non-numeric feature values: {first_line(err)}") from err
    _check_finite(features, source)
    frame = features.reset_index(drop=True)
    frame["label"] = _labels(raw, source, schema, label_columns)
    _check_classes(frame["label"].to_numpy(), source, schema.classes)
    return frame


def _check_finite(features: pd.DataFrame, source: str) -> None:
    """A NaN or inf feature would train to a NaN loss and pass for a diverged result."""
    bad = (~np.isfinite(features.to_numpy())).sum(axis=0)
    if bad.any():
        where = ", ".join(f"{c} ({n})" for c, n in zip(features.columns, bad) if n)
        raise UserError(f"{source}: {int(bad.sum())} NaN or infinite feature values, in column(s) {where}: "
                        "drop or fill those rows")


def _check_classes(labels: np.ndarray, source: str, classes: tuple[str, ...]) -> None:
    """Every class has rows: an empty one would give a classifier that cannot tell it and tables
    that pretend it was tested."""
    counts = np.bincount(labels, minlength=len(classes))
    if empty := [c for c, n in zip(classes, counts) if n == 0]:
        raise UserError(f"{source}: no rows of class(es) {', '.join(empty)} (of {', '.join(classes)}; "
                        f"{len(labels)} rows): give data with every class")


def _expected(schema: Schema) -> str:
    return f"class names {', '.join(schema.classes)} or indices 0-{schema.num_classes - 1}"


def _labels(raw: pd.DataFrame, source: str, schema: Schema, label_columns: tuple[str, ...]) -> np.ndarray:
    one_hot = schema.one_hot
    if one_hot and all(c in raw.columns for c in one_hot):
        onehot = raw[list(one_hot)].to_numpy(dtype=np.float64)
        if not np.all(onehot.sum(axis=1) == 1):
            raise UserError(f"{source}: label columns {', '.join(one_hot)} are not one-hot in every row")
        return onehot.argmax(axis=1).astype(np.int64)
    column = next((c for c in label_columns if c in raw.columns), None)
    if column is None:
        also = f" or one-hot columns {', '.join(one_hot)}" if one_hot else ""
        raise UserError(f"{source} has no label column: add '{label_columns[0]}' ({_expected(schema)}){also}")
    values = raw[column]
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_datetime64_any_dtype(values):
        raise UserError(f"{source}: column '{column}' holds {values.dtype} values; expected {_expected(schema)}")
    if pd.api.types.is_numeric_dtype(values):
        if (fractional := int((values.notna() & (values % 1 != 0)).sum())):
            raise UserError(f"{source}: column '{column}' has {fractional} non-integer value(s) (e.g. "
                            f"{values[values % 1 != 0].iloc[0]}); expected {_expected(schema)}")
        labels = values.to_numpy()
        bad = sorted(set(np.unique(labels)) - set(range(schema.num_classes)))
    else:
        names = values.astype(str).str.strip().str.lower()
        labels = names.map({c.lower(): i for i, c in enumerate(schema.classes)}).to_numpy()
        bad = sorted(set(names[pd.isna(labels)]))
    if bad:
        shown = ", ".join(map(str, bad[:5]))
        raise UserError(f"{source}: column '{column}' has unknown class(es) {shown}; expected {_expected(schema)}")
    return labels.astype(np.int64)


def is_hdf5(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(8) == b"\x89HDF\r\n\x1a\n"


def _read_h5(path: Path) -> pd.DataFrame:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if H5_KEY not in f:
                raise UserError(f"data file {path} has no '{H5_KEY}' dataset (found: {', '.join(f.keys()) or 'none'})")
            table = f[H5_KEY][()]
    except UserError:
        raise
    except (OSError, KeyError, ValueError) as err:
        raise UserError(f"data file {path} is a damaged or truncated HDF5 file: {first_line(err)}") from err
    if table.dtype.names is None:
        raise UserError(f"data file {path}: '{H5_KEY}' is not a structured array with named columns")
    return pd.DataFrame(table)


def _read_npz(path: Path, features: tuple[str, ...]) -> pd.DataFrame:
    with np.load(path, allow_pickle=False) as npz:
        keys = set(npz.files)
        if set(features) <= keys:
            return pd.DataFrame({k: npz[k] for k in npz.files if npz[k].ndim == 1})
        if {"X", "y"} <= keys and npz["X"].ndim == 2 and npz["X"].shape[1] == len(features):
            frame = pd.DataFrame(npz["X"], columns=list(features))
            frame["label"] = npz["y"]
            return frame
    raise UserError(f"data file {path}: NPZ needs one array per feature column plus 'label', "
                    f"or 'X' (n×{len(features)}) and 'y'")
