"""The learning-rate x weight-decay grid of ``make bench-search`` in Ray Tune, as a Ray user
writes it: a plain PyTorch training function (jsc-tiny, Adam with weight decay, cosine decay per
epoch, in-memory shuffled batches, validation accuracy reported each epoch), 16 grid points, 2 at
a time. It reads the split ``bench/peers.py`` wrote (the one jscexp's recipe makes), seeds the
weights and the batch order as jscexp does, and prints one JSON line: each trial's best
validation accuracy.

    python bench/peers/ray_search.py --data splits.npz --epochs 8 --batch-size 128 [--reuse-actors]
"""

from __future__ import annotations

import argparse
import json
import tempfile

LEARNING_RATES = (1e-4, 1e-3, 1e-2, 1e-1)
WEIGHT_DECAYS = (0.0, 1e-4, 1e-3, 1e-2)


def train(config: dict) -> None:
    import numpy as np
    import torch
    from ray import tune
    from torch import nn
    from torch.nn import functional as F

    data = np.load(config["data"])
    x, y = torch.from_numpy(data["x_train"]).float(), torch.from_numpy(data["y_train"]).long()
    x_val, y_val = torch.from_numpy(data["x_val"]).float(), torch.from_numpy(data["y_val"]).long()
    torch.manual_seed(config["seed"])
    model = nn.Sequential(nn.BatchNorm1d(x.shape[1]), nn.ReLU(), nn.Linear(x.shape[1], 5), nn.ReLU())
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"], weight_decay=config["wd"])
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config["epochs"], eta_min=1e-6)
    order = torch.Generator().manual_seed(config["seed"])
    batch = config["batch_size"]
    n = len(y) - 1 if len(y) % batch == 1 else len(y)  # a last batch of one sample cannot train BatchNorm
    for _ in range(config["epochs"]):
        model.train()
        perm = torch.randperm(len(y), generator=order)
        xs, ys = x[perm], y[perm]
        for start in range(0, n, batch):
            optimizer.zero_grad()
            F.cross_entropy(model(xs[start : start + batch]), ys[start : start + batch]).backward()
            optimizer.step()
        schedule.step()
        model.eval()
        with torch.no_grad():
            val_acc = (model(x_val).argmax(1) == y_val).float().mean().item()
        tune.report({"val_acc": val_acc})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--concurrent", type=int, default=2)
    p.add_argument("--reuse-actors", action="store_true")
    a = p.parse_args()
    import ray
    from ray import tune

    ray.init(include_dashboard=False, log_to_driver=False)
    space = {"lr": tune.grid_search(list(LEARNING_RATES)), "wd": tune.grid_search(list(WEIGHT_DECAYS)),
             "data": a.data, "epochs": a.epochs, "batch_size": a.batch_size, "seed": 0}
    with tempfile.TemporaryDirectory() as storage:
        tuner = tune.Tuner(train, param_space=space,
                           tune_config=tune.TuneConfig(max_concurrent_trials=a.concurrent, reuse_actors=a.reuse_actors),
                           run_config=tune.RunConfig(storage_path=storage, verbose=0))
        results = tuner.fit()
        best = [max(r.metrics_dataframe["val_acc"]) for r in results]
        params = [{"lr": r.config["lr"], "wd": r.config["wd"]} for r in results]
    ray.shutdown()
    print(json.dumps({"best_val_acc": best, "params": params}))


if __name__ == "__main__":
    main()
