"""Population-based training inside one stacked model (#20): exploit copies one member's whole
state into another, explore moves its knobs, and the same seed gives the same decisions."""

from __future__ import annotations

import math
import random
from itertools import islice
from pathlib import Path

import torch

from conftest import SMALL, compose_cfg, stacked_engine, stacked_steps

LR_WD = "{learning_rate:{low:1e-4,high:0.2,log:true},optimizer.weight_decay:{low:0,high:0.01}}"
LR_WD_KEYS = ("pbt.learning_rate", "pbt.optimizer.weight_decay")
QAT = ["mode=qat", "quantisation=int8", 'quantisation.weight_frac_width="${sub:${quantisation.weight_width},2}"']


def test_an_exploited_member_steps_as_its_source_would_with_the_new_knobs(tmp_path):
    from jscexp.data import load_splits
    from jscexp.train import fit
    from jscexp.train.population import Exploit, exploit

    lrs = [0.05, 0.02, 0.01]
    a, b = stacked_engine(tmp_path, lrs), stacked_engine(tmp_path, lrs)  # two identical populations
    data = list(islice(iter(fit.batches(a.device, load_splits(compose_cfg(SMALL).dataset), "train", 64)), 5))
    for engine in (a, b):
        engine.start_epoch(0)
        stacked_steps(engine, data[:3])
    knobs = {"learning_rate": 0.024, "optimizer.weight_decay": 1e-3, "model.dropout": 0.3}
    exploit(a, Exploit(0, member=0, source=2, knobs=knobs))  # member 0 becomes member 2, perturbed
    exploit(b, Exploit(0, member=2, source=2, knobs=knobs))  # member 2 itself, perturbed
    for engine in (a, b):
        stacked_steps(engine, data[3:])
    assert torch.equal(a.model.flat[0], b.model.flat[2])  # weights, after two more steps
    assert all(torch.equal(v[0], b.model.buffers[k][2]) for k, v in a.model.buffers.items())  # BatchNorm
    assert all(torch.equal(buf[0], b.optimizer.state[name][key][2])
               for name, st in a.optimizer.state.items() for key, buf in st.items())  # momentum
    assert torch.equal(a.model.generators[0].get_state(), b.model.generators[2].get_state())  # dropout RNG
    assert a.optimizer.lr[0] == b.optimizer.lr[2] == 0.024
    assert torch.equal(a.model.flat[1], b.model.flat[1])  # the others untouched
    assert not torch.equal(a.model.flat[0], a.model.flat[2])  # and the knobs did change its steps


def test_an_exploited_member_quantises_with_its_new_width(tmp_path):
    """Bit-width PBT: the member takes the source's state and the explored weight width (its
    frac width follows by interpolation), and steps as the source would with that width."""
    from jscexp import app
    from jscexp.config import plain
    from jscexp.data import load_splits
    from jscexp.intrain.pbt import with_knobs
    from jscexp.quant.transform import quantise
    from jscexp.train import fit
    from jscexp.train.population import Exploit, exploit

    widths = [[*QAT, f"quantisation.weight_width={w}"] for w in (4, 6, 8)]
    a, b = (stacked_engine(tmp_path, [0.05, 0.05, 0.05], widths) for _ in range(2))
    data = list(islice(iter(fit.batches(a.device, load_splits(compose_cfg(SMALL).dataset), "train", 64)), 5))
    for engine in (a, b):
        engine.start_epoch(0)
        stacked_steps(engine, data[:3])
    cfg = with_knobs(compose_cfg([*SMALL, *widths[2]]), {"quantisation.weight_width": 5})
    assert plain(cfg.quantisation)["linear"]["config"]["weight_frac_width"] == 3  # follows the new width
    new, _ = quantise(app.initial_model(cfg)[0], plain(cfg.quantisation))  # only its quantisers are read
    knobs = {"quantisation.weight_width": 5}
    exploit(a, Exploit(0, member=0, source=2, knobs=knobs), new)
    exploit(b, Exploit(0, member=2, source=2, knobs=knobs), new)
    for engine in (a, b):
        stacked_steps(engine, data[3:])
    assert torch.equal(a.model.flat[0], b.model.flat[2])
    assert not torch.equal(a.model.flat[0], a.model.flat[2])  # width 5 steps differently from width 8


