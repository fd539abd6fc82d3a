"""What each mode does inside a trial's MLflow run, and what a run records.

Heavy imports (torch, Lightning, MLflow) live here, not in ``__main__``, so that
``--help`` and config errors answer without paying for them. ``jscexp.job`` checks
everything a user can get wrong before it opens a run, so bad input leaves no run behind.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

import jscexp
from jscexp.analysis import analyse
from jscexp.config import CKPT_MODES, ESTIMATES_TAG, QUANTISED_MODES, plain, without_plumbing
from jscexp.data import make_source
from jscexp.errors import UserError
from jscexp.models import count_trainable
from jscexp.quant import summary as qsummary
from jscexp.quant.cost import wants_estimate
from jscexp.quant.transform import quantise
from jscexp.sweep import Outcome
from jscexp.tracking import PARENT_ENV, TrackedRun, flatten
from jscexp.tracking.front import UNIFORM_TAG
from jscexp.tracking.resume import WORKER_TAG, worker_id
from jscexp.train import fit
from jscexp.train.callbacks import log_epoch, report_to_trial
from jscexp.train.checkpoint import load_weights, save_weights
from jscexp.validate import check_knobs


def check_job(cfg: DictConfig) -> None:
    """The mode, its checkpoint and quantisation, and the top-level knobs: one line if wrong."""
    _check_mode(cfg.mode, cfg.quantisation.name, cfg.ckpt)
    check_knobs(cfg)
    if cfg.mode in QUANTISED_MODES:  # its estimator is built now, not after the training
        from jscexp.quant.estimators import make_estimator

        make_estimator(cfg.hardware.get("estimator"))


def run_mode(cfg, model, quantised, splits, calibration, run, out_dir: Path, float_model) -> Outcome:
    """A mode that is not training (test, ptq, transform, analyse) inside the job's open run;
    ``float_model(model)`` puts a trained float model's weights into ``model`` where the mode
    needs one (PTQ without ckpt=): ``(its metrics, its run id)``, or the epoch it was pruned at."""
    spec = plain(cfg.analysis)
    metrics: dict[str, float] | Outcome
    if cfg.mode == "analyse":
        metrics = _analyse(quantised[0] if quantised else model, spec, calibration, run)
    elif cfg.mode == "transform":
        metrics = _transform(cfg, quantised, run, out_dir)
    elif cfg.mode == "test":
        metrics = _test(cfg, quantised[0] if quantised else model, splits, run, out_dir)
    else:
        metrics = _ptq(cfg, model, plain(cfg.quantisation), splits, calibration, run,
                       out_dir, float_model)
    return metrics if isinstance(metrics, Outcome) else Outcome.finished(metrics, run.run_id)


def end_pruned(run, epoch: int) -> Outcome:
    """A run the search pruned after ``epoch``: tagged so, its epochs so far are its record."""
    run.set_tags({"jscexp.pruned": "true", "jscexp.pruned_at_epoch": epoch})
    return Outcome.pruned(epoch, run.run_id)


def initial_model(cfg: DictConfig) -> tuple[torch.nn.Module, dict]:
    """The run's float model before training (seeded init, or the weights of ckpt=) and the
    RNG state right after its init, where its training (dropout) draws from."""
    _seed(int(cfg.seed))
    model = fit.make_model(cfg)
    if cfg.ckpt:
        load_weights(model, Path(cfg.ckpt), cfg.model.name)
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    return model, {"cpu": torch.get_rng_state(), "cuda": cuda}


def open_run(cfg, uri: str, model, splits, overrides: list[str], out_dir: Path, tags: dict | None = None) -> TrackedRun:
    """The job's MLflow run, with the whole resolved config as params and as config.yaml;
    its metrics also go to ``out_dir/metrics.jsonl``."""
    data_info = splits.info if splits else {"synthetic": make_source(cfg.dataset).synthetic}
    from jscexp.tracking.names import run_name

    name = run_name(cfg.model.name, overrides, int(cfg.optuna.trial) if cfg.get("optuna") else None)
    run = TrackedRun(uri, cfg.experiment, run_name=name, tags={**_tags(cfg, data_info, overrides), **(tags or {})},
                     local=out_dir / "metrics.jsonl")
    try:
        run.log_params(run_params(cfg, count_trainable(model), data_info))
        if splits is not None:
            run.log_dataset(dataset_input(cfg, data_info))
        run.log_texts({"config.yaml": OmegaConf.to_yaml(cfg, resolve=True)})
    except BaseException as err:  # an interrupt or a store error here: the run exists, so end it
        run.__exit__(type(err), err, None)
        raise
    return run


def run_params(cfg: DictConfig, n_params: int, data_info: dict) -> dict[str, object]:
    """The knobs that define a run, once each, under their config names (``optimizer.momentum``),
    and its size: no plumbing, no ``_target_`` (the optimizer and scheduler by class name), no
    unset values, no copies (``optimizer.lr`` when it is ``learning_rate``). The whole resolved
    config is the run's ``config.yaml``."""
    flat = flatten(without_plumbing(plain(cfg)))
    if not cfg.pbt.space:  # population-based training is off: its settings say nothing
        flat = {k: v for k, v in flat.items() if not k.startswith("pbt.")}
    copies = {"optimizer.lr": flat.get("learning_rate"), "scheduler.T_max": flat.get("max_epochs")}
    params = {k: v for k, v in flat.items()
              if v not in (None, "") and not k.endswith(("._target_", "._partial_")) and copies.get(k, k) != v}
    for group in ("optimizer", "scheduler"):
        params[group] = str(cfg[group].get("_target_") or "none").rsplit(".", 1)[-1]
    return {**params, "n_params": n_params,
            **{f"data.{k}": data_info[k] for k in ("rows_train", "rows_val", "rows_test") if k in data_info}}


