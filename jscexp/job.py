"""The one job path: a job is a group of K trials (a single run is a group of one).

One preparation checks every trial's knobs, the tracking store, what a resumed sweep already
finished, the data and each trial's model and quantisation; a trial's own bad input ends
that trial FAILED with its one-line reason (alone, the job's error: exit 2, no run) and its
group mates go on. Trials that can share a stacked model train together
(``jscexp.group``); any other trial trains alone, on the same epoch loop
(``jscexp.train.loop.fit``). Every trial's MLflow run is held by one ``ExitStack`` and every
trial ends with a typed ``Outcome``.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import os
import sys
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from jscexp import app, intrain
from jscexp.analysis import check
from jscexp.config import TRAINING_MODES, is_plumbing, plain
from jscexp.data import Splits
from jscexp.data.source import RECIPE
from jscexp.errors import UserError
from jscexp.group import engine_for, stacked_batches
from jscexp.quant.transform import quantise, uses_auto_frac
from jscexp.sweep import GROUP_KEY, Interrupted, Outcome, trial_overrides
from jscexp.sweep.configs import split_overrides, with_values
from jscexp.sweep.overrides import override_key
from jscexp.timeline import mark
from jscexp.tracking import tracking_uri
from jscexp.tracking.resume import earlier_runs, end_orphans, finished_float_run
from jscexp.tracking.shared import end_if_running
from jscexp.tracking.store import PARENT_ENV, check_reachable
from jscexp.train import fit
from jscexp.train.checkpoint import load_weights, saved_recipe
from jscexp.train.loop import Snapshot
from jscexp.train.process import job_state
from jscexp.train.snapshots import StateFile, float_key, training_key
from jscexp.validate import check_batch_fits

CONF = Path(__file__).resolve().parent.parent / "conf"  # where __main__'s config_path points


@dataclass
class Trial:
    """One trial of a job: its config and overrides, what preparation made of it, its end."""

    cfg: DictConfig
    overrides: list[str]
    out_dir: Path
    outcome: Outcome | None = None
    error: UserError | None = None
    model: torch.nn.Module | None = None
    quantised: tuple | None = None  # (quantised GraphModule, node changes)
    rng: dict = field(default_factory=dict)  # the RNG state right after its model's init
    splits: Splits | None = None
    calibration: torch.Tensor | None = None
    state: StateFile | None = None  # where its training state goes each epoch (trainer.resume)
    resume: Snapshot | None = None  # the state it goes on from
    run_id: str | None = None
    lost_runs: list[str] = field(default_factory=list)  # its earlier runs whose process died
    keeps_state: bool = True  # saves and resumes its training state (not a refilled trial: jscexp.intrain.halving)

    @property
    def start_epoch(self) -> int:
        return self.resume.epoch + 1 if self.resume else 0

    def keep(self, snapshot: Snapshot, run_id: str | None = None) -> None:
        """Saves its state after an epoch, with the run that recorded it (its own by default)."""
        if self.state is not None:
            snapshot.run_id = run_id or self.run_id
            self.state.save(snapshot)

    @property
    def pending(self) -> bool:
        return self.outcome is None

    @property
    def net(self) -> torch.nn.Module:
        """What it trains or runs: the quantised model in QAT, else the float one."""
        net = self.quantised[0] if self.quantised and self.cfg.mode == "qat" else self.model
        assert net is not None, "a trial's model is made in prepare()"
        return net

    @property
    def data(self) -> Splits:
        assert self.splits is not None, "a training trial's data is loaded in prepare()"
        return self.splits

    def fail(self, err: UserError) -> None:
        self.error, self.outcome = err, Outcome.failed(str(err))


def run(cfg: DictConfig, out_dir: Path, overrides: list[str], launch_dir: Path | None = None) -> Outcome | list[Outcome]:
    """Runs a job: its outcome, or a group job's, one per trial and then one per trial it asked
    the search for itself (refill). Bad input of a single job and the job's own setup errors (an
    unreachable store) raise ``UserError``. The job runs in the process state its trainer config
    sets, and leaves the process as it found it. ``launch_dir``: where the command ran, which
    its relative paths are from (the job may run elsewhere: ``hydra.job.chdir``)."""
    with job_state(cfg.trainer.num_threads, bool(cfg.trainer.deterministic)):
        return _run(anchored(cfg, launch_dir or Path.cwd()), out_dir, overrides, launch_dir or Path.cwd())


def anchored(cfg: DictConfig, launch_dir: Path) -> DictConfig:
    """The config with the paths a user gave taken from ``launch_dir`` also when the job runs in
    its output folder (``hydra.job.chdir=True``, as the official Optuna sweeper's examples do):
    the SQLite MLflow store (else each job would start a store of its own), dataset.path, ckpt."""
    if Path.cwd() == launch_dir:
        return cfg

    out = cfg.copy()
    if (uri := tracking_uri(cfg.mlflow.tracking_uri, base=launch_dir)).startswith("sqlite:"):
        out.mlflow.tracking_uri = uri
    for key in ("dataset.path", "ckpt"):
        if value := OmegaConf.select(cfg, key):
            OmegaConf.update(out, key, str(launch_dir / Path(value).expanduser()))
    return out


def _run(cfg: DictConfig, out_dir: Path, overrides: list[str], launch_dir: Path) -> Outcome | list[Outcome]:
    mark("job_start")  # make bench: a job's time besides its steps
    group = bool(cfg.get(GROUP_KEY))
    cfg = cfg if group else with_checkpoint_recipe(cfg, overrides)
    each = trial_overrides(cfg, overrides)
    common = len(overrides) - 1  # a trial's overrides: the group job's, less the group, then its own
    trials = [Trial(anchored(_trial_config(cfg, o, o[common:]), launch_dir) if group else cfg, o,
                    out_dir / f"trial_{i}" if group else out_dir) for i, o in enumerate(each)]
    uri = prepare(trials)
    if not group and trials[0].error is not None:
        raise trials[0].error
    for err in (t.error for t in trials if t.error is not None):
        print(f"error: {err}", file=sys.stderr)
    if any(t.pending for t in trials) and not os.environ.get(PARENT_ENV):  # bad input opens no store;
        _end_orphans(uri, trials)  # a sweep's callback does this once for all its jobs

    joined: list[Trial] = []  # trials the group asked the search for itself (jscexp.intrain.halving)
    for batch in stacked_batches([t for t in trials if t.pending]):
        try:
            execute(batch, uri, joined)
        except Exception as err:  # its runs are ended FAILED; alone, the job's own failure
            if not group:
                raise
            _end_pending([*batch, *joined], Outcome.of_exception(err))
        except KeyboardInterrupt:
            if not group:
                raise
            raise Interrupted(_ended([*trials, *joined])) from None  # what had ended keeps its outcome
    mark("job_end")
    if not group:
        assert trials[0].outcome is not None, "a job ends with an outcome"
        return trials[0].outcome
    outcomes = _ended([*trials, *joined])
    assert len(outcomes) == len(trials) + len(joined), "every trial ends with an outcome"
    return outcomes


def with_checkpoint_recipe(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """A checkpoint knows the model and data recipe it was trained with: a command with ckpt=
    that names neither (no ``model=``/``model.…``, no ``dataset…``) takes them from it."""
    if not cfg.get("ckpt"):
        return cfg
    named = {override_key(o).split(".")[0] for o in overrides}
    saved = {group: values for group, values in saved_recipe(Path(cfg.ckpt)).items() if group not in named}
    if not saved:
        return cfg
    out = cfg.copy()
    with open_dict(out):
        for group, values in saved.items():  # where it caches and downloads stays this machine's
            here = plain(out[group], resolve=False)
            same = here.get("_target_") == values.get("_target_")  # else only the recipe's plumbing applies
            kept = {k: v for k, v in here.items() if is_plumbing(f"{group}.{k}") and (same or k in RECIPE)}
            out[group] = {**kept, **values}
    taken = ", ".join(f"{g}={v.get('name')}" for g, v in saved.items())
    print(f"from the checkpoint: {taken} (name them on the command line to choose others)")
    return out


def _end_pending(trials: list[Trial], outcome: Outcome) -> None:
    """An error broke off a batch: its trials still pending end with it; a trial that was pruned
    or finished before keeps its outcome (written once)."""
    for t in (t for t in trials if t.pending):
        t.outcome = outcome
        print(f"error: {' '.join(t.overrides)}: {outcome.reason}", file=sys.stderr)


def _ended(trials: list[Trial]) -> list[Outcome]:
    """The outcomes of the trials that have one, each with its trial's overrides."""
    return [replace(t.outcome, overrides=list(t.overrides)) for t in trials if t.outcome is not None]


def _trial_config(group_cfg: DictConfig, overrides: list[str], own: list[str]) -> DictConfig:
    """A trial's config as its own job's would be (``overrides``: all of them; ``own``: the
    trial's). A sweeper's group differs only in vector knobs: the group's config, less the
    group, with the trial's knobs set. A hand-made group may choose other configs per
    trial: composed in full."""
    shaping, values = split_overrides(own)
    if shaping:
        from hydra import compose

        return compose("config", overrides=overrides)
    return with_values(group_cfg, [f"~{GROUP_KEY}", *values])


def prepare(trials: list[Trial]) -> str:
    """Everything checked before any run exists; returns the tracking URI."""
    for t in trials:
        _guard(t, lambda t=t: app.check_job(t.cfg))
    uri = tracking_uri(trials[0].cfg.mlflow.tracking_uri)
    check_reachable(uri)  # the job's own: no trial can run without it
    _skip_finished(trials, uri)
    data: dict[str, object] = {}
    for t in (t for t in trials if t.pending):
        _guard(t, lambda t=t: _prepare_trial(t, data))
    return uri


def _end_orphans(uri: str, trials: list[Trial]) -> None:
    """Runs a process now gone left RUNNING (``jscexp.tracking.resume.end_orphans``), before this
    job's own; those its trials go on from are theirs to end, pointing at the runs that resume them."""
    claimed = {r for t in trials for r in [*t.lost_runs, *([t.resume.run_id] if t.resume else [])] if r}
    end_orphans(uri, claimed)


def _guard(t: Trial, step) -> None:
    if t.pending:
        try:
            step()
        except UserError as err:
            t.fail(err)


def _skip_finished(trials: list[Trial], uri: str) -> None:
    """In a resumed sweep, a trial that finished before ends with that run's metrics; the
    runs its dead process left RUNNING are noted, to be ended once its new run exists."""
    for t in (t for t in trials if t.pending):
        earlier = earlier_runs(uri, t.overrides)
        t.lost_runs = earlier.lost
        if earlier.run_id is not None:
            print(f"already finished in this sweep (run {earlier.run_id}): skipped")
            t.outcome = Outcome.finished(earlier.metrics, earlier.run_id)


def _prepare_trial(t: Trial, data: dict) -> None:
    """Data (shared by trials with the same dataset), model, calibration, quantisation, and the
    analysis spec checked against the model (once per model shape)."""
    cfg = t.cfg
    qcfg = plain(cfg.quantisation)
    t.model, t.rng = app.initial_model(cfg)
    if cfg.mode != "transform" or uses_auto_frac(qcfg):
        key = OmegaConf.to_yaml(cfg.dataset, resolve=True)
        if key not in data:
            from jscexp.data import load_splits

            data[key] = load_splits(cfg.dataset)
        t.splits = data[key]
        t.calibration = torch.from_numpy(t.splits.x_train[: int(cfg.analysis.num_samples)])
    if cfg.mode in TRAINING_MODES or (cfg.mode == "ptq" and not cfg.ckpt):
        check_batch_fits(int(cfg.batch_size), len(t.data.y_train))
        _find_state(t)
    t.quantised = quantise(t.model, qcfg, t.calibration) if qcfg["name"] != "none" else None  # validates it
    if cfg.hardware.export and t.quantised is not None:
        from jscexp.export import check_exportable

        check_exportable(t.quantised[0])
    intrain.check(t)
    spec = plain(cfg.analysis)
    checked = ("analysis", repr(t.model), repr(spec))  # a group's trials share a model's shape
    if checked not in data:
        check(t.model, spec)
        data[checked] = True


def _find_state(t: Trial) -> None:
    """Where a training trial keeps its state, and the state it goes on from, if any."""

    if not t.cfg.trainer.resume or not t.keeps_state or not intrain.kind_of(t.cfg).resumes(t.cfg):  # a refill, a population
        return
    key = (float_key if t.cfg.mode == "ptq" else training_key)(t.cfg, app.code_version())  # PTQ trains a float model
    t.state = StateFile(Path(t.cfg.trainer.state_dir), key)
    t.resume = t.state.load()
    if t.resume is not None:
        print(f"resuming {' '.join(t.overrides) or 'the run'} after epoch {t.resume.epoch} ({t.state.path})")


def execute(trials: list[Trial], uri: str, joined: list[Trial] | None = None) -> None:
    """Runs ``trials`` (several only when they train as one stacked model), each in its own
    MLflow run; every run ends when the batch does: FINISHED, or FAILED/KILLED with the error.
    Trials the batch asks the search for itself (refill) are added to ``joined``."""
    group = {"jscexp.vector_group": uuid.uuid4().hex[:12]} if len(trials) > 1 else {}
    with contextlib.ExitStack() as runs:
        opened = [runs.enter_context(app.open_run(t.cfg, uri, t.model, t.splits, t.overrides, t.out_dir,
                                                         {**group, **_resumed(t)}))
                  for t in trials]
        for t, run_ in zip(trials, opened):
            t.run_id = run_.run_id
            _end_lost_runs(t, uri)
        trained = list(zip(trials, opened))
        if trials[0].cfg.mode in TRAINING_MODES:
            trained = train(trials, opened, runs, uri, group, [] if joined is None else joined)
        else:
            (t,), (run_,) = trials, opened
            t.outcome = app.run_mode(t.cfg, t.model, t.quantised, t.splits, t.calibration, run_, t.out_dir,
                                     lambda model: float_model(t, model, uri))
    for t, run_ in trained:  # their runs ended: what they trained is in the store now
        if t.state is not None:
            t.state.drop()
        print(_headline(t, run_))


_HEADLINE = ("test_acc", "best_val_acc", "float_test_acc", "acc_drop")
_COSTS = ("avg_weight_bits", "ebops")  # a quantised model's, and its estimator's: a float one's bits say nothing


def _headline(t: Trial, run_) -> str:
    """One line per finished run: its headline metrics, its id and where to open it."""
    from jscexp.quant.estimators import make_estimator

    assert t.outcome is not None
    estimator = make_estimator(t.cfg.hardware.get("estimator"))
    costs = (*_COSTS, *(estimator.metrics if estimator else ()))
    keys = _HEADLINE + (costs if t.cfg.quantisation.name != "none" else ())
    numbers = " ".join(f"{k}={_number(t.outcome.metrics[k])}" for k in keys if k in t.outcome.metrics)
    return f"{t.outcome.status.value}: {numbers or 'no metrics'} · run {run_.run_id} · {run_.link}"


def _number(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"  # 15016, not 1.502e+04


def _end_lost_runs(t: Trial, uri: str) -> None:
    """Runs of this trial that a killed process could not end: KILLED, pointing at the new one."""
    if t.resume and t.resume.run_id:
        end_if_running(uri, t.resume.run_id, f"lost after epoch {t.resume.epoch}: resumed in run {t.run_id}", t.run_id)
    for run_id in t.lost_runs:
        end_if_running(uri, run_id, f"lost: its process died; run again as run {t.run_id}", t.run_id)


def _resumed(t: Trial) -> dict:
    return {"jscexp.resumed_after_epoch": t.resume.epoch} if t.resume else {}


def train(trials: list[Trial], runs: list, stack: contextlib.ExitStack, uri: str, tags: dict,
          joined: list[Trial]) -> list[tuple]:
    """Trains the trials together (one stacked model, or one plain model when alone) and
    finishes each: a pruned one with its epochs so far, the others tested and recorded. The
    group's in-training search (``jscexp.intrain``: PBT, refilling pruned slices) acts between
    epochs; trials it asks for are added to ``joined``. Returns every (trial, run) that trained."""
    engine = engine_for(trials)
    slots = intrain.Slots(trials, runs)

    def open_joined(t: Trial, extra: dict):
        run_ = stack.enter_context(app.open_run(t.cfg, uri, t.model, t.splits, t.overrides, t.out_dir,
                                                {**tags, **extra}))
        t.run_id = run_.run_id
        return run_

    search = intrain.start(intrain.Group(trials, slots, engine, _joiner(trials[0], joined), open_joined))
    resume = [t.resume for t in trials if t.resume is not None] or None  # a batch starts from one epoch
    try:
        results = fit.train(trials[0].cfg, engine, trials[0].data, slots.hook, resume, slots.keep,
                            [int(t.cfg.max_epochs) for t in trials], search.after_epoch)
        for k, (t, run_, result) in enumerate(zip(slots.trials, slots.runs, results)):
            if t.outcome is None:  # else pruned, ended by its epoch hook
                search.before_test(t, k, result)
                _finish(t, k, run_, result)
            search.ended(t)
    except BaseException as err:
        search.close(err)
        raise
    search.close(None)
    return slots.trained


def _finish(t: Trial, k: int, run_, result) -> None:
    t.net.load_state_dict(result.best_state)
    t.outcome = app.finish_training(t.cfg, t.net, t.splits, run_, t.out_dir, result, t.calibration, t.quantised,
                                    show=k == 0)  # a stacked group's trials share one histogram


def _joiner(first: Trial, joined: list[Trial]):
    """How a group takes in a trial its search asked for (``join(values, number)``): the first
    trial's config with the asked knob values and Optuna trial number, checked and prepared as
    any trial (on the group's data), its ``error`` set if bad; added to ``joined``."""
    data: dict[str, object] = {OmegaConf.to_yaml(first.cfg.dataset, resolve=True): first.splits}

    def join(values: list[str], number: int) -> Trial:
        asked = {override_key(v) for v in values} | {"optuna.trial"}
        common = [o for o in first.overrides if override_key(o) not in asked]
        t = Trial(with_values(first.cfg, [*values, f"optuna.trial={number}"]), [*common, *values, f"+optuna.trial={number}"],
                  first.out_dir.parent / f"trial_{number}", keeps_state=False)
        joined.append(t)
        _guard(t, lambda: app.check_job(t.cfg))
        _guard(t, lambda: _prepare_trial(t, data))
        return t

    return join


def float_model(t: Trial, model: torch.nn.Module, uri: str) -> tuple[dict[str, float], str] | int:
    """PTQ without ckpt=: puts the float model of ``t``'s config into ``model`` — a finished
    float run's of the experiment (a mode=train run or another PTQ job's) if there is one,
    else trained here in a run of its own. Returns its metrics and run id, or the epoch the
    search pruned it at. A lock keeps parallel jobs of one sweep from training it twice."""
    key = float_key(t.cfg, app.code_version())
    with _lock(Path(t.cfg.trainer.state_dir) / f"{key}.float.lock"):
        found = finished_float_run(uri, t.cfg.experiment, key)
        if found is None:
            return _train_float(t, model, uri)
    checkpoint = Path(found.checkpoint)
    if not checkpoint.is_file():  # trained on another machine: its artifact
        from jscexp.tracking.store import client

        checkpoint = Path(client(uri).download_artifacts(found.run_id, "checkpoints/best.ckpt", str(t.out_dir)))
    load_weights(model, checkpoint, t.cfg.model.name)
    print(f"float model: run {found.run_id}'s (same training), not trained again")
    return found.metrics, found.run_id


def _train_float(t: Trial, model: torch.nn.Module, uri: str) -> tuple[dict[str, float], str] | int:
    """Trains ``t``'s float model in a mode=train run of its own, leaving its best epoch's weights in ``model``."""
    cfg = copy.deepcopy(t.cfg)
    with open_dict(cfg):  # the train run's config: quantisation=none as conf/ has it
        cfg.mode, cfg.quantisation = "train", OmegaConf.load(CONF / "quantisation" / "none.yaml")
    overrides = [*(o for o in t.overrides if override_key(o) != "mode" and not override_key(o).startswith("quantisation")),
                 "mode=train"]
    out_dir = t.out_dir / "float"
    with app.open_run(cfg, uri, model, t.splits, overrides, out_dir) as run_:
        hooks = app.epoch_hooks(cfg, run_)  # its run's, not the PTQ trial's: a pruned float model ends only its run
        (result,) = fit.train(cfg, fit.plain_engine(cfg, model, t.rng), t.data,
                              lambda _, epoch, metrics: any([each(epoch, metrics) for each in hooks]),
                              [t.resume] if t.resume else None, lambda _, snapshot: t.keep(snapshot, run_.run_id))
        if result.pruned_at is not None:
            app.end_pruned(run_, result.pruned_at)
            return result.pruned_at
        model.load_state_dict(result.best_state)
        outcome = app.finish_training(cfg, model, t.splits, run_, out_dir, result, t.calibration)
    print(f"float model trained in run {run_.run_id} · {run_.link}")
    return outcome.metrics, run_.run_id


@contextlib.contextmanager
def _lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
