"""Builds one run's training pieces from its config and runs them: the path every job takes."""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from jscexp.data import Splits, schema_of
from jscexp.data.batches import TensorBatches
from jscexp.errors import UserError
from jscexp.models import build_model
from jscexp.quant.cost import WidthPenalty
from jscexp.quant.learned import beta_of, learns
from jscexp.quant.learned import warmup_of as learned_warmup
from jscexp.train import loop
from jscexp.train.checkpoint import load_weights


def make_model(cfg: DictConfig) -> torch.nn.Module:
    """The job's model (``cfg.model``) for its dataset's feature and class counts."""
    schema = schema_of(cfg.dataset)
    return build_model(cfg.model, num_features=schema.num_features, num_classes=schema.num_classes)


def run_model(config: Path, checkpoint: Path) -> tuple[DictConfig, torch.nn.Module, dict[str, torch.Tensor]]:
    """A finished run's config (its config.yaml), its float model with the weights of
    ``checkpoint``, and what else the checkpoint holds (QAT's learned formats): one way to rebuild
    a run's model from its artifacts, for the export and the report."""


    cfg = OmegaConf.load(config)
    if not isinstance(cfg, DictConfig):
        raise UserError(f"{config} is not a run's config (a mapping)")
    model = make_model(cfg)
    return cfg, model, load_weights(model, checkpoint, cfg.model.name)


def make_fabric(t: DictConfig):
    """The device a job runs on (its threads and deterministic mode: ``jscexp.train.process``)."""
    devices = pinned_devices(t, job_num())
    devices = devices if isinstance(devices, int | str) else tuple(devices)  # hashable: a list of GPU ids
    return _fabric(str(t.accelerator), devices)


@functools.lru_cache(maxsize=8)  # once per process and device: a stacked group tests K models on it
def _fabric(accelerator: str, devices: int | str | tuple):
    from lightning_fabric import Fabric

    return Fabric(accelerator=accelerator, devices=list(devices) if isinstance(devices, tuple) else devices)


def pinned_devices(t: DictConfig, job_num: int):
    """One GPU per job when a process sees several: job k of a sweep gets GPU k mod n.

    Hydra's launchers start parallel jobs without telling them apart; left alone, every job
    would train on GPU 0. Under SLURM each task sees only its own GPU, so this changes nothing.
    """
    if t.accelerator not in ("gpu", "cuda", "auto") or str(t.devices) != "1" or not torch.cuda.is_available():
        return t.devices
    count = torch.cuda.device_count()
    return [job_num % count] if count > 1 else t.devices


def job_num() -> int:
    """This job's number in its sweep (Hydra's ``job.num``; 0 outside a sweep)."""
    # .get: a single run's job.num is MISSING, which attribute access would raise on
    return int(HydraConfig.get().job.get("num") or 0) if HydraConfig.initialized() else 0  # type: ignore[attr-defined]


def batches(device: torch.device, splits: Splits, split: str, batch_size: int, *, seed: int = 0) -> TensorBatches:
    """A split as tensors on the run's device: each epoch is one permutation, batches are slices."""
    x, y = (torch.from_numpy(a).to(device) for a in splits.split(split))
    return TensorBatches(x, y, batch_size, shuffle=split == "train", seed=seed)


def plain_engine(cfg: DictConfig, model: torch.nn.Module, rng: dict | None = None) -> loop.PlainEngine:
    """One model with torch's own optimizer and scheduler, placed by Fabric; ``rng``, the state
    right after the model's init, is where its training draws from (dropout)."""
    fabric = make_fabric(cfg.trainer)
    optimizer = instantiate(cfg.optimizer)(model.parameters())
    scheduler = instantiate(cfg.scheduler)(optimizer) if cfg.scheduler.get("_target_") else None
    wrapped, optimizer = fabric.setup(model, optimizer)
    if rng:
        torch.set_rng_state(rng["cpu"])
        if rng.get("cuda") is not None:
            torch.cuda.set_rng_state_all(rng["cuda"])
    beta = learned_beta(cfg, model)
    penalty = None if beta is None else WidthPenalty(beta, warmup_of(cfg.quantisation))
    return loop.PlainEngine(fabric, wrapped, optimizer, scheduler, penalty=penalty)


def warmup_of(qcfg) -> int:
    """``quantisation.beta_warmup`` (0 for a run without quantisation or that sets none)."""
    return learned_warmup(qcfg) if qcfg is not None else 0


def learned_beta(cfg: DictConfig, model: torch.nn.Module) -> float | None:
    """β of the β·EBOPs loss term of a model that learns its widths (``quantisation.beta``), else None."""
    return beta_of(cfg.quantisation) if learns(model) else None


def train(cfg: DictConfig, engine: loop.Engine, splits: Splits, hook: loop.TrialHook,
          resume: list[loop.Snapshot] | None = None, keep=None, epochs: list[int] | None = None,
          after_epoch=None) -> list[loop.FitResult]:
    """Trains the engine's trials as ``cfg`` says (their shared knobs: data, batch size,
    trainer), each for its ``epochs`` (default: ``cfg.max_epochs``): one result per trial;
    ``resume``, ``keep`` and ``after_epoch`` as ``loop.fit`` takes them."""
    patience = cfg.trainer.get("early_stopping_patience")
    progress = loop.Progress(bool(cfg.trainer.progress_bar), int(cfg.trainer.progress_refresh)) if engine.k == 1 else None
    return loop.fit(
        engine,
        batches(engine.device, splits, "train", int(cfg.batch_size), seed=int(cfg.data_seed)),
        batches(engine.device, splits, "val", int(cfg.trainer.eval_batch_size)),
        max_epochs=epochs or [int(cfg.max_epochs)] * engine.k, hook=hook, patience=None if patience is None else int(patience),
        progress=progress, resume=resume, keep=keep, after_epoch=after_epoch,
    )


def evaluate(cfg: DictConfig, model: torch.nn.Module, splits: Splits, split: str, *,
             per_class: bool = False) -> dict[str, float]:
    """Accuracy and loss of ``model`` on one split, on the run's device; ``per_class`` adds each
    of the dataset's classes' accuracy, ``acc_<class name>``."""
    fabric = make_fabric(cfg.trainer)
    wrapped = fabric.setup_module(model)
    data = batches(fabric.device, splits, split, int(cfg.trainer.eval_batch_size))
    names = schema_of(cfg.dataset).classes if per_class else ()
    return loop.evaluate(wrapped, data, loop.Tally(1, fabric.device, names))
