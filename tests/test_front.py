"""The accuracy–EBOPs front (#28): which runs are on it, its hypervolume by hand (and against
Optuna's own), and the --front table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from jscexp.tracking.front import hypervolume, non_dominated

POINTS = pd.DataFrame({"acc": [0.60, 0.70, 0.65, 0.70, 0.50, 0.72],
                       "ebops": [1000.0, 3000.0, 3000.0, 5000.0, 500.0, 9000.0]})


def test_the_front_keeps_exactly_the_points_no_other_beats():
    front = non_dominated(POINTS, "acc", "ebops")
    assert front.index.tolist() == [4, 0, 1, 5]  # cheapest first; (0.65, 3000) and (0.70, 5000) are beaten
    for i, row in POINTS.iterrows():
        beaten = ((POINTS["acc"] >= row["acc"]) & (POINTS["ebops"] <= row["ebops"])
                  & ((POINTS["acc"] > row["acc"]) | (POINTS["ebops"] < row["ebops"]))).any()
        assert beaten == (i not in front.index)


def test_hypervolume_by_hand_and_as_optuna_computes_it():
    from optuna._hypervolume import compute_hypervolume

    points = list(zip(POINTS["acc"], POINTS["ebops"]))
    reference = (0.2, 10000.0)
    # rectangles from the cheapest up: (0.5-0.2)·9500 + (0.6-0.5)·9000 + (0.7-0.6)·7000 + (0.72-0.7)·1000
    assert hypervolume(points, reference) == pytest.approx(2850 + 900 + 700 + 20)
    as_minimised = np.array([[-a, c] for a, c in points])
    assert hypervolume(points, reference) == pytest.approx(compute_hypervolume(as_minimised, np.array([-0.2, 10000.0])))
    assert hypervolume([(0.1, 100.0), (0.9, 20000.0)], reference) == 0.0  # beyond the reference: nothing


def test_the_front_table_names_each_layers_knob_briefly():
    from jscexp.tracking.front import table

    runs = pd.DataFrame({"run_id": ["a"], "tags.mlflow.runName": ["#0"], "metrics.best_val_acc": [0.7],
                         "metrics.ebops": [1234.0], "params.quantisation.seq_blocks_2.config.weight_width": ["4"]})
    assert table(runs, ["quantisation.seq_blocks_2.config.weight_width"]).to_dict("records") == [
        {"run": "#0", "val acc": 0.7, "EBOPs": 1234.0, "seq_blocks_2.weight_width": "4"}]


def test_the_uniform_reference_holds_the_uniform_width_runs_and_only_them(workdir):
    """front.png's orange points: the store's QAT runs of the same model and data with one width
    per role everywhere (they all log quantisation.linear.config.*, which used to rule every
    one out); a run with a layer's own width or learned widths is no reference."""
    from conftest import FAST, mlflow_client, run_job
    from jscexp.tracking.front import UNIFORM_TAG, uniform_reference

    qat = [*FAST, "model=jsc-toy", "mode=qat"]
    uniform = run_job([*qat, "quantisation=int8"], workdir / "u").run_id
    per_layer = run_job([*qat, "quantisation=int8", "+quantisation.seq_blocks_5.config.weight_width=4",
                         "+quantisation.seq_blocks_5.config.weight_frac_width=3"], workdir / "p").run_id
    learned = run_job([*qat, "quantisation=learned"], workdir / "l").run_id
    client = mlflow_client(workdir)
    assert [client.get_run(r).data.tags[UNIFORM_TAG] for r in (uniform, per_layer, learned)] == ["true", "false", "false"]
    params = client.get_run(learned).data.params
    runs = pd.DataFrame([{f"params.{k}": v for k, v in params.items()}])
    reference = uniform_reference(client, runs)
    assert reference["run_id"].tolist() == [uniform]
    assert reference["ebops"].tolist() == [client.get_run(uniform).data.metrics["ebops"]]
