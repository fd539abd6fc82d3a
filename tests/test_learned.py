"""Learned widths (#28, HGQ-style): the quantiser's arithmetic and surrogate gradient worked by
hand, per-weight costs by hand, training that moves the widths and a penalty that lowers EBOPs,
and the bad inputs."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import FAST, mlflow_client, run_cli, run_job, runs_of
from jscexp.errors import UserError
from jscexp.quant.integer import IntegerQuantiser
from jscexp.quant.layers import LinearQ
from jscexp.quant.learned import LearnedQuantiser


def test_at_its_starting_widths_a_learned_quantiser_is_the_integer_one():
    x = torch.randn(4000) * 3
    x[:4] = torch.tensor([0.125 / 2, 3 * 0.125 / 2, 7.99, -9.0])  # ties round half to even; saturation both ways
    learned = LearnedQuantiser(width=6, frac_width=3).bind(x.shape)
    assert torch.equal(learned(x), IntegerQuantiser(width=6, frac_width=3)(x))
    assert learned.fixed().describe() == "integer(width=6, frac_width=3, signed=True)"


def test_each_value_has_its_own_width_and_the_width_gradient_is_hgqs_surrogate():
    """int_bits 1 ([-1, 1)); f = 1, 1, 1 and -1 (width 0)."""
    q = LearnedQuantiser(width=2, frac_width=1).bind(torch.Size([4]))
    with torch.no_grad():
        q.scaled_frac.copy_(torch.tensor([1.0, 1.0, 1.0, -1.4]))  # f rounds to -1: width 1 - 1 = 0
    x = torch.tensor([0.3, -0.7, 5.0, 0.6], requires_grad=True)
    out = q(x)
    assert out.tolist() == [0.5, -0.5, 0.5, 0.0]  # 0.6 → 1 step; -1.4 → -1; 10 saturates at 1; width 0 → 0
    out.sum().backward()
    ln2 = math.log(2)
    # ∂q/∂f = ln2·(x − q) inside the range; 5.0 is outside (saturated): no gradient to it or its format
    assert torch.allclose(q.scaled_frac.grad, torch.tensor([ln2 * -0.2, ln2 * -0.2, 0.0, ln2 * 0.6]))
    assert x.grad.tolist() == [1.0, 1.0, 0.0, 1.0]
    assert q.on_grid(out.detach()).all() and not q.on_grid(torch.tensor([0.25, -1.5, 0.75, 0.5])).any()


def test_per_weight_widths_cost_by_hand():
    """A 2→2 layer: input width 4; weight widths [[3, 0], [2, 5]] (the 0-bit one is no
    multiplication); bias widths [4, 6]."""
    from jscexp.quant.cost import hardware_costs
    from jscexp.quant.summary import costs

    linear = nn.Linear(2, 2)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[0.5, 0.25], [-0.75, 0.3]]))
        linear.bias.copy_(torch.tensor([0.1, -0.2]))
    layer = LinearQ(linear, data_in=LearnedQuantiser(width=4, frac_width=2),
                    weight=LearnedQuantiser(width=4, frac_width=3), bias=LearnedQuantiser(width=4, frac_width=3))
    with torch.no_grad():
        layer.w_quantiser.scaled_frac.copy_(torch.tensor([[2.0, -1.0], [1.0, 4.0]]))  # one integer bit: widths 3, 0, 2, 5
        layer.b_quantiser.scaled_frac.copy_(torch.tensor([3.0, 5.0]))  # widths 4, 6
    assert layer.effective_weight().tolist() == [[0.5, 0.0], [-1.0, 0.3125]]
    # EBOPs: 4·(3 + 2 + 5) + (4 + 6); BOPs: Σ per weight of b_a·b_w + b_a + b_w + ⌈log2 2⌉
    assert hardware_costs(layer) == {"bops": (12 + 4 + 3 + 1) + (0 + 4 + 0 + 1) + (8 + 4 + 2 + 1) + (20 + 4 + 5 + 1),
                                     "ebops": 50.0}
    found = costs(layer)
    assert found["avg_weight_bits"] == 2.5 and found["model_size_bits"] == 10 + 10  # the widths are no parameters
    assert layer.w_quantiser.fixed().describe() == "integer(width=5, frac_width=4, signed=True)"


def test_a_weights_integer_bits_are_the_fewest_that_hold_it_and_a_weight_that_rounds_to_0_costs_nothing():
    """int_bits=value, f = 3: n = round(x·8) = 2, -4, 22, 0, -8 need 2, 2 (two's complement: -4
    beside the sign), 5, 0 and 3 magnitude bits, each plus the sign bit; 0 needs none at all."""
    q = LearnedQuantiser(frac_width=3, int_bits="value").bind(torch.Size([5]))
    x = torch.tensor([0.3, -0.5, 2.7, 0.04, -1.0])
    out = q(x)
    assert out.tolist() == [0.25, -0.5, 2.75, 0.0, -1.0]
    assert q.widths(x).tolist() == [3.0, 3.0, 6.0, 0.0, 4.0]
    assert q.on_grid(out, x).all()
    # one format for them all (hls4ml's type): 2 integer bits (2.75), 3 fractional, the sign
    assert q.fixed(x).describe() == "integer(width=6, frac_width=3, signed=True)"
    q.widths(x).sum().backward()  # the penalty's gradient reaches f where the width is > 0
    assert q.scaled_frac.grad.tolist() == [1.0, 1.0, 1.0, 0.0, 1.0]


def test_a_weight_whose_integer_bits_follow_its_value_trains_as_the_integer_quantiser_would():
    """int_bits=value at f = 7 computes int8's (frac 7) values inside [-1, 1) and passes the same
    gradients — also for a negative weight just past a power of two (-0.2506 rounds to -32/128,
    which its 6 bits hold), which a test on the unrounded value would cut off."""
    x = torch.cat([torch.tensor([-0.2506, -0.0178, -0.5025]), torch.rand(4000) * 1.98 - 0.99]).requires_grad_()
    learned = LearnedQuantiser(frac_width=7, int_bits="value").bind(x.shape)
    out, reference = learned(x), IntegerQuantiser(width=8, frac_width=7)(x)
    assert torch.equal(out, reference)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    (ours,), (theirs,) = (torch.autograd.grad((t * g).sum(), x) for t in (out, reference))
    assert torch.equal(ours, theirs) and bool((ours[:3] != 0).all())


def test_an_inputs_sign_and_integer_bits_are_traced_per_feature_from_the_batches_training_sees():
    """int_bits=traced, f = 2, int_decay 0.5: feature 0 is never negative (unsigned) with |x| ≤ 1.7
    (i = ⌈log2(1.7 + 2^-2)⌉ = 1); feature 1 is always 0 (i = -2: width 0, dropped); feature 2
    is negative once (signed), |x| ≤ 2.6 (i = 2). A later batch's smaller range lowers i by at
    most 0.5 a step; evaluating traces nothing."""
    q = LearnedQuantiser(frac_width=2, int_bits="traced", int_decay=0.5).bind(torch.Size([3]))
    out = q(torch.tensor([[0.3, 0.0, -2.6], [1.7, 0.0, 0.9]]))
    assert q.traced_sign.tolist() == [0.0, 0.0, 1.0] and q.traced_int.tolist() == [1.0, -2.0, 2.0]
    assert q.widths().tolist() == [3.0, 0.0, 5.0]
    assert out.tolist() == [[0.25, 0.0, -2.5], [1.75, 0.0, 1.0]]
    assert q.fixed().describe() == "integer(width=5, frac_width=2, signed=True)"
    small = torch.tensor([[0.2, 0.0, 0.1]])
    q(small)
    assert q.traced_int.tolist() == [0.5, -2.0, 1.5] and q.widths().tolist() == [3.0, 0.0, 5.0]  # ⌈0.5⌉ = 1
    q(small)
    assert q.traced_int.tolist() == [0.0, -2.0, 1.0] and q.widths().tolist() == [2.0, 0.0, 4.0]
    q.eval()
    assert q(torch.tensor([[9.0, 1.0, -9.0]])).tolist() == [[0.75, 0.0, -2.0]]  # saturates, traces nothing
    assert q.traced_int.tolist() == [0.0, -2.0, 1.0]


@pytest.mark.parametrize("options, message", [
    ({"width": 8, "int_bits": "own"}, "int_bits must be one of fixed, value, traced, got 'own'"),
    ({"int_bits": "traced", "signed": True}, "int_bits=traced traces the sign bit from the data: leave signed out"),
    ({"width": 8, "int_decay": 0.1}, "int_decay is how fast traced integer bits fall; with int_bits=fixed it would "
                                      "change nothing"),
    ({"int_bits": "traced", "int_decay": -1}, "int_decay must be a number ≥ 0 (bits per step), got -1"),
    ({"width": 8, "int_bits": "value"}, "with int_bits=value the integer bits follow the values, so width would change nothing"),
    ({}, "int_bits=fixed takes its integer bits from width - frac_width: give width"),
])
def test_bad_learned_format_options_are_one_line(options, message):
    with pytest.raises(UserError, match=re.escape(message)):
        LearnedQuantiser(frac_width=4, **options)


def _learned_runs(workdir: Path, *args: str) -> dict[float, object]:
    result = run_cli(["-m", *FAST, "max_epochs=2", "model=jsc-toy", "mode=qat", "quantisation=learned",
                      "learning_rate=0.01", *args], workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    return {float(r.data.params["quantisation.beta"]): r for r in runs_of(workdir)
            if r.data.tags.get("jscexp.kind") != "sweep"}


def test_learned_widths_move_and_the_penalty_lowers_ebops(workdir):
    """β = 0 and β = 1e-4 in one stacked job: the widths leave where they started (8), the
    penalty's run ends with fewer EBOPs, and each run's logged costs are its checkpoint's."""
    from omegaconf import OmegaConf

    from jscexp.quant.summary import costs
    from jscexp.quant.transform import quantise
    from jscexp.train.checkpoint import load_weights
    from jscexp.train.fit import make_model

    runs = _learned_runs(workdir, "quantisation.beta=0,1e-4")
    assert {r.info.status for r in runs.values()} == {"FINISHED"}
    assert len({r.data.tags["jscexp.vector_group"] for r in runs.values()}) == 1  # one stacked model
    assert runs[1e-4].data.metrics["ebops"] < 0.8 * runs[0.0].data.metrics["ebops"]
    client = mlflow_client(workdir)
    per_epoch = {b: [m.value for m in sorted(client.get_metric_history(r.info.run_id, "epoch_ebops"), key=lambda m: m.step)]
                 for b, r in runs.items()}  # the widths' cost after each epoch
    assert [len(v) for v in per_epoch.values()] == [2, 2] and per_epoch[1e-4][-1] < per_epoch[0.0][-1]
    for run in runs.values():
        widths = {k: float(v) for k, v in run.data.params.items() if k.startswith("learned.")}
        assert len(widths) == 6 and any(w != 8 for w in widths.values())  # 3 layers: input, weights
        assert run.data.tags["jscexp.quant_check"] == "passed" and run.data.metrics["quant_offgrid_values"] == 0
        table = Path(client.download_artifacts(run.info.run_id, "quant/learned_widths.csv", str(workdir)))
        assert table.read_text().startswith("layer,role,values,min width,mean width,max width,zero width\n")
        cfg = OmegaConf.load(client.download_artifacts(run.info.run_id, "config.yaml", str(workdir)))
        model = make_model(cfg)
        learned = load_weights(model, Path(run.data.tags["jscexp.checkpoint"]), "jsc-toy")
        net, _ = quantise(model, OmegaConf.to_container(cfg.quantisation, resolve=True))
        net.load_state_dict({**net.state_dict(), **learned})
        found = costs(net)
        assert {k: found[k] for k in ("bops", "ebops", "avg_weight_bits")} == \
            {k: run.data.metrics[k] for k in ("bops", "ebops", "avg_weight_bits")}
    _front_is_non_dominated(workdir, list(runs.values()))


