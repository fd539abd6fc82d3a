"""Builds one run's training pieces from its config and runs them: the path every job takes."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from jscexp.data import Splits
from jscexp.data.batches import TensorBatches
from jscexp.models import build_model
from jscexp.train import loop


def model_kwargs(model_cfg: DictConfig) -> dict:
    return {k: v for k, v in model_cfg.items() if k != "name"}


def make_model(model_cfg: DictConfig) -> torch.nn.Module:
    return build_model(model_cfg.name, **model_kwargs(model_cfg))


def make_fabric(t: DictConfig):
    """The device (and its threads) a job runs on; set before anything touches torch's pools."""
    from lightning_fabric import Fabric

    if t.num_threads:
        torch.set_num_threads(int(t.num_threads))
    if t.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it to be deterministic
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    return Fabric(accelerator=t.accelerator, devices=pinned_devices(t, _job_num()))


def pinned_devices(t: DictConfig, job_num: int):
    """One GPU per job when a process sees several: job k of a sweep gets GPU k mod n.

    Hydra's launchers start parallel jobs without telling them apart; left alone, every job
    would train on GPU 0. Under SLURM each task sees only its own GPU, so this changes nothing.
    """
    if t.accelerator not in ("gpu", "cuda", "auto") or str(t.devices) != "1" or not torch.cuda.is_available():
        return t.devices
    count = torch.cuda.device_count()
    return [job_num % count] if count > 1 else t.devices


def _job_num() -> int:
    from hydra.core.hydra_config import HydraConfig

    return int(HydraConfig.get().job.get("num") or 0) if HydraConfig.initialized() else 0


def batches(fabric, splits: Splits, split: str, batch_size: int, *, seed: int = 0) -> TensorBatches:
    """A split as tensors on the run's device: each epoch is one permutation, batches are slices."""
    x, y = (fabric.to_device(torch.from_numpy(a)) for a in splits.split(split))
    return TensorBatches(x, y, batch_size, shuffle=split == "train", seed=seed)


@dataclass
class Training:
    """Everything one run trains with, placed on its device."""

    fabric: object
    model: torch.nn.Module  # the Fabric-wrapped model
    optimizer: torch.optim.Optimizer
    scheduler: object | None
    train: TensorBatches
    val: TensorBatches


def prepare(cfg: DictConfig, model: torch.nn.Module, splits: Splits) -> Training:
    fabric = make_fabric(cfg.trainer)
    optimizer = instantiate(cfg.optimizer)(model.parameters())
    scheduler = instantiate(cfg.scheduler)(optimizer) if cfg.scheduler.get("_target_") else None
    wrapped, optimizer = fabric.setup(model, optimizer)
    return Training(
        fabric, wrapped, optimizer, scheduler,
        batches(fabric, splits, "train", int(cfg.batch_size), seed=int(cfg.data_seed)),
        batches(fabric, splits, "val", int(cfg.trainer.eval_batch_size)),
    )


def train(cfg: DictConfig, model: torch.nn.Module, splits: Splits, hooks: list[loop.EpochHook]) -> loop.FitResult:
    """Trains ``model`` as the run's config says and leaves the best epoch's weights in it."""
    t = prepare(cfg, model, splits)
    progress = loop.Progress(bool(cfg.trainer.progress_bar), int(cfg.trainer.progress_refresh))
    patience = cfg.trainer.get("early_stopping_patience")
    result = loop.fit(
        t.fabric, t.model, t.optimizer, t.scheduler, t.train, t.val, max_epochs=int(cfg.max_epochs),
        hooks=hooks, patience=None if patience is None else int(patience), progress=progress,
    )
    model.load_state_dict(result.best_state)
    return result


def evaluate(cfg: DictConfig, model: torch.nn.Module, splits: Splits, split: str) -> dict[str, float]:
    """Accuracy and loss of ``model`` on one split, on the run's device."""
    fabric = make_fabric(cfg.trainer)
    wrapped = fabric.setup_module(model)
    data = batches(fabric, splits, split, int(cfg.trainer.eval_batch_size))
    return loop.evaluate(wrapped, data, loop.Tally(fabric.device))
