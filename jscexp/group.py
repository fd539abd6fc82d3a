"""A vector group: one job that trains several grid points of one architecture at once.

The grid sweeper (``trainer.vectorize``) turns jobs that differ only in vector knobs
(``VECTOR_KEYS`` and the quantiser widths) into one job carrying ``+vector_trials=[...]``. Each trial is composed exactly as its own job
would be, trained in one stacked model (``jscexp.train.stacked``), and recorded as its own
MLflow run — same params, metrics, artifacts and tags as a single run, plus
``jscexp.vector_group``. Trials that cannot share a model run one after another instead.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from jscexp.errors import Pruned
from jscexp.result import JobResult

# Knobs that can differ between the trials of one stacked model.
VECTOR_KEYS = ("learning_rate", "seed", "data_seed", "optimizer.lr", "optimizer.weight_decay", "optimizer.betas",
               "optimizer.momentum", "optimizer.eps", "optimizer.nesterov", "optuna.trial")
GROUP_KEY = "vector_trials"


def override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def is_vector_key(key: str) -> bool:
    """A knob that may differ between stacked trials: VECTOR_KEYS, and any quantiser width
    (``quantisation.weight_width``, ``…frac_width``: per-trial integer quantisers)."""
    return key in VECTOR_KEYS or (key.startswith("quantisation.") and key.endswith("width"))


def group_jobs(job_overrides: list[list[str]], size: int) -> list[list[str]]:
    """Jobs equal but for VECTOR_KEYS become one job of up to ``size`` trials."""
    return grouped_jobs(job_overrides, size)[0]


def grouped_jobs(job_overrides: list[list[str]], size: int) -> tuple[list[list[str]], list[list[int]]]:
    """``group_jobs`` and, per job it returns, the indices of the jobs it stands for."""
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, overrides in enumerate(job_overrides):
        fixed = tuple(o for o in overrides if not is_vector_key(override_key(o)))
        groups.setdefault(fixed, []).append(i)
    jobs, members = [], []
    for fixed, indices in groups.items():
        for start in range(0, len(indices), size):
            chunk = indices[start : start + size]
            trials = [[o for o in job_overrides[i] if is_vector_key(override_key(o))] for i in chunk]
            if len(chunk) == 1:
                jobs.append([*fixed, *trials[0]])
            else:
                jobs.append([*fixed, f"+{GROUP_KEY}=[" + ",".join(f"'{' '.join(t)}'" for t in trials) + "]"])
            members.append(chunk)
    return jobs, members


def per_job_returns(returns: list, members: list[list[int]], n_jobs: int) -> list:
    """A group job's return split back into one JobReturn per original job, in their order."""
    from hydra.core.utils import JobReturn, JobStatus

    out: list = [None] * n_jobs
    for ret, indices in zip(returns, members):
        if len(indices) == 1:
            out[indices[0]] = ret
            continue
        values = ret._return_value if ret.status == JobStatus.COMPLETED else [ret._return_value] * len(indices)
        for i, value in zip(indices, values):
            failed = ret.status != JobStatus.COMPLETED or isinstance(value, BaseException)
            out[i] = JobReturn(status=JobStatus.FAILED if failed else JobStatus.COMPLETED, _return_value=value)
    return out


def group_size(setting) -> int:
    """``trainer.vectorize``: off → 1, auto → 64, or a number."""
    if setting in (None, False, "off"):
        return 1
    return 64 if setting == "auto" else max(1, int(setting))


def run_group(cfg: DictConfig, out_dir: Path, overrides: list[str]) -> list[JobResult]:
    from hydra import compose

    from jscexp.app import run

    common = [o for o in overrides if override_key(o) != GROUP_KEY]
    trials = [[*common, *t.split()] for t in cfg[GROUP_KEY]]
    cfgs = [compose("config", overrides=t) for t in trials]
    if not _stackable(cfgs):
        return [run(c, out_dir / f"trial_{i}", t) for i, (c, t) in enumerate(zip(cfgs, trials))]
    return _train_stacked(cfgs, trials, out_dir)


