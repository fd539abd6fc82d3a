"""An own in-training search for jscexp: Hyperband-style early stopping inside a stacked group.

Every trial of a sweep that stacks trains in one model; at each rung (after ``min_epochs``,
``min_epochs·eta``, ``min_epochs·eta²``, … epochs) the slices still training are ranked by that
epoch's validation accuracy and all but the best 1/eta stop (``EpochBook.stop``): each keeps its
best epoch, is tested with it and tagged ``jscexp.stopped_early_at_epoch``. This is one bracket
of Hyperband's successive halving (Li et al., JMLR 18(185), 2018) with the group as the bracket,
without Optuna. conf/intrain/rungs.yaml names the class:

    PYTHONPATH=examples python -m jscexp -m hydra.searchpath=[file://examples/conf] intrain=rungs learning_rate=1e-3,1e-2,1e-1
"""

import math

from jscexp.errors import UserError
from jscexp.intrain import Kind, Search


class Rungs(Kind):
    def __init__(self, *, min_epochs: int = 1, eta: int = 2):
        if not (isinstance(min_epochs, int) and min_epochs >= 1 and isinstance(eta, int) and eta >= 2):
            raise UserError(f"intrain: rungs need min_epochs ≥ 1 and eta ≥ 2 (integers), got {min_epochs}, {eta}")
        self.min_epochs, self.eta = min_epochs, eta

    def check_config(self, cfg) -> None:
        if cfg.pbt.space:
            raise UserError("intrain=rungs stops slices, pbt.space trains a population: choose one")

    def start(self, group):
        return Halve(self.min_epochs, self.eta) if group.engine.k > 1 else None

    def resumes(self, cfg) -> bool:
        return False  # whether a slice stopped depends on its mates: a resumed one alone could not know


class Halve(Search):
    def __init__(self, min_epochs: int, eta: int):
        self.rung, self.eta = min_epochs, eta

    def after_epoch(self, epoch: int, book) -> None:
        if epoch + 1 != self.rung:
            return
        self.rung *= self.eta
        training = [k for k, on in enumerate(book.flags) if on]
        ranked = sorted(training, key=lambda k: book.results[k].history[-1]["val_acc"], reverse=True)
        for k in ranked[math.ceil(len(ranked) / self.eta):]:
            book.stop(k, epoch - book.offsets[k])
