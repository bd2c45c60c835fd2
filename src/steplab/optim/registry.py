"""The registry of optimizers steplab builds by name.

Each entry is an :class:`OptimizerInfo`: the torch class behind the name, the
update rule in one line, the hyperparameter defaults steplab uses, the state
buffers torch keeps per parameter, their cost in bytes and a default search
space following the Deep Learning Tuning Playbook (Godbole et al. 2023): the
learning rate always (log scale), then ``beta1``/``momentum`` once there are
about 10 trials, ``eps`` from about 25 and ``beta2`` beyond that.

>>> OPTIMIZERS["adamw"].torch_class
'torch.optim.AdamW'
>>> OPTIMIZERS["amsgrad"].bytes_per_param
12
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import torch

from steplab.errors import SpecError
from steplab.optim.lean import lean_bytes_per_param
from steplab.optim.lookahead import Lookahead
from steplab.optim.quantize import MIN_QUANTIZED_NUMEL

__all__ = ["IMPLEMENTATION_FLAGS", "OPTIMIZERS", "OptimizerInfo", "optimizer_info"]

#: one hyperparameter's search range: (low, high, scale, trials from which to tune it)
SearchRange = tuple[float, float, Literal["log", "linear"], int]

#: flags every torch-backed entry accepts besides its hyperparameters
IMPLEMENTATION_FLAGS: tuple[str, ...] = ("foreach", "fused", "maximize")


@dataclass(frozen=True)
class OptimizerInfo:
    """What steplab knows about one optimizer name.

    Attributes:
        name: the name used in spec strings (``"adamw"``).
        torch_class: dotted path of the class built (``"torch.optim.AdamW"``).
        rule: the update rule in one line.
        defaults: every hyperparameter the name accepts, with steplab's default.
        buffers: per-parameter state buffer names torch keeps (``"step"`` included).
        first_moment: buffers holding a momentum / first moment.
        second_moment: buffers holding squared-gradient statistics.
        bytes_per_param: float32 state bytes per parameter element (scalars ignored).
        search_space: hyperparameter -> ``(low, high, "log"|"linear", min_trials)``;
            tune it once a study has at least ``min_trials`` trials.
        doc: a short paragraph for people.
        aliases: extra spec keywords mapped onto a hyperparameter (``beta1`` -> ``betas[0]``).
        state_bytes: for names taking ``state=``, bytes of state per parameter
            element of a large tensor by ``state=`` value (``{"int8": 2.03125, ...}``).
    """

    name: str
    torch_class: str
    rule: str
    defaults: dict[str, Any]
    buffers: tuple[str, ...]
    first_moment: tuple[str, ...]
    second_moment: tuple[str, ...]
    bytes_per_param: int
    search_space: dict[str, SearchRange]
    doc: str
    aliases: tuple[str, ...] = field(default=())
    state_bytes: dict[str, float] = field(default_factory=dict)

    def accepts(self) -> tuple[str, ...]:
        """Every keyword a spec may give this optimizer, sorted.

        >>> OPTIMIZERS["gd"].accepts()
        ('foreach', 'fused', 'lr', 'maximize', 'weight_decay')
        """
        flags = () if self.name == "lookahead" else IMPLEMENTATION_FLAGS
        return tuple(sorted({*self.defaults, *flags, *self.aliases}))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field (tuples become lists).

        >>> OPTIMIZERS["adam"].to_dict()["defaults"]["betas"]
        [0.9, 0.999]
        """
        data = dataclasses.asdict(self)
        data["accepts"] = list(self.accepts())
        return cast(dict[str, Any], json.loads(json.dumps(data)))


