"""In-memory batches: each epoch is one permutation and every batch is a slice.

A DataLoader over a TensorDataset collates sample by sample; for a 16-feature table that
per-sample work costs more than the model's step.
"""

from __future__ import annotations

import math

import torch


class TensorBatches:
    """An iterable of ``(x, y)`` batches over tensors, reshuffled on every pass when asked.

    A trailing batch of one sample is dropped when shuffling, since BatchNorm cannot
    train on it.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, *, shuffle: bool, seed: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.shuffle = shuffle
        self._generator = torch.Generator().manual_seed(seed)
        n = len(y)
        self._n = n - 1 if shuffle and n % batch_size == 1 and n > 1 else n

    @property
    def rng_state(self) -> torch.Tensor:
        """Where the next epoch's permutation is drawn from: saved with a resumable state."""
        return self._generator.get_state()

    @rng_state.setter
    def rng_state(self, state: torch.Tensor) -> None:
        self._generator.set_state(state)

    def __len__(self) -> int:
        return math.ceil(self._n / self.batch_size)

    def __iter__(self):
        x, y = self.x, self.y
        if self.shuffle:
            perm = torch.randperm(len(y), generator=self._generator).to(x.device)
            x, y = x[perm], y[perm]
        for start in range(0, self._n, self.batch_size):
            yield x[start : start + self.batch_size], y[start : start + self.batch_size]
