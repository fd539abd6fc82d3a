"""Export stage: a quantised run's firmware twin. hls4ml converts the run's quantised model
(PyTorch front end, ``io_parallel``, one ``ap_fixed`` per tensor: ``jscexp.export.hls``),
g++ compiles its C simulation, and the run's whole test split goes through both: the run gets
``csim_exact`` (logits equal bit for bit), ``csim_argmax`` (same class), the tag
``jscexp.csim_check`` and the HLS project as a tarball (docs/hardware.md)."""

from __future__ import annotations

import contextlib
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.fx

from jscexp.export.hls import FLOAT_STANDIN, precisions, twin
from jscexp.validate import check_gxx

ARGMAX_GOAL = 0.999  # a model with float tensors (BatchNorm kept in float): the same class this often


@dataclass(frozen=True)
class CsimCheck:
    exact: float  # share of test jets whose logits equal jscexp's bit for bit
    argmax: float  # share with the same predicted class
    all_fixed: bool  # every tensor carries a fixed-point type: exactness is the goal
    seconds: float

    @property
    def reason(self) -> str | None:
        """Why the check failed, or None when it passed."""
        if self.all_fixed and self.exact < 1.0:
            return f"csim_exact {self.exact:.6f} < 1 on a model whose every tensor is fixed point"
        if self.argmax < ARGMAX_GOAL:
            return f"csim_argmax {self.argmax:.6f} < {ARGMAX_GOAL} (float tensors typed {FLOAT_STANDIN})"
        return None

    def metrics(self) -> dict[str, float]:
        return {"csim_exact": self.exact, "csim_argmax": self.argmax, "csim_seconds": self.seconds}

    def tags(self) -> dict[str, str]:
        """``jscexp.csim_check`` passed or failed, and why it failed: never a silent pass."""
        reason = self.reason
        return {"jscexp.csim_check": "failed", "jscexp.csim_check_reason": reason} if reason \
            else {"jscexp.csim_check": "passed"}

    def line(self) -> str:
        verdict = f"failed: {self.reason}" if self.reason else "passed"
        return (f"C simulation check {verdict}: csim_exact={self.exact:.6f} csim_argmax={self.argmax:.6f} "
                f"({self.seconds:.1f} s)")


def check_exportable(gm: torch.fx.GraphModule) -> None:
    """Every layer of ``gm`` has an hls4ml converter and a fixed-point type: one line if not,
    said before a run trains, not after it."""
    precisions(gm, "x")


def build(gm: torch.fx.GraphModule, n_inputs: int, out_dir: Path, layers: dict | None = None):
    """The compiled hls4ml model of ``gm`` in ``out_dir`` and the precisions it was given;
    ``layers``: precisions other than jscexp's (a test's deliberately wrong one)."""
    import hls4ml

    from jscexp.export import features

    features.register()
    gm = features.split(gm)
    model = twin(gm)
    cfg = hls4ml.utils.config_from_pytorch_model(model, input_shape=(n_inputs,), granularity="name",
                                                  backend="Vitis", default_precision=FLOAT_STANDIN)
    cfg["Model"]["BitExact"] = False  # jscexp's precisions, not the flow a FixedPointQuantizer would switch on
    layers = layers or precisions(gm, next(iter(cfg["LayerName"])))  # hls4ml's first layer is the input
    for name, types in layers.items():
        cfg["LayerName"].setdefault(name, {}).setdefault("Precision", {}).update(types)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(out_dir.parent / "hls4ml.log", "a") as log, contextlib.redirect_stdout(log):  # its layer-by-layer chatter
        hls_model = hls4ml.converters.convert_from_pytorch_model(model, hls_config=cfg, output_dir=str(out_dir),
                                                                 backend="Vitis", io_type="io_parallel")
        hls_model.compile()
    return hls_model, layers


def csim_check(gm: torch.fx.GraphModule, x: np.ndarray, out_dir: Path, layers: dict | None = None) -> CsimCheck:
    """Builds the twin and runs ``x`` (the test split) through it and through ``gm``."""
    import time

    check_gxx()
    started = time.perf_counter()
    gm = gm.eval()
    hls_model, layers = build(gm, x.shape[1], out_dir, layers)
    with torch.no_grad():
        ref = gm(torch.from_numpy(x)).double().numpy()
    sim = np.asarray(hls_model.predict(np.ascontiguousarray(x, dtype=np.float32)), dtype=np.float64).reshape(ref.shape)
    exact = float(np.mean(np.all(sim == ref, axis=1)))
    argmax = float(np.mean(sim.argmax(axis=1) == ref.argmax(axis=1)))
    fixed = all(FLOAT_STANDIN not in t for types in layers.values() for t in types.values())
    return CsimCheck(exact, argmax, fixed, time.perf_counter() - started)


def export(gm: torch.fx.GraphModule, x: np.ndarray, out_dir: Path) -> tuple[CsimCheck, Path]:
    """``out_dir/hls4ml_prj`` checked on ``x`` (a run's test split), and the project as a
    tarball beside it (sources, config, the C simulation's build). A transaction: built in a
    scratch folder of its own and moved into ``out_dir`` only once whole, under a lock that
    refuses a second export into the same folder meanwhile; an error or Ctrl-C leaves no part."""
    import shutil
    import tempfile

    with _only_export_of(out_dir):
        scratch = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.export.", dir=out_dir.parent))
        try:
            check = csim_check(gm, x, scratch / "hls4ml_prj")
            with tarfile.open(scratch / "hls4ml_prj.tar.gz.part", "w:gz") as tar:
                tar.add(scratch / "hls4ml_prj", arcname="hls4ml_prj")
            (scratch / "hls4ml_prj.tar.gz.part").rename(scratch / "hls4ml_prj.tar.gz")
            out_dir.mkdir(exist_ok=True)
            for made in scratch.iterdir():  # whole: into place, over an earlier export's
                if (out_dir / made.name).is_dir():
                    shutil.rmtree(out_dir / made.name)
                made.replace(out_dir / made.name)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return check, out_dir / "hls4ml_prj.tar.gz"


@contextlib.contextmanager
def _only_export_of(out_dir: Path):
    """Holds ``out_dir``'s export lock; one held by another process is one line."""
    from filelock import FileLock, Timeout

    from jscexp.errors import UserError

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(out_dir.parent / f".{out_dir.name}.export.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise UserError(f"{out_dir} is being exported by another process (its lock {lock.lock_file}): "
                        "wait for it, or give another --out") from None
    try:
        yield
    finally:
        lock.release()
