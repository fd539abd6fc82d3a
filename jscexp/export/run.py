"""``python -m jscexp.export RUN_ID``: a logged quantised run, rebuilt from its artifacts,
exported and checked; the check's numbers, tag and project go onto the same run."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from jscexp.config import EXPORTED_MODES, plain
from jscexp.errors import UserError, first_line
from jscexp.export import CsimCheck, export
from jscexp.validate import check_gxx


def export_run(uri: str, run_id: str, out_dir: Path) -> CsimCheck:
    """Checks the run can be exported (one line if not, nothing written), then builds its HLS
    project in ``out_dir``, checks it on the run's test split and records the check on the run."""
    from jscexp.tracking.store import client

    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():  # MLflow would create it
        raise UserError(f"no MLflow store at {uri}: run this where the runs were made, or give --tracking-uri")
    mlflow = client(uri)
    run = _quantised_run(mlflow, run_id, uri)
    check_gxx()  # before the run's data is loaded
    with tempfile.TemporaryDirectory() as tmp:
        gm, x_test = _rebuild(mlflow, run, Path(tmp))
    check, project = export(gm, x_test, out_dir)
    record(mlflow, run_id, check, project)
    return check


def record(mlflow, run_id: str, check: CsimCheck, project: Path) -> None:
    """Onto the finished run, once the export is whole: the project's tarball, then the check's
    metrics and tags in one batch (an earlier failed check's reason removed)."""
    import time

    from mlflow.entities import Metric, RunTag

    mlflow.log_artifact(run_id, str(project), "hls4ml")
    tags = check.tags()
    if REASON_TAG not in tags and REASON_TAG in mlflow.get_run(run_id).data.tags:
        mlflow.delete_tag(run_id, REASON_TAG)
    now = int(time.time() * 1000)
    mlflow.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in check.metrics().items()],
                     tags=[RunTag(k, v) for k, v in tags.items()])


REASON_TAG = "jscexp.csim_check_reason"


def _download(mlflow, run_id: str, path: str, tmp: Path) -> Path:
    """One of the run's artifacts; gone (deleted, another machine's store) is one line."""
    from mlflow.exceptions import MlflowException

    try:
        return Path(mlflow.download_artifacts(run_id, path, str(tmp)))
    except (MlflowException, OSError) as err:
        raise UserError(f"run {run_id} has lost its artifact {path} ({first_line(err)}): "
                        "it cannot be rebuilt; run it again and export the new run") from None


def _quantised_run(mlflow, run_id: str, uri: str):
    from mlflow.exceptions import MlflowException

    from jscexp.tracking.store import mask

    try:
        run = mlflow.get_run(run_id)
    except MlflowException:
        raise UserError(f"no run {run_id} in {mask(uri)}: take a run id from python -m jscexp.table or make ui") from None
    mode = run.data.tags.get("jscexp.mode")
    if mode not in EXPORTED_MODES:
        raise UserError(f"run {run_id} is a mode={mode} run, a float model: export a quantised one "
                        "(mode=qat or mode=ptq with a fixed-point preset)")
    return run


def _rebuild(mlflow, run, tmp: Path):
    """The run's quantised model (its config, its weights: QAT's own checkpoint, PTQ's float
    model's) in evaluation mode, and its test split's features."""
    from jscexp.data import load_splits
    from jscexp.quant.transform import quantise
    from jscexp.train.fit import run_model

    run_id, tags = run.info.run_id, run.data.tags
    cfg, model, learned = run_model(_download(mlflow, run_id, "config.yaml", tmp), _weights(mlflow, run_id, tags, tmp))
    splits = load_splits(cfg.dataset)
    calibration = torch.from_numpy(splits.x_train[: int(cfg.analysis.num_samples)])
    gm, _ = quantise(model, plain(cfg.quantisation), calibration)
    if learned:  # the formats the run learned
        try:
            gm.load_state_dict({**gm.state_dict(), **learned})
        except RuntimeError as err:  # a checkpoint of an earlier version's learned quantiser (scaled_width)
            raise UserError(f"run {run_id}'s checkpoint holds learned formats this jscexp's quantisers do not have "
                            f"({first_line(err)}): it was trained by an earlier version; train it again to export it"
                            ) from None
    return gm.eval(), splits.split("test")[0]


def _weights(mlflow, run_id: str, tags: dict, tmp: Path) -> Path:
    if tags.get("jscexp.mode") == "qat":
        return _download(mlflow, run_id, "checkpoints/best.ckpt", tmp)
    if float_run := tags.get("jscexp.float_run_id"):
        return _download(mlflow, float_run, "checkpoints/best.ckpt", tmp)
    checkpoint = Path(tags.get("jscexp.checkpoint", ""))
    if not checkpoint.is_file():
        raise UserError(f"run {run_id} quantised checkpoint {checkpoint}, which is no longer on disk: "
                        "run the PTQ again, or export a QAT run")
    return checkpoint
