"""The chaos test (#17): three workers on one PostgreSQL study and an MLflow server; one
worker SIGKILLed mid-trial, PostgreSQL restarted, the MLflow server paused for 20 s. The
study still ends with n_trials COMPLETE trials, each with one FINISHED run holding every
epoch, nothing left RUNNING and nothing trained twice but the recorded retry.

It runs on a PostgreSQL + MLflow server pair of its own (scripts/services.sh with its own
folder and ports), so restarting and pausing them disturbs no other test.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import cli_env, free_port

ROOT = Path(__file__).resolve().parents[1]
N_TRIALS, EPOCHS = 9, 6


@pytest.fixture
def private_services(tmp_path):
    """PostgreSQL and an MLflow server for this test only; their URLs."""
    env = {**os.environ, "JSCEXP_SERVICES_DIR": str(tmp_path / "services"), "PY": sys.executable,
           "JSCEXP_PG_PORT": str(free_port()), "JSCEXP_MLFLOW_PORT": str(free_port())}
    up = subprocess.run([ROOT / "scripts" / "services.sh", "up"], env=env, capture_output=True, text=True)
    if up.returncode != 0:
        reason = f"no PostgreSQL here for the chaos test: {up.stderr.strip()[-300:]}"
        if os.environ.get("JSCEXP_REQUIRE_SERVICES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    urls = dict(line.removeprefix("export ").split("=", 1)
                for line in (tmp_path / "services" / "env").read_text().splitlines())
    try:
        yield env, urls
    finally:
        subprocess.run([ROOT / "scripts" / "services.sh", "down"], env=env, capture_output=True)


def _workers(workdir: Path, urls: dict) -> list[subprocess.Popen]:
    env = {**cli_env(), **urls}
    search = ["-m", "sweeper=optuna", "backend=postgres", "experiment=chaos", "hydra.sweeper.study_name=chaos",
              f"hydra.sweeper.n_trials={N_TRIALS}", "hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=8",
              "learning_rate=tag(log,interval(1e-4,1e-1))", "dataset=jsc_synth", "dataset.n_rows=20000",
              f"max_epochs={EPOCHS}", "batch_size=64", "trainer.num_threads=1", "trainer.progress_bar=false"]
    return [subprocess.Popen([sys.executable, "-m", "jscexp", *search, f"hydra.sweep.dir={workdir}/w{i}"],
                             cwd=workdir, env=env, stdout=(workdir / f"w{i}.log").open("w"), stderr=subprocess.STDOUT)
            for i in range(3)]


def _kill_mid_trial(workdir: Path, worker: subprocess.Popen) -> None:
    """SIGKILLs the worker while one of its trials trains: two epochs logged (so the first one's
    state is saved), no checkpoint yet."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and worker.poll() is None:
        for job in (workdir / "w0").glob("*"):
            epochs = (job / "metrics.jsonl").read_text().count("\n") if (job / "metrics.jsonl").exists() else 0
            if epochs >= 2 and not (job / "checkpoints" / "best.ckpt").exists():
                worker.send_signal(signal.SIGKILL)
                worker.wait()
                return
        time.sleep(0.05)
    raise AssertionError("worker 0 never trained")


@pytest.mark.slow
def test_three_workers_survive_a_kill_a_database_restart_and_a_paused_tracking_server(workdir, private_services):
    import optuna
    from mlflow.tracking import MlflowClient

    env, urls = private_services
    workers = _workers(workdir, urls)
    _kill_mid_trial(workdir, workers[0])
    subprocess.run([ROOT / "scripts" / "services.sh", "restart-db"], env=env, check=True)
    server = int((Path(env["JSCEXP_SERVICES_DIR"]) / "mlflow.pid").read_text())
    os.killpg(server, signal.SIGSTOP)
    time.sleep(20)
    os.killpg(server, signal.SIGCONT)
    for w in workers[1:]:
        assert w.wait(timeout=600) == 0, _errors((workdir / f"w{workers.index(w)}.log").read_text())

    trials = optuna.load_study(study_name="chaos", storage=urls["JSCEXP_OPTUNA_STORAGE"]).trials
    states = Counter(t.state.name for t in trials)
    assert states["COMPLETE"] == N_TRIALS and states["RUNNING"] == 0 and states["WAITING"] == 0, states
    failed = {t.number: t.user_attrs["fail_reason"] for t in trials if t.state.name == "FAIL"}
    # besides the lost trial, only trials asked past n_trials by racing workers, never trained
    lost = [t for t in trials if failed.get(t.number, "").startswith("lost: no heartbeat")]
    surplus = [n for n, why in failed.items() if why.startswith("surplus: another worker took the last slot")]
    assert len(lost) == 1 and len(failed) == 1 + len(surplus), failed
    (retry,) = [t for t in trials if t.user_attrs.get("retry_of") == lost[0].number]
    assert retry.state.name == "COMPLETE" and retry.params == lost[0].params
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len({t.params["learning_rate"] for t in complete}) == N_TRIALS  # nothing trained twice

    client = MlflowClient(urls["JSCEXP_MLFLOW_URI"])
    runs = client.search_runs([client.get_experiment_by_name("chaos").experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("jscexp.kind") == "sweep"]
    assert [p.info.status for p in parents] == ["FINISHED"]
    by_trial: dict[str, list] = {}
    for r in runs:
        if r not in parents:
            by_trial.setdefault(r.data.tags["jscexp.optuna_trial"], []).append(r)
    assert [r.info.status for r in by_trial[str(lost[0].number)]] == ["KILLED"]
    assert not any(str(n) in by_trial for n in surplus)
    assert by_trial[str(retry.number)][0].data.tags["jscexp.retry_of"] == str(lost[0].number)
    assert "jscexp.resumed_after_epoch" in by_trial[str(retry.number)][0].data.tags  # from the lost trial's state
    for t in complete:
        (run,) = by_trial[str(t.number)]
        assert run.info.status == "FINISHED"
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_acc")) == list(range(EPOCHS))
    print(f"chaos: 3 faults injected (SIGKILL, PostgreSQL restart, MLflow paused 20 s); {N_TRIALS} trials "
          f"COMPLETE, 0 lost, 0 duplicates, {len(lost)} retried and resumed after epoch "
          f"{by_trial[str(retry.number)][0].data.tags['jscexp.resumed_after_epoch']}; "
          f"a heartbeat costs {_beat_ms(urls['JSCEXP_OPTUNA_STORAGE']):.1f} ms on PostgreSQL (a background thread)")


def _beat_ms(url: str) -> float:
    """The mean time of one heartbeat write (for the figure in docs/faults.md; nothing asserts on it)."""
    import optuna

    from jscexp.search.liveness import Heartbeat
    from jscexp.search.study import make_storage

    storage = make_storage(url)
    trial = optuna.create_study(study_name="beat", storage=storage).ask()
    beat = Heartbeat(storage, [trial._trial_id], interval=10)
    start = time.perf_counter()
    for _ in range(20):
        beat.beat()
    return (time.perf_counter() - start) / 20 * 1000


def _errors(log: str) -> str:
    """A failed worker's exceptions, causes first (a plain tail loses the cause), then its tail."""
    named = [line for line in log.splitlines() if re.match(r"^\s*[\w.]+(Error|Exception)\b", line)]
    return "\n".join(named[-12:]) + "\n---\n" + log[-1500:]