_ADAM_SPACE: dict[str, SearchRange] = {
    "lr": (1e-5, 1e-1, "log", 1),
    "beta1": (0.8, 0.99, "linear", 10),
    "eps": (1e-10, 1e-3, "log", 25),
    "beta2": (0.9, 0.9999, "linear", 50),
}
_SGD_SPACE: dict[str, SearchRange] = {"lr": (1e-4, 1.0, "log", 1)}
_MOMENTUM_SPACE: dict[str, SearchRange] = {
    "lr": (1e-4, 1.0, "log", 1),
    "momentum": (0.8, 0.99, "linear", 10),
}
_ADAM_DEFAULTS: dict[str, Any] = {
    "lr": 1e-3,
    "betas": (0.9, 0.999),
    "eps": 1e-8,
    "weight_decay": 0.0,
}
_ADAM_BUFFERS = ("step", "exp_avg", "exp_avg_sq")
#: ``state=`` (moments' storage) and ``min_size=`` (smallest tensor quantised)
_LEAN_DEFAULTS: dict[str, Any] = {"state": "fp32", "min_size": MIN_QUANTIZED_NUMEL}
#: ``state=`` values: moments in float32 (torch's own class), bfloat16, 8 or 4 bits
_LEAN_DOC = (" state=bf16|int8|int4 keeps the moments in bfloat16 or block-wise 8/4-bit codes"
             " (steplab.optim.lean); with int8/int4, tensors under min_size elements (default"
             " 4096) keep float32.")


def _state_bytes(buffers: tuple[str, ...]) -> dict[str, float]:
    """Bytes per parameter element of a 4M-element tensor for each ``state=`` value."""
    return {kind: lean_bytes_per_param(buffers, kind) for kind in ("fp32", "bf16", "int8", "int4")}


def _sgd(
    name: str, lr: float, momentum: float, nesterov: bool, rule: str, doc: str
) -> OptimizerInfo:
    defaults: dict[str, Any] = {"lr": lr, "weight_decay": 0.0}
    if momentum:
        defaults.update(momentum=momentum, dampening=0.0, nesterov=nesterov, **_LEAN_DEFAULTS)
    return OptimizerInfo(
        name=name,
        torch_class="torch.optim.SGD",
        rule=rule,
        defaults=defaults,
        buffers=("momentum_buffer",) if momentum else (),
        first_moment=("momentum_buffer",) if momentum else (),
        second_moment=(),
        bytes_per_param=4 if momentum else 0,
        search_space=dict(_MOMENTUM_SPACE if momentum else _SGD_SPACE),
        doc=doc,
        state_bytes=_state_bytes(("momentum_buffer",)) if momentum else {},
    )


