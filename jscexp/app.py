"""One job = one run: the modes behind ``python -m jscexp``.

Heavy imports (torch, Lightning, MLflow) live here, not in ``__main__``, so that
``--help`` and config errors answer without paying for them.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

import jscexp
from jscexp.errors import UserError
from jscexp.data import load_splits
from jscexp.models import count_trainable
from jscexp.tracking import PARENT_ENV, TrackedRun, flatten, tracking_uri
from jscexp.train.callbacks import EpochLogger
from jscexp.train.checkpoint import load_weights
from jscexp.train.fit import batches, make_model, make_module, make_trainer
from jscexp.tracking.plots import training_curves

MODES = ("train", "test")


def run(cfg: DictConfig, out_dir: Path, overrides: list[str] | None = None) -> float:
    """Runs the job ``cfg.mode`` describes and returns the metric a sweeper optimises."""
    if cfg.mode not in MODES:
        raise UserError(f"unknown mode '{cfg.mode}': choose one of {', '.join(MODES)}")
    if cfg.mode == "test" and not cfg.ckpt:
        raise UserError("mode=test needs a checkpoint: add ckpt=PATH (a train run's checkpoints/best.ckpt)")
    pl.seed_everything(int(cfg.seed), verbose=False)
    model = make_model(cfg.model)
    if cfg.mode == "test":
        load_weights(model, Path(cfg.ckpt), cfg.model.name)  # before the run: a bad ckpt leaves no run
    splits = load_splits(cfg.dataset)
    tags = _tags(cfg, splits.info, overrides or [])
    name = " ".join([cfg.model.name, *(overrides or [])])[:250]
    with TrackedRun(tracking_uri(cfg.mlflow.tracking_uri), cfg.experiment, run_name=name, tags=tags) as run:
        run.log_params(
            {
                **flatten(OmegaConf.to_container(cfg, resolve=True)),
                "model_name": cfg.model.name,
                "n_params": count_trainable(model),
                **{f"data.{k}": v for k, v in splits.info.items()},
            }
        )
        run.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
        if cfg.mode == "test":
            return _test(cfg, model, splits, run, out_dir)
        return _train(cfg, model, splits, run, out_dir)


def _tags(cfg: DictConfig, data_info: dict, overrides: list[str]) -> dict[str, str]:
    tags = {
        "jscexp.mode": cfg.mode,
        "jscexp.version": jscexp.__version__,
        "jscexp.dataset": cfg.dataset.name,
        "jscexp.synthetic": str(bool(data_info["synthetic"])).lower(),
        "jscexp.overrides": " ".join(overrides),
    }
    if parent := os.environ.get(PARENT_ENV):
        tags["mlflow.parentRunId"] = parent
    if commit := _git_commit():
        tags["mlflow.source.git.commit"] = commit
    return tags


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _train(cfg, model, splits, run, out_dir: Path) -> float:
    module = make_module(cfg, model)
    module.checkpoint_meta = {"model": OmegaConf.to_container(cfg.model, resolve=True)}
    epochs = EpochLogger(run)
    best = pl.callbacks.ModelCheckpoint(
        dirpath=out_dir / "checkpoints", filename="best", monitor="val_acc", mode="max"
    )
    trainer = make_trainer(cfg, out_dir, [epochs, best])
    train_data = batches(splits, "train", int(cfg.batch_size), seed=int(cfg.seed))
    eval_bs = int(cfg.trainer.eval_batch_size)
    start = time.perf_counter()
    trainer.fit(module, train_data, batches(splits, "val", eval_bs))
    fit_seconds = time.perf_counter() - start
    trainer.test(module, batches(splits, "test", eval_bs), ckpt_path=best.best_model_path, verbose=False)
    best_val = float(best.best_model_score)
    run.log_metrics(
        {
            "best_val_acc": best_val,
            "test_acc": module.epoch_metrics["test_acc"],
            "test_loss": module.epoch_metrics["test_loss"],
            "fit_seconds": fit_seconds,
            "epoch_seconds_mean": sum(epochs.epoch_seconds) / len(epochs.epoch_seconds),
            "train_samples_per_second": len(splits.y_train) * len(epochs.epoch_seconds) / fit_seconds,
        },
        step=trainer.current_epoch,
    )
    run.log_artifact(best.best_model_path, "checkpoints")
    run.set_tags({"jscexp.checkpoint": str(Path(best.best_model_path).resolve())})
    run.log_artifact(training_curves(epochs.history, out_dir / "training_curves.png"))
    return best_val


def _test(cfg, model, splits, run, out_dir: Path) -> float:
    module = make_module(cfg, model)
    trainer = make_trainer(cfg, out_dir, [])
    trainer.test(module, batches(splits, "test", int(cfg.trainer.eval_batch_size)), verbose=False)
    metrics = {k: module.epoch_metrics[k] for k in ("test_acc", "test_loss")}
    run.log_metrics(metrics)
    run.set_tags({"jscexp.checkpoint": str(Path(cfg.ckpt).resolve())})
    print(f"test_acc={metrics['test_acc']:.4f} test_loss={metrics['test_loss']:.4f}")
    return metrics["test_acc"]
