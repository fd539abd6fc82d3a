"""The MASE jet-substructure models used in the labs.

They keep MASE's layout (a single ``seq_blocks`` Sequential, so fx node names are
``seq_blocks_<i>``) and MASE's trailing ReLU on the logits: the lab numbers were
measured with it.
"""

from __future__ import annotations

from torch import nn


class SeqBlocks(nn.Module):
    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        self.seq_blocks = nn.Sequential(*layers)

    def forward(self, x):
        return self.seq_blocks(x)


def _logicnets_stack(widths: list[int]) -> SeqBlocks:
    """BN, ReLU, then (Linear, BN, ReLU) per layer: MASE's jsc-toy/10x/s shape."""
    layers: list[nn.Module] = [nn.BatchNorm1d(widths[0]), nn.ReLU()]
    for w_in, w_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(w_in, w_out), nn.BatchNorm1d(w_out), nn.ReLU()]
    return SeqBlocks(layers)


def jsc_tiny(*, num_features: int = 16, num_classes: int = 5) -> nn.Module:
    """BN(16), ReLU, Linear(16→5), ReLU: 117 trainable parameters."""
    return SeqBlocks(
        [nn.BatchNorm1d(num_features), nn.ReLU(), nn.Linear(num_features, num_classes), nn.ReLU()]
    )


def jsc_toy(*, num_features: int = 16, num_classes: int = 5) -> nn.Module:
    """16-8-8-5 with BatchNorm after every layer: 327 trainable parameters."""
    return _logicnets_stack([num_features, 8, 8, num_classes])


def jsc_10x(*, num_features: int = 16, num_classes: int = 5) -> nn.Module:
    """Lab 1 Q4's ~10x jsc-toy, 16-60-32-5: 3363 trainable parameters."""
    return _logicnets_stack([num_features, 60, 32, num_classes])


def jsc_s(*, num_features: int = 16, num_classes: int = 5) -> nn.Module:
    """MASE's jsc-s, 16-64-32-32-32-5: 5615 trainable parameters.

    Unlike the LogicNets stacks, MASE normalises only after the first and last Linear.
    """
    widths = [num_features, 64, 32, 32, 32, num_classes]
    layers: list[nn.Module] = [nn.BatchNorm1d(num_features), nn.ReLU()]
    last = len(widths) - 2
    for i, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(w_in, w_out))
        if i in (0, last):
            layers.append(nn.BatchNorm1d(w_out))
        layers.append(nn.ReLU())
    return SeqBlocks(layers)
