"""Resumable training: each trial's state after its last complete epoch, on disk.

A trial's state lives under ``trainer.state_dir`` (``.jscexp/state`` beside ``mlflow.db``)
in a folder named by a hash of everything that decides its training — its resolved config
without the plumbing (``jscexp.config.PLUMBING``: MLflow and Optuna settings, trial numbers,
progress bars, how it is grouped) and the code's version. So whatever runs the same training again finds it: the
same command after Ctrl-C, an Optuna retry of a lost trial (new trial, same parameters),
a SLURM job requeued by submitit, a stacked group or a lone run (the state is kept in a lone
run's layout). Each epoch replaces it atomically; a trial that ends removes it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import warnings
from pathlib import Path

import torch
from omegaconf import DictConfig

from jscexp.config import plain, without_plumbing
from jscexp.errors import first_line
from jscexp.train.loop import FitResult, Snapshot

FORMAT = 1


def training_key(cfg: DictConfig, code_version: str) -> str:
    """The hash that names a trial's state: the same for every run of the same training."""
    return _hash({"code": code_version, "format": FORMAT, "config": without_plumbing(plain(cfg))})


def float_key(cfg: DictConfig, code_version: str) -> str:
    """The hash of the float training a config implies: a ``mode=train`` run and the PTQ jobs
    of any bit widths with the same other knobs share it (mode and quantisation left out)."""
    tree = {k: v for k, v in without_plumbing(plain(cfg)).items() if k not in ("mode", "quantisation")}
    return _hash({"code": code_version, "format": FORMAT, "float": tree})


def _hash(tree: dict) -> str:
    return hashlib.sha256(json.dumps(tree, sort_keys=True, default=str).encode()).hexdigest()[:20]


class StateFile:
    """One trial's resumable state: ``last.pt`` in its key's folder."""

    def __init__(self, root: Path, key: str):
        self.path = Path(root) / key / "last.pt"

    def load(self) -> Snapshot | None:
        """The saved state, or None when there is none; an unreadable one is said and ignored."""
        if not self.path.is_file():
            return None
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
            return Snapshot(saved["epoch"], FitResult(**saved["result"]), saved["engine"], saved["data_rng"],
                            saved["run_id"])
        except Exception as err:  # noqa: BLE001 — a torn or foreign file: train from the start
            warnings.warn(f"ignoring the unreadable training state {self.path}: {first_line(err)}", stacklevel=2)
            return None

    def save(self, snapshot: Snapshot) -> None:
        """Replaces the state atomically: a reader (or a crash) never sees half of one."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".last.{os.getpid()}.part")
        result = {f.name: getattr(snapshot.result, f.name) for f in dataclasses.fields(FitResult)}
        torch.save({"epoch": snapshot.epoch, "result": result, "engine": snapshot.engine,
                    "data_rng": snapshot.data_rng, "run_id": snapshot.run_id}, tmp)
        tmp.replace(self.path)

    def drop(self) -> None:
        self.path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # another writer's file is there, or it is gone already
            self.path.parent.rmdir()
