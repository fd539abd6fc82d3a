"""The experiments of labs 1–2, each one sweep on the CLI, run only if not run already.

Every step is a multirun (one MLflow parent run per step, even for a single job), so that
"already done" is one query: a FINISHED sweep parent in the step's experiment whose
``jscexp.sweep_overrides`` tag is the step's command. A second ``make lab`` therefore trains
nothing and goes straight to the report.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from jscexp.errors import UserError


@dataclass(frozen=True)
class Settings:
    """The lab's scale: ``rows``/``epochs`` None run the presets as the lab did (real data)."""

    dataset: str = "jsc"
    rows: int | None = None
    epochs: int | None = None
    tracking_uri: str | None = None

    def common(self) -> list[str]:
        out = [f"dataset={self.dataset}", "trainer.progress_bar=false"]
        if self.rows is not None:  # the stand-in's size (the real data has its own)
            out.append(f"dataset.n_rows={self.rows}")
        if self.tracking_uri:
            out.append(f"mlflow.tracking_uri={self.tracking_uri}")
        return out

    def epochs_of(self, lab: int) -> list[str]:
        """``max_epochs`` for a step the lab ran for ``lab`` epochs (scaled with --epochs)."""
        return [] if self.epochs is None else [f"max_epochs={max(1, self.epochs * lab // 10)}"]


@dataclass
class Step:
    """One lab experiment: its key (and MLflow experiment), the question it answers, its overrides."""

    key: str
    question: str
    overrides: list[str]
    needs: list[str] = field(default_factory=list)  # steps whose results its overrides use

    @property
    def command(self) -> str:
        """As the sweep callback records it (``jscexp.sweep_overrides``)."""
        return " ".join(self.overrides)


def steps(s: Settings, toy: str | None = None) -> list[Step]:
    """Labs 1 and 2 in order; ``toy``: the trained jsc-toy's weights that lab 2 analyses
    (lab1_models' best jsc-toy run, once it ran)."""
    common = s.common()
    epochs = "max_epochs=" + ",".join(str(e) for e in ((10, 20, 50, 100, 200) if s.epochs is None
                                                       else (s.epochs * f for f in (1, 2, 5, 10, 20))))
    return [
        Step("lab1_batch_size", "Lab 1 Q1: What is the impact of varying batch sizes and why?",
             ["+sweep=lab1_batch_size", *common, *s.epochs_of(10)]),
        Step("lab1_max_epochs", "Lab 1 Q2: What is the impact of varying maximum epoch number?",
             ["+sweep=lab1_max_epochs", *common, epochs]),
        Step("lab1_learning_rate", "Lab 1 Q3: What happens with a large and with a small learning rate?",
             ["+sweep=lab1_learning_rate", *common, *s.epochs_of(10)]),
        Step("lab1_models", "Lab 1 Q4: jsc-tiny, jsc-toy and a network with ~10x the parameters",
             ["+sweep=lab1_models", *common, *s.epochs_of(10)]),
        Step("lab2_analyse", "Lab 2 Q1–2: the fx graph, the statistics profile and the node-meta table of jsc-toy",
             ["mode=analyse", "model=jsc-toy", "experiment=lab2_analyse", *common,
              *([f"ckpt={toy}"] if toy else [])], needs=["lab1_models"]),
        Step("lab2_int8", "Lab 2 Q3–5: int8 quantisation of jsc-toy and of the ~10x network",
             ["mode=ptq", "quantisation=int8", "model=jsc-toy,jsc-10x", "learning_rate=1e-3", "batch_size=256",
              "experiment=lab2_int8", *common, *s.epochs_of(10)]),
        Step("quant_bits", "Lab 2, swept: PTQ vs QAT at 2–8 bit fixed point",
             ["+sweep=quant_bits", *common, *s.epochs_of(10)]),
        Step("optuna_mixed_precision", "Beyond the lab: the accuracy–EBOPs front searched, a width per layer "
             "(Optuna NSGA-II, two objectives)", ["+sweep=optuna_mixed_precision", *common, *s.epochs_of(10)]),
        Step("learned_widths", "Beyond the lab: the accuracy–EBOPs front learned, a format per weight and input feature "
             "(HGQ-style, one β per trial)", ["+sweep=learned_widths", *common, *s.epochs_of(10)]),
    ]


