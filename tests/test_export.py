"""The firmware twin (jscexp.export, docs/hardware.md): hls4ml's C simulation of a quantised run
against jscexp's model, bit for bit; a wrong precision is a failed check; bad input is one line."""

from __future__ import annotations

import tarfile

import numpy as np
import pytest
import torch

from conftest import FAST, mlflow_client, run_job
from jscexp.export import csim_check
from jscexp.export.__main__ import main as export_main
from jscexp.export.hls import precisions
from jscexp.models.jsc import jsc_tiny
from jscexp.quant.transform import quantise

ALL_FIXED = [*FAST, "model=jsc-tiny", "mode=qat", "quantisation=int8_all"]


def test_an_all_fixed_point_run_matches_its_c_simulation_bit_for_bit(workdir, capsys):
    """python -m jscexp.export, from the run's artifacts alone."""
    outcome = run_job(ALL_FIXED, workdir / "job")
    client = mlflow_client(workdir)
    capsys.readouterr()
    assert export_main([outcome.run_id, "--out", str(workdir / "out")]) == 0
    assert capsys.readouterr().out.startswith("C simulation check passed: csim_exact=1.000000 csim_argmax=1.000000")
    project = client.download_artifacts(outcome.run_id, "hls4ml/hls4ml_prj.tar.gz", str(workdir))
    with tarfile.open(project) as tar:
        names = tar.getnames()
        defines = tar.extractfile("hls4ml_prj/firmware/defines.h").read().decode()
    assert "hls4ml_prj/firmware/myproject.cpp" in names
    assert "ap_fixed<8,4,AP_RND_CONV,AP_SAT" in defines  # the Linear input's format, cast as jscexp rounds
    run = client.get_run(outcome.run_id)
    assert run.data.metrics["csim_exact"] == 1.0 and run.data.metrics["csim_argmax"] == 1.0
    assert run.data.tags["jscexp.csim_check"] == "passed" and run.info.status == "FINISHED"


@pytest.mark.slow
def test_the_switch_checks_every_quantised_run_at_its_end(workdir):
    """hardware.export=true, on a preset that keeps BatchNorm in float: the class agrees."""
    outcome = run_job([*FAST, "model=jsc-toy", "mode=qat", "quantisation=int8", "hardware.export=true"], workdir / "j")
    run = mlflow_client(workdir).get_run(outcome.run_id)
    assert run.data.metrics["csim_argmax"] >= 0.999 and run.data.tags["jscexp.csim_check"] == "passed"
    assert outcome.metrics["csim_argmax"] == run.data.metrics["csim_argmax"]
    assert [a.path for a in mlflow_client(workdir).list_artifacts(outcome.run_id, "hls4ml")] == [
        "hls4ml/hls4ml_prj.tar.gz"]