def _stackable(cfgs: list[DictConfig]) -> bool:
    from jscexp.train.stacked import StackedOptimizer

    def shared(c: DictConfig) -> dict:
        from jscexp.tracking import flatten

        flat = flatten(OmegaConf.to_container(c, resolve=True))
        return {k: v for k, v in flat.items() if not is_vector_key(k)}

    first = cfgs[0]
    return (
        (first.mode == "train" or (first.mode == "qat" and _integer_only(first.quantisation)))
        and first.optimizer._target_.rsplit(".", 1)[-1] in StackedOptimizer.KINDS
        and first.trainer.get("early_stopping_patience") is None
        and not first.model.get("dropout")  # per-trial dropout masks would not match the trials run alone
        and all(shared(c) == shared(first) for c in cfgs[1:])
    )


def _integer_only(qcfg: DictConfig) -> bool:
    """Whether every quantiser the config names is ``integer`` (the one with a stacked form)."""
    from jscexp.tracking import flatten

    flat = flatten(OmegaConf.to_container(qcfg, resolve=True))
    return all(v in (None, "integer") for k, v in flat.items() if ".config." in k and k.endswith("name"))


def _train_stacked(cfgs: list[DictConfig], trials: list[list[str]], out_dir: Path) -> list[JobResult]:
    from jscexp.app import finish_training, initial_model, open_run, trial_reporter
    from jscexp.data import load_splits
    from jscexp.quant.transform import quantise
    from jscexp.tracking import tracking_uri
    from jscexp.tracking.resume import finished_in_resumed_sweep
    from jscexp.tracking.store import check_reachable
    from jscexp.train import fit
    from jscexp.train.stacked import StackedModel, StackedOptimizer, fit_stacked
    from jscexp.validate import check_batch_fits, check_knobs

    first = cfgs[0]
    for c in cfgs:
        check_knobs(c)
        OmegaConf.update(c, "data_seed", int(first.data_seed))  # stacked trials share one batch order
    uri = tracking_uri(first.mlflow.tracking_uri)
    check_reachable(uri)
    done = [finished_in_resumed_sweep(uri, t) for t in trials]
    todo = [i for i, d in enumerate(done) if d is None]
    results: list[JobResult | None] = [
        None if d is None else JobResult(d.metrics.get("best_val_acc", float("nan")), d.metrics) for d in done
    ]
    splits = load_splits(first.dataset)
    check_batch_fits(int(first.batch_size), len(splits.y_train))
    fabric = fit.make_fabric(first.trainer)
    calibration = torch.from_numpy(splits.x_train[: int(first.analysis.num_samples)])
    models = [initial_model(cfgs[i]) for i in todo]
    quantised = [quantise(m, OmegaConf.to_container(cfgs[i].quantisation, resolve=True), calibration)
                 if first.mode == "qat" else None for i, m in zip(todo, models)]  # each trial's own widths
    nets = [(q[0] if q else m).to(fabric.device) for m, q in zip(models, quantised)]
    group = uuid.uuid4().hex[:12]
    runs = [open_run(cfgs[i], uri, m, splits, trials[i], {"jscexp.vector_group": group}) for i, m in zip(todo, models)]
    open_runs = set(range(len(runs)))

    def close(k: int, exc: BaseException | None) -> None:
        runs[k].__exit__(type(exc) if exc else None, exc, None)
        open_runs.discard(k)

    try:
        reporters = [trial_reporter(cfgs[i]) for i in todo]
        pruned: dict[int, Pruned] = {}

        def hook(k: int, epoch: int, metrics: dict) -> bool:
            runs[k].log_metrics(metrics, step=epoch)
            try:
                if reporters[k] is not None:
                    reporters[k](epoch, metrics)
            except Pruned as stop:  # this trial's slice stops; the others go on
                pruned[k] = stop
                return True
            return False

        stacked = StackedModel(nets)
        hparams = [OmegaConf.to_container(cfgs[i].optimizer, resolve=True) for i in todo]
        optimizer = StackedOptimizer({"flat": stacked.flat}, first.optimizer._target_.rsplit(".", 1)[-1], hparams)
        fits = fit_stacked(
            stacked, optimizer, _lr_schedule(first, [h["lr"] for h in hparams]),
            fit.batches(fabric, splits, "train", int(first.batch_size), seed=int(first.data_seed)),
            fit.batches(fabric, splits, "val", int(first.trainer.eval_batch_size)),
            max_epochs=int(first.max_epochs), hook=hook,
        )
        for k, i in enumerate(todo):
            if k in pruned:
                results[i] = pruned[k]
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
