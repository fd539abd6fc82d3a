"""A dataset's vocabulary (``Schema``) and the jet-substructure task's: 16 features, 5 classes in
canonical order."""

from dataclasses import dataclass

from jscexp.errors import UserError

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

JSC_ROWS = 986_806  # the CERNBox file after drop_duplicates

# Canonical order used by hls4ml, LogicNets and MASE (the h5's one-hot columns j_g, j_q, j_w, j_z, j_t).
CLASSES: tuple[str, ...] = ("g", "q", "W", "Z", "t")

ONE_HOT: tuple[str, ...] = tuple(f"j_{c.lower()}" for c in CLASSES)  # the h5's label columns


@dataclass(frozen=True)
class Schema:
    """What a dataset hands the model, the loop, tables and reports: its feature columns in the
    order the model reads them and its class names in label order (label i is ``classes[i]``).
    ``one_hot`` names label columns holding one-hot rows, where a file has them instead of one
    label column."""

    features: tuple[str, ...]
    classes: tuple[str, ...]
    one_hot: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        keys: dict[str, str] = {}
        for name in self.classes:
            if (other := keys.setdefault(class_key(name), name)) != name:
                raise UserError(f"classes {other!r} and {name!r} would log one metric, test_acc_{class_key(name)}: "
                                f"rename one (a metric key keeps letters, digits, _ - . / and spaces)")

    @property
    def num_features(self) -> int:
        return len(self.features)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def class_key(name: str) -> str:
    """A class name as MLflow accepts it in a metric key (letters, digits, _ - . / and spaces)."""
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in name)


JSC = Schema(FEATURES, CLASSES, ONE_HOT)