OPTIMIZERS: dict[str, OptimizerInfo] = {
    "gd": _sgd(
        "gd",
        0.1,
        0.0,
        False,
        "θ ← θ − η ∇L(θ) with the full-batch gradient",
        "Gradient descent: plain SGD meant to be fed the full batch (batch_size='full').",
    ),
    "sgd": _sgd(
        "sgd",
        0.01,
        0.0,
        False,
        "θ ← θ − η g with a mini-batch gradient g",
        "Stochastic gradient descent on mini-batches, no momentum.",
    ),
    "momentum": _sgd(
        "momentum",
        0.01,
        0.9,
        False,
        "b ← μ b + g;  θ ← θ − η b",
        "Heavy-ball momentum (Polyak 1964) as torch.optim.SGD writes it, μ = 0.9.",
    ),
    "nesterov": _sgd(
        "nesterov",
        0.01,
        0.9,
        True,
        "b ← μ b + g;  θ ← θ − η (g + μ b)",
        "Nesterov momentum in Sutskever et al. (2013)'s form, as torch.optim.SGD writes it.",
    ),
    "adagrad": OptimizerInfo(
        name="adagrad",
        torch_class="torch.optim.Adagrad",
        rule="s ← s + g²;  θ ← θ − η_t g / (√s + ε),  η_t = η / (1 + (t−1) lr_decay)",
        defaults={
            "lr": 0.01,
            "lr_decay": 0.0,
            "weight_decay": 0.0,
            "initial_accumulator_value": 0.0,
            "eps": 1e-10,
        },
        buffers=("step", "sum"),
        first_moment=(),
        second_moment=("sum",),
        bytes_per_param=4,
        search_space={"lr": (1e-4, 1.0, "log", 1), "eps": (1e-10, 1e-3, "log", 25)},
        doc="AdaGrad (Duchi, Hazan, Singer 2011): per-coordinate steps shrink with the "
        "sum of squared gradients.",
    ),
    "rmsprop": OptimizerInfo(
        name="rmsprop",
        torch_class="torch.optim.RMSprop",
        rule="v ← α v + (1−α) g²;  θ ← θ − η g / (√v + ε)",
        defaults={
            "lr": 0.01,
            "alpha": 0.99,
            "eps": 1e-8,
            "weight_decay": 0.0,
            "momentum": 0.0,
            "centered": False,
        },
        buffers=("step", "square_avg"),
        first_moment=(),
        second_moment=("square_avg",),
        bytes_per_param=4,
        search_space={
            "lr": (1e-5, 1e-1, "log", 1),
            "momentum": (0.0, 0.99, "linear", 10),
            "eps": (1e-10, 1e-3, "log", 25),
            "alpha": (0.9, 0.999, "linear", 50),
        },
        doc="RMSprop (Tieleman & Hinton 2012). momentum > 0 adds a momentum_buffer and "
        "centered=True a grad_avg (4 bytes per parameter each).",
    ),
    "adam": OptimizerInfo(
        name="adam",
        torch_class="torch.optim.Adam",
        rule="m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)g²;  θ ← θ − η m̂ / (√v̂ + ε)",
        defaults={**_ADAM_DEFAULTS, **_LEAN_DEFAULTS},
        buffers=_ADAM_BUFFERS,
        first_moment=("exp_avg",),
        second_moment=("exp_avg_sq",),
        bytes_per_param=8,
        search_space=dict(_ADAM_SPACE),
        doc="Adam (Kingma & Ba 2015) with bias correction; weight_decay is L2 added to g."
        + _LEAN_DOC,
        aliases=("beta1", "beta2"),
        state_bytes=_state_bytes(("exp_avg", "exp_avg_sq")),
    ),
    "adamw": OptimizerInfo(
        name="adamw",
        torch_class="torch.optim.AdamW",
        rule="θ ← θ − ηλθ;  then the Adam step θ ← θ − η m̂ / (√v̂ + ε)",
        defaults={**_ADAM_DEFAULTS, "weight_decay": 0.01, **_LEAN_DEFAULTS},
        buffers=_ADAM_BUFFERS,
        first_moment=("exp_avg",),
        second_moment=("exp_avg_sq",),
        bytes_per_param=8,
        search_space={**_ADAM_SPACE, "weight_decay": (1e-5, 1.0, "log", 10)},
        doc="AdamW (Loshchilov & Hutter 2019): Adam with decoupled weight decay." + _LEAN_DOC,
        aliases=("beta1", "beta2"),
        state_bytes=_state_bytes(("exp_avg", "exp_avg_sq")),
    ),
    "amsgrad": OptimizerInfo(
        name="amsgrad",
        torch_class="torch.optim.Adam",
        rule="as adam, with v̂ from v_max ← max(v_max, v) (Reddi, Kale, Kumar 2018)",
        defaults={**_ADAM_DEFAULTS, "amsgrad": True, **_LEAN_DEFAULTS},
        buffers=(*_ADAM_BUFFERS, "max_exp_avg_sq"),
        first_moment=("exp_avg",),
        second_moment=("exp_avg_sq", "max_exp_avg_sq"),
        bytes_per_param=12,
        search_space=dict(_ADAM_SPACE),
        doc="AMSGrad: torch.optim.Adam(amsgrad=True); keeps the running max of v." + _LEAN_DOC,
        aliases=("beta1", "beta2"),
        state_bytes=_state_bytes(("exp_avg", "exp_avg_sq", "max_exp_avg_sq")),
    ),
    "nadam": OptimizerInfo(
        name="nadam",
        torch_class="torch.optim.NAdam",
        rule="μ_t = β₁(1 − ½·0.96^(tψ));  θ ← θ − η[μ_{t+1} m / (1−Πμ_{≤t+1}) "
        "+ (1−μ_t) g / (1−Πμ_{≤t})] / (√v̂ + ε)",
        defaults={
            **_ADAM_DEFAULTS,
            "lr": 2e-3,
            "momentum_decay": 4e-3,
            "decoupled_weight_decay": False,
        },
        buffers=("step", "mu_product", "exp_avg", "exp_avg_sq"),
        first_moment=("exp_avg",),
        second_moment=("exp_avg_sq",),
        bytes_per_param=8,
        search_space=dict(_ADAM_SPACE),
        doc="NAdam (Dozat 2016): Adam with Nesterov momentum and torch's momentum-decay "
        "schedule ψ = momentum_decay.",
        aliases=("beta1", "beta2"),
    ),
    "lookahead": OptimizerInfo(
        name="lookahead",
        torch_class="steplab.optim.Lookahead",
        rule="every k inner steps: φ ← φ + α(θ − φ);  θ ← φ",
        defaults={"k": 5, "alpha": 0.5, "pullback": "none", "slow": "fp32"},
        buffers=("slow_param",),
        first_moment=(),
        second_moment=(),
        bytes_per_param=4,
        search_space={"alpha": (0.3, 0.9, "linear", 10), "k": (3.0, 10.0, "linear", 25)},
        doc="Lookahead (Zhang, Lucas, Ba, Hinton 2019) around any inner optimizer; "
        "pullback='pullback' adds slow_momentum (4 more bytes per parameter); "
        "slow=bf16 keeps the slow copy in bfloat16 (2 bytes per parameter).",
        state_bytes={"fp32": 4.0, "bf16": 2.0},
    ),
}


