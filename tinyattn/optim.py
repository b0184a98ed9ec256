"""Optimizers with PyTorch's update rules, and the warm-up learning-rate schedule of
"Attention Is All You Need"."""

from __future__ import annotations

import math

import numpy as np

from .autograd import Tensor

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "LambdaLR", "noam_lambda", "lr_scheduler"]


class Optimizer:
    """Holds parameter groups (dicts with "params" and hyper-parameters) and per-parameter state."""

    def __init__(self, params, defaults: dict):
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.defaults = defaults
        self.param_groups = []
        for g in groups:
            group = {**defaults, **g, "params": list(g["params"])}
            for p in group["params"]:
                if not isinstance(p, Tensor) or not p.requires_grad:
                    raise ValueError("optimizer params must be tensors with requires_grad=True")
            self.param_groups.append(group)
        self.state = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none or p.grad is None:
                    p.grad = None
                else:
                    p.grad[...] = 0

    def _params_with_grad(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    yield group, p, self.state.setdefault(id(p), {})

    def step(self) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    """v ← μ v + (1 − dampening) (g + λ θ) (v = g + λθ on the first step); θ ← θ − lr v
    (Nesterov: θ ← θ − lr (g + λθ + μ v))."""

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False):
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"invalid SGD settings lr={lr}, momentum={momentum}, weight_decay={weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov))

    def step(self) -> None:
        for group, p, state in self._params_with_grad():
            g = p.grad
            if group["weight_decay"]:
                g = g + group["weight_decay"] * p.data
            mu = group["momentum"]
            if mu:
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = g.copy()
                else:
                    buf *= mu
                    buf += (1 - group["dampening"]) * g
                g = g + mu * buf if group["nesterov"] else buf
            p.data -= group["lr"] * g


class Adam(Optimizer):
    """m ← β1 m + (1 − β1) g; v ← β2 v + (1 − β2) g²;
    θ ← θ − lr · (m / (1 − β1ᵗ)) / (sqrt(v / (1 − β2ᵗ)) + eps).
    ``weight_decay`` adds λθ to g (L2, as torch.optim.Adam)."""

    decoupled = False

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False):
        if lr < 0 or eps < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1) or weight_decay < 0:
            raise ValueError(f"invalid Adam settings lr={lr}, betas={betas}, eps={eps}, "
                             f"weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay, amsgrad=amsgrad))

    def step(self) -> None:
        for group, p, state in self._params_with_grad():
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            g = p.grad
            if wd and self.decoupled:
                p.data *= 1 - lr * wd
            elif wd:
                g = g + wd * p.data
            if not state:
                state["step"] = 0
                state["exp_avg"] = np.zeros_like(p.data)
                state["exp_avg_sq"] = np.zeros_like(p.data)
                if group["amsgrad"]:
                    state["max_exp_avg_sq"] = np.zeros_like(p.data)
            state["step"] += 1
            t = state["step"]
            m, v = state["exp_avg"], state["exp_avg_sq"]
            m += (1 - b1) * (g - m)
            v *= b2
            v += (1 - b2) * g * g
            if group["amsgrad"]:
                np.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])
                v = state["max_exp_avg_sq"]
            bias1, bias2 = 1 - b1 ** t, 1 - b2 ** t
            denom = np.sqrt(v) / math.sqrt(bias2) + eps
            p.data -= (lr / bias1) * m / denom


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): θ ← θ (1 − lr λ) before the
    Adam step. Default weight_decay=1e-2, as torch.optim.AdamW."""

    decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad)


class LambdaLR:
    """lr = base_lr · lr_lambda(epoch) for each group; ``step()`` advances the epoch counter.

    As in PyTorch, constructing the scheduler applies lr_lambda(0) at once.
    """

    def __init__(self, optimizer: Optimizer, lr_lambda):
        self.optimizer, self.lr_lambda = optimizer, lr_lambda
        self.base_lrs = [g.setdefault("initial_lr", g["lr"]) for g in optimizer.param_groups]
        self.last_epoch = -1
        self.step()

    def step(self) -> None:
        self.last_epoch += 1
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * self.lr_lambda(self.last_epoch)

    def get_last_lr(self) -> list:
        return [g["lr"] for g in self.optimizer.param_groups]


def noam_lambda(d_model: int, warmup_steps: int = 4000, factor: float = 1.0):
    """The schedule of Vaswani et al. (2017), as a multiplier of a base lr of 1:

    lr(step) = factor · d_model^(−1/2) · min(step^(−1/2), step · warmup^(−3/2)), step = epoch + 1:
    linear warm-up for ``warmup_steps`` steps, then decay as 1/√step.
    """
    if warmup_steps <= 0:
        raise ValueError(f"warmup_steps must be positive, got {warmup_steps}")

    def lr_lambda(epoch: int) -> float:
        step = epoch + 1
        return factor * d_model ** -0.5 * min(step ** -0.5, step * warmup_steps ** -1.5)

    return lr_lambda


class _SchedulerNamespace:
    """``ta.optim.lr_scheduler.LambdaLR`` as in PyTorch."""

    LambdaLR = LambdaLR
    noam_lambda = staticmethod(noam_lambda)


lr_scheduler = _SchedulerNamespace()
