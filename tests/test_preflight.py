"""What a sweep can know before its first trial is checked then: one line, exit 2, no MLflow
run, no Optuna trial (jscexp.sweep.checks). And each job leaves the process as it found it."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

from conftest import FAST, run_cli, run_job, runs_of, sweep

SPACE = "learning_rate=interval(1e-3,1e-2)"
POPULATION = "+pbt.space={learning_rate:{low:1e-4,high:1e-1,log:true}}"


@pytest.mark.parametrize(("args", "line"), [
    (["sweeper=optuna", "hydra.sweeper.objectives=[best_val_accc]", SPACE],
     "error: hydra.sweeper.objectives: 'best_val_accc' is not a metric a mode=train job returns; it returns best_epoch, "),
    (["sweeper=optuna", "mode=test", "ckpt=x.ckpt", "hydra.sweeper.objectives=[best_val_acc]", SPACE],
     "error: hydra.sweeper.objectives: 'best_val_acc' is not a metric a mode=test job returns; it returns test_acc, test_loss"),
    (["sweeper=optuna", "mode=train", "hydra.sweeper.objectives=[avg_weight_bits]", SPACE],  # a float model has no bits
     "error: hydra.sweeper.objectives: 'avg_weight_bits' is not a metric a mode=train job returns"),
    (["sweeper=optuna", "mode=analyse", SPACE],
     "error: hydra.sweeper.objectives: 'best_val_acc' is not a metric a mode=analyse job returns; it returns no metric"),
    (["sweeper=optuna", "hydra.sweeper.sampler=grid", SPACE],
     "error: hydra.sweeper.sampler is a config group, not a value: choose it with hydra/sweeper/sampler=grid"),
    (["sweeper=optuna", "hydra.sweeper.pruner=median", SPACE],
     "error: hydra.sweeper.pruner is a config group, not a value: choose it with hydra/sweeper/pruner=median"),
    (["sweeper=optuna", "hydra.sweeper.n_trials=0", SPACE], "error: hydra.sweeper.n_trials and n_jobs must be 1 or more"),
    ([POPULATION, "learning_rate=1e-3"], "error: pbt trains a population: sweep two or more trials that stack"),
    ([POPULATION, "learning_rate=1e-3,1e-2", "pbt.quantile_fraction=0.9"],
     "error: pbt.quantile_fraction must be above 0 and at most 0.5, got 0.9"),
    (["+pbt.space={batch_size:{low:32,high:64}}", "learning_rate=1e-3,1e-2"],
     "error: pbt.space.batch_size: population-based training explores learning_rate"),
    # learned widths are parameters: a member's new start would be ignored (LearnedQuantiser.explorable)
    (["mode=qat", "quantisation=learned", "+pbt.space={quantisation.weight_frac_width:{low:4,high:7,integer:true}}",
      "learning_rate=1e-3,1e-2"], "error: pbt.space.quantisation.weight_frac_width: population-based training explores"),
])
def test_a_sweep_mistake_is_one_line_before_any_run_or_trial(workdir, args, line):
    result = run_cli(["-m", *FAST, "experiment=search", *args], workdir)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and result.stderr.strip().splitlines()[-1].startswith(line), result.stderr
    assert runs_of(workdir, "search") == []  # no sweep parent, no job run
    assert not (workdir / "optuna-journal.log").exists()  # no study, no trial


def test_data_nobody_can_load_is_said_once_before_any_job(workdir):
    """Offline, with no copy on disk: the sweep's own setup error — one line, exit 2, no parent
    run — not the same download error once per job and a FAILED parent."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens here once it closes
    result = run_cli(["-m", "dataset=jsc", "dataset.source=cernbox", f"dataset.cernbox_url={dead}/download",
                      "dataset.download_timeout=2", "max_epochs=1", "learning_rate=1e-3,1e-2,1e-1"], workdir)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "dataset=jsc_synth" in errors[0], result.stderr
    assert runs_of(workdir) == []


def test_the_objectives_a_mode_returns_are_the_ones_its_jobs_return(workdir):
    """The table the check reads (jscexp.config.returned_metrics) against real jobs' outcomes."""
    from jscexp.config import returned_metrics

    trained = run_job([*FAST, "model=jsc-tiny"], workdir / "train")
    qat = run_job([*FAST, "model=jsc-tiny", "mode=qat", "quantisation=int8"], workdir / "qat")
    ptq = run_job([*FAST, "model=jsc-tiny", "mode=ptq", "quantisation=int8"], workdir / "ptq")
    for mode, outcome in (("train", trained), ("qat", qat), ("ptq", ptq)):
        assert set(returned_metrics(mode)) <= set(outcome.metrics), mode
    assert "avg_weight_bits" not in trained.metrics  # a float run logs no bit costs: never a made-up 32
    assert sweep(workdir, "hydra.sweeper.objectives=[best_val_acc,avg_weight_bits]", "mode=qat", "quantisation=int8",
                 "hydra.sweeper.n_trials=1", SPACE).returncode == 0


def test_each_job_starts_from_the_process_state_and_leaves_it_so(workdir, monkeypatch):
    """Threads and deterministic mode are each job's own; RNGs and environment come back as they were."""
    from jscexp.train import fit

    seen = []
    real = fit.train

    def spy(*args, **kwargs):
        seen.append((torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()))
        return real(*args, **kwargs)

    monkeypatch.setattr(fit, "train", spy)
    threads, deterministic, environ = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(), dict(os.environ)
    rngs = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    first = run_job([*FAST, "trainer.num_threads=1", "trainer.deterministic=true"], workdir / "a")
    assert torch.get_num_threads() == threads and torch.are_deterministic_algorithms_enabled() == deterministic
    assert dict(os.environ) == environ  # no PL_GLOBAL_SEED, no CUBLAS_WORKSPACE_CONFIG left behind
    assert torch.equal(torch.get_rng_state(), rngs[0]) and (np.random.get_state()[1] == rngs[1]).all()
    assert random.getstate() == rngs[2]
    run_job([*FAST, "trainer.deterministic=false"], workdir / "b")
    again = run_job([*FAST, "trainer.num_threads=1", "trainer.deterministic=true"], workdir / "c")
    assert seen == [(1, True), (threads, False), (1, True)]
    assert again.metrics["best_val_acc"] == first.metrics["best_val_acc"]
    assert again.metrics["test_loss"] == first.metrics["test_loss"]
