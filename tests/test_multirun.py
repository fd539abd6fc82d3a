"""``python -m jscexp -m ...``: every job a child of one MLflow parent run."""

import subprocess
import sys

import pytest

from conftest import CONF, FAST, mlflow_client, run_cli, runs_of


def test_multirun_makes_children_of_one_parent(workdir):
    result = run_cli(["-m", *FAST, "batch_size=32,64"], workdir)
    assert result.returncode == 0, result.stderr[-2000:]
    runs = runs_of(workdir)
    parents = [r for r in runs if r.data.tags.get("jscexp.kind") == "sweep"]
    children = [r for r in runs if r not in parents]
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert sorted(r.data.params["batch_size"] for r in children) == ["32", "64"]
    assert all(r.info.status == "FINISHED" for r in children)
    # readable in the UI's run list: what varies, the parent by its range; the experiment opens on its runs
    assert sorted(r.info.run_name for r in children) == ["bs=32", "bs=64"]
    assert parent.info.run_name == "batch_size ∈ {32,64}"
    experiment = mlflow_client(workdir).get_experiment_by_name("jscexp")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    # each run's headline line with its id and UI link; the table at the end
    for r in children:
        assert f"finished: test_acc={r.data.metrics['test_acc']:.4g} " in result.stdout
        assert f"run {r.info.run_id} · http://127.0.0.1:5000/#/experiments/" in result.stdout
    assert "| Batch-Size" in result.stdout


def test_help_needs_no_torch(workdir):
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "jscexp", "--help"],
        cwd=workdir, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0 and "model: custom, jsc-10x, jsc-s, jsc-tiny, jsc-toy, mlp" in out.stdout
    for section in ("== Modes (mode=) ==", "  ptq         train float", "== Everyday knobs ==", "== Where results go =="):
        assert section in out.stdout  # jscexp's own page, not Hydra's
    imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines()}
    assert "torch" not in imported and "mlflow" not in imported


def test_table_for_a_missing_store_or_experiment_is_one_line(workdir, capsys):
    from jscexp.table import main as table

    assert table(["--tracking-uri", f"sqlite:///{workdir}/mlflow.db"]) == 2
    assert capsys.readouterr().err.startswith("error: no MLflow store at")
    assert not (workdir / "mlflow.db").exists()
    mlflow_client(workdir).create_experiment("other")
    capsys.readouterr()
    assert table(["--experiment", "nope", "--tracking-uri", f"sqlite:///{workdir}/mlflow.db"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no MLflow experiment 'nope'") and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "sweep, experiment, knob, values, fixed",
    [
        ("lab1_batch_size", "lab1_batch_size", "batch_size", "32,64,128,256,512",
         {"learning_rate": 1e-5, "max_epochs": 10}),
        ("lab1_max_epochs", "lab1_max_epochs", "max_epochs", "10,20,50,100,200",
         {"learning_rate": 1e-5, "batch_size": 128}),
        ("lab1_learning_rate", "lab1_learning_rate", "learning_rate", "1e-5,1e-4,1e-3,1e-2,1e-1,1.0",
         {"batch_size": 128, "max_epochs": 10}),
        ("lab1_models", "lab1_models", "model", "jsc-tiny,jsc-toy,jsc-10x",
         {"learning_rate": 1e-5, "batch_size": 256, "max_epochs": 10}),
    ],
)
def test_lab_sweep_files_reproduce_the_lab_settings(sweep, experiment, knob, values, fixed):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"+sweep={sweep}"], return_hydra_config=True)
    assert cfg.experiment == experiment
    assert str(cfg.hydra.sweeper.params[knob]) == values
    assert {k: cfg[k] for k in fixed} == fixed
    assert cfg.model.name == "jsc-tiny"


NO_TORCH_HERE = """
import runpy, sys
class NoTorch:  # this process only: the sweep's workers are interpreters of their own
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ImportError("the sweeper process imported torch")
sys.meta_path.insert(0, NoTorch())
sys.argv = ["jscexp", *sys.argv[1:]]
runpy.run_module("jscexp", run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize(("processes", "pooled"), [("2", True), ("null", False)])
def test_jobs_that_train_one_by_one_go_to_worker_processes_of_one_thread_where_that_is_faster(
        workdir, processes, pooled):
    """trainer.vectorize=off: with hydra.sweeper.processes=2 the 5 jobs run in worker processes,
    each on one torch thread, each the same job as it would be here (its run's overrides and
    params), and the sweep's own process never imports torch; left to itself
    (null), the sweeper weighs its own start-up against its first job, finds these tiny jobs
    faster here than the workers' start, and runs them all in its own process with torch's own
    thread count."""
    # progress bars on: a worker ended at the sweep's end leaves no lock for the resource tracker to warn of
    fast = [a for a in FAST if not a.startswith("trainer.progress_bar")]
    args = ["-m", *fast, "seed=0,1,2,3,4", "trainer.vectorize=off", f"hydra.sweeper.processes={processes}"]
    if pooled:
        out = subprocess.run([sys.executable, "-c", NO_TORCH_HERE, *args], cwd=workdir, capture_output=True,
                             text=True, timeout=300)
    else:
        out = run_cli(args, workdir)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "leaked semaphore" not in out.stderr, out.stderr[-2000:]
    runs = [r for r in runs_of(workdir) if r.data.tags.get("jscexp.kind") != "sweep"]
    assert sorted(r.data.params["seed"] for r in runs) == ["0", "1", "2", "3", "4"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    import torch

    assert {r.data.tags["jscexp.torch_threads"] for r in runs} == {"1" if pooled else str(torch.get_num_threads())}
    # the same job wherever it ran: its own overrides, no thread knob (a resumed sweep finds it finished)
    assert all(r.data.tags["jscexp.overrides"].endswith(f"seed={r.data.params['seed']} trainer.vectorize=off")
               for r in runs), [r.data.tags["jscexp.overrides"] for r in runs]
    assert all("trainer.num_threads" not in r.data.params for r in runs)
    from jscexp.tracking.query import runs_frame  # a table lists the jobs in the sweep's order, whoever started first

    frame = runs_frame(f"sqlite:///{workdir / 'mlflow.db'}", "jscexp")
    assert frame["params.seed"].tolist() == ["0", "1", "2", "3", "4"]


@pytest.mark.parametrize(("start", "one", "rest", "faster"), [
    (3.5, 2.5, 15, True),   # workers start in 2.5 x 3.5 s, then 8 rounds of 2.5 s: 28.75 s < 37.5 s here
    (3.5, 0.3, 4, False),   # 8.75 s + 2 rounds of 0.3 s > 1.2 s here
    (3.5, 2.5, 4, False),   # 8.75 s + 5 s > 10 s here
])
def test_the_pool_is_chosen_where_its_start_is_paid_back(start, one, rest, faster):
    from hydra_plugins.jscexp_sweeper.basic import pool_is_faster

    assert pool_is_faster(start, one, rest, 2) is faster
