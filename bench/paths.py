"""The three training paths the benchmark times, each for ``steps`` optimiser steps.

(a) the MASE way: a LightningModule that logs loss and accuracy every step, fed by a
    DataLoader over a TensorDataset, driven by the Lightning Trainer — the reference;
(b) a plain PyTorch loop over pre-shuffled in-memory slices: the eager limit;
(c) jscexp's own path, built by ``jscexp.train.fit.plain_engine`` exactly as a run builds it.
Each returns the seconds its ``steps`` timed steps took (after ``warmup`` untimed ones).
"""

from __future__ import annotations

import time

import torch
from torch.nn import functional as F

from jscexp.train import fit, loop, stacked
from jscexp.train.process import job_state


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def mase_lightning(model, x, y, batch_size: int, lr: float, warmup: int, steps: int, device: str) -> float:
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset
    from torchmetrics.classification import MulticlassAccuracy

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = model
            self.acc = MulticlassAccuracy(5, average="micro")

        def training_step(self, batch, batch_idx):
            xb, yb = batch
            logits = self.model(xb)
            loss = F.cross_entropy(logits, yb)
            self.acc(logits, yb)
            self.log("train_acc_step", self.acc, prog_bar=True)
            self.log("train_loss_step", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=lr)

    class Clock(pl.Callback):
        start = end = 0.0

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if batch_idx == warmup:
                _sync(device)
                self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if batch_idx == warmup + steps - 1:
                _sync(device)
                self.end = time.perf_counter()

    clock = Clock()
    data = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True)
    trainer = pl.Trainer(
        accelerator="gpu" if device == "cuda" else "cpu", devices=1, max_steps=warmup + steps, logger=False,
        enable_checkpointing=False, enable_model_summary=False, callbacks=[clock],
    )
    trainer.fit(Module(), data)
    return clock.end - clock.start


def raw_loop(model, x, y, batch_size: int, lr: float, warmup: int, steps: int, device: str) -> float:
    model = model.to(device)
    x, y = x.to(device), y.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)

    def run(n: int) -> None:
        perm = torch.randperm(len(y), device=device)
        xs, ys = x[perm], y[perm]
        for i in range(n):
            xb, yb = xs[i * batch_size : (i + 1) * batch_size], ys[i * batch_size : (i + 1) * batch_size]
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb), yb).backward()
            optimizer.step()

    run(warmup)
    _sync(device)
    start = time.perf_counter()
    run(steps)
    _sync(device)
    return time.perf_counter() - start


def jscexp_path(cfg, model, *, splits, warmup: int, steps: int, device: str) -> float:
    with job_state(cfg.trainer.num_threads, bool(cfg.trainer.deterministic)):  # as a job sets it
        return _jscexp_path(cfg, model, splits=splits, warmup=warmup, steps=steps, device=device)


def _jscexp_path(cfg, model, *, splits, warmup: int, steps: int, device: str) -> float:
    t = fit.plain_engine(cfg, model)
    data = fit.batches(t.device, splits, "train", int(cfg.batch_size), seed=int(cfg.data_seed))
    tally = loop.Tally(1, t.device)
    progress = loop.Progress(bool(cfg.trainer.progress_bar), int(cfg.trainer.progress_refresh))
    progress.start(0, len(data))
    loop.train_epoch(t.fabric, t.model, t.optimizer, data, tally, progress, max_steps=warmup)
    _sync(device)
    start = time.perf_counter()
    loop.train_epoch(t.fabric, t.model, t.optimizer, data, tally, progress, max_steps=steps)
    _sync(device)
    seconds = time.perf_counter() - start
    tally.compute("train_")
    return seconds


def stacked_path(cfg, models, *, splits, warmup: int, steps: int, device: str, betas: list[float] | None = None) -> float:
    """K trials in one stacked model (jscexp.group.engine_for's), Adam with one learning rate each;
    ``betas``: learned widths' β per trial (the β·EBOPs term in each step)."""
    with job_state(cfg.trainer.num_threads, bool(cfg.trainer.deterministic)):
        return _stacked_path(cfg, models, splits=splits, warmup=warmup, steps=steps, device=device, betas=betas)


def _stacked_path(cfg, models, *, splits, warmup: int, steps: int, device: str, betas=None) -> float:
    fabric = fit.make_fabric(cfg.trainer)
    model = stacked.StackedModel([m.to(fabric.device) for m in models])
    lrs = [{"lr": 1e-3 * (1 + k % 7)} for k in range(len(models))]
    optimizer = stacked.StackedOptimizer({"flat": model.flat}, "Adam", lrs)
    data = fit.batches(fabric.device, splits, "train", int(cfg.batch_size), seed=0)
    tally = loop.Tally(len(models), fabric.device)
    active = torch.ones(len(models), dtype=torch.bool, device=fabric.device)
    per_trial = None if betas is None else torch.tensor(betas, device=fabric.device)
    stacked.train_epoch(model, optimizer, data, tally, active, max_steps=warmup, betas=per_trial)
    _sync(device)
    start = time.perf_counter()
    stacked.train_epoch(model, optimizer, data, tally, active, max_steps=steps, betas=per_trial)
    _sync(device)
    return time.perf_counter() - start
