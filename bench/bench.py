"""``make bench``: jscexp's training path against the MASE-style baseline and the raw-loop limit.

In one process, for jsc-tiny and jsc-toy at batch 32 and 256 on the full-size synthetic
stand-in, times (a) the MASE way, (b) a raw PyTorch loop, (c) jscexp's path; then, in fresh
processes, the timeline of a stacked sweep (bench/timeline.py: where its wall time goes), the
CLI's --help, cold start and between-job overheads, and whole sweeps job by job against stacked
(bench/sweeps.py). Prints markdown tables.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
from functools import partial
from pathlib import Path

import overheads
import pandas as pd
import paths
import torch
from hydra import compose, initialize_config_dir

import sweeps
from jscexp.config import register_schema
from jscexp.data import load_splits
from jscexp.train.fit import make_model

CONF = Path(__file__).resolve().parents[1] / "conf"
MODELS, BATCHES = ("jsc-tiny", "jsc-toy"), (32, 256)
TARGETS = {"a/c": {32: 2.0, 256: 3.0}, "c/b": 1.5,
           "stacked": {("jsc-toy", 16, "cpu"): 8, ("jsc-toy", 1024, "cuda"): 300}}
LR = 1e-3


class PeakMemory:
    """Peak extra memory while the block runs: CUDA's allocator counter, else sampled RSS."""

    def __init__(self, device: str):
        self.device, self.peak_mb, self._stop = device, 0.0, threading.Event()

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self):
        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
        else:
            self._base = self._peak = self._rss()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self._peak = max(self._peak, self._rss())

    def __exit__(self, *exc):
        if self.device == "cuda":
            self.peak_mb = (torch.cuda.max_memory_allocated() - self._base) / 2**20
        else:
            self._stop.set()
            self._thread.join()
            self.peak_mb = (max(self._peak, self._rss()) - self._base) / 2**20


def config(model: str, batch_size: int, rows: int, device: str, *extra: str):
    register_schema()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=[
            f"model={model}", f"batch_size={batch_size}", f"learning_rate={LR}", "dataset=jsc_synth",
            f"dataset.n_rows={rows}", f"trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}", *extra,
        ])


