"""Builds the pieces of one training run from its config: data batches, module, trainer."""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from jscexp.data import Splits
from jscexp.data.batches import TensorBatches
from jscexp.models import build_model
from jscexp.train.module import Classifier

for _name in ("pytorch_lightning.utilities.rank_zero", "pytorch_lightning.accelerators.cuda"):
    logging.getLogger(_name).setLevel(logging.WARNING)  # "GPU available: False" on every run


def model_kwargs(model_cfg: DictConfig) -> dict:
    return {k: v for k, v in model_cfg.items() if k != "name"}


def make_model(model_cfg: DictConfig) -> torch.nn.Module:
    return build_model(model_cfg.name, **model_kwargs(model_cfg))


def batches(splits: Splits, split: str, batch_size: int, *, seed: int = 0) -> TensorBatches:
    x, y = splits.split(split)
    return TensorBatches(
        torch.from_numpy(x), torch.from_numpy(y), batch_size, shuffle=split == "train", seed=seed
    )


def make_module(cfg: DictConfig, model: torch.nn.Module) -> Classifier:
    scheduler = instantiate(cfg.scheduler) if cfg.scheduler.get("_target_") else None
    return Classifier(model, num_classes=5, optimizer=instantiate(cfg.optimizer), scheduler=scheduler)


def make_trainer(cfg: DictConfig, out_dir: Path, callbacks: list[pl.Callback]) -> pl.Trainer:
    t = cfg.trainer
    if t.num_threads:
        torch.set_num_threads(int(t.num_threads))
    if t.progress_bar:
        callbacks = [*callbacks, pl.callbacks.TQDMProgressBar(refresh_rate=int(t.progress_refresh))]
    return pl.Trainer(
        accelerator=t.accelerator,
        devices=t.devices,
        max_epochs=int(cfg.max_epochs),
        deterministic=bool(t.deterministic),
        logger=False,  # MLflow is written by EpochLogger, once per epoch
        callbacks=callbacks,
        enable_checkpointing=any(isinstance(c, pl.callbacks.ModelCheckpoint) for c in callbacks),
        enable_progress_bar=bool(t.progress_bar),
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=str(out_dir),
    )
