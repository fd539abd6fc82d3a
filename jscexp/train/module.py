"""The Lightning module: cross-entropy classification with torchmetrics accuracy.

Metrics accumulate on the device during the epoch and are read once at its end, so a
training step pays for no logging or host sync.
"""

from __future__ import annotations

from collections.abc import Callable

import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn import functional as F
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy


class Classifier(pl.LightningModule):
    def __init__(
        self,
        model: nn.Module,
        *,
        num_classes: int,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., object] | None = None,
    ):
        super().__init__()
        self.model = model
        self._optimizer = optimizer
        self._scheduler = scheduler
        self.metrics = nn.ModuleDict()
        for stage in ("train", "val", "test"):
            self.metrics[f"{stage}_acc"] = MulticlassAccuracy(num_classes, average="micro")
            self.metrics[f"{stage}_loss"] = MeanMetric()
        self.epoch_metrics: dict[str, float] = {}
        self.checkpoint_meta: dict = {}  # saved beside the weights so a checkpoint names its model

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["jscexp"] = self.checkpoint_meta

    def forward(self, x):
        return self.model(x)

    def _step(self, stage: str, batch):
        x, y = batch
        logits = self.model(x)
        loss = F.cross_entropy(logits, y)
        self.metrics[f"{stage}_acc"].update(logits.detach(), y)
        self.metrics[f"{stage}_loss"].update(loss.detach(), weight=len(y))
        return loss

    def training_step(self, batch, batch_idx):
        return self._step("train", batch)

    def validation_step(self, batch, batch_idx):
        self._step("val", batch)

    def test_step(self, batch, batch_idx):
        self._step("test", batch)

    def collect(self, stage: str) -> None:
        """Computes the stage's epoch accuracy and loss into ``epoch_metrics`` and resets them."""
        values = {}
        for key in (f"{stage}_acc", f"{stage}_loss"):
            values[key] = self.metrics[key].compute()
            self.metrics[key].reset()
        self.epoch_metrics.update({k: float(v) for k, v in values.items()})
        self.log_dict(values, prog_bar=True)

    def on_validation_epoch_end(self) -> None:
        self.collect("val")

    def on_test_epoch_end(self) -> None:
        self.collect("test")

    def configure_optimizers(self):
        optimizer = self._optimizer(self.parameters())
        if self._scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self._scheduler(optimizer), "interval": "epoch"}}
