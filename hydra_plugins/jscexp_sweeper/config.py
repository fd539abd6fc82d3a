"""The sweeper's config, registered as ``hydra/sweeper=jscexp_optuna``.

Named so it cannot collide with the official ``optuna`` sweeper.
"""

# No ``from __future__ import annotations``: Hydra's plugin scan executes this module
# outside sys.modules, where dataclasses cannot resolve string annotations.
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from hydra.core.config_store import ConfigStore


@dataclass
class JscexpOptunaSweeperConf:
    _target_: str = "hydra_plugins.jscexp_sweeper.sweeper.JscexpOptunaSweeper"
    sampler: str = "tpe"  # tpe | random | grid | cmaes | qmc | nsgaii
    seed: Optional[int] = None  # sampler seed: same seed, same suggestions
    direction: Any = "maximize"  # or a list, one per objective
    objectives: Any = field(default_factory=lambda: ["best_val_acc"])  # metric names the job returns
    study_name: Optional[str] = None  # default: <experiment>-<hash of the search>
    storage: Optional[str] = None  # default: optuna-journal.log beside mlflow.db; or an RDB URL
    n_trials: int = 20  # the study's total: a rerun runs only what is missing
    n_jobs: int = 1  # trials handed to the launcher at once
    pruner: str = "none"  # none | median | hyperband | successive_halving (single objective)
    pruner_warmup_epochs: int = 1  # epochs before a trial may be pruned (median)
    pruner_startup_trials: int = 2  # trials that always run to the end first (median)
    dedup: bool = True  # a config already completed in the study is not trained again
    params: Optional[Dict[str, Any]] = None  # key: Hydra sweep syntax, e.g. learning_rate: tag(log, interval(1e-4, 1e-1))


ConfigStore.instance().store(group="hydra/sweeper", name="jscexp_optuna", node=JscexpOptunaSweeperConf,
                             provider="jscexp")
