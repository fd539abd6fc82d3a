"""The jet-substructure task's fixed vocabulary: 16 features, 5 classes in canonical order."""

FEATURES: tuple[str, ...] = (
    "j_zlogz",
    "j_c1_b0_mmdt",
    "j_c1_b1_mmdt",
    "j_c1_b2_mmdt",
    "j_c2_b1_mmdt",
    "j_c2_b2_mmdt",
    "j_d2_b1_mmdt",
    "j_d2_b2_mmdt",
    "j_d2_a1_b1_mmdt",
    "j_d2_a1_b2_mmdt",
    "j_m2_b1_mmdt",
    "j_m2_b2_mmdt",
    "j_n2_b1_mmdt",
    "j_n2_b2_mmdt",
    "j_mass_mmdt",
    "j_multiplicity",
)

# Canonical order used by hls4ml, LogicNets and MASE (the h5's one-hot columns j_g, j_q, j_w, j_z, j_t).
CLASSES: tuple[str, ...] = ("g", "q", "W", "Z", "t")
