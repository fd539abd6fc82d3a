"""Vectorised trials (#11): grid points that differ only in lr/seed/optimizer knobs trained as
one stacked model, each still its own MLflow run with the numbers it would have had alone."""

from __future__ import annotations

import pytest

from conftest import CONF, mlflow_client, run_cli, run_job, runs_of

GRID = ["-m", "dataset=jsc_synth", "dataset.n_rows=6000", "max_epochs=2", "trainer.progress_bar=false",
        "model=jsc-toy", "optimizer=sgd", "data_seed=0"]


def histories(workdir, experiment: str, keys=("learning_rate", "seed")) -> dict[tuple[str, ...], dict]:
    """Per (learning_rate, seed) or other ``keys``: val_acc per epoch, final metrics, tags, params, artifacts."""
    client = mlflow_client(workdir)
    out = {}
    for r in runs_of(workdir, experiment):
        if r.data.tags.get("jscexp.kind") == "sweep":
            continue
        hist = sorted(client.get_metric_history(r.info.run_id, "val_acc"), key=lambda m: m.step)
        out[tuple(r.data.params[k] for k in keys)] = {
            "run_id": r.info.run_id, "val_acc": [m.value for m in hist], "metrics": r.data.metrics, "tags": r.data.tags,
            "params": r.data.params, "status": r.info.status,
            "artifacts": sorted(a.path for a in client.list_artifacts(r.info.run_id)),
        }
    return out