def time_paths(args, device: str) -> pd.DataFrame:
    rows = []
    splits = load_splits(config(MODELS[0], BATCHES[0], args.rows, device).dataset)
    x, y = torch.from_numpy(splits.x_train), torch.from_numpy(splits.y_train)
    check_one_epoch(len(y), args.warmup + max(args.steps, args.stacked_steps), args.rows)
    for model_name in MODELS:
        for bs in BATCHES:
            cfg = config(model_name, bs, args.rows, device)
            common = {"warmup": args.warmup, "steps": args.steps, "device": device}
            same_data = {"x": x, "y": y, "batch_size": bs, "lr": LR, **common}
            runs = {  # each takes the freshly built model
                "a MASE-style": partial(paths.mase_lightning, **same_data),
                "b raw loop": partial(paths.raw_loop, **same_data),
                "c jscexp": partial(paths.jscexp_path, cfg, splits=splits, **common),
            }
            # interleaved repeats, median: a busy neighbour slows one repeat, not one path
            for _ in range(args.repeats):
                for path, timed in runs.items():
                    torch.manual_seed(0)
                    model = make_model(cfg)
                    # progress bars (Lightning draws its own on stdout) go nowhere: the tables are the output
                    with (PeakMemory(device) as mem, open(os.devnull, "w") as null,
                          contextlib.redirect_stderr(null), contextlib.redirect_stdout(null)):
                        seconds = timed(model)
                    rows.append({"model": model_name, "batch": bs, "path": path,
                                 "us/step": seconds / args.steps * 1e6, "peak MB": mem.peak_mb})
    steps = pd.DataFrame(rows).groupby(["model", "batch", "path"], as_index=False).agg(
        {"us/step": "median", "peak MB": "max"})
    steps.insert(4, "s/epoch", steps["us/step"] * 1e-6 * -(-len(y) // steps["batch"]))
    return steps


def check_one_epoch(train_rows: int, steps: int, rows: int) -> None:
    """Each path times its steps inside one epoch (a path would stop short, or step on empty
    batches, past its end, and its us/step would mean nothing): refused before any timing."""
    for bs in BATCHES:
        if train_rows // bs < steps:
            raise SystemExit(f"error: --rows {rows} gives {train_rows // bs} training batches of {bs}, but each path "
                             f"times {steps} steps (--warmup + --steps) in one epoch: raise --rows or lower --steps")


def time_stacked(args, device: str, steps: pd.DataFrame) -> pd.DataFrame:
    """Trial throughput of K stacked trials against one trial at a time (path c)."""
    ks = [1, 4, 16, 64] + ([256, 1024] if device == "cuda" else [])
    single = steps[steps["path"] == "c jscexp"].set_index(["model", "batch"])["us/step"]
    rows = []
    for model_name in MODELS:
        for bs in BATCHES:
            cfg = config(model_name, bs, args.rows, device)
            splits = load_splits(cfg.dataset)
            for k in ks:
                us = stacked_us(args, cfg, splits, device, partial(make_model, cfg), k)
                speedup = k * single[(model_name, bs)] / us
                target = TARGETS["stacked"].get((model_name, k, device))
                rows.append({"model": model_name, "batch": bs, "K": k, "us/step": us,
                             "trial-steps/s": k / us * 1e6, "vs one at a time": speedup,
                             "target": f">= {target}x" if target else "",
                             "met": ("yes" if speedup >= target else "NO") if target else ""})
    return pd.DataFrame(rows)


def stacked_us(args, cfg, splits, device: str, build, k: int, betas: list[float] | None = None) -> float:
    """The median over ``args.repeats`` of a stacked step's µs for ``k`` models ``build()`` makes."""
    times = []
    for _ in range(args.repeats):
        torch.manual_seed(0)
        models = [build() for _ in range(k)]
        times.append(paths.stacked_path(cfg, models, splits=splits, warmup=args.warmup, steps=args.stacked_steps,
                                        device=device, betas=betas))
    return sorted(times)[len(times) // 2] / args.stacked_steps * 1e6


def _qat_model(cfg):
    from jscexp.config import plain
    from jscexp.quant.transform import quantise

    return quantise(make_model(cfg), plain(cfg.quantisation))[0]


def time_quantised_stacked(args, device: str) -> pd.DataFrame:
    """A stacked QAT step of 16-8-8-5 at batch 128 (bench-peers' network) for K = 1, 8, 32 trials:
    integer widths against learned ones (β·EBOPs in every step); how it scales is trials per second."""
    rows = []
    for quantisation in ("int8", "learned"):
        cfg = config("mlp", 128, 100_000, device, "model.hidden=[8,8]", "mode=qat", f"quantisation={quantisation}")
        splits = load_splits(cfg.dataset)
        for k in (1, 8, 32):
            betas = [1e-5] * k if quantisation == "learned" else None
            us = stacked_us(args, cfg, splits, device, partial(_qat_model, cfg), k, betas)
            rows.append({"quantisation": quantisation, "K": k, "us/step": us})
    out = pd.DataFrame(rows)
    one = out[out["K"] == 1].set_index("quantisation")["us/step"]
    out["trial-steps/s"] = out["K"] / out["us/step"] * 1e6
    out["vs one at a time"] = out["K"] * out["quantisation"].map(one) / out["us/step"]
    return out


def ratios(steps: pd.DataFrame) -> pd.DataFrame:
    t = steps.pivot_table(index=["model", "batch"], columns="path", values="us/step")
    out = pd.DataFrame({
        "c faster than a": t["a MASE-style"] / t["c jscexp"],
        "target": [f">= {TARGETS['a/c'][b]:.0f}x" for _, b in t.index],
        "c / b": t["c jscexp"] / t["b raw loop"],
        "target ": f"<= {TARGETS['c/b']}x",
    }).reset_index()
    out["met"] = [
        "yes" if r["c faster than a"] >= TARGETS["a/c"][r["batch"]] and r["c / b"] <= TARGETS["c/b"] else "NO"
        for _, r in out.iterrows()
    ]
    return out


def overhead_table(o: dict[str, float]) -> pd.DataFrame:
    rows = [
        ("python -m jscexp --help", o["help_s"], "<= 1.5 s", o["help_s"] <= 1.5),
        ("cold start to first step (cached data)", o["cold_start_s"], "", None),  # no goal: Fabric and torchmetrics stay
        ("between jobs, last step to next first step (max)", o["gap_max_s"], "<= 1 s", o["gap_max_s"] <= 1),
        ("between jobs (mean)", o["gap_mean_s"], "", None),
        ("9-job grid wall time", o["grid_wall_s"], "", None),
        ("9-job grid share not training", o["grid_not_training_share"], "", None),
    ]
    return pd.DataFrame(
        [(what, f"{v:.2f}" if "share" not in what else f"{v:.0%}", target, {True: "yes", False: "NO", None: ""}[met])
         for what, v, target, met in rows],
        columns=["overhead", "measured (s)", "target", "met"],
    )


def print_steps(args, device: str) -> None:
    steps = time_paths(args, device)
    print(steps.to_markdown(index=False, floatfmt=".1f") + "\n")
    print(ratios(steps).to_markdown(index=False, floatfmt=".2f") + "\n")
    print("Vectorised trials (K trials as one stacked model; vs one at a time = K x c's us/step / stacked us/step):\n")
    print(time_stacked(args, device, steps).to_markdown(index=False, floatfmt=".1f") + "\n")
    print_quantised_stacked(args, device)


def print_quantised_stacked(args, device: str) -> None:
    print("Stacked QAT steps, integer against learned widths (16-8-8-5, batch 128; vs one at a time = "
          "K x its K = 1 us/step / stacked us/step):\n")
    print(time_quantised_stacked(args, device).to_markdown(index=False, floatfmt=".1f") + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1000, help="timed steps per path (default 1000)")
    p.add_argument("--warmup", type=int, default=50, help="untimed steps before them (default 50)")
    p.add_argument("--repeats", type=int, default=3, help="timings per path, the median is shown (default 3)")
    p.add_argument("--rows", type=int, default=986806, help="stand-in rows (default: full JSC size)")
    p.add_argument("--grid-rows", type=int, default=20000, help="stand-in rows of the 9-job grid")
    p.add_argument("--grid-epochs", type=int, default=2, help="epochs per job of the 9-job grid")
    p.add_argument("--stacked-steps", type=int, default=200, help="timed steps per stacked K (default 200)")
    p.add_argument("--sweep-rows", type=int, default=100000, help="stand-in rows of the sweep table's sweeps")
    p.add_argument("--sweep-epochs", type=int, default=3, help="epochs of the sweep table's lr sweep (epochs sweep: 1…8x)")
    p.add_argument("--timeline-only", action="store_true",
                   help="only the timeline of make bench-search's stacked grid (where its wall time goes)")
    p.add_argument("--no-sweeps", action="store_true", help="skip the sweep table (whole sweeps, job by job vs stacked)")
    p.add_argument("--sweeps-only", action="store_true", help="only the sweep table")
    p.add_argument("--quantised-only", action="store_true",
                   help="only the stacked QAT steps, integer against learned widths, K = 1, 8, 32")
    p.add_argument("--no-hardware", action="store_true", help="skip the hardware table")
    p.add_argument("--hardware-only", action="store_true",
                   help="only the hardware table (cost metrics, da4ml estimate, hls4ml export + C simulation)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--no-overheads", action="store_true",
                   help="skip the CLI timings (--help, cold start, grid): they need the full install, MLflow included")
    args = p.parse_args(argv)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    name = torch.cuda.get_device_name() if device == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"# jscexp bench: {name}; median of {args.repeats} x {args.steps} timed steps after {args.warmup} warm-up; "
          f"synthetic stand-in of {args.rows} rows; torch {torch.__version__}\n")
    if args.quantised_only:
        print_quantised_stacked(args, device)
        return 0
    if args.timeline_only or not (args.sweeps_only or args.hardware_only or args.no_overheads):
        import timeline

        print("Where a stacked sweep's wall time goes (make bench-search's grid, 16 trials of jsc-tiny, "
              "8 epochs, 100000 rows; each command a fresh process):\n")
        print(timeline.table() + "\n")
        sys.stdout.flush()
        if args.timeline_only:
            return 0
    if not args.sweeps_only and not args.hardware_only:
        print_steps(args, device)
    if args.hardware_only or not (args.sweeps_only or args.no_hardware):
        import hardware

        print("What a quantised run's hardware cost and its firmware twin cost (median of "
              f"{args.repeats}; the export once):\n")
        print(hardware.table(args.repeats).to_markdown(index=False) + "\n")
        sys.stdout.flush()
        if args.hardware_only:
            return 0
    if not args.no_overheads and not args.sweeps_only:
        print(overhead_table(overheads.measure(args.grid_rows, args.grid_rows, args.grid_epochs, args.repeats))
              .to_markdown(index=False) + "\n")
        sys.stdout.flush()
    if not args.no_sweeps:
        print(f"Sweeps on the CLI ({args.sweep_rows} rows; each in a fresh process, cached data):\n")
        print(sweeps.table(args.sweep_rows, args.sweep_epochs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
