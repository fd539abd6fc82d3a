"""Processed splits on disk, keyed by source and recipe; safe for concurrent writers.

Each writer writes its own temp file and renames it into place: readers see a whole file
or none, and two jobs racing on a cold cache both succeed.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from jscexp.data.recipe import Splits

_ARRAYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
VERSION = 1  # bump when the processing changes, so old entries are not reused


def cache_key(identity: dict) -> str:
    text = json.dumps({"version": VERSION, **identity}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def load(cache_dir: Path, key: str) -> Splits | None:
    path = cache_dir / f"splits-{key}.npz"
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in _ARRAYS}
            info = json.loads(str(npz["info"]))
    except (OSError, KeyError, ValueError):  # absent or unreadable: rebuild it
        return None
    return Splits(**arrays, info=info)


def store(cache_dir: Path, key: str, splits: Splits) -> None:
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=".splits-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **{name: getattr(splits, name) for name in _ARRAYS}, info=json.dumps(splits.info))
        os.replace(tmp, cache_dir / f"splits-{key}.npz")
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
