"""Hydra callback: what a sweep can know is wrong before its first trial, checked when it starts.

It comes first in conf/config.yaml's ``hydra.callbacks``, before the MLflow callback opens the
sweep's parent run and before any Optuna study exists, so a mistake costs one line and exit 2,
never a run. It runs the sweep layer's checks (``jscexp.sweep.checks``) and the in-training
search's (``jscexp.intrain``: its ``Kind.check_config``), which stands above the sweep layer.
Kept free of heavy imports at module level: Hydra instantiates it even for ``--help``.
"""

from __future__ import annotations

import sys

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class PreflightCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        from jscexp.errors import UserError
        from jscexp.intrain import kind_of
        from jscexp.sweep.checks import check_sweep, swept

        try:
            check_sweep(config)
            if not swept(config, "intrain"):  # a swept one is checked per job
                kind_of(config).check_config(config)
        except UserError as err:  # Hydra would only warn about a callback's error and go on
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
