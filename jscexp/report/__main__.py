"""``python -m jscexp.report`` (``make lab``): runs every experiment of labs 1–2 that has not run
yet, then writes the report from MLflow — ``reports/lab.md`` (figures in ``reports/lab_files/``)
and ``reports/lab.html`` (self-contained) — and logs both to a run of experiment ``lab``.

  python -m jscexp.report --dataset jsc_synth --rows 100000 --epochs 3   # the quick version
  python -m jscexp.report                                                 # the lab's settings, real data
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from jscexp.errors import UserError
from jscexp.report.lab import Settings, best_checkpoint, run_missing, steps


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jscexp.report", description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="jsc", help="jsc (the real data, default) or jsc_synth (the stand-in)")
    p.add_argument("--rows", type=int, help="stand-in rows (jsc_synth only; default: its full size)")
    p.add_argument("--epochs", type=int, help="epochs for a run the lab trained 10 (the epochs sweep: 1,2,5,10,20x; "
                                              "default: the lab's)")
    p.add_argument("--out", type=Path, default=Path("reports"), help="where lab.md and lab.html go (default reports/)")
    p.add_argument("--tracking-uri", help="the MLflow store (default: sqlite:///mlflow.db here, or $MLFLOW_TRACKING_URI)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per figure read back
    try:
        settings = _settings(args)
        from jscexp.tracking import tracking_uri

        uri = tracking_uri(args.tracking_uri)
        started = time.perf_counter()
        parents = run_missing(settings, uri, Path.cwd())
        md, page = write(uri, settings, parents, args.out)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the step in flight ended its runs KILLED; finished steps stay done
        print("interrupted: run make lab again to go on from the steps that finished", file=sys.stderr)
        return 130
    print(f"lab report: {md} and {page} ({time.perf_counter() - started:.0f} s)")
    return 0


def _settings(args) -> Settings:
    if args.dataset not in ("jsc", "jsc_synth"):
        raise UserError(f"--dataset must be jsc or jsc_synth, got {args.dataset!r}")
    if args.rows is not None and (args.dataset != "jsc_synth" or args.rows < 100):
        raise UserError("--rows sizes the stand-in: use it with --dataset jsc_synth, at least 100 rows")
    if args.epochs is not None and args.epochs < 1:
        raise UserError(f"--epochs must be 1 or more, got {args.epochs}")
    return Settings(args.dataset, args.rows, args.epochs, args.tracking_uri)


def write(uri: str, settings: Settings, parents: dict[str, str], out: Path) -> tuple[Path, Path]:
    """Builds every section from MLflow, writes both formats and logs them to a ``lab`` run."""
    from jscexp.report import render
    from jscexp.report.sections import build
    from jscexp.tracking.run import TrackedRun

    toy = best_checkpoint(uri, parents["lab1_models"], "jsc-toy")
    sections = [build(uri, step, parents[step.key]) for step in steps(settings, toy)]
    header = _header(uri, settings, parents)
    out.mkdir(parents=True, exist_ok=True)
    md, page = out / "lab.md", out / "lab.html"
    md.write_text(render.markdown(header, sections, out / "lab_files"))
    page.write_text(render.page(header, sections))
    with TrackedRun(uri, "lab", run_name=f"lab report ({dict(header)['Data']})",
                    tags={"jscexp.kind": "lab", **{f"jscexp.lab.{k}": v for k, v in parents.items()}}) as run:
        run.log_texts({"lab.md": md.read_text(), "lab.html": page.read_text()})
        for png in sorted((out / "lab_files").glob("*.png")):
            run.log_artifact(png, "lab_files")
    return md, page


def _header(uri: str, settings: Settings, parents: dict[str, str]) -> list[tuple[str, str]]:
    """Which data (real or synthetic, its hash and rows), which code, which settings."""
    from jscexp.tracking.store import client

    mlflow = client(uri)
    (child, *_) = mlflow.search_runs([mlflow.get_run(parents["lab1_batch_size"]).info.experiment_id],
                                     f"tags.mlflow.parentRunId = '{parents['lab1_batch_size']}'", max_results=1)
    tags, params = child.data.tags, child.data.params
    synthetic = tags.get("jscexp.synthetic") == "true"
    data = f"{tags.get('jscexp.dataset')} ({'synthetic stand-in: NOT physics results' if synthetic else 'real'})"
    missing = f"not recorded (run {child.info.run_id})"  # said so, never a made-up value
    digest = child.inputs.dataset_inputs[0].dataset.digest if child.inputs.dataset_inputs else missing
    counts = [params.get(f"data.rows_{s}") for s in ("train", "val", "test")]
    rows = " / ".join(counts) if all(counts) else missing
    scale = "the lab's own" if settings.epochs is None else f"{settings.epochs} where the lab trained 10 (epochs sweep 1–20x)"
    return [("Data", data), ("Data hash", digest), ("Rows (train / val / test)", rows),
            ("Commit", tags.get("mlflow.source.git.commit", "not a git checkout")), ("Epochs", scale),
            ("Written", time.strftime("%Y-%m-%d %H:%M"))]


if __name__ == "__main__":
    sys.exit(main())
