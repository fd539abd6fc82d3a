"""The process state a job's numbers depend on, set when the job starts and restored when it ends.

torch keeps its thread count, deterministic mode and RNGs per process, and Lightning's
``seed_everything`` and cuBLAS read environment variables: jobs run one after another in one
process (Hydra's basic launcher, a stacked group's trials, tests) would otherwise inherit the
first job's settings, or its seed. Each job starts from the state the process had before it.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator

import numpy as np
import torch


@contextlib.contextmanager
def job_state(num_threads: int | None, deterministic: bool) -> Iterator[None]:
    """Inside: ``num_threads`` torch threads (None: the process's own count) and deterministic
    algorithms on or off; on the way out, threads, mode, RNGs and environment as they were."""
    saved = _capture()
    try:
        if num_threads:
            torch.set_num_threads(int(num_threads))
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it to be deterministic
        torch.use_deterministic_algorithms(bool(deterministic))
        torch.backends.cudnn.benchmark = False if deterministic else saved["cudnn_benchmark"]
        yield
    finally:
        _restore(saved)


def _capture() -> dict:
    return {
        "threads": torch.get_num_threads(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "environ": dict(os.environ),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy_rng": np.random.get_state(),
        "python_rng": random.getstate(),
    }


def _restore(saved: dict) -> None:
    torch.set_num_threads(saved["threads"])
    torch.use_deterministic_algorithms(saved["deterministic"], warn_only=saved["warn_only"])
    torch.backends.cudnn.benchmark = saved["cudnn_benchmark"]
    for name in set(os.environ) - set(saved["environ"]):
        del os.environ[name]
    os.environ.update(saved["environ"])
    torch.set_rng_state(saved["torch_rng"])
    if saved["cuda_rng"] is not None:
        torch.cuda.set_rng_state_all(saved["cuda_rng"])
    np.random.set_state(saved["numpy_rng"])
    random.setstate(saved["python_rng"])