def dataset_input(cfg: DictConfig, data_info: dict) -> dict:
    """The run's data as an MLflow dataset input: what the UI's Dataset column shows."""
    recipe = json.dumps(without_plumbing({"dataset": plain(cfg.dataset)}), sort_keys=True, default=str)
    digest = data_info.get("raw_sha256") or hashlib.sha256(recipe.encode()).hexdigest()
    source = {"source": data_info.get("source"), "path": data_info.get("path") or None}
    profile = {k: v for k, v in data_info.items() if k.startswith(("rows", "class_frac")) or k in ("dedup", "synthetic")}
    return {"name": f"{cfg.dataset.name}{' (synthetic)' if data_info.get('synthetic') else ''}", "digest": digest[:20],
            "source_type": "synthetic" if data_info.get("synthetic") else "local", "source": json.dumps(source),
            "profile": json.dumps(profile)}


def finish_training(cfg, net, splits, run, out_dir: Path, result, calibration, quantised=None, *,
                    show: bool = True) -> Outcome:
    """After training: test, checkpoint, curves, final metrics, summaries; returns the job's
    result. ``show``: print the quantisation histogram (a stacked group's trials share one)."""
    final = _record_fit(cfg, net, splits, run, out_dir, result)
    step = int(cfg.max_epochs)
    if quantised:
        final = record_quantised(cfg, net, quantised[1], splits, run, out_dir, final, show=show, step=step)
    else:
        run.log_metrics(final, step=step)
    run.log_texts(analyse(net, plain(cfg.analysis), calibration))
    return Outcome.finished(final, run.run_id, diverged=result.diverged_at is not None)


def record_quantised(cfg, net, changes, splits, run, out_dir: Path, metrics: dict[str, float], *,
                     show: bool = True, step: int | None = None) -> dict[str, float]:
    """What every mode records of a quantised model (QAT, PTQ, transform): its costs logged
    beside ``metrics``, the histogram, node table and grid check, and with ``hardware.export``
    its hls4ml twin checked on the test split (``splits``). Returns all its metrics."""
    final = {**metrics, **costs(cfg, net, run)}
    run.log_metrics(final, step=step)
    _log_quant_summaries(run, net, changes, out_dir, show=show)
    return {**final, **(firmware(cfg, net, splits, run, out_dir) if splits is not None else {})}


