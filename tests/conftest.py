"""Shared fixtures: a scratch working directory with its own MLflow store, and two ways to
run a job — in-process through Hydra's compose API (fast) or as the real CLI (subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

# One torch thread per process, inherited by every CLI the tests start: three pytest-xdist
# workers each running a job on two cores would otherwise oversubscribe them, and OpenMP's
# spinning threads then make a tiny model's steps 10x slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from jscexp.config import register_schema

register_schema()  # conf/config.yaml starts from it, as python -m jscexp registers it

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
# Small and quiet: a few thousand rows, no progress bar.
FAST = ["dataset=jsc_synth", "dataset.n_rows=6000", "max_epochs=1", "trainer.progress_bar=false"]


def pytest_collection_modifyitems(items):
    """A test that starts jscexp (or another program) as a process of its own, or whose
    fixtures do, is marked ``cli``: each start costs seconds of imports, so ``make quick``
    leaves them out."""
    starts = {"run_cli", "sweep", "subprocess", "start_mlflow_server"}
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        fixtures = [d.func for name in getattr(item, "fixturenames", ()) if info is not None
                    for d in info.name2fixturedefs.get(name, ())]
        if any(starts & _names(f.__code__) for f in [getattr(item, "function", None), *fixtures] if f is not None):
            item.add_marker(pytest.mark.cli)


def _names(code) -> set[str]:
    """The global and attribute names a function's code uses, its comprehensions' and inner functions' too."""
    names = set(code.co_names)
    for const in code.co_consts:
        if hasattr(const, "co_names"):
            names |= _names(const)
    return names


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory):
    """One processed-splits cache for the whole session (never the user's ~/.cache)."""
    return tmp_path_factory.mktemp("jscexp-cache")


@pytest.fixture
def workdir(tmp_path, monkeypatch, data_cache):
    """A fresh directory to run from; the default sqlite:///mlflow.db lands in it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JSCEXP_CACHE", str(data_cache))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("JSCEXP_PARENT_RUN_ID", raising=False)
    return tmp_path


def compose_cfg(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=overrides)


def run_job(overrides: list[str], out_dir: Path):
    """Runs one job in this process, as ``python -m jscexp <overrides>`` would."""
    from jscexp.job import run

    return run(compose_cfg(overrides), out_dir, overrides)


def cli_env() -> dict[str, str]:
    """This environment without a tracking URI or a parent run of the test runner's own."""
    return {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "JSCEXP_PARENT_RUN_ID")}


def run_cli(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jscexp", *args], cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=timeout
    )


def start_cli(args: list[str], cwd: Path, until, timeout: float = 300, env: dict[str, str] | None = None,
              **popen) -> subprocess.Popen:
    """``python -m jscexp args`` started in ``cwd`` (``cli_env()`` plus ``env``), returned once
    ``until()`` holds (or it has ended, or ``timeout`` passed): a test then signals it mid-training."""
    proc = subprocess.Popen([sys.executable, "-m", "jscexp", *args], cwd=cwd, env={**cli_env(), **(env or {})}, **popen)
    deadline = time.time() + timeout
    while not until() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    return proc


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mlflow_server(folder: Path, backend: str | None = None) -> tuple[subprocess.Popen, str]:
    """An MLflow server of the test's own (its own session, so the test can stop or pause it
    whole); its URL once it answers."""
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend or f"sqlite:///{folder}/mlflow.db",
         "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        stdout=(folder / "server.log").open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            urllib.request.urlopen(url + "/health", timeout=2)
            return proc, url
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise AssertionError(f"the MLflow server did not come up: {(folder / 'server.log').read_text()[-2000:]}")


def mlflow_client(workdir: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")


def runs_of(workdir: Path, experiment: str = "jscexp"):
    client = mlflow_client(workdir)
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])


# The Optuna sweeper on the tiny stand-in (tests/test_sweeper.py, tests/test_search_faults.py)
SWEEP = ["-m", "sweeper=optuna", *FAST, "experiment=search"]


def study(workdir, name):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(workdir / "optuna-journal.log")))
    return optuna.load_study(study_name=name, storage=storage)


def states(st) -> list[str]:
    return [t.state.name for t in st.trials]


def sweep(workdir, *args, check=True):
    result = run_cli([*SWEEP, *args], workdir)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def children(workdir):
    return [r for r in runs_of(workdir, "search") if r.data.tags.get("jscexp.kind") != "sweep"]


# stacked trials built in-process (test_population, test_halving): SGD with momentum, dropout, BatchNorm
SMALL = ["dataset=jsc_synth", "dataset.n_rows=6000", "max_epochs=4", "trainer.progress_bar=false", "data_seed=0",
         "model=mlp", "model.dropout=0.2", "optimizer=sgd", "optimizer.momentum=0.9"]


def stacked_engine(tmp_path, lrs, per_trial=None):
    """A StackedEngine of trials of SMALL, one per learning rate (trial i seeded i; ``per_trial``: more overrides each)."""
    from jscexp import app
    from jscexp.config import plain
    from jscexp.group import engine_for
    from jscexp.job import Trial
    from jscexp.quant.transform import quantise

    per_trial = per_trial or [[] for _ in lrs]
    trials = [Trial(compose_cfg([*SMALL, f"learning_rate={lr}", f"seed={i}", *extra]), [], tmp_path)
              for i, (lr, extra) in enumerate(zip(lrs, per_trial))]
    for t in trials:
        t.model, t.rng = app.initial_model(t.cfg)
        if t.cfg.mode == "qat":
            t.quantised = quantise(t.model, plain(t.cfg.quantisation))
    return engine_for(trials)


def stacked_steps(engine, batches) -> None:
    """Stacked training steps of every trial over ``batches``."""
    import torch

    from jscexp.train import stacked
    from jscexp.train.loop import Tally

    active = torch.ones(engine.k, dtype=torch.bool)
    stacked.train_epoch(engine.model, engine.optimizer, batches, Tally(engine.k, engine.device), active)
