"""The stand-in is worth sweeping on: jsc-tiny lands where it does on real JSC, a bigger
MLP does better."""

import pytest

from conftest import run_job, runs_of

COMMON = ["dataset=jsc_synth", "dataset.n_rows=100000", "max_epochs=4", "batch_size=256", "learning_rate=1e-3",
          "trainer.progress_bar=false"]


@pytest.mark.slow
def test_jsc_tiny_reaches_lab_like_accuracy_and_the_mlp_beats_it(workdir):
    run_job([*COMMON, "model=jsc-tiny"], workdir / "tiny")
    run_job([*COMMON, "model=mlp"], workdir / "mlp")
    tiny, mlp = (r.data.metrics["test_acc"] for r in runs_of(workdir))
    assert 0.60 <= tiny <= 0.75
    assert mlp >= tiny + 0.02
