"""``make bench-peers``: the accuracy–EBOPs front of learned widths, jscexp beside HGQ2 itself,
on the same data and split (the synthetic stand-in: costs compare, accuracies are not physics);
then ``make bench-search``'s grid beside Ray Tune (bench/raytune.py).

jscexp trains every β in one stacked job (``quantisation=learned``); HGQ2 (``pip install -e
'.[peers]'``: hgq2, Keras 3 on JAX, CPU) trains one network per β in its own process, with its
default quantisers (a width per weight, per bias and per input feature, integer bits traced from
the data), as an HGQ2 user would. Both get the split jscexp's recipe makes (HGQ2 reads it as
arrays), the same network, epochs, batch size and learning rate. EBOPs are HGQ2's count on both
sides (jscexp's ``ebops`` equals HGQ2's on the same network: tests/test_peers.py), counted two ways:
HGQ2's own count of each side's network (jscexp trains saturating formats, whose sign bits HGQ2
counts; HGQ2's default SAT_SYM weights and WRAP inputs have theirs left out) and with every sign
bit counted on both sides (like with like). Per β it prints validation and test accuracy and
EBOPs; per side the front's hypervolume under each count against one reference point and the CPU
and wall time of the whole front (each process tree's own CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from overheads import jscexp_cli

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))  # twin_spec

from jscexp.tracking.front import hypervolume  # noqa: E402
from sweeps import trial_runs  # noqa: E402

HERE = Path(__file__).resolve().parent
BETAS = (1e-6, 3e-6, 1e-5, 2e-5, 3e-5, 6e-5, 1e-4, 3e-4)
NETWORKS = {"16-8-8-5": [8, 8], "16-64-32-32-5": [64, 32, 32]}
REFERENCE_ACC = 0.2  # chance, five classes


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def splits_file(work: Path, rows: int) -> tuple[Path, list[str]]:
    """The stand-in split by jscexp's recipe, as arrays for HGQ2; the overrides that give jscexp the same."""
    from hydra import compose, initialize_config_dir

    from jscexp.config import register_schema
    from jscexp.data import load_splits

    data = ["dataset=jsc_synth", f"dataset.n_rows={rows}"]
    os.environ["JSCEXP_CACHE"] = str(work / "cache")  # the cache jscexp's job reads: written once, here
    register_schema()
    with initialize_config_dir(config_dir=str(HERE.parent / "conf"), version_base="1.3"):
        splits = load_splits(compose("config", overrides=data).dataset)
    path = work / "splits.npz"
    import numpy as np

    np.savez(path, **{f"{x}_{s}": getattr(splits, f"{x}_{s}") for x in "xy" for s in ("train", "val", "test")})
    return path, data


def hgq2_front(splits: Path, hidden: list[int], common: dict, width_rate: float) -> tuple[pd.DataFrame, float, float]:
    rows, cpu, started = [], _children_cpu(), time.time()
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    for beta in BETAS:
        cmd = [sys.executable, str(HERE / "peers" / "hgq2_train.py"), str(splits), "--beta", str(beta),
               "--hidden", *map(str, hidden), "--epochs", str(common["epochs"]), "--width-rate", str(width_rate),
               "--batch-size", str(common["batch_size"]), "--lr", str(common["lr"])]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"HGQ2 at beta {beta} failed:\n{done.stderr[-2000:]}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return pd.DataFrame(rows), _children_cpu() - cpu, time.time() - started


def jscexp_front(work: Path, data: list[str], hidden: list[int], common: dict, name: str) -> tuple[pd.DataFrame, float, float]:
    folder = work / name
    folder.mkdir()
    args = ["-m", "model=mlp", f"model.hidden=[{','.join(map(str, hidden))}]", "mode=qat", "quantisation=learned",
            f"quantisation.beta={','.join(f'{b:g}' for b in BETAS)}", *data, f"max_epochs={common['epochs']}",
            f"batch_size={common['batch_size']}", f"learning_rate={common['lr']}", "trainer.progress_bar=false"]
    cpu = _children_cpu()
    started = jscexp_cli(args, folder, cache=work / "cache")
    wall, cpu = time.time() - started, _children_cpu() - cpu
    rows = [{"beta": float(r.data.params["quantisation.beta"]), "best_val_acc": r.data.metrics["best_val_acc"],
             "test_acc": r.data.metrics["test_acc"], "ebops": r.data.metrics["ebops"], "sat_ebops": r.data.metrics["ebops"]}
            for r in trial_runs(folder) if r.info.status == "FINISHED"]
    return pd.DataFrame(rows).sort_values("beta"), cpu, wall


def hgq2_agreement(folder: Path, work: Path) -> str:
    """HGQ2's own count of each network of jscexp's front: every run rebuilt from its artifacts
    (as ``python -m jscexp.export`` does) and loaded into HGQ2 (bench/peers/twin_spec.py)."""
    import torch
    from twin_spec import hgq2_of, spec_of

    from jscexp.export.run import _rebuild
    from sweeps import folder_client

    client, same_ebops, same_logits = folder_client(folder), 0, 0
    runs = [r for r in trial_runs(folder) if r.info.status == "FINISHED"]
    for run in runs:
        gm, x_test = _rebuild(client, run, work)
        x = torch.from_numpy(x_test[:1000])
        theirs = hgq2_of(spec_of(gm, x), work)
        same_ebops += theirs["ebops"] == run.data.metrics["ebops"]
        with torch.no_grad():
            same_logits += torch.equal(torch.tensor(theirs["logits"]), gm(x))
    return (f"HGQ2's own count of jscexp's {len(runs)} networks (each rebuilt from its run and loaded into HGQ2): "
            f"EBOPs equal on {same_ebops}, logits equal bit for bit on 1000 test jets on {same_logits}")


