import numpy as np

from jscexp.data.recipe import apply_recipe
from jscexp.data.synth import generate


def test_split_sizes_follow_the_published_recipe():
    splits = apply_recipe(generate(10_000, seed=0))
    assert len(splits.y_test) == 2_000
    assert len(splits.y_val) == 800 and len(splits.y_train) == 7_200
    assert splits.info["rows_train"] == 7_200 and splits.x_train.dtype == np.float32


def test_scaler_is_fit_on_the_train_rows_only():
    splits = apply_recipe(generate(10_000, seed=0))
    np.testing.assert_allclose(splits.x_train.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(splits.x_train.std(axis=0), 1, atol=1e-3)
    assert np.abs(splits.x_test.mean(axis=0)).max() > 1e-3  # test rows were not used to fit


def test_same_split_twice_regardless_of_anything_else():
    a = apply_recipe(generate(5_000, seed=0))
    b = apply_recipe(generate(5_000, seed=0))
    np.testing.assert_array_equal(a.x_test, b.x_test)
    np.testing.assert_array_equal(a.y_val, b.y_val)