def test_same_seed_same_decisions_bottom_quantile_copies_top():
    from jscexp.train.population import Knob, Settings, plan

    space = {"learning_rate": Knob(1e-4, 1e-1, log=True), "optimizer.weight_decay": Knob(0.0, 1e-2),
             "quantisation.weight_width": Knob(2, 8, integer=True)}
    scores = [0.2, 0.9, 0.5, math.nan, 0.7, 0.1, 0.8, 0.3]
    values = [{"learning_rate": 1e-3 * (i + 1), "optimizer.weight_decay": 1e-4, "quantisation.weight_width": 4}
              for i in range(8)]
    first, again = (plan(scores, values, space, Settings(), 3, random.Random(7)) for _ in range(2))
    assert first == again
    assert plan(scores, values, space, Settings(), 3, random.Random(8)) != first
    assert sorted(d.member for d in first) == [3, 5]  # the diverged one and the worst: ceil(8 x 0.25)
    assert {d.source for d in first} <= {1, 6} and all(d.epoch == 3 for d in first)  # the best two
    for d in first:
        assert 1e-4 <= d.knobs["learning_rate"] <= 1e-1 and 0 <= d.knobs["optimizer.weight_decay"] <= 1e-2
        assert d.knobs["quantisation.weight_width"] in (2, 3, 4, 5, 6, 7, 8)


def test_a_rebased_schedule_goes_on_as_if_it_had_started_at_the_new_rate():
    from jscexp.train.stacked import LrSchedule

    cosine = compose_cfg([*SMALL, "max_epochs=8"]).scheduler
    schedule = LrSchedule([cosine, cosine], [0.1, 0.1])
    schedule(3)
    schedule.rebase(0, 0.05)
    fresh = LrSchedule([cosine], [0.05])
    assert schedule(5)[0] == fresh(5)[0] and schedule(5)[1] != fresh(5)[0]


def _pbt_group(workdir, experiment: str, space: str = LR_WD, trials=None, extra=(), keys=LR_WD_KEYS) -> dict[str, dict]:
    """Four members of one stacked group under PBT (every epoch, 3 epochs), in-process; per
    member (by its initial learning rate): knob metrics, val_acc per epoch, tags, metrics."""
    from hydra import compose, initialize_config_dir

    from conftest import CONF, mlflow_client, runs_of
    from jscexp.job import run
    from jscexp.sweep import group_override

    common = ["dataset=jsc_synth", "dataset.n_rows=6000", "max_epochs=3", "trainer.progress_bar=false", "data_seed=0",
              f"experiment={experiment}", "pbt.interval=1", f"+pbt.space={space}", *extra]
    trials = trials or [[f"learning_rate={lr}"] for lr in (1e-4, 1e-3, 1e-2, 1e-1)]
    group = [*common, group_override(trials)]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        run(compose("config", overrides=group), workdir / experiment, group)
    client = mlflow_client(workdir)
    out = {}
    for r in runs_of(workdir, experiment):
        series = {k: [m.value for m in sorted(client.get_metric_history(r.info.run_id, k), key=lambda m: m.step)]
                  for k in ("val_acc", *keys)}
        out[r.data.params["learning_rate"]] = {"series": series, "tags": r.data.tags, "run_id": r.info.run_id,
                                               "metrics": r.data.metrics}
    return out


def test_a_pbt_group_records_each_members_knobs_and_lineage_and_repeats_itself(workdir):
    first, again = _pbt_group(workdir, "pbt_a"), _pbt_group(workdir, "pbt_b")
    ids = {m["run_id"]: lr for lr, m in first.items()}
    lineage = {lr: {k: v for k, v in m["tags"].items() if k.startswith("jscexp.pbt.epoch_")} for lr, m in first.items()}
    assert sum(len(v) for v in lineage.values()) == 2  # one copy (the worst quarter of 4) after epochs 0 and 1
    for lr, member in first.items():
        assert len(member["series"]["pbt.learning_rate"]) == 3 and len(member["series"]["val_acc"]) == 3
        if lineage[lr]:
            assert member["tags"]["jscexp.pbt.copied_from"] in ids  # a member of the same population
            epoch = int(max(lineage[lr]).rsplit("_", 1)[1])
            assert member["series"]["pbt.learning_rate"][epoch + 1] != member["series"]["pbt.learning_rate"][epoch]
    assert float(first["0.0001"]["series"]["pbt.learning_rate"][0]) == 1e-4  # each starts from its own knobs
    # the same seed: the same decisions (who copied whom) and the same numbers
    for lr, member in first.items():
        assert member["series"] == again[lr]["series"], lr
        copied = member["tags"].get("jscexp.pbt.copied_from")
        assert (ids[copied] if copied else None) == ({m["run_id"]: k for k, m in again.items()}
                                                     .get(again[lr]["tags"].get("jscexp.pbt.copied_from")))