WIDTH_RATE = 8.0  # jscexp's quantisation.width_rate: HGQ2's width step matched to it


def compare(work: Path, rows: int, common: dict) -> str:
    splits, data = splits_file(work, rows)
    out = [f"# jscexp beside HGQ2: learned widths, {len(BETAS)} betas, {common['epochs']} epochs, batch "
           f"{common['batch_size']}, Adam {common['lr']:g}; synthetic stand-in of {rows} rows (not physics results)"]
    for net, hidden in NETWORKS.items():
        fronts = {"jscexp, one stacked job": jscexp_front(work, data, hidden, common, net),
                  f"HGQ2, {len(BETAS)} trainings, width step x{WIDTH_RATE:g} (matched)":
                      hgq2_front(splits, hidden, common, WIDTH_RATE),
                  f"HGQ2, {len(BETAS)} trainings (defaults)": hgq2_front(splits, hidden, common, 1.0)}
        out += [f"\n## {net}\n", *_report(fronts), "", hgq2_agreement(work / net, work)]
    return "\n".join(out) + "\n"


def _report(fronts: dict[str, tuple[pd.DataFrame, float, float]]) -> list[str]:
    """Per β each side's accuracies and EBOPs; per side its hypervolume under each count, CPU and wall time."""
    short = ["jscexp", "HGQ2 matched", "HGQ2 defaults"]
    table = pd.DataFrame({"beta": next(iter(fronts.values()))[0]["beta"].map(lambda b: f"{b:g}").values})
    for name, (front, _, _) in zip(short, fronts.values()):
        table[f"{name} val acc"] = front["best_val_acc"].round(4).values
        table[f"{name} test acc"] = front["test_acc"].round(4).values
        table[f"{name} EBOPs"] = front["ebops"].round(0).values
        if name != "jscexp":  # jscexp's own count already counts every sign bit
            table[f"{name} EBOPs, signs counted"] = front["sat_ebops"].round(0).values
    reference = float(max(f[key].max() for f, _, _ in fronts.values() for key in ("ebops", "sat_ebops")) * 1.1)
    hv = {count: {name: hypervolume(list(zip(f["best_val_acc"], f[count])), (REFERENCE_ACC, reference))
                  for name, (f, _, _) in fronts.items()} for count in ("ebops", "sat_ebops")}
    summary = pd.DataFrame([{"side": name, "hypervolume, HGQ2's own count": round(hv["ebops"][name]),
                             "hypervolume, signs counted": round(hv["sat_ebops"][name]),
                             "CPU (s)": round(cpu, 1), "wall (s)": round(wall, 1)}
                            for name, (_, cpu, wall) in fronts.items()])
    (ours, _, our_cpu, _), (matched, _, matched_cpu, _) = [(name, *f) for name, f in fronts.items()][:2]

    def ratio(count: str) -> str:
        return f"{hv[count][ours] / hv[count][matched]:.2f} x" if hv[count][matched] else "inf (HGQ2's front is empty)"

    return [table.to_markdown(index=False), "",
            f"Hypervolume of (validation accuracy, EBOPs) against ({REFERENCE_ACC}, {reference:.0f} EBOPs):\n",
            summary.to_markdown(index=False), "",
            f"jscexp / HGQ2 matched: hypervolume {ratio('ebops')} (HGQ2's own count), {ratio('sat_ebops')} "
            f"(signs counted), CPU {our_cpu / matched_cpu:.2f} x (goals: hypervolume >= 1, CPU <= 0.33)",
            *_shortfall(fronts, ours, matched)]


def _shortfall(fronts, ours: str, matched: str) -> list[str]:
    """At each of HGQ2 matched's front points, how far below it jscexp's front is at that cost
    (its best validation accuracy at no more EBOPs; goal ≤ 0.3 points), under each count."""
    lines = []
    for count in ("ebops", "sat_ebops"):
        mine, theirs = fronts[ours][0], fronts[matched][0]
        gaps = []
        for acc, cost in zip(theirs["best_val_acc"], theirs[count]):
            cheaper = mine[mine[count] <= cost]["best_val_acc"]
            gaps.append(100 * (acc - (cheaper.max() if len(cheaper) else REFERENCE_ACC)))
        lines.append(f"largest gap below HGQ2 matched's points ({'HGQ2s own count' if count == 'ebops' else 'signs counted'}): "
                     f"{max(gaps):.1f} points (goal <= 0.3)")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--epochs", type=int, default=5, help="epochs of the fronts (default 5)")
    p.add_argument("--search-epochs", type=int, default=8, help="epochs of the Ray Tune search (default 8)")
    p.add_argument("--only", choices=("front", "search"), default=None,
                   help="only the HGQ2 fronts, or only the search beside Ray Tune (bench/raytune.py)")
    p.add_argument("--out", type=Path, default=None, help="also write the output here (markdown)")
    a = p.parse_args()
    import raytune

    parts = []
    if a.only != "search":
        with tempfile.TemporaryDirectory() as tmp:
            parts.append(compare(Path(tmp), a.rows, {"epochs": a.epochs, "batch_size": 128, "lr": 1e-3}))
    if a.only != "front":
        with tempfile.TemporaryDirectory() as tmp:
            splits, data = splits_file(Path(tmp), a.rows)
            parts.append(raytune.compare(Path(tmp), splits, data, a.rows, a.search_epochs))
    text = "\n".join(parts)
    print(text)
    if a.out:
        a.out.write_text(text)


if __name__ == "__main__":
    main()
