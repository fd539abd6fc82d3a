"""jscexp is a good Hydra citizen: installing it changes nothing for other Hydra apps."""

from __future__ import annotations

import subprocess
import sys
import textwrap

APP = textwrap.dedent('''
    import hydra
    from hydra.core.hydra_config import HydraConfig

    @hydra.main(version_base="1.3", config_path=".", config_name="conf")
    def main(cfg):
        print("job", cfg.x, HydraConfig.get().sweeper._target_)
        if cfg.x == 3:
            raise ValueError("three")

    main()
''')


def test_a_foreign_hydra_app_keeps_stock_hydras_sweeper(tmp_path):
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "conf.yaml").write_text("x: 0\n")

    def multirun(values: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "app.py", "-m", f"x={values}"], cwd=tmp_path, capture_output=True,
                              text=True, timeout=120)

    ok = multirun("1,2")
    assert ok.returncode == 0, ok.stderr
    jobs = [line.split() for line in ok.stdout.splitlines() if line.startswith("job ")]
    assert jobs == [["job", x, "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"] for x in ("1", "2")]
    assert "jscexp" not in ok.stdout + ok.stderr  # no parent run, no callback, no vectorising
    # stock Hydra re-raises a failed job's error; jscexp's keep-going summary is not imposed
    failing = multirun("3,4")
    assert failing.returncode == 1 and "ValueError: three" in failing.stderr and "jobs failed" not in failing.stderr