def run_missing(s: Settings, uri: str, cwd: Path) -> dict[str, str]:
    """Runs each step that has no finished sweep yet; returns each step's sweep parent run id."""
    from jscexp.tracking.store import mask

    done: dict[str, str] = {}
    for i in range(len(steps(s))):  # a step's overrides may name what an earlier one trained
        step = steps(s, best_checkpoint(uri, done["lab1_models"], "jsc-toy") if "lab1_models" in done else None)[i]
        parent = finished_sweep(uri, step.key, mask(step.command))
        if parent is None:
            print(f"lab: {step.key}: python -m jscexp -m {step.command}", flush=True)
            code = _run_step(step, cwd)
            if code != 0:
                raise UserError(f"lab step {step.key} failed (exit {code}): fix it and run make lab again; "
                                "the steps that finished are not run again")
            parent = finished_sweep(uri, step.key, mask(step.command))
            if parent is None:
                raise UserError(f"lab step {step.key} left no finished sweep in experiment {step.key}")
        else:
            print(f"lab: {step.key}: already done (sweep run {parent}), not run again", flush=True)
        done[step.key] = parent
    return done


def _run_step(step: Step, cwd: Path) -> int:
    """The step's sweep in a process of its own; its exit code. On Ctrl-C (which the step's
    process gets too) this waits while the step ends its runs KILLED and its trials FAIL:
    ``subprocess.run`` would SIGKILL it a quarter second in, leaving them RUNNING."""
    proc = subprocess.Popen([sys.executable, "-m", "jscexp", "-m", *step.overrides], cwd=cwd)
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        proc.wait()
        raise
    if code == INTERRUPTED:  # the step saw the Ctrl-C first (the lab's own may land a moment later)
        raise KeyboardInterrupt
    return code


INTERRUPTED = 130  # python -m jscexp's exit after Ctrl-C or SIGTERM


def finished_sweep(uri: str, experiment: str, command: str) -> str | None:
    """The newest FINISHED sweep parent of ``command`` in ``experiment``, if any."""
    from jscexp.tracking.resume import sweeps_of
    from jscexp.tracking.store import client

    mlflow = client(uri)
    exp = mlflow.get_experiment_by_name(experiment)
    finished = [r for r in sweeps_of(mlflow, exp.experiment_id, command) if r.info.status == "FINISHED"] if exp else []
    return finished[0].info.run_id if finished else None


def best_checkpoint(uri: str, parent: str, model: str) -> str:
    """The weights of the best finished ``model`` run of sweep ``parent`` (lab1_models'): lab 2
    analyses that trained model, never an untrained one, so a missing one is an error."""
    from jscexp.tracking.store import client

    mlflow = client(uri)
    experiment = mlflow.get_run(parent).info.experiment_id
    runs = mlflow.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent}' and params.`model.name` = '{model}' "
                              "and attributes.status = 'FINISHED'", order_by=["metrics.best_val_acc DESC"], max_results=1)
    if not runs:
        raise UserError(f"lab step lab1_models (sweep run {parent}) has no finished {model} run, whose checkpoint "
                        "lab 2 analyses: delete that sweep run and run make lab again")
    path = runs[0].data.tags.get("jscexp.checkpoint")
    if not path or not Path(path).is_file():
        raise UserError(f"the {model} checkpoint that lab step lab1_models wrote is gone ({path}): delete its sweep "
                        f"run {parent} (experiment lab1_models) and run make lab again")
    return path
