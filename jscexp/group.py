"""Which trials can share one stacked model, and the engine that trains them.

The sweepers (``trainer.vectorize``) turn jobs that differ only in vector knobs
(``jscexp.sweep.overrides.VECTOR_KEYS``, and quantisation knobs where their quantiser classes
vary them per trial: ``jscexp.quant.entries``) and can share a stacked model into one job
carrying ``+vector_trials=[...]``. ``jscexp.job`` composes each trial
exactly as its own job would be, trains them in one stacked model (``jscexp.train.stacked``)
and records each as its own MLflow run — same params, metrics, artifacts and tags as a single
run, plus ``jscexp.vector_group``. Trials that cannot share a model (a hand-made group, say)
train one after another instead.
"""

from __future__ import annotations

import functools
import json

import torch
from omegaconf import DictConfig, OmegaConf

from jscexp.config import TRAINING_MODES, plain, quantiser_names
from jscexp.data import schema_of
from jscexp.models import build_model
from jscexp.quant import quantiser_class
from jscexp.quant.entries import stack_signature
from jscexp.sweep.grouping import has_dropout
from jscexp.sweep.overrides import VECTOR_KEYS
from jscexp.tracking import flatten
from jscexp.train import fit
from jscexp.train.stacked import LrSchedule, StackedEngine, StackedModel, StackedOptimizer, linear_chain


def stack_blocker(cfg: DictConfig) -> str | None:
    """Why a job cannot be a trial of a stacked model, or None when it can."""
    if cfg.mode not in TRAINING_MODES:
        return f"mode={cfg.mode}"
    if cfg.mode == "qat" and (lone := _without_stacked_form(cfg)):
        return f"quantiser {lone}, which has no stacked form"
    if cfg.mode == "train" and cfg.quantisation.name != "none":
        return "quantisation with mode=train"
    options = plain(cfg.optimizer)
    if (reason := StackedOptimizer.unsupported(_optimizer_kind(cfg), [options])) is not None:
        return f"optimizer {reason}"
    if cfg.trainer.get("early_stopping_patience") is not None:
        return "early stopping"
    if not _is_chain(cfg):
        return "a model that is not a Linear/BatchNorm1d/ReLU/Dropout chain"
    return None


def _without_stacked_form(cfg: DictConfig) -> str | None:
    return next((n for n in sorted(quantiser_names(cfg.quantisation)) if not quantiser_class(n).stacks()), None)


def _is_chain(cfg: DictConfig) -> bool:
    schema = schema_of(cfg.dataset)
    return _chain_model(OmegaConf.to_yaml(cfg.model, resolve=True), schema.num_features, schema.num_classes)


@functools.cache  # a sweep asks for every job; the answer depends on the model and the data's sizes only
def _chain_model(model_yaml: str, num_features: int, num_classes: int) -> bool:
    model_cfg = OmegaConf.create(model_yaml)
    assert isinstance(model_cfg, DictConfig)
    return linear_chain(build_model(model_cfg, num_features=num_features, num_classes=num_classes)) is not None


def _optimizer_kind(cfg: DictConfig) -> str:
    """``torch.optim.AdamW`` → ``AdamW``."""
    return cfg.optimizer._target_.rsplit(".", 1)[-1]


def stacked_batches(trials: list) -> list[list]:
    """The trials that train together: those that go on from the same epoch (0, or a saved
    state's) when they can share one stacked model, else each alone."""
    batches: list[list] = []
    for epoch in dict.fromkeys(t.start_epoch for t in trials):
        same = [t for t in trials if t.start_epoch == epoch]
        batches += [same] if len(same) > 1 and stackable([t.cfg for t in same]) else [[t] for t in same]
    return batches


def stack_key(cfg: DictConfig) -> tuple[str, str]:
    """("alone", why) for a job that cannot be a trial of a stacked model; else ("with", what
    its group mates must share), as text: everything but the vector knobs (``data_seed`` kept:
    one batch order), the learning-rate schedules (each trial steps its own) and the quantiser
    options their classes vary per trial."""
    if (reason := stack_blocker(cfg)) is not None:
        return ("alone", reason)
    shared = {k: v for k, v in flatten(plain(cfg)).items()
              if k == "data_seed" or not (k in VECTOR_KEYS or k.startswith(("scheduler.", "quantisation.")))}
    shared.update(dropout=has_dropout(cfg), quantisation=stack_signature(cfg.quantisation))
    return ("with", json.dumps(shared, sort_keys=True, default=repr))


def stackable(cfgs: list[DictConfig]) -> bool:
    """Whether the trials can share one stacked model: each can, and they share what one
    stacked model shares (``stack_key``)."""
    keys = [stack_key(c) for c in cfgs]
    return keys[0][0] == "with" and len(set(keys)) == 1


def engine_for(trials: list):
    """How the trials take their steps: torch's own optimizer for a trial alone, one stacked
    model for several (each trial's generator and slice its lone run's)."""
    first = trials[0].cfg
    if len(trials) == 1:
        return fit.plain_engine(first, trials[0].net, trials[0].rng)
    device = fit.make_fabric(first.trainer).device
    generators = [dropout_generator(device, int(t.cfg.seed), t.rng["cpu"]) for t in trials]
    model = StackedModel([t.net.to(device) for t in trials], generators)
    hparams = [plain(t.cfg.optimizer) for t in trials]
    optimizer = StackedOptimizer({"flat": model.flat}, _optimizer_kind(first), hparams)
    betas = [b for t in trials if (b := fit.learned_beta(t.cfg, t.net)) is not None]  # all or none: one shape
    return StackedEngine(model, optimizer, LrSchedule([t.cfg.scheduler for t in trials], [h["lr"] for h in hparams]),
                         betas or None, fit.warmup_of(trials[0].cfg.quantisation))


def dropout_generator(device: torch.device, seed: int, after_init: torch.Tensor) -> torch.Generator:
    """A trial's dropout RNG: on the CPU the global generator's state right after its model's
    init, where its lone run's first dropout mask is drawn from; elsewhere seeded by its seed."""
    generator = torch.Generator(device=device)
    return generator.set_state(after_init) if device.type == "cpu" else generator.manual_seed(seed)
