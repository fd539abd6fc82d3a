"""A vector group: one job that trains several grid points of one architecture at once.

The sweepers (``trainer.vectorize``) turn jobs that differ only in vector knobs
(``VECTOR_KEYS`` and the quantiser widths) and can share a stacked model into one job
carrying ``+vector_trials=[...]``. Each trial is composed exactly as its own job would be,
trained in one stacked model (``jscexp.train.stacked``), and recorded as its own MLflow run —
same params, metrics, artifacts and tags as a single run, plus ``jscexp.vector_group``.
Trials that cannot share a model (a hand-made group, say) run one after another instead.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from jscexp.errors import Pruned, UserError
from jscexp.sweep import Outcome, trial_overrides
from jscexp.sweep.overrides import is_vector_key

def stack_blocker(cfg: DictConfig) -> str | None:
    """Why a job cannot be a trial of a stacked model, or None when it can."""
    from jscexp.train.stacked import StackedOptimizer

    if cfg.mode not in ("train", "qat"):
        return f"mode={cfg.mode}"
    if cfg.mode == "qat" and not _integer_only(cfg.quantisation):
        return "a quantiser other than integer"
    if cfg.mode == "train" and cfg.quantisation.name != "none":
        return "quantisation with mode=train"
    options = OmegaConf.to_container(cfg.optimizer, resolve=True)
    if (reason := StackedOptimizer.unsupported(_optimizer_kind(cfg), [options])) is not None:
        return f"optimizer {reason}"
    if cfg.trainer.get("early_stopping_patience") is not None:
        return "early stopping"
    return None


def _optimizer_kind(cfg: DictConfig) -> str:
    """``torch.optim.AdamW`` → ``AdamW``."""
    return cfg.optimizer._target_.rsplit(".", 1)[-1]


def _has_dropout(cfg: DictConfig) -> bool:
    """Whether the model has Dropout layers (they exist only for p > 0): trials share an architecture."""
    return bool(cfg.model.get("dropout"))


def run_group(cfg: DictConfig, out_dir: Path, overrides: list[str]) -> list[Outcome]:
    from hydra import compose

    from jscexp.app import run

    trials = trial_overrides(cfg, overrides)
    cfgs = [compose("config", overrides=t) for t in trials]
    if not _stackable(cfgs):
        return [run(c, out_dir / f"trial_{i}", t) for i, (c, t) in enumerate(zip(cfgs, trials))]
    return _train_stacked(cfgs, trials, out_dir)


def _stackable(cfgs: list[DictConfig]) -> bool:
    """Whether the trials can share one stacked model: each can, and they differ only in
    vector knobs (not in ``data_seed``: they would have to share a batch order)."""

    def shared(c: DictConfig) -> dict:
        from jscexp.tracking import flatten

        flat = flatten(OmegaConf.to_container(c, resolve=True))
        return {**{k: v for k, v in flat.items() if k == "data_seed" or not is_vector_key(k)}, "dropout": _has_dropout(c)}

    return all(stack_blocker(c) is None for c in cfgs) and all(shared(c) == shared(cfgs[0]) for c in cfgs[1:])


def _integer_only(qcfg: DictConfig) -> bool:
    """Whether every quantiser the config names is ``integer`` (the one with a stacked form)."""
    from jscexp.tracking import flatten

    flat = flatten(OmegaConf.to_container(qcfg, resolve=True))
    return all(v in (None, "integer") for k, v in flat.items() if ".config." in k and k.endswith("name"))


def _train_stacked(cfgs: list[DictConfig], trials: list[list[str]], out_dir: Path) -> list[Outcome]:
    from jscexp.app import epoch_hooks, finish_training, initial_model, open_run
    from jscexp.data import load_splits
    from jscexp.quant.transform import quantise
    from jscexp.tracking import tracking_uri
    from jscexp.tracking.resume import finished_in_resumed_sweep
    from jscexp.tracking.store import check_reachable
    from jscexp.train import fit
    from jscexp.train.stacked import StackedModel, StackedOptimizer, fit_stacked
    from jscexp.validate import check_batch_fits, check_knobs

    first = cfgs[0]
    failed: dict[int, UserError] = {}  # a trial's own bad knob fails that trial only, as its job alone would
    for i, c in enumerate(cfgs):
        try:
            check_knobs(c)
        except UserError as err:
            failed[i] = err
    uri = tracking_uri(first.mlflow.tracking_uri)
    check_reachable(uri)
    done = [finished_in_resumed_sweep(uri, t) for t in trials]
    results: list = [None if d is None else Outcome.finished(d.metrics, d.run_id) for d in done]
    splits = load_splits(first.dataset)
    check_batch_fits(int(first.batch_size), len(splits.y_train))
    fabric = fit.make_fabric(first.trainer)
    calibration = torch.from_numpy(splits.x_train[: int(first.analysis.num_samples)])
    todo, models, generators, quantised = [], [], [], []
    for i in (i for i, d in enumerate(done) if d is None and i not in failed):
        try:
            model = initial_model(cfgs[i])
            generator = _dropout_generator(fabric.device, int(cfgs[i].seed))
            qcfg = OmegaConf.to_container(cfgs[i].quantisation, resolve=True)
            quantised.append(quantise(model, qcfg, calibration) if first.mode == "qat" else None)  # its own widths
        except UserError as err:
            failed[i] = err
            continue
        todo.append(i)
        models.append(model)
        generators.append(generator)
    for i, err in sorted(failed.items()):
        print(f"error: {err}", file=sys.stderr)
        results[i] = Outcome.failed(str(err))
    if not todo:
        return results
    nets = [(q[0] if q else m).to(fabric.device) for m, q in zip(models, quantised)]
    group = uuid.uuid4().hex[:12]
    runs = [open_run(cfgs[i], uri, m, splits, trials[i], {"jscexp.vector_group": group}) for i, m in zip(todo, models)]
    open_runs = set(range(len(runs)))

    def close(k: int, exc: BaseException | None) -> None:
        runs[k].__exit__(type(exc) if exc else None, exc, None)
        open_runs.discard(k)

    try:
        hooks = [epoch_hooks(cfgs[i], run) for i, run in zip(todo, runs)]  # each trial's, as its run alone
        pruned: dict[int, Pruned] = {}

        def hook(k: int, epoch: int, metrics: dict) -> bool:
            try:
                for each in hooks[k]:
                    each(epoch, metrics)
            except Pruned as stop:  # this trial's slice stops; the others go on
                pruned[k] = stop
                return True
            return False

        stacked = StackedModel(nets, generators)
        hparams = [OmegaConf.to_container(cfgs[i].optimizer, resolve=True) for i in todo]
        optimizer = StackedOptimizer({"flat": stacked.flat}, _optimizer_kind(first), hparams)
        fits = fit_stacked(
            stacked, optimizer, _lr_schedule(first, [h["lr"] for h in hparams]),
            fit.batches(fabric, splits, "train", int(first.batch_size), seed=int(first.data_seed)),
            fit.batches(fabric, splits, "val", int(first.trainer.eval_batch_size)),
            max_epochs=int(first.max_epochs), hook=hook,
        )
        for k, i in enumerate(todo):
            if k in pruned:
                results[i] = Outcome.of_exception(pruned[k])
                close(k, pruned[k])
                continue
            nets[k].load_state_dict(fits[k].best_state)
            results[i] = finish_training(cfgs[i], nets[k], splits, runs[k], out_dir / f"trial_{i}", fits[k],
                                         calibration, quantised[k])
            close(k, None)
    except BaseException as err:
        for k in sorted(open_runs):
            close(k, err)
        raise
    return results


def _dropout_generator(device: torch.device, seed: int) -> torch.Generator:
    """A trial's dropout RNG: on the CPU the global generator's state right after its model's
    init, where its lone run's first dropout mask is drawn from; elsewhere seeded by its seed."""
    generator = torch.Generator(device=device)
    return generator.set_state(torch.get_rng_state()) if device.type == "cpu" else generator.manual_seed(seed)


def _lr_schedule(cfg: DictConfig, lrs: list[float]):
    """Each trial's learning rate per epoch, from torch's own scheduler over one group per trial."""
    holder = torch.optim.SGD([{"params": [torch.zeros(1)], "lr": lr} for lr in lrs])
    scheduler = instantiate(cfg.scheduler)(holder) if cfg.scheduler.get("_target_") else None
    epochs_done = 0

    def lr_at(epoch: int) -> list[float]:
        nonlocal epochs_done
        while scheduler is not None and epochs_done < epoch:
            holder.step()  # torch warns about a scheduler stepped before its optimizer
            scheduler.step()
            epochs_done += 1
        return [g["lr"] for g in holder.param_groups]

    return lr_at
