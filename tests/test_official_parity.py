"""The official hydra-optuna-sweeper's own test cases (facebookresearch/hydra,
plugins/hydra_optuna_sweeper/tests/test_optuna_sweeper_plugin.py) run against jscexp's sweeper:
each asserts the official expectation, or the difference docs/optuna.md documents ("Coming
from hydra-optuna-sweeper") — a ported config is never silently different."""

from __future__ import annotations

import re

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from conftest import CONF, FAST, ROOT, mlflow_client, run_cli, runs_of, states, study, sweep

# (sweep syntax, jscexp's distribution, the official plugin's where it differs)
OFFICIAL_OVERRIDE_CASES = [
    ("key=choice(1,2)", CategoricalDistribution([1, 2]), None),
    ("key=choice(true, false)", CategoricalDistribution([True, False]), None),
    ("key=choice('hello', 'world')", CategoricalDistribution(["hello", "world"]), None),
    ("key=shuffle(range(1,3))", CategoricalDistribution([1, 2]), None),
    # Hydra's range excludes its stop; the official plugin hands Optuna the stop as an inclusive high
    ("key=range(1,3)", IntDistribution(1, 2), IntDistribution(1, 3)),
    ("key=interval(1, 5)", FloatDistribution(1, 5), None),
    ("key=int(interval(1, 5))", IntDistribution(1, 5), None),
    ("key=tag(log, interval(1, 5))", FloatDistribution(1, 5, log=True), None),
    ("key=tag(log, int(interval(1, 5)))", IntDistribution(1, 5, log=True), None),
    ("key=range(0.5, 5.5, step=1)", FloatDistribution(0.5, 4.5, step=1), FloatDistribution(0.5, 5.5, step=1)),
]


@pytest.mark.parametrize("text, ours, official", OFFICIAL_OVERRIDE_CASES)
def test_the_official_search_space_cases(text, ours, official):
    from jscexp.search.space import parse

    (actual,) = parse(None, [text])[0].values()
    if isinstance(ours, CategoricalDistribution):  # shuffle() randomises the order, as there
        assert isinstance(actual, CategoricalDistribution) and set(actual.choices) == set(ours.choices)
    else:
        assert actual == ours and actual != official


