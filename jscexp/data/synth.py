"""A synthetic stand-in for the JSC data, for running sweeps where the real file is absent.

Each class draws a few latent quantities (prong count, groomed mass, constituent
multiplicity) and the 16 substructure observables follow from them with skewed,
heavy-tailed noise, so the separations resemble the real task: light (g, q) vs heavy
(W, Z, t) is easy, g vs q and W vs Z overlap. Nothing here is physics-accurate; results on
it are tagged synthetic everywhere.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from jscexp.data.schema import CLASSES, FEATURES, JSC_ROWS
from jscexp.errors import UserError

FULL_ROWS = JSC_ROWS  # as many rows as the real file, so timings are realistic

# Per class (g, q, W, Z, t): chance of each apparent prong count (1, 2, 3). Jets whose
# decay products fall partly outside the groomed jet look like fewer prongs.
_PRONG_P = np.array(
    [
        [0.90, 0.08, 0.02],  # g
        [0.95, 0.04, 0.01],  # q
        [0.10, 0.88, 0.02],  # W
        [0.10, 0.88, 0.02],  # Z
        [0.06, 0.28, 0.66],  # t
    ]
)
_MULTIPLICITY = np.array([44.0, 27.0, 33.0, 35.0, 50.0])  # mean constituents per class
_LIGHT_LOG_MASS = np.array([3.35, 3.05])  # log GeV: falling spectra, gluon jets heavier


def _groomed_mass(rng, label, prongs, n):
    light = label <= 1
    mass = np.exp(rng.normal(_LIGHT_LOG_MASS[np.minimum(label, 1)], 0.65, n))
    # Resolved heavy jets peak at their resonance; a top with 2 prongs looks like its W.
    peak = np.select(
        [label == 2, label == 3, (label == 4) & (prongs == 3), (label == 4) & (prongs == 2)],
        [80.4, 91.2, 173.0, 80.4],
        default=np.nan,
    )
    width = np.where(label == 4, 15.0, 7.0)
    resolved = ~light & (prongs >= 2)
    mass = np.where(resolved, rng.normal(peak, width) + 6.0 * rng.standard_exponential(n), mass)
    return np.clip(mass, 0.5, None)


def generate(n_rows: int = FULL_ROWS, *, seed: int = 0) -> pd.DataFrame:
    """Returns the 16 JSC features and a ``label`` column (index into ``CLASSES``).

    Classes are balanced by construction (±1 row) and the frame is a pure function of
    ``(n_rows, seed)``.
    """
    if n_rows < len(CLASSES):
        raise UserError(f"dataset.n_rows must be at least {len(CLASSES)}, got {n_rows}")
    rng = np.random.default_rng(seed)
    n = n_rows
    label = rng.permutation(np.arange(n) % len(CLASSES))
    u = rng.random(n)
    cdf = np.cumsum(_PRONG_P[label], axis=1)
    prongs = 1 + (u[:, None] > cdf).sum(axis=1)

    mass = _groomed_mass(rng, label, prongs, n)
    # Over-dispersed counts: gamma-Poisson mixture.
    mult = rng.poisson(_MULTIPLICITY[label] * rng.gamma(9.0, 1 / 9.0, n)).astype(np.float64)
    mult = np.maximum(mult, 2.0)

    def lognormal(median, sigma):
        return median * np.exp(rng.normal(0.0, sigma, n))

    one, two, three = prongs == 1, prongs == 2, prongs == 3
    gluon = label == 0
    # Energy-correlation style ratios: 2-prong jets have small N2/D2/C2, 3-prong jets sit
    # between, 1-prong QCD jets are large with heavy tails.
    n2_med = np.select([one, two, three], [0.36, 0.20, 0.28])
    d2_med = np.select([one, two, three], [2.6, 1.1, 1.8]) * np.where(gluon, 1.2, 1.0)
    c2_med = np.select([one, two, three], [0.22, 0.11, 0.17]) * np.where(gluon, 1.1, 1.0)
    m2_med = np.select([one, two, three], [0.09, 0.06, 0.14])
    # Broadness grows with mass and, at fixed mass, is larger for gluon jets.
    c1_base = (mass / 500.0) ** 2 * np.where(gluon, 1.4, 1.0) + 0.01 * np.sqrt(mult / 30.0)

    cols = {
        "j_zlogz": -(0.75 * np.log(mult) + rng.gamma(4.0, 0.08, n)) * np.where(gluon, 1.03, 1.0),
        "j_c1_b0_mmdt": c1_base * np.exp(rng.normal(0, 0.25, n)),
        "j_c1_b1_mmdt": (c1_base**1.5) * 4.0 * np.exp(rng.normal(0, 0.3, n)),
        "j_c1_b2_mmdt": (c1_base**2) * 16.0 * np.exp(rng.normal(0, 0.35, n)),
        "j_c2_b1_mmdt": lognormal(c2_med, 0.40),
        "j_c2_b2_mmdt": lognormal(c2_med * 0.6, 0.50),
        "j_d2_b1_mmdt": lognormal(d2_med, 0.45),
        "j_d2_b2_mmdt": lognormal(d2_med * 1.4, 0.55),
        "j_d2_a1_b1_mmdt": lognormal(d2_med * 0.9, 0.50),
        "j_d2_a1_b2_mmdt": lognormal(d2_med * 1.2, 0.60),
        "j_m2_b1_mmdt": lognormal(m2_med, 0.45),
        "j_m2_b2_mmdt": lognormal(m2_med * 0.7, 0.55),
        "j_n2_b1_mmdt": np.clip(rng.normal(n2_med, 0.07, n), 0.01, None),
        "j_n2_b2_mmdt": np.clip(rng.normal(n2_med * 0.8, 0.08, n), 0.01, None),
        "j_mass_mmdt": mass,
        "j_multiplicity": mult,
    }
    frame = pd.DataFrame({name: cols[name].astype(np.float32) for name in FEATURES})
    frame["label"] = label.astype(np.int64)
    return frame
