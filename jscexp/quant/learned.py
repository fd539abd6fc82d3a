"""Learned fixed-point widths (HGQ, Sun et al., arXiv 2405.00645; as the hgq2 package learns
them): each value of a role has its own format, trained by gradient descent with the network
and pulled down by β·EBOPs.

A value's format is k sign bits (0 or 1), i integer and f fractional bits, width b = k + i + f
(HGQ2's ``SAT`` mode, whose EBOPs count the sign bit). The fractional bits f are the trained
parameter (one per value; one per feature for a layer's input). The integer bits follow
``int_bits``:
- ``fixed``: as configured (``width - frac_width``, sign included), for every value;
- ``value`` (weights, biases): the fewest that hold each value rounded to its f — a weight
  that rounds to 0 has width 0 and costs nothing (HGQ's rule for weights; HGQ2 trains them
  from there, SAT_SYM);
- ``traced`` (inputs): per feature from the data training sees, HGQ2's input quantiser: the
  sign bit once a negative value is seen (a ReLU's output stays unsigned), i the fewest that
  hold the batch's largest magnitude, falling by at most ``int_decay`` bits a step.
Forward: f rounded half to even; the value is fixed point with those bits, rounding half to even
and saturating like the integer quantiser; b ≤ 0 gives 0. Backward: the value's gradient passes
straight through inside the format's range; f's is HGQ's surrogate — the error δ = x − q halves
with each fractional bit, so ∂q/∂f = ln 2 · δ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from jscexp.errors import UserError
from jscexp.quant._base import ROLE_ATTRS, Quantiser, positive_int, quantised_tensor, ste
from jscexp.quant.integer import IntegerQuantiser
from jscexp.quant.penalty import check_beta, check_warmup

_LN2 = math.log(2.0)
MAX_WIDTH = 32  # the integer quantiser's limit; also keeps 2^f finite whatever a step does
INT_BITS = ("fixed", "value", "traced")


class _LearnedQuantise(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, width, int_bits, k):
        """``width`` b and ``int_bits`` k + i (integers, as floats), ``k`` the sign bit (1 or 0):
        each broadcasting over ``x``; ``width`` carries f's gradient."""
        f = width - int_bits
        steps = torch.round(x * torch.exp2(f))
        magnitude = torch.exp2(width - k)
        low, high = -k * magnitude, magnitude - 1
        q = torch.minimum(torch.maximum(steps, low), high) * torch.exp2(-f) * (width > 0)
        # the value's gradient passes where it rounds into the range (the integer quantiser's
        # rule); at width 0, where it would round into the range of its integer bits (so a
        # weight at 0 bits still learns)
        bound = torch.exp2(int_bits - k)
        inside = torch.where(width > 0, (steps >= low) & (steps <= high), (x >= -k * bound) & (x < bound))
        ctx.save_for_backward(inside, (x - q) * _LN2)
        ctx.width_shape = width.shape
        return q

    @staticmethod
    def backward(ctx, grad):
        inside, dq_db = ctx.saved_tensors
        grad_width = grad * dq_db * inside
        return grad * inside, grad_width.sum_to_size(ctx.width_shape), None, None


