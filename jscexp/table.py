"""``python -m jscexp.table`` (or ``jscexp-table``): MLflow runs as a comparison table.

Examples:
  python -m jscexp.table -e lab1_batch_size                      # latest sweep, lab columns
  python -m jscexp.table -e lab1_learning_rate --plot lr.png
  python -m jscexp.table -e jscexp --sweep all --filter "params.`model.name` = 'jsc-toy'" --format csv
  python -m jscexp.table -e seeds --seeds --columns val_loss --sort "Test Accuracy" --desc
  python -m jscexp.table -e optuna_mixed_precision --front         # the accuracy–EBOPs front
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jscexp.errors import UserError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m jscexp.table", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--experiment", "-e", default="jscexp", help="MLflow experiment name (default: jscexp)")
    p.add_argument("--sweep", default="latest", help="a sweep's parent run id, 'latest' (default) or 'all'")
    p.add_argument("--filter", default="", help="MLflow filter string, e.g. \"params.batch_size = '64'\"")
    p.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db")
    p.add_argument("--preset", default="lab", help="column preset: lab (default) or none")
    p.add_argument("--columns", nargs="+", default=[], metavar="NAME", help="extra params/metrics/tags by name")
    p.add_argument("--vary", nargs="+", default=None, metavar="NAME",
                   help="the swept column(s), 'auto' (read off the runs' overrides: the default for markdown, "
                        "latex, html) or 'none' (every column in every row: the default for csv, json); "
                        "columns fixed across rows move to a line above the table")
    p.add_argument("--sort", default=None, metavar="NAME", help="sort by this column")
    p.add_argument("--desc", action="store_true", help="sort descending")
    p.add_argument("--seeds", action="store_true", help="mean ± std over runs that differ only in seed")
    p.add_argument("--finished-only", action="store_true", help="leave out RUNNING/FAILED/KILLED runs")
    p.add_argument("--front", nargs="?", const="ebops", default=None, metavar="COST",
                   help="only the runs on the front of validation accuracy against COST (default ebops; "
                        "bops, est_lut, avg_weight_bits), cheapest first")
    p.add_argument("--format", default="markdown", help="markdown (default), csv, latex, html, json")
    p.add_argument("--output", "-o", type=Path, default=None, help="write to this file instead of stdout")
    p.add_argument("--plot", type=Path, default=None, metavar="PNG", help="also plot a metric vs the swept column")
    p.add_argument("--metric", default="Test Accuracy", help="metric for --plot (default: Test Accuracy)")
    p.add_argument("--x", default=None, help="x axis for --plot (default: the first --vary column)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return _run(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _run(args) -> int:
    from jscexp.tracking import tracking_uri
    from jscexp.tracking.query import runs_frame
    from jscexp.tracking.report import Comparison, make_table, plot

    runs = runs_frame(
        tracking_uri(args.tracking_uri),
        args.experiment,
        sweep=None if args.sweep == "all" else args.sweep,
        filter_string=args.filter,
    )
    if runs.empty:
        raise UserError(f"no runs match in experiment '{args.experiment}' (sweep {args.sweep}, filter '{args.filter}')")
    if args.front:
        runs = _front(runs, args.front)
    vary = args.vary or (["auto"] if args.format in ("markdown", "latex", "html") else ["none"])
    vary = [] if vary == ["none"] else vary
    spec = Comparison(args.preset, args.columns, vary, args.sort, args.desc, args.seeds, args.finished_only)
    table = make_table(runs, spec)
    if table.values.empty:
        raise UserError(f"no finished runs match: left out {table.dropped} that did not finish")
    text = table.render(args.format)  # validates the format before anything is written
    if args.plot:
        plot(table, runs, args.plot, metric=args.metric, x=args.x)
    if table.dropped:
        print(f"note: left out {table.dropped} run(s) that did not finish", file=sys.stderr)
    if args.output:
        args.output.write_text(text if text.endswith("\n") else text + "\n")
    else:
        print(text)
    return 0


def _front(runs, cost: str):
    from jscexp.tracking.front import ACCURACY, front_of

    on_front = front_of(runs, cost).reset_index(drop=True)
    if on_front.empty:
        raise UserError(f"--front {cost}: no finished run has both {ACCURACY} and {cost} (quantised runs log "
                        "ebops, bops, avg_weight_bits; est_lut where hardware.estimate traced them)")
    return on_front


if __name__ == "__main__":
    sys.exit(main())
