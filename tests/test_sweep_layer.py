"""The torch-free sweep layer: typed outcomes, their verdict, and the layering rules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT


def test_outcomes_round_trip_through_the_log_and_give_one_verdict(tmp_path):
    from jscexp.sweep import Outcome, OutcomeLog, Status, verdict

    log = OutcomeLog(tmp_path)
    log.start()
    log.add([Outcome.finished({"best_val_acc": 0.7}, "r1"), Outcome.finished({"best_val_acc": 0.2}, diverged=True)])
    assert verdict(log.read()).exit_code == 0 and verdict(log.read()).parent_status == "FINISHED"
    log.add([Outcome(Status.PRUNED, "pruned by the search after epoch 1")])
    failed = Outcome.failed("frac_width 10 is larger than width 8\nsecond line")
    failed.overrides = ["quantisation.weight_frac_width=10"]
    log.add([failed])
    read = log.read()
    assert [o.status for o in read] == [Status.FINISHED, Status.DIVERGED, Status.PRUNED, Status.FAILED]
    assert read[0].metrics == {"best_val_acc": 0.7} and read[0].run_id == "r1"
    result = verdict(read)
    assert (result.exit_code, result.parent_status) == (1, "FAILED")
    assert result.failures == ["quantisation.weight_frac_width=10: failed: frac_width 10 is larger than width 8"]
    assert result.summary().startswith("1 of 4 jobs failed")
    log.add([Outcome.of_exception(KeyboardInterrupt())])
    assert (verdict(log.read()).exit_code, verdict(log.read()).parent_status) == (130, "KILLED")
    log.start()  # a new sweep in the same process starts from nothing
    assert log.read() == []


def test_a_missing_objective_is_a_reason_never_a_value():
    import pytest

    from jscexp.sweep import Outcome

    done = Outcome.finished({"test_acc": 0.5})
    assert done.objective(["test_acc"]) == [0.5]
    with pytest.raises(KeyError, match="did not return best_val_acc \\(it returned test_acc\\)"):
        done.objective(["best_val_acc", "test_acc"])


def test_a_group_jobs_return_splits_per_trial_and_a_raised_job_fails_each_of_its_trials():
    from hydra.core.utils import JobReturn, JobStatus

    from jscexp.sweep import Outcome, Status, job_outcomes

    jobs = [["lr=0.1"], ["lr=0.2"], ["lr=0.3"]]
    group = JobReturn(status=JobStatus.COMPLETED,
                      _return_value=[Outcome.finished({"a": 1}), Outcome.failed("bad knob")])
    raised = JobReturn(status=JobStatus.FAILED, _return_value=ValueError("eval_batch_size must be positive"))
    out = job_outcomes([group, raised], [[0, 2], [1]], jobs)
    assert [(o.overrides, o.status) for o in out] == [
        (["lr=0.1"], Status.FINISHED), (["lr=0.2"], Status.FAILED), (["lr=0.3"], Status.FAILED)]
    assert out[1].reason == "ValueError: eval_batch_size must be positive" and out[2].reason == "bad knob"


def test_trials_a_group_asked_for_itself_come_back_after_its_own_and_count_in_the_verdict():
    """Refilled trials report through the group job's return value, not a side file: the
    sweeper's failure rate and the sweep's verdict count them like any other."""
    from hydra.core.utils import JobReturn, JobStatus

    from jscexp.sweep import Outcome, Status, job_outcomes, verdict

    asked = Outcome.failed("frac_width 10 is larger than width 8")
    asked.overrides = ["lr=0.9", "+optuna.trial=7"]
    group = JobReturn(status=JobStatus.COMPLETED,
                      _return_value=[Outcome.pruned(1), Outcome.finished({"a": 1}), asked])
    out = job_outcomes([group], [[0, 1]], [["lr=0.1"], ["lr=0.2"]])
    assert [(o.overrides, o.status) for o in out] == [
        (["lr=0.1"], Status.PRUNED), (["lr=0.2"], Status.FINISHED), (["lr=0.9", "+optuna.trial=7"], Status.FAILED)]
    assert verdict(out).failures == ["lr=0.9 +optuna.trial=7: failed: frac_width 10 is larger than width 8"]


def test_an_error_of_a_group_ends_only_its_pending_trials_and_an_interrupt_carries_the_ended_ones():
    import pickle

    from omegaconf import OmegaConf

    from jscexp.job import Trial, _end_pending, _ended
    from jscexp.sweep import Interrupted, Outcome, Status

    trials = [Trial(OmegaConf.create({}), [f"lr={v}"], Path(".")) for v in (0.1, 0.2, 0.3)]
    trials[0].outcome = Outcome.pruned(1, "r0")
    trials[1].outcome = Outcome.finished({"best_val_acc": 0.7}, "r1")
    _end_pending(trials, Outcome.of_exception(RuntimeError("CUDA out of memory")))
    assert [t.outcome.status for t in trials] == [Status.PRUNED, Status.FINISHED, Status.FAILED]
    assert trials[2].outcome.reason == "RuntimeError: CUDA out of memory"
    carried = pickle.loads(pickle.dumps(Interrupted(_ended(trials[:2]))))  # as a launcher carries it
    assert isinstance(carried, KeyboardInterrupt)
    assert [(o.overrides, o.status) for o in carried.outcomes] == [(["lr=0.1"], Status.PRUNED),
                                                                   (["lr=0.2"], Status.FINISHED)]


def test_lower_layers_never_import_the_sweeper_plugins_and_the_sweep_layer_is_torch_free():
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "jscexp").rglob("*.py") if "hydra_plugins" in p.read_text()
                 and any(line.lstrip().startswith(("import hydra_plugins", "from hydra_plugins"))
                         for line in p.read_text().splitlines())]
    assert offenders == []
    code = "import sys, jscexp.sweep; print(sorted(m for m in ('torch', 'mlflow', 'optuna') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=Path(ROOT))
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


def test_a_sweeps_job_configs_compose_once_per_shape_and_equal_hydras_own():
    """Jobs differing only in vector knobs share one composition; each job's config equals
    the one Hydra composes for it, and a knob of the wrong type fails with Hydra's message."""
    import pytest
    from hydra.errors import ConfigCompositionException
    from omegaconf import OmegaConf

    from conftest import compose_cfg
    from jscexp.sweep.configs import JobConfigs

    composed: list[list[str]] = []

    def compose(overrides):
        composed.append(list(overrides))
        return compose_cfg(overrides)

    configs = JobConfigs(compose)
    base = ["model=jsc-toy", "optimizer=sgd", "quantisation=int8", "mode=qat"]
    jobs = [[*base, f"learning_rate={lr}", f"seed={s}", f"optimizer.momentum={m}", f"quantisation.weight_width={w}"]
            for lr, s, m, w in [(1e-3, 0, 0.9, 4), ("1e-2", 1, 0.5, 6), (0.1, 2, 0.0, 8)]]
    for job in jobs:
        assert OmegaConf.to_container(configs(job)) == OmegaConf.to_container(compose_cfg(job))
    assert composed == [base]
    with pytest.raises(ConfigCompositionException, match="learning_rate"):
        configs([*base, "learning_rate=fast"])