def _all_fixed_model():
    from conftest import compose_cfg
    from jscexp.config import plain

    torch.manual_seed(0)
    model = jsc_tiny()
    bn = model.seq_blocks[0]
    bn.running_mean.normal_(0, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    gm, _ = quantise(model, plain(compose_cfg(["quantisation=int8_all"]).quantisation))
    return gm.eval()


def test_a_deliberately_narrow_accumulator_fails_the_check_and_says_why(workdir):
    """hls4ml issue #324's failure: an accumulator that overflows. The run is tagged failed with
    the reason, never a silent pass."""
    from jscexp.export.run import record

    gm = _all_fixed_model()
    layers = precisions(gm, "x")
    layers["seq_blocks_2"].update(accum="ap_fixed<6,3>", result="ap_fixed<6,3>")
    x = (np.random.default_rng(0).standard_normal((500, 16)) * 2).astype(np.float32)
    check = csim_check(gm, x, workdir / "prj", layers)
    assert check.all_fixed and check.exact < 1.0
    assert check.reason.startswith("csim_exact ") and "< 1 on a model whose every tensor is fixed point" in check.reason
    client = mlflow_client(workdir)
    run_id = client.create_run(client.create_experiment("export")).info.run_id
    (workdir / "p.tar.gz").write_bytes(b"")
    record(client, run_id, check, workdir / "p.tar.gz")
    tags = client.get_run(run_id).data.tags
    assert tags["jscexp.csim_check"] == "failed" and tags["jscexp.csim_check_reason"] == check.reason


def test_the_precisions_follow_the_quantisers_and_hold_every_sum():
    """By hand: BN(16)'s input cast from the model input, its scale/shift at 8 bits; the ReLU's
    result cast unsigned; Linear 16→5: |x| ≤ 8, |w| ≤ 8, |b| ≤ 8, 16·64 + 8 = 1032 < 2^11: 12
    integer bits with the sign, 8 fractional (4 + 4); its result, cast to the last ReLU's input."""
    layers = precisions(_all_fixed_model(), "x")
    assert layers["x"] == {"result": "ap_fixed<8,4,AP_RND_CONV,AP_SAT>"}
    assert layers["seq_blocks_0"]["scale"] == "ap_fixed<8,4>" and layers["seq_blocks_0"]["bias"] == "ap_fixed<8,4>"
    assert layers["seq_blocks_0"]["result"] == "ap_ufixed<8,4,AP_RND_CONV,AP_SAT>"  # the ReLU's input, unsigned
    assert layers["seq_blocks_1"]["result"] == "ap_fixed<8,4,AP_RND_CONV,AP_SAT>"  # the Linear's input
    assert layers["seq_blocks_2"]["accum"] == "ap_fixed<20,12>"
    assert layers["seq_blocks_2"]["result"] == "ap_ufixed<8,4,AP_RND_CONV,AP_SAT>"  # the last ReLU's input


@pytest.mark.parametrize("overrides, args, message", [
    ([*FAST, "model=jsc-tiny"], [], "is a mode=train run, a float model: export a quantised one"),
    (None, ["0123456789abcdef"], "no MLflow store at sqlite:///"),
    ([*FAST, "model=jsc-tiny"], ["0123456789abcdef"], "no run 0123456789abcdef in sqlite:///"),
    ([*FAST, "model=jsc-tiny", "mode=qat", "quantisation=minifloat8"], [],
     "seq_blocks_2 input: hls4ml has no type for the 'minifloat' format"),
])
def test_what_cannot_be_exported_is_one_line_exit_2_and_nothing_written(workdir, capsys, overrides, args, message):
    run_id = run_job(overrides, workdir / "job").run_id if overrides else None
    capsys.readouterr()
    assert export_main([*(args or [run_id]), "--out", str(workdir / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
    assert not (workdir / "out").exists() and (overrides or not (workdir / "mlflow.db").exists())


def test_without_gxx_the_export_and_the_switch_say_so_before_any_run(workdir, monkeypatch, capsys):
    from jscexp.errors import UserError

    outcome = run_job(ALL_FIXED, workdir / "job")
    monkeypatch.setenv("PATH", str(workdir / "empty"))
    capsys.readouterr()
    assert export_main([outcome.run_id, "--out", str(workdir / "out")]) == 2
    assert "g++ is not installed" in capsys.readouterr().err and not (workdir / "out").exists()
    with pytest.raises(UserError, match="hardware.export=true: g.. is not installed"):
        run_job([*ALL_FIXED, "hardware.export=true", "experiment=nogxx"], workdir / "job2")
    assert mlflow_client(workdir).get_experiment_by_name("nogxx") is None


def test_a_passing_check_after_a_failing_one_drops_the_old_reason(workdir):
    from jscexp.export import CsimCheck
    from jscexp.export.run import record

    client = mlflow_client(workdir)
    run_id = client.create_run(client.create_experiment("export")).info.run_id
    (workdir / "p.tar.gz").write_bytes(b"")
    record(client, run_id, CsimCheck(0.5, 1.0, True, 1.0), workdir / "p.tar.gz")
    assert client.get_run(run_id).data.tags["jscexp.csim_check"] == "failed"
    record(client, run_id, CsimCheck(1.0, 1.0, True, 1.0), workdir / "p.tar.gz")
    tags = client.get_run(run_id).data.tags
    assert tags["jscexp.csim_check"] == "passed" and "jscexp.csim_check_reason" not in tags


def test_an_export_is_a_transaction(workdir, capsys, monkeypatch):
    """Ctrl-C mid-build: one line, exit 130, no part of a project or tarball and nothing on the
    run; a run whose artifacts are gone is one line, exit 2; a second export into a folder
    being exported is refused in one line."""
    import shutil
    from urllib.parse import urlparse

    from filelock import FileLock

    import jscexp.export as export_stage

    run_id = run_job(ALL_FIXED, workdir / "job").run_id
    out = workdir / "out"

    def broken_off(gm, x, project, layers=None):
        (project / "firmware").mkdir(parents=True)
        (project / "firmware" / "half.cpp").write_text("// half")
        raise KeyboardInterrupt

    monkeypatch.setattr(export_stage, "csim_check", broken_off)
    capsys.readouterr()
    assert export_main([run_id, "--out", str(out)]) == 130
    assert capsys.readouterr().err == f"interrupted: run {run_id} was not exported (nothing recorded on it)\n"
    assert not out.exists() and [p.name for p in workdir.iterdir() if ".export." in p.name] == [".out.export.lock"]
    assert "csim_exact" not in mlflow_client(workdir).get_run(run_id).data.metrics

    with FileLock(workdir / ".out.export.lock"):  # another process's export of the same folder
        assert export_main([run_id, "--out", str(out)]) == 2
    assert "out is being exported by another process" in capsys.readouterr().err

    shutil.rmtree(urlparse(mlflow_client(workdir).get_run(run_id).info.artifact_uri).path)
    assert export_main([run_id, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: run {run_id} has lost its artifact config.yaml (") and len(err.splitlines()) == 1


def test_input_features_with_formats_of_their_own_are_cast_each_to_its_own_and_match_bit_for_bit(tmp_path):
    """hls4ml casts a layer's result to one type: learned formats per input feature (fractional
    bits 0…5, sign and integer bits traced) go through a FixedPointQuantizer node of their own
    (``<layer>_in``), each feature cast to its ap_fixed, and the C simulation equals jscexp's model."""
    from conftest import compose_cfg
    from jscexp.config import plain
    from jscexp.export import build
    from jscexp.train.fit import make_model

    cfg = compose_cfg(["model=mlp", "model.hidden=[8,8]", "mode=qat", "quantisation=learned"])
    torch.manual_seed(0)
    gm, _ = quantise(make_model(cfg), plain(cfg.quantisation))
    x = torch.randn(256, 16) * 2
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name in ("layers.0", "layers.2"):
            q = gm.get_submodule(name).x_quantiser
            q.scaled_frac.copy_(torch.randint(0, 6, q.scaled_frac.shape, generator=generator) / q.rate)
        gm.train()(x)  # a training batch traces each feature's sign and integer bits
    check = csim_check(gm.eval(), x.numpy(), tmp_path / "prj")
    assert check.exact == 1.0 and check.all_fixed and check.reason is None
    _, layers = build(gm, 16, tmp_path / "again")
    assert {"layers_0_in", "layers_2_in", "layers_4_in"} <= set(layers)
    # its result: one type holding every feature's format (the most integer and fractional bits of any)
    width, int_bits, _ = gm.get_submodule("layers.0").x_quantiser.formats()
    integer, frac = int(int_bits[width > 0].max()), int((width - int_bits)[width > 0].max())
    assert layers["layers_0_in"]["result"] == f"ap_fixed<{integer + frac},{integer}>" and 0 < frac <= 5


def test_a_learned_run_of_a_batchnorm_model_exports_bit_exact(workdir):
    """jsc-toy under quantisation=learned: formats per weight and per input feature, its
    BatchNorms in fixed point (input, folded scale and shift): every tensor fixed, the C
    simulation equal bit for bit."""
    outcome = run_job([*FAST, "model=jsc-toy", "mode=qat", "quantisation=learned", "hardware.export=true"],
                      workdir / "j")
    run = mlflow_client(workdir).get_run(outcome.run_id)
    assert run.data.metrics["csim_exact"] == 1.0 and run.data.tags["jscexp.csim_check"] == "passed"


def test_a_learned_checkpoint_of_an_earlier_quantiser_is_one_line_exit_2(workdir, capsys):
    """Before formats per value, a learned quantiser's parameter was ``scaled_width``: such a
    checkpoint cannot be rebuilt into today's model, and the export says so in one line."""
    from pathlib import Path

    outcome = run_job([*FAST, "model=jsc-tiny", "mode=qat", "quantisation=learned"], workdir / "job")
    from urllib.parse import urlparse

    uri = mlflow_client(workdir).get_run(outcome.run_id).info.artifact_uri  # the copy an export reads
    checkpoint = Path(urlparse(uri).path if uri.startswith("file:") else uri) / "checkpoints" / "best.ckpt"
    saved = torch.load(checkpoint, weights_only=True)
    saved["state_dict"] = {k.replace("scaled_frac", "scaled_width"): v for k, v in saved["state_dict"].items()}
    torch.save(saved, checkpoint)
    capsys.readouterr()
    assert export_main([outcome.run_id, "--out", str(workdir / "out")]) == 2
    err = capsys.readouterr().err
    assert "checkpoint holds learned formats this jscexp's quantisers do not have" in err
    assert len(err.strip().splitlines()) == 1 and not (workdir / "out").exists()