def costs(cfg, net, run) -> dict[str, float]:
    """A quantised model's bit and hardware costs (none for a float one); the configured
    estimator's (``hardware.estimator``) where ``hardware.estimate`` asks for it, its labels
    tagged on ``run`` for the tables and plots."""
    from jscexp.quant.estimators import checked, make_estimator

    found = qsummary.costs(net)
    estimator = make_estimator(cfg.hardware.get("estimator"))
    if not found or estimator is None or not estimator.applies(net) or not wants_estimate(cfg.hardware, net):
        return found
    run.set_tags({ESTIMATES_TAG: json.dumps(estimator.metrics)})
    return {**found, **checked(estimator, estimator.estimate(net))}


def firmware(cfg, net, splits, run, out_dir: Path) -> dict[str, float]:
    """With ``hardware.export``: the quantised model's hls4ml project, its C simulation checked
    on the test split (jscexp.export), recorded on the run; its metrics."""
    if not cfg.hardware.export:
        return {}
    from jscexp.export import export

    check, project = export(net, splits.split("test")[0], out_dir)
    run.log_metrics(check.metrics())
    run.set_tags(check.tags())
    run.log_artifact(project, "hls4ml")
    print(check.line())
    return check.metrics()


def _analyse(model, spec, calibration, run) -> dict[str, float]:
    """mode=analyse: prints the graph report and the node-meta table, keeps all as artifacts."""
    texts = analyse(model, {**spec, "graph": True, "profile": True}, calibration)
    print(texts["analysis/graph.txt"])
    print(texts["analysis/node_meta.txt"])
    run.log_texts(texts)
    return {}  # a report, no metric: a search over it fails its trials with that reason


def _check_mode(mode: str, quant_name: str, ckpt) -> None:
    if mode in CKPT_MODES and not ckpt:
        raise UserError(f"mode={mode} needs a checkpoint: add ckpt=PATH (a train run's checkpoints/best.ckpt)")
    if mode in QUANTISED_MODES and quant_name == "none":
        raise UserError(f"mode={mode} needs a quantisation: add quantisation=int8 (or int4, minifloat8, ternary, binary)")
    if mode == "train" and quant_name != "none":
        raise UserError(f"quantisation={quant_name} with mode=train: use mode=qat (train quantised) or mode=ptq")


def _tags(cfg: DictConfig, data_info: dict, overrides: list[str]) -> dict[str, str]:
    tags = {
        "jscexp.mode": cfg.mode,
        "jscexp.version": jscexp.__version__,
        "jscexp.dataset": cfg.dataset.name,
        "jscexp.synthetic": str(bool(data_info["synthetic"])).lower(),
        "jscexp.overrides": " ".join(overrides),
        WORKER_TAG: worker_id(),  # which process ran it (parallel launchers)
        "jscexp.torch_threads": str(torch.get_num_threads()),  # sums run in another order on another count
        "jscexp.job_num": str(fit.job_num()),  # the sweep's order, whichever job a pool started first
    }
    if parent := os.environ.get(PARENT_ENV):
        tags["mlflow.parentRunId"] = parent
    if cfg.get("optuna"):
        tags.update({"jscexp.optuna_study": cfg.optuna.study, "jscexp.optuna_trial": cfg.optuna.trial})
        if cfg.optuna.get("retry_of") is not None:
            tags["jscexp.retry_of"] = cfg.optuna.retry_of
    if commit := _git_commit():
        tags["mlflow.source.git.commit"] = commit
    if cfg.mode == "train":  # a PTQ job with the same knobs quantises this run's model
        from jscexp.tracking.resume import FLOAT_TAG
        from jscexp.train.snapshots import float_key

        tags[FLOAT_TAG] = float_key(cfg, code_version())
    return tags


