"""The Optuna sweeper's config: its typed schema, strict (a key it does not have is refused
before the sweep starts; ``checks.check_sweep``). ``hydra_plugins/jscexp_sweeper`` registers it.

Samplers and pruners are ``_target_`` config groups (``conf/hydra/sweeper/{sampler,pruner}``),
as in the official plugin: ``hydra/sweeper/sampler=random``, ``hydra.sweeper.sampler.seed=1``.
Where the official plugin differs (defaults, options it has and this one lacks): docs/optuna.md.
"""

# No ``from __future__ import annotations``: OmegaConf reads these annotations as types.
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import MISSING


@dataclass
class JscexpOptunaSweeperConf:
    _target_: str = "hydra_plugins.jscexp_sweeper.sweeper.JscexpOptunaSweeper"
    _recursive_: bool = False  # the sweeper builds sampler and pruner itself (seed offset, grid space)
    defaults: List[Any] = field(default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "none"}])
    sampler: Any = MISSING  # hydra/sweeper/sampler: tpe | random | grid | cmaes | qmc | nsgaii
    pruner: Any = MISSING  # hydra/sweeper/pruner: none | median | hyperband | successive_halving
    seed: Optional[int] = None  # the sampler's seed (or hydra.sweeper.sampler.seed): same seed, same suggestions
    direction: Any = "maximize"  # or a list, one per objective
    objectives: Any = None  # metric names the job returns, one per direction; unset: best_val_acc, maximised
    study_name: Optional[str] = None  # default: <experiment>-<hash of the search>
    storage: Optional[str] = None  # default: optuna-journal.log beside mlflow.db; or an RDB URL
    n_trials: int = 20  # the study's total: a rerun runs only what is missing
    n_jobs: int = 1  # trials handed to the launcher at once
    max_failure_rate: float = 1.0  # stop asking once more than this share of this launch's trials failed
    dedup: bool = True  # a config already completed in the study is not trained again
    heartbeat_interval: float = 10.0  # seconds between a running trial's heartbeats in the study storage
    grace_period: float = 60.0  # seconds without a heartbeat before a RUNNING trial counts as lost (FAIL)
    max_retries: int = 1  # times a lost trial is retried with the same parameters
    refill: bool = True  # a stacked group fills a slice its pruner freed with a newly asked trial
    params: Optional[Dict[str, Any]] = None  # key: Hydra sweep syntax, e.g. learning_rate: tag(log, interval(1e-4, 1e-1))