@dataclass(frozen=True)
class Rule:
    """How a role's format is made (the same for a lone quantiser and K stacked ones)."""

    int_bits: str  # one of INT_BITS
    fixed_int: int  # k + i where int_bits is fixed
    signed: bool  # k where int_bits is fixed or value
    rate: float
    decay: float  # traced: most bits i falls per training step

    def frac(self, scaled: torch.Tensor) -> torch.Tensor:
        """f in force (rounded half to even), with f's gradient passing straight through."""
        f = scaled * self.rate
        return ste(f, torch.round(f.clamp(-MAX_WIDTH, MAX_WIDTH)))

    def value_int(self, x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        """k + i for each value of ``x`` on its own grid: the bits of |n|, n = round(x·2^f)
        (a negative n needs those of |n| − 1 beside the sign); width 0 where n = 0."""
        with torch.no_grad():
            n = torch.round(x * torch.exp2(f))
            if not self.signed:
                n = n.clamp(min=0)
            _, bits = torch.frexp(torch.where(n < 0, -n - 1, n))  # m·2^e, m in [0.5, 1): e bits for an integer > 0
            return (bits + int(self.signed)) * (n != 0) - f

    @torch.no_grad()
    def trace(self, x: torch.Tensor, f: torch.Tensor, state: dict[str, torch.Tensor], dims: tuple[int, ...]) -> None:
        """A training batch's ranges into the traced sign and integer bits (in place)."""
        state["sign"].copy_(torch.maximum(state["sign"], (x < 0).any(dim=dims).to(x.dtype)))
        largest = x.abs().amax(dim=dims)
        needed = torch.ceil(torch.log2(largest + torch.exp2(-f.detach())))
        state["int"].copy_(torch.maximum(state["int"] - self.decay, needed))

    def format(self, x: torch.Tensor | None, scaled: torch.Tensor, state: dict[str, torch.Tensor] | None,
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(width b with f's gradient, k + i, k), each broadcasting like ``scaled``."""
        f = self.frac(scaled)
        k: torch.Tensor | float = float(self.signed)
        if self.int_bits == "traced":
            assert state is not None, "a traced format reads its state"
            k = state["sign"]
            int_bits = k + torch.ceil(state["int"])
        elif self.int_bits == "value":
            assert x is not None, "a format per value reads the values"
            int_bits = self.value_int(x, f)
        else:
            int_bits = torch.full_like(f, float(self.fixed_int))
        width = int_bits + f
        return ste(width, width.detach().clamp(0, MAX_WIDTH)), int_bits, torch.as_tensor(k, device=f.device)

    def quantise(self, x: torch.Tensor, scaled: torch.Tensor, state, dims: tuple[int, ...] | None) -> torch.Tensor:
        """``x`` in its formats; ``dims`` (the batch's) trace the ranges first (training)."""
        if self.int_bits == "traced" and dims is not None:
            self.trace(x, self.frac(scaled), state, dims)
        width, int_bits, k = self.format(x, scaled, state)
        return _LearnedQuantise.apply(x, width, int_bits, k)

    def widths(self, x: torch.Tensor | None, scaled: torch.Tensor, state) -> torch.Tensor:
        """The widths in force, with the penalty's straight-through gradient to f where b > 0
        (a value of width 0 has no format whose cost could fall)."""
        return charged(self.format(x, scaled, state)[0])


def charged(width: torch.Tensor) -> torch.Tensor:
    """``width`` with the penalty's gradient only where it is > 0."""
    return width * (width.detach() > 0)


def _check_rule(int_bits, width, signed, int_decay, what: str) -> None:
    """Options that ``int_bits`` would leave without effect are refused, not ignored."""
    if int_bits not in INT_BITS:
        raise UserError(f"{what}: int_bits must be one of {', '.join(INT_BITS)}, got {int_bits!r}")
    if int_bits == "fixed" and width is None:
        raise UserError(f"{what}: int_bits=fixed takes its integer bits from width - frac_width: give width")
    if int_bits != "fixed" and width is not None:
        raise UserError(f"{what}: with int_bits={int_bits} the integer bits follow the "
                        f"{'values' if int_bits == 'value' else 'data'}, so width would change nothing: leave it out")
    if int_bits == "traced" and signed is not None:
        raise UserError(f"{what}: int_bits=traced traces the sign bit from the data: leave signed out")
    if int_bits != "traced" and int_decay is not None:
        raise UserError(f"{what}: int_decay is how fast traced integer bits fall; with int_bits={int_bits} "
                        "it would change nothing: leave it out")


class LearnedQuantiser(nn.Module, Quantiser):
    """``learned``: fixed point whose format is learned per value of the role's tensor (per
    feature for a layer's input). ``width`` and ``frac_width`` are where training starts;
    ``int_bits`` says how the integer bits follow (module docstring). Its layer gives it its
    shape (``bind``)."""

    name = "learned"
    fixed_point = True
    learns_widths = True

    @classmethod
    def stacks(cls) -> bool:
        return True  # its formats are parameters and buffers of the stacked model: ``StackedLearned`` reads them

    @classmethod
    def varies_in_stack(cls, option: str) -> bool:
        """Only where each trial's formats start (``frac_width``: its parameters' first values);
        how they are made (``int_bits``, ``rate``, a fixed ``width``) is one ``Rule`` per stack."""
        return option == "frac_width"

    @classmethod
    def stack(cls, quantisers: list, prefix: str, role: str, device: torch.device) -> StackedLearned | None:
        """When every trial learns this role's formats by one rule; ``prefix`` finds them."""
        if not all(isinstance(q, LearnedQuantiser) for q in quantisers) or len({q.rule for q in quantisers}) != 1:
            return None
        return StackedLearned(prefix, quantisers[0].rule, role == "data_in")

    def __init__(self, *, frac_width: int, width: int | None = None, signed: bool | None = None, rate: float = 1.0,
                 int_bits: str = "fixed", int_decay: float | None = None, what: str = "learned"):
        nn.Module.__init__(self)
        _check_rule(int_bits, width, signed, int_decay, what)
        decay = 0.05 if int_decay is None else int_decay
        if isinstance(decay, bool) or not isinstance(decay, int | float) or not decay >= 0:
            raise UserError(f"{what}: int_decay must be a number ≥ 0 (bits per step), got {int_decay!r}")
        if width is not None:
            IntegerQuantiser(width=width, frac_width=frac_width, signed=signed is not False, what=what)  # its checks
        elif isinstance(frac_width, bool) or not isinstance(frac_width, int) or not 0 <= frac_width <= MAX_WIDTH:
            raise UserError(f"{what}: frac_width must be an integer in [0, {MAX_WIDTH}], got {frac_width!r}")
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not rate > 0:
            raise UserError(f"{what}: rate must be a number > 0, got {rate!r}")
        self.start_frac = frac_width
        fixed_int = positive_int("width", width, what) - frac_width if width is not None else 0
        self.rule = Rule(int_bits, fixed_int, signed is not False, float(rate), float(decay))
        self.bind(torch.Size())

    @property
    def rate(self) -> float:
        return self.rule.rate

    def bind(self, shape: torch.Size) -> LearnedQuantiser:
        """One format per value of a tensor of ``shape`` (a weight's, a bias's; a layer input's
        features). The parameter holds f / rate: an optimizer's step moves f ``rate`` times as
        far as a weight (Adam's step is about the learning rate whatever the gradient's scale)."""
        self.scaled_frac = nn.Parameter(torch.full(shape, self.start_frac / self.rule.rate))
        if self.rule.int_bits == "traced":  # nothing seen yet: no range (every input 0) until a training batch
            self.register_buffer("traced_sign", torch.zeros(shape))
            self.register_buffer("traced_int", torch.full(shape, -float(MAX_WIDTH)))
        return self

    def _state(self) -> dict[str, torch.Tensor] | None:
        if self.rule.int_bits != "traced":
            return None
        return {"sign": self.get_buffer("traced_sign"), "int": self.get_buffer("traced_int")}

    def quantise(self, x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(x.dim() - self.scaled_frac.dim())) if self.training else None
        return self.rule.quantise(x, self.scaled_frac, self._state(), dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.quantise(x)

    def widths(self, source: torch.Tensor | None = None) -> torch.Tensor:
        """The widths in force, as integers in a float tensor (the penalty's gradient passes);
        ``source`` is the tensor quantised (a weight, a bias) where the widths follow its values."""
        return self.rule.widths(source, self.scaled_frac, self._state())

    @torch.no_grad()
    def formats(self, source: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(width b, integer bits k + i, sign bit k) of each value, broadcasting like its formats."""
        return self.rule.format(source, self.scaled_frac, self._state())

    @property
    def bits(self) -> int:
        raise TypeError("a learned quantiser's widths differ per value: read widths(source)")

    def fixed(self, source: torch.Tensor | None = None) -> IntegerQuantiser:
        """The one integer format holding every value (hls4ml's and da4ml's type for the role):
        the most integer and fractional bits any value of width > 0 uses, signed where any is."""
        with torch.no_grad():
            width, int_bits, k = self.formats(source)
            used = (width > 0).expand_as(width)
            if not bool(used.any()):
                return IntegerQuantiser(width=1, frac_width=0, signed=True)
            k = k.expand_as(width)
            signed = bool((k[used] > 0).any())
            integer = max(int((int_bits - k)[used].max()), 0)
            frac = max(int((width - int_bits)[used].max()), 0)
        return IntegerQuantiser(width=max(int(signed) + integer + frac, 1), frac_width=frac, signed=signed)

    def on_grid(self, x: torch.Tensor, source: torch.Tensor | None = None) -> torch.Tensor:
        """Each value a multiple of its own 2^-f inside its own b-bit range (0 where b = 0)."""
        with torch.no_grad():
            width, int_bits, k = (t.double().expand_as(x) for t in self.formats(source))
        steps = x.double() * torch.exp2(width - int_bits)
        magnitude = torch.exp2(width - k)
        fits = (steps == steps.round()) & (steps >= -k * magnitude) & (steps <= magnitude - 1)
        return torch.where(width > 0, fits, x == 0)

    def describe(self) -> str:
        f = self.rule.frac(self.scaled_frac.detach())
        return (f"learned(int_bits={self.rule.int_bits}, frac={int(f.min())}…{int(f.max())}, "
                f"mean frac={float(f.mean()):.2f})")


class StackedLearned:
    """K trials' learned formats of one role, read from the stacked parameters and buffers
    (``params[prefix + '.scaled_frac']``, [K, *shape]): trial k's slice gets what its own
    ``LearnedQuantiser`` gives it."""

    def __init__(self, prefix: str, rule: Rule, per_feature: bool):
        self.prefix, self.rule, self.per_feature = prefix, rule, per_feature
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None  # (the parameter view, its widths) of a step

    def _over(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """[K, *shape] viewed to broadcast over ``like`` ([K, batch, features] for an input)."""
        if self.per_feature:
            return t.view(t.shape[0], *([1] * (like.dim() - t.dim())), *t.shape[1:])
        return t.view(*t.shape, *([1] * (like.dim() - t.dim())))

    def _state(self, buffers) -> dict[str, torch.Tensor] | None:
        if self.rule.int_bits != "traced":
            return None
        return {"sign": buffers[f"{self.prefix}.traced_sign"], "int": buffers[f"{self.prefix}.traced_int"]}

    def __call__(self, x: torch.Tensor, params, buffers=None, training: bool = False) -> torch.Tensor:
        state, param = self._state(buffers), params[f"{self.prefix}.scaled_frac"]
        if training and self.per_feature and state is not None:  # trace in [K, features], then view for the batch
            self.rule.trace(x, self.rule.frac(param), state, (1,))
        width, int_bits, k = self._format(x, param, state)
        self._last = (param, width)  # the same step's penalty reads these widths (``widths``)
        return _LearnedQuantise.apply(x, width, int_bits, k)

    def widths(self, like: torch.Tensor, params, buffers=None) -> torch.Tensor:
        """Each trial's widths broadcasting over ``like`` (the quantised tensor, or for an input
        the layer's [K, m, n] weight), with the penalty's gradient where b > 0 (``Rule.widths``)."""
        param = params[f"{self.prefix}.scaled_frac"]
        if self._last is not None and self._last[0] is param:  # this step's forward made them
            width = self._last[1]
        else:
            width = self._format(like, param, self._state(buffers))[0]
        return charged(width)

    def _format(self, x: torch.Tensor, param: torch.Tensor, state) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        viewed = None if state is None else {key: self._over(v, x) for key, v in state.items()}
        return self.rule.format(x, self._over(param, x), viewed)


def beta_of(qcfg) -> float:
    """``quantisation.beta``, the EBOPs penalty's strength (0 when the config sets none)."""
    beta = qcfg.get("beta")
    return 0.0 if beta is None else check_beta(beta)


def warmup_of(qcfg) -> int:
    """``quantisation.beta_warmup``: epochs over which β ramps up to its value (0 when unset)."""
    warmup = qcfg.get("beta_warmup")
    return 0 if warmup is None else check_warmup(warmup)


def beta_ramp(epoch: int, warmup: int) -> float:
    """The share of β in force in a trial's ``epoch`` (0-based): HGQ's warm-up, a linear ramp
    reaching β at epoch ``warmup``, so that a large β first lets the network learn what its
    widths are for instead of collapsing them in epoch 0."""
    return min(1.0, (epoch + 1) / (warmup + 1))


def learns(model: nn.Module) -> bool:
    return any(True for _ in roles(model))


def roles(model: nn.Module):
    """(layer name, role, quantiser, the tensor it quantises or None for an input) of every
    learned format in ``model``."""
    for name, module in model.named_modules():
        for role, attr in ROLE_ATTRS.items():
            if isinstance(q := getattr(module, attr, None), LearnedQuantiser):
                yield name, role, q, quantised_tensor(module, role)
