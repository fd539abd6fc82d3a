"""A training run end to end: what lands in MLflow, reproducibility, and test mode."""

from pathlib import Path

import pytest

from conftest import FAST, mlflow_client, run_cli, run_job, runs_of


@pytest.fixture
def trained(workdir):
    best = run_job([*FAST, "max_epochs=2"], workdir / "out")
    (run,) = runs_of(workdir)
    return best, run


def test_run_logs_params_metrics_tags_and_artifacts(workdir, trained):
    best, run = trained
    assert run.info.status == "FINISHED"
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    assert params["model.name"] == "jsc-tiny" and params["n_params"] == "117"
    assert params["batch_size"] == "128" and params["optimizer"] == "Adam" and params["scheduler"] == "CosineAnnealingLR"
    assert tags["jscexp.synthetic"] == "true" and params["dataset.source"] == "synthetic" and params["dataset.n_rows"] == "6000"
    assert {f"test_acc_{c}" for c in "gqWZt"} <= set(metrics)  # each class's test accuracy, by its name
    assert params["data.rows_train"] == "4320" and params["data.rows_test"] == "1200"
    # the knobs that define the run, once each: no plumbing, no _target_, no copies, no unset values
    assert len(params) <= 30 and "optimizer.lr" not in params and "model_name" not in params
    assert not [k for k in params if k.endswith(("_target_", "_partial_")) or k.startswith(("mlflow.", "analysis."))]
    assert "None" not in params.values() and "" not in params.values()
    (dataset,) = mlflow_client(workdir).get_run(run.info.run_id).inputs.dataset_inputs
    assert dataset.dataset.name == "jsc_synth (synthetic)" and dataset.dataset.source_type == "synthetic"
    assert '"rows": 6000' in dataset.dataset.profile
    assert tags["mlflow.user"] and tags["mlflow.source.type"] == "LOCAL"
    for key in ("train_acc", "val_acc", "test_acc", "train_loss", "val_loss", "test_loss", "best_val_acc"):
        assert 0 <= metrics[key] < (1.0001 if key.endswith("acc") else 10), key
    assert best.metrics["best_val_acc"] == metrics["best_val_acc"]
    for key in ("fit_seconds", "epoch_seconds_mean", "train_samples_per_second"):
        assert metrics[key] > 0
    assert tags["jscexp.synthetic"] == "true" and tags["jscexp.dataset"] == "jsc_synth"
    assert tags["jscexp.overrides"] == " ".join([*FAST, "max_epochs=2"])
    assert tags["jscexp.version"]

    client = mlflow_client(workdir)
    history = client.get_metric_history(run.info.run_id, "val_acc")
    assert sorted(m.step for m in history) == [0, 1]  # one write per epoch
    # the table's training, validation and test accuracy all come from the best epoch
    best_epoch = int(metrics["best_epoch"])
    assert max(history, key=lambda m: (m.value, -m.step)).step == best_epoch
    train = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "train_acc")}
    assert metrics["best_train_acc"] == train[best_epoch]
    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "training_curves.png", "checkpoints"} <= top
    assert [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")] == ["checkpoints/best.ckpt"]
    config = Path(client.download_artifacts(run.info.run_id, "config.yaml", str(workdir)))
    assert "batch_size: 128" in config.read_text()


def test_same_seed_same_numbers(workdir, trained):
    _, first = trained
    run_job([*FAST, "max_epochs=2"], workdir / "out2")
    second = runs_of(workdir)[-1]
    for key in ("train_acc", "val_acc", "test_acc", "test_loss"):
        assert first.data.metrics[key] == second.data.metrics[key], key


def test_other_seed_other_numbers(workdir, trained):
    _, first = trained
    run_job([*FAST, "max_epochs=2", "seed=1"], workdir / "out2")
    assert runs_of(workdir)[-1].data.metrics["train_loss"] != first.data.metrics["train_loss"]


def test_test_mode_reproduces_the_logged_test_accuracy(workdir, trained):
    _, run = trained
    ckpt = run.data.tags["jscexp.checkpoint"]
    acc = run_job([*FAST, "mode=test", f"ckpt={ckpt}"], workdir / "out3").metrics["test_acc"]
    assert acc == pytest.approx(run.data.metrics["test_acc"], abs=1e-7)
    tested = runs_of(workdir)[-1]
    assert tested.data.tags["jscexp.mode"] == "test" and tested.info.status == "FINISHED"
    assert tested.data.metrics["test_acc"] == pytest.approx(acc)


@pytest.mark.parametrize(
    "args, message",
    [
        (["mode=test"], "mode=test needs a checkpoint: add ckpt=PATH"),
        (["mode=test", "ckpt=nowhere.ckpt"], "checkpoint nowhere.ckpt does not exist"),
        (["mode=test", "ckpt=garbage.ckpt"], "checkpoint garbage.ckpt is not a readable PyTorch checkpoint"),
        (["dataset.n_rows=2"], "dataset.n_rows must be at least 5"),
        (["mode=fly"], "Error merging override mode=fly; Invalid value 'fly', expected one of [train, test, qat, ptq,"),
        (["batch_size=abc"], "Error merging override batch_size=abc; Value 'abc' of type 'str' could not be converted"),
        (["trainer.patience=3"], "Could not override 'trainer.patience'.; To append to your config use +trainer.patience=3"),
    ],
)
def test_bad_input_is_one_line_nonzero_exit_and_no_run(workdir, args, message):
    (workdir / "garbage.ckpt").write_text("not a checkpoint")
    result = run_cli(["dataset=jsc_synth", *args], workdir)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {message}" or result.stderr.strip().startswith(f"error: {message}")
    assert len(result.stderr.strip().splitlines()) == 1
    assert runs_of(workdir) == []


def test_checkpoint_for_another_model_is_refused(workdir, trained):
    _, run = trained
    result = run_cli(["mode=test", f"ckpt={run.data.tags['jscexp.checkpoint']}", "model=jsc-toy", *FAST], workdir)
    assert result.returncode == 2
    assert "is for model=jsc-tiny, not model=jsc-toy: add model=jsc-tiny" in result.stderr
    assert len(runs_of(workdir)) == 1


def test_a_checkpoint_brings_its_model_and_data_recipe_unless_the_command_names_them(workdir):
    """README's `mode=test ckpt=…` and docs/quantisation.md's `mode=ptq|transform ckpt=…` after a
    jsc-toy training on the stand-in: the commands name neither model nor dataset."""
    trained = run_job([*FAST, "model=jsc-toy"], workdir / "train")
    ckpt = runs_of(workdir)[-1].data.tags["jscexp.checkpoint"]
    tested = run_job(["mode=test", f"ckpt={ckpt}", "trainer.progress_bar=false"], workdir / "test")
    assert tested.metrics["test_acc"] == trained.metrics["test_acc"]  # the same model on the same test split
    run = runs_of(workdir)[-1]
    assert run.data.params["model.name"] == "jsc-toy" and run.data.params["dataset.n_rows"] == "6000"
    ptq = run_job(["mode=ptq", "quantisation=int8", f"ckpt={ckpt}", "trainer.progress_bar=false"], workdir / "ptq")
    assert ptq.metrics["float_test_acc"] == trained.metrics["test_acc"]
    named = run_cli(["mode=test", f"ckpt={ckpt}", "model=jsc-tiny", *FAST], workdir)  # named: still refused
    assert named.returncode == 2 and "is for model=jsc-toy, not model=jsc-tiny: add model=jsc-toy" in named.stderr


def test_a_failing_job_is_recorded_failed_not_running(workdir, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("jscexp.train.loop.train_epoch", explode)
    with pytest.raises(RuntimeError, match="boom"):
        run_job(FAST, workdir / "out")
    (run,) = runs_of(workdir)
    assert run.info.status == "FAILED"
    assert run.data.tags["error"] == "RuntimeError: boom"


def test_an_epochs_mean_loss_is_weighted_by_batch_size_and_a_nan_batch_makes_it_nan():
    """The training loss a run logs: batches weighted by their size; a NaN batch loss (a trial
    diverging mid-epoch) makes that trial's mean NaN and leaves its group mates' alone."""
    import math

    import torch

    from jscexp.train.loop import Tally

    tally = Tally(2, torch.device("cpu"))
    y = torch.zeros(4, dtype=torch.long)
    logits = torch.zeros(2, 4, 5)
    tally.update(logits[:, :3], y[:3], torch.tensor([math.nan, 2.0]))  # a batch of 3
    tally.update(logits[:, 3:], y[3:], torch.tensor([1.0, 4.0]))  # a batch of 1
    first, second = tally.compute("train_")
    assert math.isnan(first["train_loss"]) and second["train_loss"] == 2.5  # (2 x 3 + 4 x 1) / 4