def test_a_range_offers_exactly_what_a_grid_sweep_of_the_same_text_enumerates():
    """Issue: ``range(0,1,step=0.1)`` offered 11 categorical choices, 1.0 among them."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from jscexp.search.space import parse
    from jscexp.search.study import grid

    texts = ["a=range(0,1,step=0.1)", "b=range(1,0,step=-0.25)", "c=range(10,0,-2)", "d=range(-1.0, 1.0, step=1)"]
    space, _ = parse(None, texts)
    assert space["a"] == FloatDistribution(0.0, 0.9, step=0.1)  # ordered: TPE and CMA-ES model it as a number
    assert space["c"] == IntDistribution(2, 10, step=2)
    for override in OverridesParser.create().parse_overrides(texts):
        hydra_grid = sorted(float(v) for v in override.sweep_string_iterator())
        # the same points (Hydra's own carry float dust: 0.7000000000000001)
        assert sorted(grid(space)[override.key_or_group]) == pytest.approx(hydra_grid, abs=1e-12), override.input_line


@pytest.mark.parametrize("arguments, space, fixed", [
    (["key=choice(1,2)"], {"key": CategoricalDistribution([1, 2])}, []),
    (["key=5"], {}, ["key=5"]),
    (["key1=choice(1,2)", "key2=5"], {"key1": CategoricalDistribution([1, 2])}, ["key2=5"]),
    (["key1=choice(1,2)", "key2=5", "key3=range(1,3)"],
     {"key1": CategoricalDistribution([1, 2]), "key3": IntDistribution(1, 2)}, ["key2=5"]),
])
def test_the_official_params_from_overrides_cases(arguments, space, fixed):
    """Fixed values stay overrides every trial gets (official: a dict of their strings)."""
    from jscexp.search.space import parse

    assert parse(None, arguments) == (space, fixed)


def _sweep_config(*overrides: str):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=["sweeper=optuna", *FAST, *overrides], return_hydra_config=True)


@pytest.mark.parametrize("overrides, seed", [
    (["hydra.sweeper.sampler.seed=123"], 123),  # the official plugin's place
    (["+hydra.sweeper.sampler.seed=123"], 123),  # what Hydra's hint said when the node had no seed
    (["hydra.sweeper.seed=123"], 123),  # jscexp's
    (["hydra.sweeper.seed=123", "hydra.sweeper.sampler.seed=123"], 123),
    (["hydra/sweeper/sampler=random", "hydra.sweeper.sampler.seed=7"], 7),
    ([], None),
    (["+sweep=optuna_lr_bs"], 0),  # the sweep file's seed
    (["+sweep=optuna_lr_bs", "hydra.sweeper.sampler.seed=5"], 5),  # the command line's, official place, over the file's
    (["+sweep=optuna_mixed_precision", "hydra.sweeper.seed=3"], 3),
])
def test_the_seed_is_taken_from_either_place(overrides, seed):
    from jscexp.sweep.checks import check_sweep, sampler_seed

    cfg = _sweep_config(*overrides)
    check_sweep(cfg)
    assert sampler_seed(cfg.hydra.sweeper, list(cfg.hydra.overrides.hydra)) == seed


@pytest.mark.parametrize("overrides, message", [
    (["hydra.sweeper.seed=1", "hydra.sweeper.sampler.seed=2"],
     "two seeds, hydra.sweeper.seed=1 and hydra.sweeper.sampler.seed=2: give one"),
    (["+hydra.sweeper.custom_search_space=mymod.configure"],
     "hydra.sweeper.custom_search_space is not a setting of jscexp's Optuna sweeper: a Python-defined (conditional) "
     "space is not supported"),
    (["+hydra.sweeper.search_space={x:{type:int,low:0,high:10}}"],
     "hydra.sweeper.search_space is not a setting of jscexp's Optuna sweeper: the official plugin's deprecated form: "
     "give the space as hydra.sweeper.params"),
    (["+hydra.sweeper.n_trails=3"],
     "hydra.sweeper.n_trails is not a setting of jscexp's Optuna sweeper: it has sampler, pruner, seed, direction, "),
    (["+hydra.sweeper.sampler.n_startup=3"], "TPESampler has no option n_startup: it takes "),
    (["hydra.sweeper.direction=minimize"],  # a ported config's direction, no objectives: it would minimise accuracy
     "hydra.sweeper.direction=minimize without hydra.sweeper.objectives would minimize best_val_acc (the default "
     "objective): name the metric for each direction, e.g. hydra.sweeper.objectives=[test_loss]"),
    (["hydra.sweeper.direction=[maximize,minimize]"],
     "hydra.sweeper.direction=[maximize, minimize] without hydra.sweeper.objectives gives 2 directions for the one "
     "default objective, best_val_acc"),
])
def test_what_the_sweeper_does_not_take_is_refused_before_the_sweep(overrides, message):
    from jscexp.errors import UserError
    from jscexp.sweep.checks import check_sweep

    with pytest.raises(UserError, match="^" + re.escape(message)):
        check_sweep(_sweep_config(*overrides))


def test_an_official_option_jscexp_lacks_is_one_line_exit_2_and_no_trial(workdir):
    result = run_cli(["-m", "sweeper=optuna", *FAST, "experiment=search", "+hydra.sweeper.custom_search_space=mymod.configure",
                      "learning_rate=interval(1e-3,1e-2)"], workdir)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: hydra.sweeper.custom_search_space is not a setting of jscexp's Optuna sweeper: a Python-defined "
        "(conditional) space is not supported: give every knob in hydra.sweeper.params or as sweep syntax"]
    assert runs_of(workdir, "search") == [] and not (workdir / "optuna-journal.log").exists()


def test_jobs_in_their_own_folders_share_one_relative_sqlite_study_and_one_mlflow_store(workdir):
    """The issue's case: ``hydra.job.chdir=True`` with ``storage=sqlite:///rel.db`` failed every
    trial (each job opened an empty rel.db of its own)."""
    import optuna

    sweep(workdir, "hydra.job.chdir=True", "hydra.sweeper.storage=sqlite:///rel.db", "hydra.sweeper.study_name=rel",
          "hydra.sweeper.n_trials=1", "learning_rate=interval(1e-3,1e-2)")
    assert states(optuna.load_study(study_name="rel", storage=f"sqlite:///{workdir / 'rel.db'}")) == ["COMPLETE"]
    assert not list(workdir.glob("multirun/**/*.db"))
    assert [r.data.tags["jscexp.optuna_trial"] for r in runs_of(workdir, "search")
            if r.data.tags.get("jscexp.kind") != "sweep"] == ["0"]


@pytest.mark.slow
def test_the_official_example_runs_in_job_folders_on_a_relative_sqlite_store_and_repeats_with_its_seed(workdir):
    """test_optuna_example, ported: TPE seeded on its node, hydra.job.chdir=True, a SQLite store
    (here relative: every trial failed on it), a study name, a fixed knob. The same command
    again finds the study done (jscexp's n_trials is the study's total); a second study with
    the same seed is asked the same values."""
    import optuna

    common = ["hydra.job.chdir=True", "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=1", "hydra/sweeper/sampler=tpe",
              "hydra.sweeper.sampler.seed=123", "hydra.sweeper.storage=sqlite:///rel.db", "max_epochs=1",
              "learning_rate=tag(log,interval(1e-3,1e-2))", "batch_size=128"]
    first = sweep(workdir, "hydra.sweeper.study_name=test-optuna-example", *common)
    storage = f"sqlite:///{workdir / 'rel.db'}"
    st = optuna.load_study(study_name="test-optuna-example", storage=storage)
    assert states(st) == ["COMPLETE"] * 2 and not list(workdir.glob("multirun/**/*.db"))  # one store each, here
    runs = [r for r in runs_of(workdir, "search") if r.data.tags.get("jscexp.kind") != "sweep"]
    assert sorted(int(r.data.tags["jscexp.optuna_trial"]) for r in runs) == [0, 1]  # in ./mlflow.db
    results_file = next(workdir.glob("multirun/*/*/optimization_results.yaml"))
    from omegaconf import OmegaConf

    results = OmegaConf.load(results_file)
    assert results.name == "optuna" and results.best_value == st.best_trial.value
    assert dict(results.best_params) == st.best_trial.params and "batch_size" not in results.best_params
    assert "Optuna results" in first.stdout

    sweep(workdir, "hydra.sweeper.study_name=test-optuna-example", *common)
    assert len(optuna.load_study(study_name="test-optuna-example", storage=storage).trials) == 2
    sweep(workdir, "hydra.sweeper.study_name=again", *common)
    again = optuna.load_study(study_name="again", storage=storage)
    assert [t.params for t in again.trials] == [t.params for t in st.trials]


def _run_ported(workdir, name: str, text: str, *args: str):
    """``-m +sweep=<name>`` with ``text`` as that sweep file, from a config dir of its own."""
    (workdir / "ported" / "sweep").mkdir(parents=True, exist_ok=True)
    (workdir / "ported" / "sweep" / f"{name}.yaml").write_text(text)
    result = run_cli(["-m", "--config-dir", str(workdir / "ported"), f"+sweep={name}", *FAST, *args], workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


PORTED_GRID = """\
# @package _global_
# tests/conf/test_grid.yaml of the official plugin, ported: jscexp's knobs for x, y, z
defaults:
  - override /sweeper: optuna
  - override /hydra/sweeper/sampler: grid

