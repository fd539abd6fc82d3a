"""An own hardware-cost estimator for jscexp: adders of a multiplierless (shift-and-add) design.

Each constant weight w, as an integer on its fixed-point grid, is recoded in canonical signed
digits (CSD: the non-adjacent form, fewest nonzero digits ±2^k); x·w then costs one adder per
nonzero digit beyond the first, and each output sums its nonzero products with one adder fewer
than it has (R. I. Hartley, "Subexpression sharing in filters using canonic signed digit
multipliers", IEEE TCAS-II 43(10), 1996, counts without the sharing). Declared metric:
``csd_adders``; conf/hardware/estimator/csd.yaml names the class.

    PYTHONPATH=examples python -m jscexp hydra.searchpath=[file://examples/conf] mode=qat quantisation=int8 hardware/estimator=csd
"""

import torch

from jscexp.quant.cost import quantised_linears
from jscexp.quant.estimators import Estimator


def csd_digits(n: int) -> int:
    """Nonzero digits of ``n`` in canonical signed digits (non-adjacent form)."""
    n, count = abs(int(n)), 0
    while n:
        if n & 1:
            n -= 2 - (n & 3)  # digit +1 or −1, whichever leaves the next bit 0
            count += 1
        n >>= 1
    return count


def adders(weights: torch.Tensor) -> int:
    """Adders of y = W·x for an integer matrix W ([out, in]): products, then each output's sum."""
    digits = [[csd_digits(w) for w in row] for row in weights.round().long().tolist()]
    products = sum(max(d - 1, 0) for row in digits for d in row)
    sums = sum(max(sum(d > 0 for d in row) - 1, 0) for row in digits)
    return products + sums


class CsdAdders(Estimator):
    metrics = {"csd_adders": "CSD adders"}

    def estimate(self, model) -> dict[str, float]:
        total = 0
        for layer in quantised_linears(model):
            with torch.no_grad():
                weight = layer.effective_weight()
                frac = layer.w_quantiser.fixed(weight).frac_width  # the grid the weights lie on
                total += adders(weight * 2.0**frac)
        return {"csd_adders": float(total)}
