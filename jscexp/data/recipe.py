"""The split-and-scale recipe shared by every source (hls4ml, LogicNets and MASE use it).

(dedup, done on the raw frame by the loader) → train_test_split(test_size=0.2, random_state=42) → a held-out
validation split carved from train → StandardScaler fit on the train rows only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from jscexp.data.schema import JSC, Schema

if TYPE_CHECKING:
    import pandas as pd

SPLIT_SEED = 42  # the published recipe's random_state; fixed so every run sees the same split


@dataclass
class Splits:
    """Scaled float32 features and int64 labels per split, plus what to log about them."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    info: dict = field(default_factory=dict)

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")


def apply_recipe(
    frame: pd.DataFrame,
    schema: Schema = JSC,
    *,
    test_size: float = 0.2,
    val_size: float = 0.1,
) -> Splits:
    """Splits and scales a frame holding the schema's features and an integer ``label`` column.

    ``val_size`` is the fraction of the train part held out for validation.
    """
    x = frame[list(schema.features)].to_numpy(dtype=np.float32)
    y = frame["label"].to_numpy(dtype=np.int64)
    # here, not at the top: a run on cached splits never pays sklearn's import (~1.4 s)
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_size, random_state=SPLIT_SEED
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x_train, y_train, test_size=val_size, random_state=SPLIT_SEED
    )
    scaler = StandardScaler().fit(x_train)
    splits = Splits(
        *(
            a
            for xs, ys in ((x_train, y_train), (x_val, y_val), (x_test, y_test))
            for a in (scaler.transform(xs).astype(np.float32), ys)
        )
    )
    balance = np.bincount(y, minlength=schema.num_classes) / max(len(y), 1)
    splits.info = {
        "rows": len(frame),
        "rows_train": len(y_train),
        "rows_val": len(y_val),
        "rows_test": len(y_test),
        **{f"class_frac_{c}": round(float(f), 4) for c, f in zip(schema.classes, balance)},
    }
    return splits
