"""StackedOptimizer: K trials' updates in one tensor are torch's own, bit for bit, per trial."""

from __future__ import annotations

import pytest
import torch

from jscexp.train.stacked import StackedOptimizer

CASES = {
    "Adam": [{"lr": 1e-3}, {"lr": 3e-2, "weight_decay": 1e-2}, {"lr": 5e-3, "betas": (0.8, 0.95), "eps": 1e-6}],
    "AdamW": [{"lr": 1e-3, "weight_decay": 1e-2}, {"lr": 2e-2, "weight_decay": 0.1, "betas": (0.85, 0.99)},
              {"lr": 4e-3}],
    "SGD": [{"lr": 0.1}, {"lr": 5e-2, "momentum": 0.9, "weight_decay": 1e-3},
            {"lr": 1e-2, "momentum": 0.8, "dampening": 0.1}, {"lr": 3e-2, "momentum": 0.9, "nesterov": True}],
}


@pytest.mark.parametrize("kind", CASES)
def test_each_trial_steps_exactly_as_torch_steps_it_alone(kind):
    torch.manual_seed(0)
    hparams, size = CASES[kind], 3000
    start = torch.randn(len(hparams), size)
    alone = [start[k].clone().requires_grad_(True) for k in range(len(hparams))]
    optimizers = [getattr(torch.optim, kind)([p], foreach=False, **h) for p, h in zip(alone, hparams)]
    stacked = start.clone().requires_grad_(True)
    optimizer = StackedOptimizer({"flat": stacked}, kind, hparams)
    active = torch.ones(len(hparams), dtype=torch.bool)
    for step in range(60):
        grads = torch.randn(len(hparams), size) * torch.rand(len(hparams), size) ** 8  # many near-zero
        for p, o, g in zip(alone, optimizers, grads):
            p.grad = g.clone()
            o.step()
        stacked.grad = grads.clone()
        optimizer.step(active)
        for k, p in enumerate(alone):
            assert torch.equal(stacked.detach()[k], p.detach()), (kind, k, step)


def test_a_masked_trial_keeps_its_values_and_the_others_move_on():
    torch.manual_seed(1)
    stacked = torch.randn(2, 50).requires_grad_(True)
    before = stacked.detach().clone()
    optimizer = StackedOptimizer({"flat": stacked}, "Adam", [{"lr": 1e-2}, {"lr": 1e-2}])
    stacked.grad = torch.randn(2, 50)
    stacked.grad[1] = float("nan")
    optimizer.step(torch.tensor([True, False]))
    assert torch.equal(stacked.detach()[1], before[1]) and not torch.equal(stacked.detach()[0], before[0])
