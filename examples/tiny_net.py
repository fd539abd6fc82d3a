"""An own model for jscexp: any nn.Module (or function returning one) whose constructor takes the
dataset's ``num_features`` and ``num_classes`` plus its conf's settings (conf/model/tiny_net.yaml).

    PYTHONPATH=examples python -m jscexp hydra.searchpath=[file://examples/conf] model=tiny_net
"""

from torch import nn


class TinyNet(nn.Module):
    """Linear → BatchNorm → ReLU, ``depth`` times, then Linear to the logits. A plain chain, so
    sweeps over its learning rate train as one stacked model, and hls4ml converts every layer."""

    def __init__(self, *, num_features: int, num_classes: int, hidden: int = 16, depth: int = 1):
        super().__init__()
        layers: list[nn.Module] = []
        width = num_features
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.BatchNorm1d(hidden), nn.ReLU()]
            width = hidden
        self.net = nn.Sequential(*layers, nn.Linear(width, num_classes))

    def forward(self, x):
        return self.net(x)
