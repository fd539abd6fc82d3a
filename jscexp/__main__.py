"""``python -m jscexp``: the Hydra entry point. One job = one run.

Only Hydra is imported here; the job imports torch and friends when it starts.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from jscexp.errors import UserError, install_interrupt_handlers


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    hc = HydraConfig.get()
    try:
        if cfg.get("vector_trials"):  # several grid points in one stacked model (jscexp.group)
            from jscexp.group import run_group

            return run_group(cfg, Path(hc.runtime.output_dir), list(hc.overrides.task))
        from jscexp.app import run

        return run(cfg, Path(hc.runtime.output_dir), list(hc.overrides.task))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    install_interrupt_handlers()
    main()
    from hydra_plugins.jscexp_sweeper.basic import FAILURES

    sys.exit(1 if FAILURES else 0)
