"""Registers the sweeper's config as ``hydra/sweeper=jscexp_optuna`` (``sweeper=optuna``).

Named so it cannot collide with the official ``optuna`` sweeper. The schema lives in
``jscexp.sweep.searchconf``, where the checks before a sweep read it too.
"""

from hydra.core.config_store import ConfigStore

from jscexp.sweep.searchconf import JscexpOptunaSweeperConf

ConfigStore.instance().store(group="hydra/sweeper", name="jscexp_optuna", node=JscexpOptunaSweeperConf,
                             provider="jscexp")