def test_the_stages_a_run_trains_with_never_import_the_sweep_layer():
    """data, models, analysis, quant, train and export sit below the sweep layer: a module of
    theirs that imported jscexp.sweep would make a run depend on how sweeps group it."""
    stages = ("data", "models", "analysis", "quant", "train", "export")
    offenders = sorted(str(p.relative_to(ROOT)) for stage in stages for p in (ROOT / "jscexp" / stage).rglob("*.py")
                       if any(line.lstrip().startswith(("from jscexp.sweep", "import jscexp.sweep"))
                              for line in p.read_text().splitlines()))
    assert offenders == []


@pytest.mark.parametrize("text", ["a b", "it's", "C:\\dir\\x", "end\\", "q\\'x", "a,b", "x\\\\y",
                                  "${sub:${quantisation.weight_width},1}"])
def test_one_quoting_rule_hydra_reads_back_unchanged(text):
    """A string choice and a stacked group's trial overrides go through Hydra's grammar and come
    back as they were (a backslash mid-string was doubled before)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from jscexp.sweep.overrides import group_override, override_value

    parser = OverridesParser.create()
    assert parser.parse_overrides([f"k={override_value(text)}"])[0].value() == text
    group = parser.parse_overrides([group_override([[f"x={text}", "seed=0"]])])[0].value()
    assert group == [[f"x={text}", "seed=0"]]