experiment: search
hydra:
  sweeper:
    direction: minimize
    objectives: [test_loss]
    study_name: sphere
    storage: null
    n_trials: 20
    params:
      batch_size: choice(64, 128)
      learning_rate: range(0.01, 0.03, step=0.01)
"""


@pytest.mark.slow
def test_a_ported_grid_config_stops_at_its_grid_and_says_so(workdir):
    """test_example_with_grid_sampler: n_trials above the grid's size runs the grid once."""
    result = _run_ported(workdir, "official_grid", PORTED_GRID)
    assert "hydra.sweeper.n_trials=20 is more than the grid's 4 points: the search stops at 4" in result.stdout
    st = study(workdir, "sphere")
    assert states(st) == ["COMPLETE"] * 4
    assert sorted((t.params["batch_size"], t.params["learning_rate"]) for t in st.trials) == [
        (64, 0.01), (64, 0.02), (128, 0.01), (128, 0.02)]
    client = mlflow_client(workdir)
    runs = [r for r in runs_of(workdir, "search") if r.data.tags.get("jscexp.kind") != "sweep"]
    assert sorted(r.data.params["learning_rate"] for r in runs) == ["0.01", "0.01", "0.02", "0.02"]
    assert client.get_run(runs[0].info.run_id).data.metrics["test_loss"] > 0


PORTED_EXAMPLE = """\
# @package _global_
# example/conf/config.yaml of the official plugin, ported: jscexp's knobs for x and y
defaults:
  - override /sweeper: optuna
  - override /hydra/sweeper/sampler: tpe

experiment: search
hydra:
  sweeper:
    sampler:
      seed: 123
    direction: minimize
    objectives: [test_loss]
    study_name: sphere
    storage: null
    n_trials: 2
    n_jobs: 1
    params:
      learning_rate: range(0.005, 0.055, step=0.005)
      batch_size: choice(64, 128, 256)
"""