def code_version() -> str:
    """The package version and commit: a training state saved by other code is not resumed."""
    return f"{jscexp.__version__}+{_git_commit() or 'unknown'}"


@functools.cache  # one git call per process
def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _seed(seed: int) -> None:
    from lightning_fabric.utilities.seed import seed_everything

    seed_everything(seed, verbose=False)


def epoch_hooks(cfg, run) -> list:
    """What a run does after each epoch: log its metrics; in a search with a pruner, report to
    the trial. Each returns whether the run stops there (pruned)."""
    reporter = _trial_reporter(cfg)
    return [log_epoch(run)] if reporter is None else [log_epoch(run), reporter]


def _trial_reporter(cfg):
    """The Optuna trial's pruning hook for a search trial with a pruner, else None."""
    if not cfg.get("optuna") or not cfg.optuna.get("pruner"):
        return None
    from jscexp.search.study import trial_handle

    o = cfg.optuna
    return report_to_trial(trial_handle(o.study, o.storage, int(o.trial), plain(o.pruner)))


def _record_fit(cfg, model, splits, run, out_dir: Path, result) -> dict[str, float]:
    """Tests the trained (best-epoch) model and logs what a training run leaves behind."""
    if result.best_epoch is None:
        raise UserError("no epoch was trained and validated, so there is no best model to test: raise max_epochs")
    test = fit.evaluate(cfg, model, splits, "test", per_class=True)
    run.log_metrics(per_class(test, "test_"))
    tags: dict[str, object] = {}
    if result.diverged_at is not None:
        tags.update({"jscexp.diverged": "true", "jscexp.diverged_at_epoch": result.diverged_at})
        print(f"training diverged (non-finite loss) in epoch {result.diverged_at}: stopped; best epoch kept")
    if result.stopped_early_at is not None:
        tags["jscexp.stopped_early_at_epoch"] = result.stopped_early_at
    meta = {"model": plain(cfg.model), **without_plumbing({"dataset": plain(cfg.dataset)})}  # what it was trained as
    best = save_weights(model, out_dir / "checkpoints" / "best.ckpt", meta,
                        epoch=result.best_epoch, val_acc=result.best_val_acc)
    run.log_artifact(best, "checkpoints")
    run.set_tags({**tags, "jscexp.checkpoint": str(best.resolve())})
    if not os.environ.get(PARENT_ENV):  # in a sweep, its parent draws every run's curves once
        from jscexp.tracking.plots import training_curves

        run.log_artifact(training_curves({"run": result.history}, out_dir / "training_curves.png"))
    best_epoch = next(h for h in result.history if h["epoch"] == result.best_epoch)
    return {
        "best_epoch": result.best_epoch,
        "best_train_acc": best_epoch["train_acc"],
        "best_val_acc": result.best_val_acc,
        "test_acc": test["acc"],
        "test_loss": test["loss"],
        "fit_seconds": result.fit_seconds,
        "epoch_seconds_mean": sum(result.epoch_seconds) / len(result.epoch_seconds),
        "train_samples_per_second": len(splits.y_train) * len(result.epoch_seconds) / result.fit_seconds,
    }


def per_class(result: dict[str, float], prefix: str) -> dict[str, float]:
    """The per-class accuracies of an ``evaluate(per_class=True)`` result, as the run logs them."""
    return {f"{prefix}{k}": v for k, v in result.items() if k.startswith("acc_")}


def _test(cfg, model, splits, run, out_dir: Path) -> dict[str, float]:
    result = fit.evaluate(cfg, model, splits, "test", per_class=True)
    run.log_metrics({"test_acc": result["acc"], "test_loss": result["loss"], **per_class(result, "test_")})
    run.set_tags({"jscexp.checkpoint": str(Path(cfg.ckpt).resolve())})
    print(f"test_acc={result['acc']:.4f} test_loss={result['loss']:.4f}")
    return {"test_acc": result["acc"], "test_loss": result["loss"]}


