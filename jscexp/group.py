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
from jscexp.result import JobResult

# Knobs that can differ between the trials of one stacked model.
VECTOR_KEYS = ("learning_rate", "seed", "data_seed", "optimizer.lr", "optimizer.weight_decay", "optimizer.betas",
               "optimizer.momentum", "optimizer.dampening", "optimizer.eps", "optimizer.nesterov", "model.dropout",
               "optuna.trial")
GROUP_KEY = "vector_trials"


def override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def is_vector_key(key: str) -> bool:
    """A knob that may differ between stacked trials: VECTOR_KEYS, and any quantiser width
    (``quantisation.weight_width``, ``…frac_width``: per-trial integer quantisers)."""
    return key in VECTOR_KEYS or (key.startswith("quantisation.") and key.endswith("width"))


def group_jobs(job_overrides: list[list[str]], size: int, compose=None) -> list[list[str]]:
    """Jobs equal but for vector knobs become one job of up to ``size`` trials."""
    return grouped_jobs(job_overrides, size, compose)[0]


def grouped_jobs(job_overrides: list[list[str]], size: int, compose=None) -> tuple[list[list[str]], list[list[int]]]:
    """``group_jobs`` and, per job it returns, the indices of the jobs it stands for.

    ``compose(overrides)`` gives a job's config. With it, a job that cannot be a stacked trial
    (``stack_blocker``) stays alone, and trials are only grouped when they share a
    ``data_seed``: stacked trials see one batch order, so each keeps the numbers of its own run.
    """
    keys: list[tuple] = [tuple(o for o in overrides if not is_vector_key(override_key(o))) for overrides in job_overrides]
    if compose is not None:
        counts = {k: keys.count(k) for k in set(keys)}
        for i, overrides in enumerate(job_overrides):
            if counts[keys[i]] > 1:
                keys[i] = (keys[i], _stack_key(compose, overrides, i))
    groups: dict[tuple, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    jobs, members = [], []
    for indices in groups.values():
        for start in range(0, len(indices), size):
            chunk = indices[start : start + size]
            fixed = [o for o in job_overrides[chunk[0]] if not is_vector_key(override_key(o))]
            trials = [[o for o in job_overrides[i] if is_vector_key(override_key(o))] for i in chunk]
            if len(chunk) == 1:
                jobs.append(list(job_overrides[chunk[0]]))
            else:
                jobs.append([*fixed, group_override(trials)])
            members.append(chunk)
    return jobs, members


def group_override(trials: list[list[str]]) -> str:
    """``+vector_trials=[['lr=0.1','seed=0'],…]``: each trial's overrides, quoted for Hydra's grammar."""
    def quoted(o: str) -> str:
        return "'" + o.replace("'", "\\'") + "'"

    return f"+{GROUP_KEY}=[" + ",".join("[" + ",".join(quoted(o) for o in t) + "]" for t in trials) + "]"


def job_composer(hydra_context, config: DictConfig):
    """``compose`` for ``grouped_jobs`` inside a sweeper: a job's config as its launcher will build it."""
    return lambda overrides: hydra_context.config_loader.load_sweep_config(config, list(overrides))


def _stack_key(compose, overrides: list[str], index: int):
    """What a job must share with its group mates: its data order; a job that cannot stack, nothing."""
    try:
        cfg = compose(overrides)
        return ("data_seed", int(cfg.data_seed), _has_dropout(cfg)) if stack_blocker(cfg) is None else ("alone", index)
    except Exception:  # noqa: BLE001 — a job whose config does not compose fails on its own, with its own message
        return ("alone", index)


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


def per_job_returns(returns: list, members: list[list[int]], jobs: list[list[str]]) -> list:
    """A group job's return split back into one JobReturn per original job, in their order."""
    from hydra.core.utils import JobReturn, JobStatus

    out: list = [None] * len(jobs)
    for ret, indices in zip(returns, members):
        if len(indices) == 1:
            out[indices[0]] = ret
            continue
        values = ret._return_value if ret.status == JobStatus.COMPLETED else [ret._return_value] * len(indices)
        for i, value in zip(indices, values):
            failed = ret.status != JobStatus.COMPLETED or isinstance(value, BaseException)
            out[i] = JobReturn(overrides=jobs[i], cfg=ret.cfg, hydra_cfg=ret.hydra_cfg, working_dir=ret.working_dir,
                               task_name=ret.task_name, status=JobStatus.FAILED if failed else JobStatus.COMPLETED,
                               _return_value=value)
    return out


def trial_overrides(cfg: DictConfig, overrides: list[str]) -> list[list[str]]:
    """Each trial's overrides in a group job: the job's own, less the group, plus the trial's."""
    common = [o for o in overrides if override_key(o) != GROUP_KEY]
    # unresolved: a trial override may hold an interpolation meant for its own config (${sub:…})
    return [[*common, *t] for t in OmegaConf.to_container(cfg[GROUP_KEY], resolve=False)]


def run_group(cfg: DictConfig, out_dir: Path, overrides: list[str]) -> list[JobResult]:
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


def _train_stacked(cfgs: list[DictConfig], trials: list[list[str]], out_dir: Path) -> list[JobResult]:
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
    results: list = [
        None if d is None else JobResult(d.metrics.get("best_val_acc", float("nan")), d.metrics) for d in done
    ]
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
        results[i] = err
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