def test_a_bit_width_population_is_tested_with_each_members_widths_of_its_best_epoch(workdir):
    members = _pbt_group(workdir, "pbt_bits", "{quantisation.weight_width:{low:3,high:8,integer:true}}",
                         [[f"learning_rate={lr}", f"quantisation.weight_width={w}"] for lr, w in
                          ((1e-3, 3), (1e-2, 4), (3e-2, 6), (1e-1, 8))], QAT, ("pbt.quantisation.weight_width",))
    moved = 0
    for member in members.values():
        widths, val = member["series"]["pbt.quantisation.weight_width"], member["series"]["val_acc"]
        moved += len(set(widths)) > 1
        best = max(range(len(val)), key=lambda e: (val[e], -e))  # the first epoch with the best val_acc
        assert member["metrics"]["avg_weight_bits"] == widths[best]  # every Linear weight at that width
    assert moved >= 1  # an exploit changed some member's width


def test_a_pbt_sweep_puts_its_best_members_schedule_on_the_parent(workdir):
    from conftest import mlflow_client, run_cli, runs_of

    result = run_cli(["-m", "+sweep=pbt_lr_wd", "dataset=jsc_synth", "dataset.n_rows=6000", "max_epochs=3",
                      "trainer.progress_bar=false", "pbt.interval=1", "learning_rate=1e-4,1e-1",
                      "optimizer.weight_decay=0,1e-3"], workdir)
    assert result.returncode == 0, result.stderr[-2000:]
    runs = runs_of(workdir, "pbt_lr_wd")
    (parent,) = [r for r in runs if r.data.tags.get("jscexp.kind") == "sweep"]
    members = [r for r in runs if r is not parent]
    assert len(members) == 4 and len({r.data.tags["jscexp.vector_group"] for r in members}) == 1  # one population
    best = next(r for r in members if r.info.run_id == parent.data.tags["jscexp.best_run_id"])
    client = mlflow_client(workdir)
    knobs = list(zip(*([m.value for m in sorted(client.get_metric_history(best.info.run_id, k), key=lambda m: m.step)]
                       for k in ("pbt.learning_rate", "pbt.optimizer.weight_decay"))))
    schedule = parent.data.tags["jscexp.pbt.best_schedule"]
    assert len(knobs) == 3 and schedule.startswith(f"from epoch 0: learning_rate={knobs[0][0]:.4g}, ")
    assert schedule.count("from epoch") == 1 + sum(a != b for a, b in zip(knobs, knobs[1:]))  # one entry per change
    assert "Its schedule (population-based training)" in parent.data.tags["mlflow.note.content"]
    # the population's picture and its exploit events, one row per lineage tag of its members
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"population.png", "population_exploits.csv", "training_curves.png"} <= artifacts
    table = Path(client.download_artifacts(parent.info.run_id, "table.md", str(workdir))).read_text()
    assert "pbt.learning_rate" in table and "pbt.optimizer.weight_decay" in table  # the knobs each ended with
    events = Path(client.download_artifacts(parent.info.run_id, "population_exploits.csv", str(workdir))).read_text()
    lineage = sum(k.startswith("jscexp.pbt.epoch_") for r in members for k in r.data.tags)
    assert events.splitlines()[0] == "member,after_epoch,exploit" and len(events.splitlines()) == 1 + lineage >= 2


def test_a_diverged_member_copies_a_top_one_and_trains_on(workdir):
    """A member whose loss went non-finite ranks last: at the next exploit it takes a top
    member's state and knobs and trains its remaining epochs (no diverged tag in the end)."""
    members = _pbt_group(workdir, "pbt_nan", trials=[[f"learning_rate={lr}"] for lr in (1e-3, 1e-2, 1e-1, 1e3)],
                         extra=["model=mlp", "optimizer=sgd"])
    revived = members["1000.0"]
    assert "jscexp.pbt.epoch_0" in revived["tags"] and "jscexp.diverged" not in revived["tags"]
    assert len(revived["series"]["val_acc"]) == 3 and math.isfinite(revived["series"]["val_acc"][-1])
    assert revived["series"]["pbt.learning_rate"][1] <= 0.2  # a top member's rate, explored