def _ptq(cfg, model, qcfg, splits, calibration, run, out_dir: Path, float_model) -> dict[str, float] | Outcome:
    """Quantises a trained float model: the one in ckpt=, else the float training of this
    config (trained once per experiment, in its own run; a pruned one is not quantised)."""
    if cfg.ckpt:
        test = fit.evaluate(cfg, model, splits, "test")
        float_metrics = {"best_val_acc": fit.evaluate(cfg, model, splits, "val")["acc"],
                         "test_acc": test["acc"], "test_loss": test["loss"]}
    else:
        trained = float_model(model)
        if isinstance(trained, int):
            return end_pruned(run, trained)
        float_metrics, float_run = trained
        run.set_tags({"jscexp.float_run_id": float_run})
    net, changes = quantise(model, qcfg, calibration)
    val, test = (fit.evaluate(cfg, net, splits, s) for s in ("val", "test"))
    final = {
        # the float model's numbers under float_* names (its training is its own run's); the quantised model's plain
        **({"float_train_acc": float_metrics["best_train_acc"]} if "best_train_acc" in float_metrics else {}),
        "float_val_acc": float_metrics["best_val_acc"],
        "float_test_acc": float_metrics["test_acc"],
        "float_test_loss": float_metrics["test_loss"],
        "best_val_acc": val["acc"],
        "test_acc": test["acc"],
        "test_loss": test["loss"],
        "acc_drop": float_metrics["test_acc"] - test["acc"],
    }
    final = record_quantised(cfg, net, changes, splits, run, out_dir, final)
    run.log_texts(analyse(net, plain(cfg.analysis), calibration))
    print(f"float test_acc={float_metrics['test_acc']:.4f}  quantised test_acc={test['acc']:.4f}")
    return final


def _transform(cfg, quantised, run, out_dir: Path) -> dict[str, float]:
    """Writes the quantised model of ckpt= and its summaries (lab 2 Q7)."""
    net, changes = quantised
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "quantised.pt"
    torch.save(
        {
            "state_dict": net.state_dict(),
            "jscexp": {
                "model": plain(cfg.model),
                "quantisation": plain(cfg.quantisation),
                "source_checkpoint": str(Path(cfg.ckpt).resolve()),
            },
        },
        path,
    )
    run.log_artifact(path, "quantised")
    found = record_quantised(cfg, net, changes, None, run, out_dir, {})  # no export: refused for mode=transform
    print(f"quantised model written to {path}")
    return found


def _log_quant_summaries(run, net, changes, out_dir: Path, *, show: bool = True) -> None:
    """Prints the histogram (``show``) and logs it, the node table and the grid verification."""
    hist = qsummary.histogram(changes).to_markdown(index=False)
    nodes = qsummary.node_table(changes)
    checked = qsummary.verify(net)
    off = int(checked["off grid"].sum())
    if show:
        print(f"Quantized graph histogram:\n{hist}")
    run.log_texts({"quant/histogram.md": hist + "\n", "quant/nodes.csv": nodes.to_csv(index=False),
                   "quant/verification.csv": checked.to_csv(index=False)})
    if not (learned := qsummary.learned_widths(net)).empty:  # the widths training ended with
        run.log_texts({"quant/learned_widths.md": learned.to_markdown(index=False) + "\n",
                       "quant/learned_widths.csv": learned.to_csv(index=False)})
        run.log_params({f"learned.{r.layer}.{r.role}_width": r._5 for r in learned.itertuples()})
    run.log_metrics({"quant_offgrid_values": off, "quant_checked_values": int(checked["values"].sum())})
    run.set_tags({"jscexp.quant_check": "passed" if off == 0 else "failed",
                  UNIFORM_TAG: str(qsummary.uniform_widths(net)).lower()})
    if off:
        print(f"warning: {off} quantised weight/bias values are off their quantiser's grid")
