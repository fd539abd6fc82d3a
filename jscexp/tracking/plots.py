"""Figures logged with runs."""

from __future__ import annotations

from pathlib import Path


def training_curves(history: list[dict[str, float]], path: Path) -> Path:
    """Accuracy and loss per epoch, train vs validation, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, what in zip(axes, ("acc", "loss")):
        for split in ("train", "val"):
            ax.plot(epochs, [h[f"{split}_{what}"] for h in history], marker="o", label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy" if what == "acc" else "cross-entropy loss")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
