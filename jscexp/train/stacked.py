"""Vectorised trials: K configs of one architecture trained together as one stacked model.

The K models' parameters are stacked along a new leading trial dimension into one [K, P]
tensor, their buffers into [K, ...] tensors (each trial keeps its own BatchNorm statistics),
and the layers run batched over K, QAT's integer quantisers and Dropout with per-trial widths
and p. ``StackedOptimizer``
is torch's Adam / AdamW / SGD written over that dimension, with a [K] tensor per
hyperparameter. All trials see the same batches; a step costs little more
for K trials than for one, since a tiny model's step is framework overhead, not arithmetic.

A trial whose loss turns non-finite is masked: its slice stops changing and stops being
reported, and no other trial's numbers depend on it.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn
from torch.nn import functional as F

from jscexp.quant._base import ROLE_ATTRS, StackedForm
from jscexp.quant.cost import sum_ebops
from jscexp.quant.layers import BatchNormQ, LinearQ, ReLUQ, batch_statistics
from jscexp.quant.learned import beta_ramp
from jscexp.train.loop import Tally, measure, trial_losses


class StackedModel:
    """K copies of one architecture as stacked tensors; ``forward`` gives [K, batch, classes].

    A chain of Linear / BatchNorm1d / ReLU (every registry model; ``stack_blocker`` keeps any
    other model out of a group) runs as batched matmuls and one batch norm over K x channels,
    3x faster than ``vmap(functional_call)``. The chain may be quantised (QAT's LinearQ / ReLUQ /
    BatchNormQ, the last computing its folded scale and shift) with integer quantisers whose widths
    differ per trial, or learned formats, and hold Dropout layers whose p differs
    per trial: trial k draws its masks from ``generators[k]`` as F.dropout would from the
    global generator, so a CPU trial started from its lone run's RNG state draws its masks.
    """

    def __init__(self, models: Sequence[torch.nn.Module], generators: Sequence[torch.Generator] | None = None):
        # QAT models are fx GraphModules, each of its own class: stack by name, not by class
        def stacked(named) -> dict[str, torch.Tensor]:
            per_model = [dict(named(m)) for m in models]
            return {name: torch.stack([d[name].detach() for d in per_model]) for name in per_model[0]}

        params, buffers = stacked(nn.Module.named_parameters), stacked(nn.Module.named_buffers)
        self.k = len(models)
        # One [K, P] leaf holds every parameter: the optimizer's step is a dozen tensor ops
        # whatever the number of layers; the layers read views of it.
        self._layout = [(name, v.shape[1:], v[0].numel()) for name, v in params.items()]
        self.flat = torch.cat([v.detach().reshape(self.k, -1) for v in params.values()], dim=1).requires_grad_(True)
        self.buffers = {k: v.detach().clone() for k, v in buffers.items()}
        self.base = copy.deepcopy(models[0]).to("meta")
        chain = linear_chain(self.base)
        quantisers = _stacked_quantisers(models, chain, self.flat.device) if chain else None
        if chain is None or quantisers is None:
            raise ValueError("a stacked model needs a Linear/BatchNorm1d/ReLU/Dropout chain with quantisers that stack")
        self._chain, self._quantisers = chain, quantisers
        self._dropout_p = {name: [float(m.get_submodule(name).p) for m in models]  # type: ignore[arg-type]
                           for name, layer in chain if isinstance(layer, nn.Dropout)}
        if self._dropout_p and (generators is None or len(generators) != self.k):
            raise ValueError("stacked dropout needs one torch.Generator per trial")
        self.generators = list(generators or [])

    @property
    def params(self) -> dict[str, torch.Tensor]:
        """Each parameter as a [K, ...] view of the flat leaf (made anew per step for autograd).

        One split, not a slice per parameter: its backward is one cat into the flat gradient,
        where slices each zero-fill and add a [K, P] tensor."""
        parts = self.flat.split([n for _, _, n in self._layout], dim=1)
        return {name: part.view(self.k, *shape) for (name, shape, _), part in zip(self._layout, parts)}

    def train(self, mode: bool = True) -> None:
        self.base.train(mode)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(x, self.params)

    def with_ebops(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits and each trial's EBOPs ([K]; ``jscexp.quant.cost.ebops`` of its lone model),
        differentiable in its learned widths (the β·EBOPs loss term)."""
        params = self.params
        return self._forward(x, params), self._ebops(params)

    @torch.no_grad()
    def ebops(self) -> list[float]:
        """Each trial's EBOPs at its widths now."""
        return self._ebops(self.params).tolist()

    def _ebops(self, params) -> torch.Tensor:
        """HGQ2's count counts every weight at its width, whatever its value: the widths and the
        weights' shapes are all it reads."""
        def of(name: str):
            w = params[f"{name}.weight"]
            return lambda role: self._widths(name, role, params[f"{name}.bias"] if role == "bias" else w, params)

        linears = ((params[f"{name}.weight"].shape, of(name)) for name, layer in self._chain if isinstance(layer, LinearQ))
        return sum_ebops(linears, torch.zeros(self.k, device=self.flat.device))

    def _forward(self, x: torch.Tensor, params) -> torch.Tensor:
        """[K, batch, classes]."""
        h = x.expand(self.k, *x.shape)
        for name, layer in self._chain:
            if isinstance(layer, nn.Linear):
                h = self._quantised(name, "data_in", h, params)
                w = self._quantised(name, "weight", params[f"{name}.weight"], params)
                b = self._quantised(name, "bias", params[f"{name}.bias"], params)
                h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
            elif isinstance(layer, nn.BatchNorm1d):
                h = self._quantised(name, "data_in", h, params)
                h = self._folded(name, layer, h, params) if isinstance(layer, BatchNormQ) \
                    else self._batch_norm(name, layer, h, params)
            elif isinstance(layer, nn.Dropout):
                h = self._dropout(name, h) if self.base.training else h
            else:
                h = torch.relu(self._quantised(name, "data_in", h, params))
        return h

    def _widths(self, name: str, role: str, like: torch.Tensor, params) -> torch.Tensor:
        quantiser = self._quantisers.get((name, role))
        if quantiser is None:
            return torch.tensor(float(self.flat.element_size() * 8))
        return quantiser.widths(like, params, self.buffers)

    def _dropout(self, name: str, h: torch.Tensor) -> torch.Tensor:
        """F.dropout's own arithmetic per trial: noise = bernoulli(1 - p) / (1 - p); h * noise."""
        noise = []
        for p, generator in zip(self._dropout_p[name], self.generators):
            if p in (0, 1):  # F.dropout draws nothing: its input untouched, or zeros
                noise.append(torch.full(h.shape[1:], 1.0 - p, device=h.device))
                continue
            keep = torch.empty(h.shape[1:], device=h.device).bernoulli_(1 - p, generator=generator)
            noise.append(keep.div_(1 - p))
        return h * torch.stack(noise)

    def _quantised(self, name: str, role: str, x: torch.Tensor, params) -> torch.Tensor:
        quantiser = self._quantisers.get((name, role))
        return x if quantiser is None else quantiser(x, params, self.buffers, self.base.training)

    def _batch_norm(self, name: str, layer: nn.BatchNorm1d, h: torch.Tensor, params) -> torch.Tensor:
        """Trial k's channel c is channel k*C+c of one batch norm: same statistics, one call."""
        k, batch, channels = h.shape
        flat = h.transpose(0, 1).reshape(batch, k * channels)
        training = self.base.training
        if training:
            self.buffers[f"{name}.num_batches_tracked"].add_(1)
        out = F.batch_norm(
            flat, self.buffers[f"{name}.running_mean"].view(-1), self.buffers[f"{name}.running_var"].view(-1),
            params[f"{name}.weight"].reshape(-1), params[f"{name}.bias"].reshape(-1),
            training, float(layer.momentum or 0.0), layer.eps,  # momentum: linear_chain refused None
        )
        return out.view(batch, k, channels).transpose(0, 1).contiguous()  # strided, ReLU and bmm run 3x slower

    def _folded(self, name: str, layer: nn.BatchNorm1d, h: torch.Tensor, params) -> torch.Tensor:
        """A quantised BatchNorm: x·s + t with each trial's folded scale and shift on their grids,
        from the batch's statistics while training, else the running ones (``BatchNormQ``'s)."""
        mean, var = self.buffers[f"{name}.running_mean"], self.buffers[f"{name}.running_var"]
        if self.base.training:
            k, batch, channels = h.shape
            self.buffers[f"{name}.num_batches_tracked"].add_(1)
            flat = h.transpose(0, 1).reshape(batch, k * channels)  # as the lone one's [batch, C], per column
            mean, var = (t.view(k, channels) for t in batch_statistics(
                flat, mean.view(-1), var.view(-1), float(layer.momentum or 0.0)))  # momentum: linear_chain refused None
        scale = params[f"{name}.weight"] / torch.sqrt(var + layer.eps)
        shift = params[f"{name}.bias"] - mean * scale
        scale, shift = self._quantised(name, "weight", scale, params), self._quantised(name, "bias", shift, params)
        return h * scale.unsqueeze(1) + shift.unsqueeze(1)

    def state_dict(self, trial: int) -> dict[str, torch.Tensor]:
        """Trial ``trial``'s weights under the single model's keys."""
        return {k: v[trial].detach().clone() for k, v in {**self.params, **self.buffers}.items()}

    @property
    def param_names(self) -> list[str]:
        return [name for name, _, _ in self._layout]

    def split_row(self, row: torch.Tensor) -> dict[str, torch.Tensor]:
        """One trial's [P] slice of a flat tensor (parameters, an optimizer buffer) by parameter name."""
        parts = row.detach().split([n for _, _, n in self._layout])
        return {name: part.clone().view(shape) for (name, shape, _), part in zip(self._layout, parts)}

    def join_row(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """``split_row`` undone: named tensors of one trial as its [P] slice."""
        return torch.cat([tensors[name].reshape(-1).to(self.flat.device) for name, _, _ in self._layout])

    @torch.no_grad()
    def copy_trial(self, dst: int, src: int) -> None:
        """Trial ``src``'s weights, BatchNorm statistics, dropout p and dropout RNG into trial
        ``dst``: from here on ``dst`` computes what ``src`` would."""
        self.flat[dst] = self.flat[src]
        for buffer in self.buffers.values():
            buffer[dst] = buffer[src]
        for p in self._dropout_p.values():
            p[dst] = p[src]
        if self.generators:
            self.generators[dst].set_state(self.generators[src].get_state())

    def set_dropout(self, trial: int, p: float) -> None:
        """Trial ``trial``'s dropout probability, in every Dropout layer."""
        for per_trial in self._dropout_p.values():
            per_trial[trial] = float(p)

    def set_quantisers(self, trial: int, model: nn.Module) -> None:
        """Trial ``trial`` quantises as ``model`` (a QAT model of the same chain) does: its widths."""
        for (name, role), stacked in self._quantisers.items():
            if not hasattr(stacked, "set"):
                continue  # learned widths are parameters: the slice's weights carry them
            stacked.set(trial, getattr(model.get_submodule(name), ROLE_ATTRS[role], None))

    def restart_trial(self, trial: int, model: nn.Module, generator: torch.Generator | None) -> None:
        """A new model in slice ``trial``: its weights and statistics, dropout p, quantiser
        widths and dropout RNG (``generator``'s state) — as if it had been stacked from the start."""
        self.load_trial(trial, model.state_dict())
        for name in self._dropout_p:
            self._dropout_p[name][trial] = float(model.get_submodule(name).p)  # type: ignore[arg-type]
        if self._quantisers:
            self.set_quantisers(trial, model)
        if self.generators and generator is not None:
            self.generators[trial].set_state(generator.get_state())

    @torch.no_grad()
    def load_trial(self, trial: int, state: dict[str, torch.Tensor]) -> None:
        """Puts a lone model's ``state_dict`` into trial ``trial``'s slice."""
        self.flat[trial] = self.join_row(state)
        for name, buffer in self.buffers.items():
            buffer[trial] = state[name]


def linear_chain(model: nn.Module) -> list[tuple[str, nn.Module]] | None:
    """The model's layers in order when its graph is one chain of Linear / BatchNorm1d / ReLU
    modules (float, or QAT's LinearQ / ReLUQ), each feeding the next; else None."""
    import torch.fx

    try:
        gm = model if isinstance(model, torch.fx.GraphModule) else torch.fx.symbolic_trace(model)
    except Exception:  # noqa: BLE001 — any model code fx cannot trace: vmap runs it instead
        return None
    chain, previous = [], None
    for node in gm.graph.nodes:
        if node.op == "placeholder" and previous is None:
            previous = node
        elif node.op == "call_module" and node.args == (previous,) and not node.kwargs:
            chain.append((node.target, gm.get_submodule(node.target)))
            previous = node
        elif not (node.op == "output" and node.args == (previous,)):
            return None
    plain_bn = all(m.affine and m.track_running_stats and m.momentum is not None
                   for _, m in chain if isinstance(m, nn.BatchNorm1d))
    if not chain or not plain_bn or not all(type(m) in _CHAIN_TYPES for _, m in chain):
        return None
    return chain


_CHAIN_TYPES = (nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Dropout, LinearQ, ReLUQ, BatchNormQ)


def _stacked_quantisers(models, chain, device) -> dict[tuple[str, str], StackedForm] | None:
    """Per (layer, role), the trials' quantisers stacked (each quantiser class's ``stack``);
    None when one cannot be stacked."""
    out: dict[tuple[str, str], StackedForm] = {}
    for name, _ in chain:
        for role, attr in ROLE_ATTRS.items():
            quantisers = [getattr(m.get_submodule(name), attr, None) for m in models]
            if all(q is None for q in quantisers):
                continue
            first = quantisers[0]
            if first is None or None in quantisers:
                return None
            stacked = type(first).stack(quantisers, f"{name}.{attr}", role, device)
            if stacked is None:
                return None
            out[(name, role)] = stacked
    return out


def _over(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A [K] hyperparameter viewed to broadcast over a stacked [K, ...] tensor."""
    return values.view(-1, *([1] * (like.dim() - 1)))


class StackedOptimizer:
    """torch.optim.Adam / AdamW / SGD over the trial dimension, one hyperparameter value per trial.

    The update formulas follow torch's single-tensor (CPU) implementations op for op, with
    the same roundings: torch's ``add(x, alpha=a)`` and ``addcmul`` are fused multiply-adds,
    so they are written as ``addcmul`` here; ``1 - beta`` and the bias corrections are made
    in double from Python floats, as torch makes them. On the CPU a trial's parameters then
    stay bit-identical to the same config trained alone (tests/test_stacked_optimizer.py).
    Per-trial values are [K] tensors made once (the bias corrections once per step), so a
    step's cost does not grow with K.
    """

    KINDS = ("Adam", "AdamW", "SGD")
    # the options followed per trial; any other must keep torch's default
    HANDLED = frozenset({"lr", "betas", "eps", "weight_decay", "momentum", "dampening", "nesterov", "foreach"})

    def __init__(self, params: dict[str, torch.Tensor], kind: str, hparams: list[dict]):
        if (reason := self.unsupported(kind, hparams)) is not None:
            raise ValueError(f"no stacked optimizer for {reason}")
        self.params, self.kind = params, kind
        self.device = next(iter(params.values())).device
        defaults = {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0, "momentum": 0.0, "dampening": 0.0,
                    "nesterov": False, **_torch_defaults(kind)}
        self._opts = [{key: h.get(key, default) for key, default in defaults.items()} for h in hparams]
        self._k: dict[str, torch.Tensor] = {}
        self._build()
        self.state: dict[str, dict[str, torch.Tensor]] = {name: {} for name in params}
        self.steps = [0] * len(hparams)  # per trial: Adam's bias corrections count a trial's own steps
        self._restarted: torch.Tensor | None = None  # trials whose next step is their first (refilled)
        self.lr = [h["lr"] for h in hparams]

    def _build(self) -> None:
        """The per-trial [K] tensors of every option but the learning rate."""
        opts = self._opts
        self._beta1, self._beta2 = [o["betas"][0] for o in opts], [o["betas"][1] for o in opts]
        self._weight_decay = [float(o["weight_decay"]) for o in opts]
        self._k.update({key: self._tensor([float(o[key]) for o in opts])
                        for key in ("weight_decay", "eps", "momentum", "nesterov")})
        self._k["beta2"] = self._tensor(self._beta2)
        # 1 - x in double, then float32: torch computes these from Python floats
        self._k["1-beta1"], self._k["1-beta2"] = (self._tensor([1 - b for b in bs]) for bs in (self._beta1, self._beta2))
        self._k["1-dampening"] = self._tensor([1 - float(o["dampening"]) for o in opts])

    def set_options(self, trial: int, options: dict) -> None:
        """Trial ``trial``'s options from its next step on (``weight_decay``, ``betas``,
        ``momentum``, …; the learning rate is ``lr``'s): population-based training's explore."""
        unknown = set(options) - set(self._opts[trial])
        if unknown:
            raise ValueError(f"{self.kind} has no option {sorted(unknown)[0]}")
        self._opts[trial] = {**self._opts[trial], **options}
        self._build()
        self.lr = self._lr  # AdamW's decay is lr x weight_decay

    @torch.no_grad()
    def copy_trial(self, dst: int, src: int) -> None:
        """Trial ``src``'s options and buffers (momentum, Adam's moments) into trial ``dst``'s
        (the learning rate is the schedule's)."""
        for buffers in self.state.values():
            for buffer in buffers.values():
                buffer[dst] = buffer[src]
        self.steps[dst] = self.steps[src]
        self.set_options(dst, self._opts[src])

    @torch.no_grad()
    def restart_trial(self, trial: int, hparams: dict) -> None:
        """Trial ``trial`` starts afresh with ``hparams`` (a new search trial in a freed slice):
        no buffers, no steps; its next step is what torch's first step would be."""
        for buffers in self.state.values():
            for buffer in buffers.values():
                buffer[trial] = 0
        self.steps[trial] = 0
        if self._restarted is None:
            self._restarted = torch.zeros(len(self.steps), dtype=torch.bool, device=self.device)
        self._restarted[trial] = True
        if (reason := self.unsupported(self.kind, [hparams])) is not None:
            raise ValueError(f"no stacked optimizer for {reason}")
        self.set_options(trial, {key: hparams[key] for key in self._opts[trial] if key in hparams})

    @classmethod
    def unsupported(cls, kind: str, hparams: list[dict]) -> str | None:
        """What keeps these trials' optimizers from being stacked, or None."""
        if kind not in cls.KINDS:
            return f"{kind}: vectorised trials support {', '.join(cls.KINDS)}"
        defaults = _torch_defaults(kind)
        for h in hparams:
            for key, value in h.items():
                if not key.startswith("_") and key not in cls.HANDLED and value != defaults.get(key, value):
                    return f"{kind}({key}={value})"
        return None

    def _tensor(self, values) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float32, device=self.device)

    @property
    def lr(self) -> list[float]:
        return self._lr

    @lr.setter
    def lr(self, values: list[float]) -> None:
        self._lr = list(values)
        self._k["lr"] = self._tensor(self._lr)
        self._k["decay"] = self._tensor([1 - lr * wd for lr, wd in zip(self._lr, self._weight_decay)])  # AdamW

    @torch.no_grad()
    def step(self, active: torch.Tensor) -> None:
        """One update of every active trial; masked trials keep their values exactly."""
        self.steps = [t + 1 for t in self.steps]
        if self.kind != "SGD":  # the bias corrections in double, as torch computes them from Python floats
            self._k["bc2_sqrt"] = self._tensor([(1 - b**t) ** 0.5 for b, t in zip(self._beta2, self.steps)])
            self._k["step_size"] = self._tensor([lr / (1 - b**t) for lr, b, t in zip(self._lr, self._beta1, self.steps)])
        for name, p in self.params.items():
            if p.grad is None:
                continue
            h = {key: _over(v, p) for key, v in self._k.items()}
            new = self._sgd(name, p, h) if self.kind == "SGD" else self._adam(name, p, h)
            p.copy_(torch.where(_over(active, p), new, p))
            p.grad = None
        self._restarted = None

    def _adam(self, name: str, p: torch.Tensor, h: dict[str, torch.Tensor]) -> torch.Tensor:
        grad, param = _grad(p), p.clone()
        if self.kind == "AdamW":
            param.mul_(h["decay"])
        else:
            grad = torch.addcmul(grad, h["weight_decay"], param)
        st = self.state[name]
        if not st:
            st["exp_avg"], st["exp_avg_sq"] = torch.zeros_like(p), torch.zeros_like(p)
        st["exp_avg"].lerp_(grad, h["1-beta1"])
        # torch's addcmul_(grad, grad, value=v) rounds as addcmul_(v * grad, grad) does (fused), not as v*g*g
        st["exp_avg_sq"].mul_(h["beta2"]).addcmul_(h["1-beta2"] * grad, grad)
        denom = (st["exp_avg_sq"].sqrt() / h["bc2_sqrt"]).add_(h["eps"])
        return param - h["step_size"] * st["exp_avg"] / denom

    def _sgd(self, name: str, p: torch.Tensor, h: dict[str, torch.Tensor]) -> torch.Tensor:
        grad = torch.addcmul(_grad(p), h["weight_decay"], p)
        st = self.state[name]
        if "momentum_buffer" not in st:  # torch's name: a trial's state reads as its lone run's
            st["momentum_buffer"] = grad.clone()
        else:
            st["momentum_buffer"].mul_(h["momentum"]).addcmul_(h["1-dampening"], grad)
            if self._restarted is not None:  # torch's first step takes the gradient undamped
                st["momentum_buffer"].copy_(torch.where(_over(self._restarted, p), grad, st["momentum_buffer"]))
        buf = st["momentum_buffer"]
        with_momentum = torch.where(h["nesterov"] != 0, torch.addcmul(grad, h["momentum"], buf), buf)
        return torch.addcmul(p, -h["lr"], torch.where(h["momentum"] != 0, with_momentum, grad))


def _grad(p: torch.Tensor) -> torch.Tensor:
    assert p.grad is not None, "step() only updates parameters that have a gradient"
    return p.grad


def _torch_defaults(kind: str) -> dict:
    params = inspect.signature(getattr(torch.optim, kind)).parameters
    return {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}


def train_epoch(model: StackedModel, optimizer: StackedOptimizer, batches, tally: Tally,
                active: torch.Tensor, max_steps: int | None = None, betas: torch.Tensor | None = None) -> int:
    """One pass of stacked steps over ``batches``; returns the number of steps taken. ``betas``
    [K]: each trial's β of the β·EBOPs term its learned widths add to the minimised loss."""
    model.train(True)
    steps = 0
    for steps, (x, y) in enumerate(batches, start=1):
        if betas is None:
            logits = model(x)
            minimised = losses = trial_losses(logits, y)
        else:
            logits, ebops = model.with_ebops(x)
            losses = trial_losses(logits, y)
            minimised = losses + betas * ebops
        # masked trials' losses may be NaN: keep them out of the sum that is differentiated
        torch.where(active, minimised, torch.zeros_like(losses)).sum().backward()
        optimizer.step(active)
        tally.update(logits, y, losses)
        if steps == max_steps:
            break
    return steps


class LrSchedule:
    """Each trial's learning rate per epoch, from torch's own scheduler, one per trial (each
    runs to its own last epoch: ``T_max`` follows the trial's ``max_epochs``)."""

    def __init__(self, schedulers: list[DictConfig], lrs: list[float]):
        self._configs, self.bases = list(schedulers), list(lrs)
        self.epochs_done = 0
        self._trials = [self._start(s, lr) for s, lr in zip(schedulers, lrs)]
        self._first = [0] * len(lrs)  # the group epoch each trial's own epoch 0 is (later for a refilled one)

    @property
    def first_epochs(self) -> list[int]:
        """The group epoch at which each trial's own epoch 0 fell."""
        return list(self._first)

    @staticmethod
    def _start(config: DictConfig, lr: float):
        holder = torch.optim.SGD([torch.zeros(1)], lr=lr)
        return holder, instantiate(config)(holder) if config.get("_target_") else None

    def _step(self, trial) -> None:
        holder, scheduler = trial
        if scheduler is not None:
            holder.step()  # torch warns about a scheduler stepped before its optimizer
            scheduler.step()

    def __call__(self, epoch: int) -> list[float]:
        while self.epochs_done < epoch:
            for trial, first in zip(self._trials, self._first):
                if self.epochs_done >= first:
                    self._step(trial)
            self.epochs_done += 1
        return [holder.param_groups[0]["lr"] for holder, _ in self._trials]

    def rebase(self, trial: int, lr: float) -> None:
        """Trial ``trial`` from now on as if it had started at learning rate ``lr``: its
        schedule (the cosine, say) goes on from the same epoch at the new scale."""
        self.bases[trial] = lr
        self._trials[trial] = self._start(self._configs[trial], lr)
        for _ in range(self.epochs_done - self._first[trial]):
            self._step(self._trials[trial])

    def copy_trial(self, dst: int, src: int) -> None:
        """Trial ``src``'s schedule for trial ``dst`` too."""
        self._configs[dst], self._first[dst] = self._configs[src], self._first[src]
        self.rebase(dst, self.bases[src])

    def restart(self, trial: int, scheduler: DictConfig, lr: float) -> None:
        """A new trial in slice ``trial`` whose epoch 0 is the group's next epoch."""
        self._configs[trial], self._first[trial] = scheduler, self.epochs_done + 1
        self.rebase(trial, lr)


class StackedEngine:
    """K trials' steps in one stacked model, for ``loop.fit``: each with its own learning rate
    per epoch (``lr_schedule(epoch)``); a stopped trial's slice is masked, not removed."""

    def __init__(self, model: StackedModel, optimizer: StackedOptimizer, lr_schedule: LrSchedule,
                 betas: list[float] | None = None, beta_warmup: int = 0):
        self.model, self.optimizer, self.lr_schedule = model, optimizer, lr_schedule
        self.k, self.device = model.k, model.flat.device
        self.betas = None if betas is None else torch.tensor(betas, dtype=torch.float32, device=self.device)
        self.beta_warmup, self._betas_now = beta_warmup, self.betas

    def start_epoch(self, epoch: int) -> None:
        self.optimizer.lr = self.lr_schedule(epoch)
        if self.betas is not None:  # each trial's own epoch: a refilled trial ramps from its start
            shares = [beta_ramp(epoch - first, self.beta_warmup) for first in self.lr_schedule.first_epochs]
            self._betas_now = self.betas * torch.tensor(shares, dtype=self.betas.dtype, device=self.device)

    def train_epoch(self, batches, tally: Tally, active: torch.Tensor, progress=None) -> None:
        train_epoch(self.model, self.optimizer, batches, tally, active, betas=self._betas_now)

    def evaluate(self, batches, tally: Tally) -> None:
        measure(self.model, batches, tally)

    def lrs(self) -> list[float]:
        return self.optimizer.lr

    def end_epoch(self) -> None:
        pass

    def widths_cost(self) -> list[dict[str, float]]:
        if self.betas is None:
            return [{}] * self.k
        return [{"epoch_ebops": e} for e in self.model.ebops()]

    def copy_trial(self, dst: int, src: int) -> None:
        """Slice ``src``'s whole state into ``dst``: weights, BatchNorm statistics, dropout RNG,
        optimizer buffers and step counts, learning-rate schedule."""
        for part in (self.model, self.optimizer, self.lr_schedule):
            part.copy_trial(dst, src)

    def set_knobs(self, trial: int, knobs: dict[str, float], quantised: nn.Module | None = None) -> None:
        """Slice ``trial``'s new knobs, in force from its next step: a new learning rate rebases
        its schedule; quantisation knobs (widths) take effect through ``quantised``, a QAT
        model built with them, whose quantisers the slice then uses."""
        for name, value in knobs.items():
            if name == "learning_rate":
                self.lr_schedule.rebase(trial, value)
            elif name == "model.dropout":
                self.model.set_dropout(trial, value)
            elif name.startswith("optimizer.") and name != "optimizer.lr":
                self.optimizer.set_options(trial, {name.removeprefix("optimizer."): value})
            elif not name.startswith("quantisation."):
                raise ValueError(f"a stacked slice cannot change {name}: "
                                 "learning_rate, optimizer.<option>, model.dropout or a quantisation knob")
        if quantised is not None:
            self.model.set_quantisers(trial, quantised)
        self.optimizer.lr = self.lr_schedule(self.lr_schedule.epochs_done)  # the new rate from the next step

    def restart_trial(self, trial: int, model: nn.Module, generator: torch.Generator | None, hparams: dict,
                      scheduler: DictConfig, beta: float = 0.0) -> None:
        """Slice ``trial`` trains a new trial from the next epoch on: ``model`` freshly
        initialised, the optimizer's state empty, its schedule from its own epoch 0, its β."""
        if self.betas is not None:
            self.betas[trial] = beta
        self.model.restart_trial(trial, model, generator)
        self.optimizer.restart_trial(trial, hparams)
        self.lr_schedule.restart(trial, scheduler, hparams["lr"])

    def state_dict(self, trial: int) -> dict[str, torch.Tensor]:
        return self.model.state_dict(trial)

    def snapshot(self, trial: int) -> dict:
        buffers = {name: self.model.split_row(t[trial]) for name, t in self.optimizer.state["flat"].items()}
        per_param = {p: {name: split[p] for name, split in buffers.items()} for p in self.model.param_names}
        # only a CPU generator is a lone run's global RNG (no generators: no dropout, no draws)
        lone = self.model.generators and self.device.type == "cpu"
        return {"model": self.state_dict(trial), "optimizer": {"steps": self.optimizer.steps[trial], "state": per_param},
                "rng": {"cpu": self.model.generators[trial].get_state() if lone else None}}

    def restore(self, states: list[dict], epochs_done: int) -> None:
        for k, state in enumerate(states):
            self.model.load_trial(k, state["model"])
            if self.model.generators and state["rng"].get("cpu") is not None and self.device.type == "cpu":
                self.model.generators[k].set_state(state["rng"]["cpu"])
        saved = [s["optimizer"]["state"] for s in states]
        names = {buffer for per_param in saved[0].values() for buffer in per_param}
        self.optimizer.state["flat"] = {
            name: torch.stack([self.model.join_row({p: b[name] for p, b in s.items()}) for s in saved]) for name in names
        }
        self.optimizer.steps = [s["optimizer"]["steps"] for s in states]