def _front_is_non_dominated(workdir: Path, runs: list) -> None:
    """The sweep parent's front.csv and ``jscexp.table --front`` hold exactly the runs no other
    run beats on both validation accuracy and EBOPs."""
    import pandas as pd

    def beaten(r) -> bool:
        acc, cost = r.data.metrics["best_val_acc"], r.data.metrics["ebops"]
        return any(o.data.metrics["best_val_acc"] >= acc and o.data.metrics["ebops"] <= cost
                   and (o.data.metrics["best_val_acc"], o.data.metrics["ebops"]) != (acc, cost) for o in runs)

    expected = {r.data.tags["mlflow.runName"] for r in runs if not beaten(r)}
    (parent,) = [r for r in runs_of(workdir) if r.data.tags.get("jscexp.kind") == "sweep"]
    csv = mlflow_client(workdir).download_artifacts(parent.info.run_id, "front.csv", str(workdir))
    assert set(pd.read_csv(csv)["run"]) == expected
    shown = subprocess.run([sys.executable, "-m", "jscexp.table", "--front", "--format", "csv"], cwd=workdir,
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert len(shown.stdout.strip().splitlines()) == 1 + len(expected)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["quantisation=learned", "quantisation.beta=-1"], "quantisation.beta must be a number ≥ 0"),
        (["quantisation=int8", "+quantisation.beta=1e-5"],
         "quantisation.beta is for the penalty on learned widths, but quantisation=int8 learns none"),
        (["quantisation=int8", "+quantisation.beta_warmup=2"],
         "quantisation.beta_warmup is for the penalty on learned widths, but quantisation=int8 learns none"),
        (["quantisation=learned", "quantisation.beta_warmup=1.5"],
         "quantisation.beta_warmup must be a whole number of epochs ≥ 0, got 1.5"),
        (["quantisation=minifloat8", "+quantisation.beta=1e-5"], "quantisation=minifloat8 learns none"),
        (["quantisation=learned", "+quantisation.linear.config.weight_name=minifloat"],
         "learned widths are fixed point: quantise every other role with integer, not minifloat"),
        (["quantisation=learned", "+quantisation.seq_block_5.config.weight_width=4"],
         "no op or layer called seq_block_5 (did you mean seq_blocks_5"),
    ],
)
def test_bad_learned_width_input_is_refused_before_any_run(workdir, overrides, message):
    with pytest.raises(UserError, match=re.escape(message)):
        run_job([*FAST, "mode=qat", "model=jsc-toy", *overrides], workdir / "out")
    assert runs_of(workdir) == []


def test_learned_widths_outside_qat_are_one_line_on_the_cli(workdir):
    result = run_cli([*FAST, "mode=ptq", "quantisation=learned"], workdir)
    assert result.returncode == 2
    assert result.stderr == "error: quantisation=learned learns its widths in training: use mode=qat, not mode=ptq\n"
    assert runs_of(workdir) == []


@pytest.mark.slow
def test_stacked_learned_width_trials_match_their_runs_alone(workdir):
    from test_vectorised import SMALL, alone_and_stacked

    common = [*SMALL, "model=jsc-toy", "optimizer=sgd", "learning_rate=5e-2", "mode=qat", "quantisation=learned"]
    trials = [[f"quantisation.beta={b}"] for b in (0, 1e-5, 1e-4)]
    alone, stacked = alone_and_stacked(workdir, common, trials, ("quantisation.beta",))
    for key, vec in stacked.items():
        assert vec["metrics"]["ebops"] == alone[key]["metrics"]["ebops"]
        assert vec["metrics"]["epoch_ebops"] == alone[key]["metrics"]["epoch_ebops"]
        assert {k: v for k, v in vec["params"].items() if k.startswith("learned.")} == \
            {k: v for k, v in alone[key]["params"].items() if k.startswith("learned.")}