def grid(workdir, experiment: str, *args: str) -> dict:
    result = run_cli([*GRID, f"experiment={experiment}", *args], workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    return histories(workdir, experiment)


@pytest.mark.slow
def test_a_vectorised_grid_gives_every_trial_its_own_numbers_and_a_diverging_trial_changes_none(workdir):
    setup = ["model=mlp", "max_epochs=3", "seed=0,1"]  # lr 1e3 blows the MLP up
    alone = grid(workdir, "alone", "learning_rate=1e-2,5e-2", *setup, "trainer.vectorize=off")
    stacked = grid(workdir, "stacked", "learning_rate=1e-2,5e-2,1e3", *setup)  # trainer.vectorize=auto: the default
    assert set(alone) < set(stacked) and len(stacked) == 6
    for key, one in alone.items():
        vec = stacked[key]
        assert vec["val_acc"] == one["val_acc"], key  # per epoch, SGD: bit for bit here
        assert vec["metrics"]["test_acc"] == one["metrics"]["test_acc"]
        assert vec["status"] == "FINISHED" and vec["artifacts"] == one["artifacts"]
        assert set(vec["params"]) == set(one["params"])
    for seed in ("0", "1"):
        wild = stacked[("1000.0", seed)]
        assert wild["status"] == "FINISHED" and wild["tags"]["jscexp.diverged"] == "true"
    groups = {v["tags"]["jscexp.vector_group"] for v in stacked.values()}
    assert len(groups) == 1 and not any("jscexp.vector_group" in v["tags"] for v in alone.values())
    assert {v["tags"]["mlflow.parentRunId"] for v in stacked.values()} != {None}


def alone_and_stacked(workdir, common: list[str], trials: list[list[str]], keys: tuple[str, ...]):
    """Each trial run alone, then all of them as one group job, in-process: their histories."""
    from hydra import compose, initialize_config_dir

    from jscexp.job import run
    from jscexp.sweep import group_override

    for i, t in enumerate(trials):
        run_job([*common, "experiment=alone", *t], workdir / f"alone_{i}")
    group = [*common, "experiment=stacked", group_override(trials)]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        run(compose("config", overrides=group), workdir / "group", group)
    alone, stacked = histories(workdir, "alone", keys), histories(workdir, "stacked", keys)
    assert set(alone) == set(stacked) and len(stacked) == len(trials)
    assert len({one["metrics"]["test_acc"] for one in alone.values()}) > 1  # the knobs matter
    for key, one in alone.items():
        vec = stacked[key]
        assert vec["val_acc"] == one["val_acc"], key  # per epoch
        assert vec["metrics"]["test_acc"] == one["metrics"]["test_acc"], key
        assert vec["artifacts"] == one["artifacts"] and "jscexp.vector_group" in vec["tags"]
    return alone, stacked


SMALL = ["dataset=jsc_synth", "dataset.n_rows=6000", "max_epochs=2", "trainer.progress_bar=false", "seed=0", "data_seed=0"]


def test_quantised_trials_with_their_own_widths_match_their_runs_alone(workdir):
    """QAT with integer quantisers of different widths per trial (int4 also quantises the ReLUs'
    inputs, unsigned): the stacked group gives each trial its lone run's numbers."""
    common = [*SMALL, "model=jsc-toy", "optimizer=sgd", "learning_rate=5e-2", "mode=qat", "quantisation=int4"]
    # the bit-width sweep of docs/quantisation.md: each trial's frac width interpolated from its own width
    trials = [[f"quantisation.weight_width={w}", 'quantisation.weight_frac_width="${sub:${quantisation.weight_width},1}"',
               f"quantisation.data_in_width={x}", f"quantisation.data_in_frac_width={x - 2}"]
              for w, x in ((2, 4), (3, 6), (5, 8), (8, 3))]
    alone, stacked = alone_and_stacked(workdir, common, trials,
                                       ("quantisation.weight_width", "quantisation.data_in_width"))
    for key, vec in stacked.items():
        assert vec["metrics"]["quant_offgrid_values"] == 0 and vec["tags"]["jscexp.quant_check"] == "passed"
        assert int(vec["params"]["quantisation.weight_frac_width"]) == int(key[0]) - 1
        w, x = int(key[0]), int(key[1])  # each trial's own hardware cost, by hand: 16-8-8-5, ⌈log2 n⌉ 4, 3, 3
        assert vec["metrics"]["bops"] == 128 * (x * w + x + w + 4) + (64 + 40) * (x * w + x + w + 3)
        assert vec["metrics"]["ebops"] == alone[key]["metrics"]["ebops"]


def test_all_fixed_point_trials_with_a_quantised_batchnorm_match_their_runs_alone(workdir):
    """int8_all quantises jsc-toy's BatchNorms too (input, folded scale and shift when evaluating):
    trials of their own widths stack, each with its lone run's numbers, costs and grid check."""
    common = [*SMALL, "model=jsc-toy", "optimizer=sgd", "learning_rate=5e-2", "mode=qat", "quantisation=int8_all"]
    trials = [[f"quantisation.weight_width={w}", f"quantisation.weight_frac_width={w - 2}"] for w in (4, 6, 8)]
    alone, stacked = alone_and_stacked(workdir, common, trials, ("quantisation.weight_width",))
    for key, vec in stacked.items():
        assert vec["metrics"]["ebops"] == alone[key]["metrics"]["ebops"], key
        assert vec["tags"]["jscexp.quant_check"] == "passed"


def test_learned_width_trials_with_their_own_beta_match_their_runs_alone(workdir):
    """Learned formats (a width per weight from its value, per input feature traced from the
    data, per trial in the stacked buffers): each β's slice gives its lone run's numbers and EBOPs."""
    common = [*SMALL, "model=jsc-toy", "optimizer=sgd", "learning_rate=5e-2", "mode=qat", "quantisation=learned"]
    alone, stacked = alone_and_stacked(workdir, common, [["quantisation.beta=0"], ["quantisation.beta=3e-4"]],
                                       ("quantisation.beta",))
    for key, vec in stacked.items():
        assert vec["metrics"]["ebops"] == alone[key]["metrics"]["ebops"], key
        assert vec["tags"]["jscexp.quant_check"] == "passed"
    assert stacked[("0.0003",)]["metrics"]["ebops"] < stacked[("0",)]["metrics"]["ebops"]


@pytest.mark.parametrize("quantisation", ["minifloat8", "ternary"])
def test_quantisers_without_a_vectorised_form_stack_trial_by_trial_with_their_lone_numbers(workdir, quantisation):
    """A quantiser that declares no stacked form of its own gets the generic one (each trial's
    quantiser on its slice): trials of other learning rates keep their lone runs' numbers."""
    common = [*SMALL, "model=jsc-toy", "optimizer=sgd", "mode=qat", f"quantisation={quantisation}"]
    alone, stacked = alone_and_stacked(workdir, common, [["learning_rate=0.05"], ["learning_rate=0.1"]],
                                       ("learning_rate",))
    assert len(stacked) == 2
    for key, vec in stacked.items():
        assert vec["metrics"]["test_acc"] == alone[key]["metrics"]["test_acc"], key
        assert vec["tags"]["jscexp.quant_check"] == "passed"


@pytest.mark.slow
def test_trials_with_their_own_per_layer_widths_match_their_runs_alone(workdir):
    """A width per layer (fx node name) is a knob like any width: trials differing in jsc-toy's
    middle Linear share one stacked model, each with its lone run's numbers and costs."""
    common = [*SMALL, "model=jsc-toy", "optimizer=sgd", "learning_rate=5e-2", "mode=qat", "quantisation=int8"]
    trials = [[f"+quantisation.seq_blocks_5.config.weight_width={w}",
               f"+quantisation.seq_blocks_5.config.weight_frac_width={w - 1}"] for w in (2, 4, 6)]
    alone, stacked = alone_and_stacked(workdir, common, trials, ("quantisation.seq_blocks_5.config.weight_width",))
    for key, vec in stacked.items():
        w = int(key[0])
        assert vec["metrics"]["bops"] == 128 * 84 + 64 * (8 * w + 8 + w + 3) + 40 * 83
        assert vec["metrics"]["ebops"] == alone[key]["metrics"]["ebops"] and vec["tags"]["jscexp.quant_check"] == "passed"


def test_trials_with_their_own_epochs_follow_their_own_schedule_and_stop_after_it(workdir):
    """The lab's epochs sweep as one stacked model: each trial's cosine schedule runs to its own
    last epoch and its numbers are its lone run's; the shorter ones stop while the rest train."""
    common = [*SMALL, "model=jsc-toy", "optimizer=sgd"]
    trials = [["max_epochs=1", "learning_rate=5e-2"], ["max_epochs=3", "learning_rate=5e-2"],
              ["max_epochs=2", "learning_rate=1e-2"]]
    alone, stacked = alone_and_stacked(workdir, common, trials, ("max_epochs", "learning_rate"))
    client = mlflow_client(workdir)
    for key, one in alone.items():
        assert len(stacked[key]["val_acc"]) == int(key[0])
        lrs = [[m.value for m in sorted(client.get_metric_history(runs["run_id"], "lr"), key=lambda m: m.step)]
               for runs in (one, stacked[key])]
        assert lrs[0] == lrs[1] and len(lrs[0]) == int(key[0]), key  # its own cosine, to its own end


def test_dropout_trials_with_their_own_p_draw_their_lone_runs_masks(workdir):
    common = [*SMALL, "model=mlp", "optimizer=sgd", "learning_rate=5e-2"]
    trials = [[f"model.dropout={p}", f"seed={seed}"] for p, seed in ((0.1, 0), (0.3, 0), (0.5, 1))]
    alone_and_stacked(workdir, common, trials, ("model.dropout", "seed"))


def test_a_trial_with_a_bad_width_fails_alone_and_its_mates_train(workdir, capsys):
    from hydra import compose, initialize_config_dir

    from jscexp.job import run
    from jscexp.sweep import Status, group_override

    group = [*SMALL, "max_epochs=1", "model=jsc-toy", "mode=qat", "quantisation=int8", "experiment=mixed",
             "quantisation.weight_frac_width=3", group_override([[f"quantisation.weight_width={w}"] for w in (2, 4, 8)])]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        results = run(compose("config", overrides=group), workdir / "group", group)
    assert results[0].status == Status.FAILED and "frac_width 3 is larger than width 2" in results[0].reason
    assert "error: quantisation linear weight: frac_width 3 is larger than width 2" in capsys.readouterr().err
    assert all(r.status == Status.FINISHED and r.metrics["best_val_acc"] > 0 for r in results[1:])
    runs = runs_of(workdir, "mixed")
    assert sorted(r.data.params["quantisation.weight_width"] for r in runs) == ["4", "8"]
    assert all(r.info.status == "FINISHED" and "jscexp.vector_group" in r.data.tags for r in runs)


def test_grouping_keeps_other_knobs_apart_and_respects_the_size():
    from jscexp.errors import UserError
    from jscexp.sweep import grouped_jobs
    from jscexp.validate import group_size

    def group_jobs(jobs, size):
        return grouped_jobs(jobs, size)[0]

    jobs = [[f"batch_size={b}", f"learning_rate={lr}"] for b in (32, 64) for lr in (1e-3, 1e-2, 1e-1)]
    grouped = group_jobs(jobs, 2)
    assert grouped == [
        ["batch_size=32", "+vector_trials=[['learning_rate=0.001'],['learning_rate=0.01']]"],
        ["batch_size=32", "learning_rate=0.1"],
        ["batch_size=64", "+vector_trials=[['learning_rate=0.001'],['learning_rate=0.01']]"],
        ["batch_size=64", "learning_rate=0.1"],
    ]
    assert (group_size("off"), group_size(False), group_size("auto"), group_size(16)) == (1, 1, 64, 16)
    for bad in (0, -2, "yes", True, 2.5):
        with pytest.raises(UserError, match="trainer.vectorize must be off, auto or a group size"):
            group_size(bad)
    bits = [[f"quantisation.weight_width={w}", f"quantisation.weight_frac_width={w - 1}"] for w in (2, 4)]
    assert group_jobs([["mode=qat", *b] for b in bits], 4) == [
        ["mode=qat", ("+vector_trials=[['quantisation.weight_width=2','quantisation.weight_frac_width=1'],"
                      "['quantisation.weight_width=4','quantisation.weight_frac_width=3']]")]]


def test_a_group_override_carries_each_trials_overrides_verbatim():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from jscexp.sweep import group_override

    trials = [["learning_rate=0.1", "seed=0"],
              ['quantisation.weight_frac_width="${sub:${quantisation.weight_width}, 1}"', "experiment=it's"]]
    assert OverridesParser.create().parse_overrides([group_override(trials)])[0].value() == trials


def test_auto_groups_only_jobs_that_keep_their_own_numbers():
    """Given each job's config, grouping never changes a trial's result: different data
    orders (seed grids without a fixed data_seed) and unstackable jobs stay apart."""
    from conftest import compose_cfg
    from jscexp.group import stack_key
    from jscexp.sweep import grouped_jobs

    def grouped(*jobs: list[str]) -> list[list[str]]:
        return grouped_jobs([list(j) for j in jobs], 64, compose_cfg, stack_key)[0]

    assert len(grouped(["seed=0"], ["seed=1"])) == 2  # data_seed follows seed: two batch orders
    assert grouped(["data_seed=0", "seed=0"], ["data_seed=0", "seed=1"]) == [
        ["+vector_trials=[['data_seed=0','seed=0'],['data_seed=0','seed=1']]"]]
    assert len(grouped(["learning_rate=0.1"], ["learning_rate=0.2"])) == 1
    stopping = ["trainer.early_stopping_patience=2"]
    assert grouped([*stopping, "learning_rate=0.1"], [*stopping, "learning_rate=0.2"]) == [
        [*stopping, "learning_rate=0.1"], [*stopping, "learning_rate=0.2"]]
    assert len(grouped(["optimizer=adam", "learning_rate=0.1"], ["optimizer=sgd", "learning_rate=0.1"])) == 2
    assert len(grouped(["model=mlp", "model.dropout=0.1"], ["model=mlp", "model.dropout=0.3"])) == 1
    assert len(grouped(["model=mlp", "model.dropout=0"], ["model=mlp", "model.dropout=0.3"])) == 2  # no Dropout layer
    assert len(grouped(["+optimizer.amsgrad=true", "learning_rate=0.1"], ["+optimizer.amsgrad=true", "learning_rate=0.2"])) == 2


@pytest.mark.parametrize(("preset", "knob", "values", "jobs"), [
    ("int8", "quantisation.weight_width", ("4", "8"), 1),  # integer: each trial its own widths
    ("learned", "quantisation.weight_frac_width", ("5", "7"), 1),  # where each trial's learned formats start
    ("learned", "quantisation.beta", ("0", "1e-5"), 1),  # the penalty: one β per trial
    ("learned", "quantisation.width_rate", ("4", "8"), 2),  # how formats move: one rule per stacked model
    ("learned", "quantisation.beta_warmup", ("1", "2"), 2),  # one warm-up schedule per stacked model
    ("minifloat8", "quantisation.linear.config.weight_exponent_width", ("3", "4"), 1),  # no trained state: any option
    ("binary", "quantisation.linear.config.weight_scaling", ("true", "false"), 1),
    ("binary", "quantisation.linear.config.name", ("binary", "ternary"), 2),  # another quantiser: another model
])
def test_quantisation_knobs_stack_where_their_quantiser_classes_vary_them(preset, knob, values, jobs):
    """Not decided by the knob's name: the quantiser class each knob reaches says which of its
    options may differ between the trials of one stacked model."""
    from conftest import compose_cfg
    from jscexp.group import stack_key
    from jscexp.sweep import grouped_jobs

    launched = grouped_jobs([["mode=qat", f"quantisation={preset}", "data_seed=0", f"{knob}={v}"] for v in values], 64,
                            compose_cfg, stack_key)[0]
    assert len(launched) == jobs


def test_a_quantisation_knob_lands_where_the_config_reads_it():
    from conftest import compose_cfg
    from jscexp.quant.entries import knob_uses

    q = compose_cfg(["mode=qat", "quantisation=int8",
                     'quantisation.weight_frac_width="${sub:${quantisation.weight_width},1}"']).quantisation
    assert knob_uses(q, "weight_width") == [("integer", "width"), ("integer", "frac_width")]  # through frac's interpolation
    assert knob_uses(q, "linear.config.bias_width") == [("integer", "width")]
    assert knob_uses(q, "data_in_frac_width") == [("integer", "frac_width")]
    assert knob_uses(q, "name") == []


@pytest.mark.parametrize(("quantisation", "expected"), [("int8", True), ("int4", True), ("learned", True), ("minifloat8", True),
                                                       ("ternary", True)])
def test_every_shipped_quantiser_stacks(quantisation, expected):
    from conftest import compose_cfg
    from jscexp.group import stackable

    cfgs = [compose_cfg(["mode=qat", f"quantisation={quantisation}", "data_seed=0", f"seed={s}"]) for s in (0, 1)]
    assert stackable(cfgs) is expected


@pytest.mark.slow
def test_an_optuna_search_asks_k_trials_at_once_and_prunes_single_slices(workdir):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    result = run_cli(["-m", "sweeper=optuna", "dataset=jsc_synth", "dataset.n_rows=6000", "max_epochs=4",
                      "trainer.progress_bar=false", "model=jsc-toy", "experiment=vsearch", "trainer.vectorize=auto",
                      "hydra.sweeper.study_name=v", "hydra.sweeper.n_trials=8", "hydra.sweeper.n_jobs=4",
                      "hydra/sweeper/sampler=random", "hydra.sweeper.seed=0", "hydra/sweeper/pruner=median",
                      "hydra.sweeper.pruner.n_warmup_steps=1", "hydra.sweeper.pruner.n_startup_trials=2",
                      "learning_rate=tag(log,interval(1e-5,1e-1))"], workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list(workdir.glob("multirun/*/*/[0-9]*"))) == 2  # 8 trials, 2 launched jobs of 4
    storage = JournalStorage(JournalFileBackend(str(workdir / "optuna-journal.log")))
    trials = optuna.load_study(study_name="v", storage=storage).trials
    states = {t.number: t.state.name for t in trials}
    assert sorted(states) == list(range(8)) and set(states.values()) <= {"COMPLETE", "PRUNED"}
    assert "PRUNED" in states.values() and "COMPLETE" in states.values()
    runs = {r.data.tags["jscexp.optuna_trial"]: r for r in runs_of(workdir, "vsearch")
            if r.data.tags.get("jscexp.kind") != "sweep"}
    parents = [r for r in runs_of(workdir, "vsearch") if r.data.tags.get("jscexp.kind") == "sweep"]
    assert [p.info.status for p in parents] == ["FINISHED"]  # a pruned trial is not a failure
    assert sorted(int(n) for n in runs) == list(range(8))
    client = mlflow_client(workdir)
    for number, state in states.items():
        run = runs[str(number)]
        epochs = len(client.get_metric_history(run.info.run_id, "val_acc"))
        assert run.info.status == "FINISHED" and "jscexp.vector_group" in run.data.tags
        if state == "PRUNED":  # its slice stopped; its group mates trained on
            assert run.data.tags["jscexp.pruned"] == "true" and epochs < 4
        else:
            assert epochs == 4 and "test_acc" in run.data.metrics


def test_in_a_group_that_cannot_stack_one_trials_error_fails_that_trial_only(workdir):
    """Trials that train one after another (here: different optimizers) keep their own ends:
    the one that raises is FAILED with its reason, the other trains and finishes."""
    from hydra import compose, initialize_config_dir

    from jscexp.job import run
    from jscexp.sweep import Status, group_override

    group = [*SMALL, "max_epochs=1", "experiment=apart",
             group_override([["optimizer=sgd", "trainer.eval_batch_size=0"], ["optimizer=adam"]])]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        outcomes = run(compose("config", overrides=group), workdir / "group", group)
    assert [o.status for o in outcomes] == [Status.FAILED, Status.FINISHED]
    assert outcomes[0].reason.startswith("ValueError") and outcomes[1].metrics["best_val_acc"] > 0
    runs = {r.data.params["optimizer"]: r.info.status for r in runs_of(workdir, "apart")}
    assert runs == {"SGD": "FAILED", "Adam": "FINISHED"}
