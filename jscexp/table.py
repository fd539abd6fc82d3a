"""``python -m jscexp.table``: a sweep's runs as the lab report's comparison table."""

from __future__ import annotations

import argparse
import sys

from jscexp.errors import UserError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jscexp.table", description=__doc__)
    parser.add_argument("--experiment", "-e", default="jscexp", help="MLflow experiment name (default: jscexp)")
    parser.add_argument(
        "--sweep", default="latest", help="parent run id of a sweep, 'latest' (default) or 'all' for every run"
    )
    parser.add_argument("--filter", default="", help="an MLflow filter string, e.g. \"params.batch_size = '64'\"")
    parser.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db")
    args = parser.parse_args(argv)

    from jscexp.tracking import tracking_uri
    from jscexp.tracking.query import runs_frame
    from jscexp.tracking.tables import lab_table

    try:
        runs = runs_frame(
            tracking_uri(args.tracking_uri),
            args.experiment,
            sweep=None if args.sweep == "all" else args.sweep,
            filter_string=args.filter,
        )
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if runs.empty:
        print(f"error: no runs match in experiment '{args.experiment}'", file=sys.stderr)
        return 2
    print(lab_table(runs).to_markdown(index=False, disable_numparse=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
