"""``python -m jscexp.export RUN_ID [--out DIR]``: the run's hls4ml project, its C simulation
checked bit for bit on the run's test split (docs/hardware.md)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from jscexp.errors import UserError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jscexp.export", description=__doc__)
    parser.add_argument("run_id", help="a quantised run (mode=qat or mode=ptq)")
    parser.add_argument("--out", type=Path, default=None, help="where the HLS project goes (default: exports/RUN_ID)")
    parser.add_argument("--tracking-uri", default=None, help="the MLflow store (default: as python -m jscexp)")
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # the error stays one line
    from jscexp.export.run import export_run
    from jscexp.tracking.store import tracking_uri

    try:
        check = export_run(tracking_uri(args.tracking_uri), args.run_id, args.out or Path("exports") / args.run_id)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # its scratch folder is gone with it; the run holds nothing of it
        print(f"interrupted: run {args.run_id} was not exported (nothing recorded on it)", file=sys.stderr)
        return 130
    print(f"{check.line()} · run {args.run_id}")
    return 1 if check.reason else 0


if __name__ == "__main__":
    raise SystemExit(main())
