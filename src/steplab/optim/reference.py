"""The update rules in plain NumPy, written as the papers and torch's docs write them.

These are oracles for the tests, not fast code: each rule updates one float64
array per call, keeps its state in ``self.state`` under torch's buffer names
(so Lookahead's pullback can reach the momentum), and has its equation in the
docstring. Notation: θ parameters, g gradient, η learning rate, λ weight
decay, t the step count starting at 1.

>>> rule = for_name("momentum", lr=0.1)
>>> theta = np.array([1.0])
>>> for _ in range(2):
...     theta = rule.step(theta, 2 * theta)
>>> round(float(theta[0]), 6)  # b₁ = 2, θ₁ = 0.8; b₂ = 0.9·2 + 1.6, θ₂ = 0.8 − 0.34
0.46
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "SGD",
    "Adagrad",
    "Adam",
    "Lookahead",
    "NAdam",
    "RMSprop",
    "ReferenceRule",
    "for_name",
]

Array = NDArray[np.floating[Any]]


class ReferenceRule:
    """Base class: ``step(theta, grad) -> new theta``; state in ``self.state``."""

    def __init__(self) -> None:
        self.state: dict[str, Any] = {}

    def step(self, theta: Array, grad: Array) -> Array:
        """Return θ after one step with gradient ``grad`` (inputs are not modified)."""
        raise NotImplementedError

    def reset(self) -> None:
        """Forget all state, as a freshly built optimizer (Lookahead's ``reset``)."""
        self.state.clear()


class SGD(ReferenceRule):
    r"""SGD with momentum, dampening and Nesterov, as ``torch.optim.SGD``.

    g ← g + λθ;  b₁ = g,  b_t = μ b_{t−1} + (1 − τ) g   (τ dampening, b only if μ ≠ 0);
    d = g + μ b_t if nesterov else b_t;  θ ← θ − η d.
    """

    def __init__(
        self,
        lr: float,
        momentum: float = 0.0,
        dampening: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__()
        self.lr, self.mu, self.tau, self.nesterov, self.wd = (
            lr,
            momentum,
            dampening,
            nesterov,
            weight_decay,
        )

    def step(self, theta: Array, grad: Array) -> Array:
        g = grad + self.wd * theta
        if self.mu:
            buf = self.state.get("momentum_buffer")
            buf = g.copy() if buf is None else self.mu * buf + (1 - self.tau) * g
            self.state["momentum_buffer"] = buf
            g = g + self.mu * buf if self.nesterov else buf
        return theta - self.lr * g


class Adagrad(ReferenceRule):
    r"""AdaGrad (Duchi, Hazan, Singer 2011) with torch's lr_decay.

    g ← g + λθ;  s₀ = initial_accumulator_value;  s_t = s_{t−1} + g²;
    η_t = η / (1 + (t − 1)·lr_decay);  θ ← θ − η_t g / (√s_t + ε).
    """

    def __init__(
        self,
        lr: float = 0.01,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
    ) -> None:
        super().__init__()
        self.lr, self.lr_decay, self.wd = lr, lr_decay, weight_decay
        self.init, self.eps = initial_accumulator_value, eps

    def step(self, theta: Array, grad: Array) -> Array:
        t = self.state.get("step", 0) + 1
        g = grad + self.wd * theta
        s = self.state.get("sum", np.full_like(theta, self.init)) + g * g
        self.state.update(step=t, sum=s)
        lr_t = self.lr / (1 + (t - 1) * self.lr_decay)
        new: Array = theta - lr_t * g / (np.sqrt(s) + self.eps)
        return new


class RMSprop(ReferenceRule):
    r"""RMSprop (Tieleman & Hinton 2012), centered and momentum variants as torch.

    g ← g + λθ;  v_t = α v_{t−1} + (1 − α) g²;  centered: ḡ_t = α ḡ_{t−1} + (1 − α) g,
    D = √(v_t − ḡ_t²) + ε, else D = √v_t + ε;  momentum μ > 0: b_t = μ b_{t−1} + g/D,
    θ ← θ − η b_t;  else θ ← θ − η g/D.
    """

    def __init__(
        self,
        lr: float = 0.01,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
    ) -> None:
        super().__init__()
        self.lr, self.alpha, self.eps, self.wd = lr, alpha, eps, weight_decay
        self.mu, self.centered = momentum, centered

    def step(self, theta: Array, grad: Array) -> Array:
        zeros = np.zeros_like(theta)
        g = grad + self.wd * theta
        v = self.alpha * self.state.get("square_avg", zeros) + (1 - self.alpha) * g * g
        self.state.update(step=self.state.get("step", 0) + 1, square_avg=v)
        if self.centered:
            gbar = self.alpha * self.state.get("grad_avg", zeros) + (1 - self.alpha) * g
            self.state["grad_avg"] = gbar
            denom = np.sqrt(v - gbar * gbar) + self.eps
        else:
            denom = np.sqrt(v) + self.eps
        if self.mu > 0:
            buf = self.mu * self.state.get("momentum_buffer", zeros) + g / denom
            self.state["momentum_buffer"] = buf
            direction: Array = buf
        else:
            direction = g / denom
        new: Array = theta - self.lr * direction
        return new


class Adam(ReferenceRule):
    r"""Adam (Kingma & Ba 2015) with bias correction; AdamW and AMSGrad by flags.

    Adam: g ← g + λθ;  AdamW (decoupled): θ ← θ(1 − ηλ).
    m_t = β₁ m_{t−1} + (1 − β₁) g;  v_t = β₂ v_{t−1} + (1 − β₂) g²;
    AMSGrad: v̄_t = max(v̄_{t−1}, v_t), else v̄_t = v_t (torch takes the max of the
    raw v, then bias-corrects it);
    θ ← θ − η/(1 − β₁ᵗ) · m_t / (√v̄_t / √(1 − β₂ᵗ) + ε).
    """

    def __init__(
        self,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        decoupled: bool = False,
    ) -> None:
        super().__init__()
        self.lr, (self.b1, self.b2), self.eps, self.wd = lr, betas, eps, weight_decay
        self.amsgrad, self.decoupled = amsgrad, decoupled

    def step(self, theta: Array, grad: Array) -> Array:
        zeros = np.zeros_like(theta)
        t = self.state.get("step", 0) + 1
        if self.decoupled:
            theta, g = theta * (1 - self.lr * self.wd), grad
        else:
            g = grad + self.wd * theta
        m = self.b1 * self.state.get("exp_avg", zeros) + (1 - self.b1) * g
        v = self.b2 * self.state.get("exp_avg_sq", zeros) + (1 - self.b2) * g * g
        self.state.update(step=t, exp_avg=m, exp_avg_sq=v)
        if self.amsgrad:
            v = np.maximum(self.state.get("max_exp_avg_sq", zeros), v)
            self.state["max_exp_avg_sq"] = v
        denom = np.sqrt(v) / np.sqrt(1 - self.b2**t) + self.eps
        new: Array = theta - self.lr / (1 - self.b1**t) * m / denom
        return new


class NAdam(ReferenceRule):
    r"""NAdam (Dozat 2016) with torch's momentum-decay schedule.

    μ_t = β₁ (1 − ½ · 0.96^(t ψ)),  Π_t = ∏_{i≤t} μ_i;  g ← g + λθ (or θ ← θ(1 − ηλ)
    when decoupled);  m_t, v_t as Adam;  D = √(v_t / (1 − β₂ᵗ)) + ε;
    θ ← θ − η (1 − μ_t)/(1 − Π_t) · g/D − η μ_{t+1}/(1 − Π_t μ_{t+1}) · m_t/D.
    """

    def __init__(
        self,
        lr: float = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum_decay: float = 4e-3,
        decoupled_weight_decay: bool = False,
    ) -> None:
        super().__init__()
        self.lr, (self.b1, self.b2), self.eps, self.wd = lr, betas, eps, weight_decay
        self.psi, self.decoupled = momentum_decay, decoupled_weight_decay

    def step(self, theta: Array, grad: Array) -> Array:
        zeros = np.zeros_like(theta)
        t = self.state.get("step", 0) + 1
        if self.decoupled:
            theta, g = theta * (1 - self.lr * self.wd), grad
        else:
            g = grad + self.wd * theta
        mu = self.b1 * (1 - 0.5 * 0.96 ** (t * self.psi))
        mu_next = self.b1 * (1 - 0.5 * 0.96 ** ((t + 1) * self.psi))
        prod = self.state.get("mu_product", 1.0) * mu
        m = self.b1 * self.state.get("exp_avg", zeros) + (1 - self.b1) * g
        v = self.b2 * self.state.get("exp_avg_sq", zeros) + (1 - self.b2) * g * g
        self.state.update(step=t, mu_product=prod, exp_avg=m, exp_avg_sq=v)
        denom = np.sqrt(v / (1 - self.b2**t)) + self.eps
        theta = theta - self.lr * (1 - mu) / (1 - prod) * g / denom
        new: Array = theta - self.lr * mu_next / (1 - prod * mu_next) * m / denom
        return new


class Lookahead(ReferenceRule):
    r"""Lookahead (Zhang et al. 2019, Algorithm 1) around a reference rule.

    φ₀ = θ₀.  Each step: θ ← A(θ, g).  When t mod k = 0: φ ← φ + α(θ − φ); θ ← φ;
    pullback "reset": the inner state is cleared; "pullback": with m the inner
    momentum buffer, m ← m_slow + α(m − m_slow), m_slow ← m (m_slow₀ = 0).
    """

    def __init__(
        self,
        inner: ReferenceRule,
        theta0: Array,
        k: int = 5,
        alpha: float = 0.5,
        pullback: str = "none",
        momentum_key: str = "exp_avg",
    ) -> None:
        super().__init__()
        self.inner, self.k, self.alpha, self.pullback, self.key = (
            inner,
            k,
            alpha,
            pullback,
            momentum_key,
        )
        self.state.update(step=0, slow_param=theta0.copy(), slow_momentum=np.zeros_like(theta0))

    def step(self, theta: Array, grad: Array) -> Array:
        theta = self.inner.step(theta, grad)
        self.state["step"] += 1
        if self.state["step"] % self.k:
            return theta
        phi = self.state["slow_param"] + self.alpha * (theta - self.state["slow_param"])
        self.state["slow_param"] = phi
        if self.pullback == "reset":
            self.inner.reset()
        elif self.pullback == "pullback" and self.key in self.inner.state:
            m_slow = self.state["slow_momentum"]
            m_slow = m_slow + self.alpha * (self.inner.state[self.key] - m_slow)
            self.state["slow_momentum"] = self.inner.state[self.key] = m_slow
        new: Array = phi.copy()
        return new


def for_name(name: str, **hyper: Any) -> ReferenceRule:
    """The reference rule for a registry name with steplab's defaults, ``hyper`` merged in.

    Implementation flags (``fused``, ``foreach``) are ignored.

    Example:
        >>> type(for_name("amsgrad")).__name__, for_name("amsgrad").amsgrad
        ('Adam', True)
    """
    from steplab.optim.registry import OPTIMIZERS

    kwargs = {**OPTIMIZERS[name].defaults, **hyper}
    for flag in ("fused", "foreach", "maximize"):
        kwargs.pop(flag, None)
    state, min_size = kwargs.pop("state", "fp32"), kwargs.pop("min_size", 4096)
    if state != "fp32":  # moments kept in bf16 / 8 / 4 bits: steplab.optim.reference_lean
        from steplab.optim.reference_lean import LeanReference

        inner = {k: v for k, v in hyper.items() if k not in ("state", "min_size")}
        return LeanReference(for_name(name, **inner), str(state), int(min_size))
    b1, b2 = kwargs.pop("beta1", None), kwargs.pop("beta2", None)
    if "betas" in kwargs:
        betas = tuple(kwargs["betas"])
        kwargs["betas"] = (betas[0] if b1 is None else b1, betas[1] if b2 is None else b2)
    if name in ("gd", "sgd", "momentum", "nesterov"):
        return SGD(**kwargs)
    if name in ("adam", "adamw", "amsgrad"):
        return Adam(decoupled=name == "adamw", **kwargs)
    rules: dict[str, type[ReferenceRule]] = {"adagrad": Adagrad, "rmsprop": RMSprop, "nadam": NAdam}
    if name not in rules:
        raise KeyError(f"no reference rule for {name!r}")
    return rules[name](**kwargs)
