"""The ``jscexp_optuna`` Hydra sweeper: Optuna 5 studies with resume, pruning, dedup and
multi-objective search. Hydra finds it by scanning the ``hydra_plugins`` namespace."""
