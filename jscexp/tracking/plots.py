"""Figures logged with runs and sweeps."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: Path) -> Path:
    """Writes a finished figure to ``path`` (PNG) and frees it."""
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    pyplot().close(fig)
    return path


def training_curves(histories: dict[str, list[dict[str, float]]], path: Path, title: str = "") -> Path:
    """Accuracy and loss per epoch side by side: train vs validation for one run; for a
    sweep's runs, each run's validation curves (drawn once for the sweep, from its metrics)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    splits = ("train", "val") if len(histories) == 1 else ("val",)
    for ax, what in zip(axes, ("acc", "loss")):
        for name, history in histories.items():
            for split in splits:
                points = [(h["epoch"], h[f"{split}_{what}"]) for h in history if f"{split}_{what}" in h]
                if points:
                    ax.plot(*zip(*points), marker="o" if len(points) < 30 else None,
                            label=split if len(histories) == 1 else name)
        ax.set_xlabel("epoch")
        ax.set_ylabel(("validation " if len(splits) == 1 else "") + ("accuracy" if what == "acc" else "cross-entropy loss"))
        ax.grid(alpha=0.3)
        if len(histories) * len(splits) <= 12:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return save(fig, path)


def population(histories: dict[str, list[dict[str, float]]], exploits: list[tuple[str, int]], path: Path,
               title: str = "") -> Path:
    """Population-based training: each member's validation accuracy per epoch, and a marker
    where a member copied another after an epoch (its accuracy there: it was among the worst)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for history in histories.values():
        points = [(h["epoch"], h["val_acc"]) for h in history if "val_acc" in h]
        ax.plot(*zip(*points), color="tab:blue", alpha=0.4, linewidth=1)
    marks = [(epoch, h["val_acc"]) for name, epoch in exploits for h in histories.get(name, [])
             if h["epoch"] == epoch and "val_acc" in h]
    if marks:
        ax.scatter(*zip(*marks), color="tab:red", marker="v", zorder=3, label=f"exploit: copied a top member ({len(marks)})")
        ax.legend(fontsize=8)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    ax.set_title(title or f"Population of {len(histories)}", fontsize=10)
    ax.grid(alpha=0.3)
    return save(fig, path)


def metric_vs_param(
    table: pd.DataFrame, x: str, metric: str, groups: list[str], path: Path, *, log_x: bool, title: str = ""
) -> Path:
    """``metric`` against ``x``, one line per combination of the ``groups`` columns.

    An ``<metric> std`` column, when present (seed aggregates), becomes error bars.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    parts = table.groupby(groups, dropna=False, sort=False) if groups else [((), table)]
    for key, part in parts:
        part = part.sort_values(x)
        key = key if isinstance(key, tuple) else (key,)
        label = ", ".join(f"{g}={k}" for g, k in zip(groups, key)) or None
        std = part.get(f"{metric} std")
        ax.errorbar(part[x], part[metric], yerr=std, marker="o", capsize=3, label=label)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if groups:
        ax.legend()
    return save(fig, path)
