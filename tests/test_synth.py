import numpy as np
import pandas as pd

from jscexp.data.schema import CLASSES, FEATURES
from jscexp.data.synth import generate


def test_columns_and_balance():
    frame = generate(50_000, seed=3)
    assert list(frame.columns) == [*FEATURES, "label"]
    share = np.bincount(frame["label"], minlength=5) / len(frame)
    assert np.all(np.abs(share - 0.2) <= 0.01)
    assert frame[list(FEATURES)].notna().all().all()


def test_same_seed_same_rows_other_seed_other_rows():
    pd.testing.assert_frame_equal(generate(2_000, seed=1), generate(2_000, seed=1))
    assert not generate(2_000, seed=1).equals(generate(2_000, seed=2))


def test_classes_are_physical_in_spirit():
    frame = generate(100_000, seed=0)
    by = frame.groupby("label")
    mass = by["j_mass_mmdt"].median()
    g, q, w, z, t = (CLASSES.index(c) for c in CLASSES)
    assert 75 < mass[w] < 90 and 85 < mass[z] < 100 and 150 < mass[t] < 190
    assert mass[g] < 50 and mass[q] < 50
    mult = by["j_multiplicity"].mean()
    assert mult[g] > mult[q] + 10
    assert (frame["j_multiplicity"] == frame["j_multiplicity"].round()).all()
    n2 = by["j_n2_b1_mmdt"].median()
    assert n2[w] < n2[t] < n2[q]  # 2-prong < 3-prong < 1-prong
    skew = frame[["j_c1_b0_mmdt", "j_d2_b1_mmdt", "j_c2_b1_mmdt", "j_m2_b1_mmdt"]].skew()
    assert (skew > 1).all()