def _name_from_class(optimizer: torch.optim.Optimizer) -> str | None:
    defaults = optimizer.defaults
    if isinstance(optimizer, torch.optim.SGD):
        if not defaults.get("momentum", 0.0):
            return "sgd"
        return "nesterov" if defaults.get("nesterov", False) else "momentum"
    if isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)) and defaults.get("amsgrad"):
        return "amsgrad"
    by_class: dict[type[torch.optim.Optimizer], str] = {
        torch.optim.AdamW: "adamw",
        torch.optim.Adam: "adam",
        torch.optim.NAdam: "nadam",
        torch.optim.Adagrad: "adagrad",
        torch.optim.RMSprop: "rmsprop",
    }
    for cls, name in by_class.items():  # subclasses too (steplab's single-pass steps)
        if isinstance(optimizer, cls):
            return name
    return None


def optimizer_info(optimizer: torch.optim.Optimizer) -> OptimizerInfo:
    """Find the registry entry for a live optimizer.

    Uses the ``steplab_spec`` attribute that :func:`create_optimizer` sets, else
    the class and its flags (SGD with momentum is ``"momentum"``, Adam with
    ``amsgrad=True`` is ``"amsgrad"``...). A :class:`Lookahead` gives the
    ``"lookahead"`` entry; use :func:`inner_optimizer` for the inner rule.

    Args:
        optimizer: any torch optimizer.

    Returns:
        The matching :class:`OptimizerInfo`.

    Raises:
        SpecError: the optimizer's class is not in the registry.

    Example:
        >>> opt = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.1, momentum=0.9)
        >>> optimizer_info(opt).name
        'momentum'
    """
    spec = getattr(optimizer, "steplab_spec", None)
    name = getattr(spec, "name", None)
    if name is None:
        name = "lookahead" if isinstance(optimizer, Lookahead) else _name_from_class(optimizer)
    if name is None or name not in OPTIMIZERS:
        raise SpecError(
            f"optimizer: got {type(optimizer).__module__}.{type(optimizer).__name__}, "
            f"expected one of the registered kinds: {', '.join(OPTIMIZERS)}"
        )
    return OPTIMIZERS[name]