@pytest.mark.slow
def test_a_ported_example_config_asks_the_same_values_with_its_seed_twice(workdir):
    """The issue's case: a seed under ``hydra: sweeper: sampler:`` was thrown away."""
    for name in ("sphere", "sphere2"):
        _run_ported(workdir, "official_example", PORTED_EXAMPLE, f"hydra.sweeper.study_name={name}")
    first, second = study(workdir, "sphere").trials, study(workdir, "sphere2").trials
    assert len(first) == 2 and [t.params for t in first] == [t.params for t in second]
    assert {t.distributions["learning_rate"] for t in first} == {FloatDistribution(0.005, 0.05, step=0.005)}


def test_several_objectives_give_solutions_each_non_dominated_trial_once():
    """test_optuna_multi_objective_example's checks on the results file, with a trial the sweeper
    reused for a duplicate (it was listed twice)."""
    import optuna

    from jscexp.search.study import summary

    dist = {"x": IntDistribution(0, 4)}
    st = optuna.create_study(directions=["maximize", "minimize"])
    for x, values, duplicate_of in [(0, [0.5, 1.0], None), (1, [0.6, 2.0], None), (2, [0.4, 3.0], None),
                                    (1, [0.6, 2.0], 1)]:
        st.enqueue_trial({"x": x})
        trial = st.ask(dist)
        if duplicate_of is not None:
            trial.set_user_attr("duplicate_of", duplicate_of)
        st.tell(trial, values)
    results = summary(st, ["acc", "cost"])
    assert results["name"] == "optuna" and "best_params" not in results
    assert [s["params"]["x"] for s in results["solutions"]] == [0, 1]
    for a in results["solutions"]:
        assert set(a) >= {"params", "values"}
        for b in results["solutions"]:  # none dominates another
            assert not (a["values"][0] >= b["values"][0] and a["values"][1] <= b["values"][1] and a != b)


@pytest.mark.slow
@pytest.mark.parametrize("rate, asked", [(0.5, 2), (1.0, 4)])
def test_the_official_failure_rate_cases(workdir, rate, asked):
    """test_failure_rate: n_jobs=2, every trial fails. Official: above the rate the sweep raises
    the first failure, at 1.0 it does not. jscexp: above the rate it stops asking; any failed
    trial makes the exit 1 (documented), and the results file is written either way."""
    result = sweep(workdir, "hydra.sweeper.study_name=fail", "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2",
                   "hydra/sweeper/sampler=random", "hydra.sweeper.sampler.seed=123", "mode=qat", "quantisation=int8",
                   f"hydra.sweeper.max_failure_rate={rate}", "quantisation.weight_frac_width=choice(10,11,12)",
                   check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert states(study(workdir, "fail")) == ["FAIL"] * asked
    assert ("stopping the search: 2 of 2 trials failed" in result.stdout) == (rate < 1)
    assert next(workdir.glob("multirun/*/*/optimization_results.yaml")).exists()


OFFICIAL_OPTIONS = ["hydra/sweeper=optuna", "hydra/sweeper/sampler", "motpe", "sampler.seed", "direction", "storage",
                    "study_name", "n_trials", "n_jobs", "max_failure_rate", "params", "search_space",
                    "custom_search_space", "experiment_sequence", "pruner", "choice", "range", "interval", "tag(log",
                    "shuffle", "return value", "optimization_results.yaml", "hydra.job.chdir"]


def test_the_docs_say_what_jscexp_does_with_every_official_option_and_syntax():
    text = (ROOT / "docs" / "optuna.md").read_text()
    section = text.split("## Coming from hydra-optuna-sweeper", 1)[1]
    rows = [line for line in section.splitlines() if line.startswith("| ")][1:]  # under the header
    for option in OFFICIAL_OPTIONS:
        assert any(option in row.split("|")[1] for row in rows), option
    from jscexp.sweep.searchconf import JscexpOptunaSweeperConf

    defaults = JscexpOptunaSweeperConf()
    for key, official in (("direction", "minimize"), ("n_jobs", 2), ("max_failure_rate", 0.0)):
        row = next(r for r in rows if f"`{key}`" in r.split("|")[1])
        assert f"default `{getattr(defaults, key)}`" in row and f"official `{official}`" in row, row
