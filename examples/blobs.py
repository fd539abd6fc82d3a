"""An own dataset for jscexp: an 8-feature, 3-class table in a CSV file, read by jscexp's generic
tabular source (conf/dataset/blobs.yaml names its columns and classes). This file writes one:

    python examples/blobs.py blobs.csv 6000
    python -m jscexp hydra.searchpath=[file://examples/conf] dataset=blobs dataset.path=blobs.csv

A dataset that is not a table is a ``jscexp.data.source.Source`` subclass instead (see
docs/extending.md); its conf names it with ``_target_`` the same way.
"""

import sys

import numpy as np
import pandas as pd

FEATURES = [f"f{i}" for i in range(8)]
CLASSES = ["low", "mid", "high"]


def make_csv(path: str, rows: int = 6000, seed: int = 0) -> None:
    """Three overlapping Gaussian blobs in 8 dimensions, labelled by class name."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, len(CLASSES), rows)
    centres = rng.normal(0.0, 1.0, (len(CLASSES), len(FEATURES)))
    x = centres[label] + rng.normal(0.0, 1.2, (rows, len(FEATURES)))
    frame = pd.DataFrame(x, columns=FEATURES)
    frame["kind"] = np.array(CLASSES)[label]
    frame.to_csv(path, index=False)


if __name__ == "__main__":
    make_csv(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 6000)
