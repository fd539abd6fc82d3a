import numpy as np
import pandas as pd

from jscexp.data.recipe import apply_recipe
from jscexp.data.schema import FEATURES
from jscexp.data.synth import generate


def test_split_sizes_follow_the_published_recipe():
    splits = apply_recipe(generate(10_000, seed=0), drop_duplicates=False)
    assert len(splits.y_test) == 2_000
    assert len(splits.y_val) == 800 and len(splits.y_train) == 7_200
    assert splits.info["rows_train"] == 7_200 and splits.x_train.dtype == np.float32


def test_scaler_is_fit_on_the_train_rows_only():
    splits = apply_recipe(generate(10_000, seed=0), drop_duplicates=False)
    np.testing.assert_allclose(splits.x_train.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(splits.x_train.std(axis=0), 1, atol=1e-3)
    assert np.abs(splits.x_test.mean(axis=0)).max() > 1e-3  # test rows were not used to fit


def test_same_split_twice_regardless_of_anything_else():
    a = apply_recipe(generate(5_000, seed=0), drop_duplicates=False)
    b = apply_recipe(generate(5_000, seed=0), drop_duplicates=False)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    np.testing.assert_array_equal(a.y_val, b.y_val)


def test_duplicates_are_dropped_when_asked():
    frame = generate(1_000, seed=0)
    doubled = pd.concat([frame, frame.iloc[:100]], ignore_index=True)
    kept = apply_recipe(doubled, drop_duplicates=False)
    dropped = apply_recipe(doubled, drop_duplicates=True)
    assert kept.info["rows"] == 1_100 and dropped.info["rows"] == 1_000
    assert dropped.info["rows_raw"] == 1_100
    assert len(dropped.y_train) + len(dropped.y_val) + len(dropped.y_test) == 1_000
    assert set(FEATURES) <= set(frame.columns)
