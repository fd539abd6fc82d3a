"""Scale-out on the real parts (#10): PostgreSQL-backed Optuna studies, an MLflow server on
PostgreSQL reached over HTTP, several workers on one study, joblib and submitit launchers.

`make test` starts the services (scripts/services.sh) and exports their URLs; CI sets
JSCEXP_REQUIRE_SERVICES=1 so that missing services fail there instead of skipping.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
import requests

from conftest import FAST, cli_env, compose_cfg, run_cli

POSTGRES = [*FAST, "backend=postgres"]


@pytest.fixture(scope="session")
def services():
    uri, storage = os.environ.get("JSCEXP_MLFLOW_URI"), os.environ.get("JSCEXP_OPTUNA_STORAGE")
    if not (uri and storage):
        reason = ("no PostgreSQL/MLflow server: JSCEXP_MLFLOW_URI and JSCEXP_OPTUNA_STORAGE are unset "
                  "(`make test` starts them with scripts/services.sh up)")
        if os.environ.get("JSCEXP_REQUIRE_SERVICES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return uri, storage


def rest_runs(uri: str, experiment: str) -> list[dict]:
    """The experiment's active runs, read through the MLflow server's REST API."""
    got = requests.get(f"{uri}/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": experiment}, timeout=30)
    got.raise_for_status()
    exp_id = got.json()["experiment"]["experiment_id"]
    found = requests.post(f"{uri}/api/2.0/mlflow/runs/search", json={"experiment_ids": [exp_id], "max_results": 1000},
                          timeout=30)
    found.raise_for_status()
    runs = found.json().get("runs", [])
    for r in runs:
        r["tags"] = {t["key"]: t["value"] for t in r["data"].get("tags", [])}
        r["params"] = {p["key"]: p["value"] for p in r["data"].get("params", [])}
    return runs


def parent_and_children(uri: str, experiment: str) -> tuple[dict, list[dict]]:
    runs = rest_runs(uri, experiment)
    parents = [r for r in runs if r["tags"].get("jscexp.kind") == "sweep"]
    assert len(parents) == 1, [p["info"]["run_id"] for p in parents]
    children = [r for r in runs if r is not parents[0]]
    assert {c["tags"]["mlflow.parentRunId"] for c in children} == {parents[0]["info"]["run_id"]}
    return parents[0], children


@pytest.mark.slow
def test_two_workers_on_a_postgres_study_share_the_trials_and_one_parent(workdir, services):
    import optuna

    uri, storage = services
    name = f"workers-{uuid.uuid4().hex[:8]}"
    args = ["-m", "sweeper=optuna", *POSTGRES, f"experiment={name}", f"hydra.sweeper.study_name={name}",
            "hydra.sweeper.n_trials=4", "hydra/sweeper/sampler=random", "learning_rate=interval(1e-3,1e-1)"]
    env = cli_env()
    workers = [subprocess.Popen([sys.executable, "-m", "jscexp", *args, f"hydra.sweep.dir=multirun/w{i}"], cwd=workdir,
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
               for i in range(2)]
    for w in workers:
        _, err = w.communicate(timeout=600)
        assert w.returncode == 0, err[-3000:]
    study = optuna.load_study(study_name=name, storage=storage)
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(complete) == 4 and len({t.number for t in complete}) == 4
    assert all(t.state.name in ("COMPLETE", "FAIL") for t in study.trials)  # FAIL only for a surplus ask
    parent, children = parent_and_children(uri, name)
    assert sorted(c["info"]["status"] for c in children) == ["FINISHED"] * 4
    assert sorted(int(c["tags"]["jscexp.optuna_trial"]) for c in children) == sorted(t.number for t in complete)
    assert parent["tags"]["jscexp.optuna_study"] == name
    assert all(storage not in str(c["params"]) for c in children)  # the storage URL is referenced, not copied
    assert list((workdir / "multirun").glob("w*/optimization_results.yaml"))
    for c in children:  # as the UI reads them: few params, each once, a dataset, a readable name
        keys = [p["key"] for p in c["data"]["params"]]
        assert len(keys) <= 30 and len(set(keys)) == len(keys), keys
        assert not [k for k in keys if k.endswith(("_target_", "_partial_")) or k.startswith("optuna")]
        (dataset,) = c["inputs"]["dataset_inputs"]
        assert dataset["dataset"]["name"] == "jsc_synth (synthetic)"
        assert c["info"]["run_name"] == f"#{c['tags']['jscexp.optuna_trial']} lr={c['params']['learning_rate']}"
    assert parent["info"]["run_name"] == "learning_rate ∈ interval(1e-3,1e-1)"


def _grid(workdir, services, launcher: str, batch_sizes: str) -> tuple[dict, list[dict]]:
    uri, _ = services
    name = f"{launcher}-{uuid.uuid4().hex[:8]}"
    result = run_cli(["-m", *POSTGRES, f"experiment={name}", f"+launcher={launcher}", f"batch_size={batch_sizes}"],
                     workdir, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return parent_and_children(uri, name)


@pytest.mark.slow
def test_submitit_local_grid_of_three(workdir, services):
    parent, children = _grid(workdir, services, "submitit_local", "32,64,128")
    assert sorted(int(c["params"]["batch_size"]) for c in children) == [32, 64, 128]
    assert all(c["info"]["status"] == "FINISHED" for c in children)
    assert {c["params"]["trainer.num_threads"] for c in children} == {"1"}  # = hydra.launcher.cpus_per_task
    assert parent["info"]["status"] == "FINISHED"
    assert list(workdir.glob("multirun/*/*/.submitit/*/*_log.out"))  # submitit's own job folders


@pytest.mark.slow
def test_joblib_grid_of_four_on_two_workers(workdir, services):
    _, children = _grid(workdir, services, "joblib", "32,64,128,256")
    assert sorted(int(c["params"]["batch_size"]) for c in children) == [32, 64, 128, 256]
    assert all(c["info"]["status"] == "FINISHED" for c in children)
    assert {c["params"]["trainer.num_threads"] for c in children} == {"1"}
    # two worker processes shared the jobs (run spans may not overlap: each job trains in ~1 s)
    assert len({c["tags"]["jscexp.worker"] for c in children}) == 2


@pytest.mark.parametrize("multirun", [[], ["-m", "batch_size=32,64"]])
def test_postgres_backend_without_its_urls_is_one_line(workdir, monkeypatch, multirun):
    monkeypatch.delenv("JSCEXP_MLFLOW_URI", raising=False)
    result = run_cli([*multirun, *POSTGRES, "max_epochs=1"], workdir)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        ("error: mlflow.tracking_uri is read from $JSCEXP_MLFLOW_URI, which is not set: export JSCEXP_MLFLOW_URI=URL "
         "(scripts/services.sh up writes both URLs to .services/env)")]
    assert not (workdir / "mlflow.db").exists() and not list(workdir.glob("multirun/*/*/0"))


@pytest.mark.parametrize("job, gpus, expected", [(0, 4, [0]), (5, 4, [1]), (3, 1, 1), (2, 0, 1)])
def test_each_job_gets_its_own_gpu_when_several_are_visible(monkeypatch, job, gpus, expected):
    import torch

    from jscexp.train.fit import pinned_devices

    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    trainer = compose_cfg(["trainer.accelerator=gpu"]).trainer
    assert pinned_devices(trainer, job) == expected
    assert pinned_devices(compose_cfg([]).trainer, job) == 1  # accelerator=cpu: nothing to pin
