"""Search stage: Optuna studies behind the ``jscexp_optuna`` Hydra sweeper."""
