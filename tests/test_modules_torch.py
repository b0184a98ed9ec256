"""Layers with weights loaded from PyTorch, and optimizers stepped side by side with PyTorch's."""

from __future__ import annotations

import numpy as np
import pytest

import tinyattn as ta
from helpers import assert_close, import_torch

torch = import_torch()
RNG = np.random.default_rng(4)


def torch_state(module):
    return {k: v.detach().numpy() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("make", [
    lambda lib: lib.nn.Linear(6, 5),
    lambda lib: lib.nn.Linear(6, 5, bias=False),
    lambda lib: lib.nn.LayerNorm(6),
    lambda lib: lib.nn.LayerNorm(6, bias=False),
    lambda lib: lib.nn.Sequential(lib.nn.Linear(6, 8), lib.nn.GELU(), lib.nn.Linear(8, 6), lib.nn.ReLU()),
], ids=["linear", "linear-nobias", "layernorm", "layernorm-nobias", "sequential"])
def test_layer_with_torch_weights_gives_torch_outputs_and_gradients(make):
    tm, mm = make(torch).double(), make(ta).double()
    mm.load_state_dict(torch_state(tm))
    assert list(mm.state_dict()) == list(tm.state_dict())
    x = RNG.standard_normal((3, 4, 6))
    tx, mx = torch.tensor(x, requires_grad=True), ta.tensor(x, requires_grad=True)
    ty, my = tm(tx), mm(mx)
    assert_close(my, ty.detach().numpy())
    cot = RNG.standard_normal(ty.shape)
    ty.backward(torch.tensor(cot))
    my.backward(cot)
    assert_close(mx.grad, tx.grad.numpy(), what="input gradient")
    params = dict(mm.named_parameters())
    for name, p in tm.named_parameters():
        assert_close(params[name].grad, p.grad.numpy(), what=name)


def test_embedding_with_torch_weights():
    te, me = torch.nn.Embedding(7, 3, padding_idx=0).double(), ta.nn.Embedding(7, 3, padding_idx=0).double()
    me.load_state_dict(torch_state(te))
    idx = np.array([[0, 1, 1], [6, 0, 2]])
    ty, my = te(torch.tensor(idx)), me(idx)
    assert_close(my, ty.detach().numpy())
    cot = RNG.standard_normal(ty.shape)
    ty.backward(torch.tensor(cot))
    my.backward(cot)
    assert_close(me.weight.grad, te.weight.grad.numpy())


@pytest.mark.parametrize("name,kwargs", [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.9), weight_decay=0.1, amsgrad=True)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.02, weight_decay=0.3, eps=1e-6)),
])
def test_optimizer_steps_match_torch(name, kwargs):
    tm = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3)).double()
    mm = ta.nn.Sequential(ta.nn.Linear(5, 7), ta.nn.Identity(), ta.nn.Linear(7, 3)).double()
    mm.load_state_dict(torch_state(tm))
    topt = getattr(torch.optim, name)(tm.parameters(), **kwargs)
    mopt = getattr(ta.optim, name)(mm.parameters(), **kwargs)
    x, y = RNG.standard_normal((16, 5)), RNG.standard_normal((16, 3))
    for _ in range(6):
        topt.zero_grad()
        mopt.zero_grad()
        tl = ((tm[2](torch.tanh(tm[0](torch.tensor(x)))) - torch.tensor(y)) ** 2).mean()
        ml = ((mm[2](mm[0](ta.tensor(x)).tanh()) - ta.tensor(y)) ** 2).mean()
        assert ml.item() == pytest.approx(tl.item(), rel=1e-10)
        tl.backward()
        ml.backward()
        topt.step()
        mopt.step()
    ours = mm.state_dict()
    for k, v in torch_state(tm).items():
        assert_close(ours[k], v, rtol=1e-9, atol=1e-12, what=f"{name} {k}")


def test_noam_schedule_matches_torch_lambda_lr():
    lam = ta.optim.noam_lambda(64, warmup_steps=10)
    tp = torch.nn.Parameter(torch.zeros(1))
    topt = torch.optim.SGD([tp], lr=2.0)
    tsched = torch.optim.lr_scheduler.LambdaLR(topt, lam)
    mopt = ta.optim.SGD([ta.zeros(1, requires_grad=True)], lr=2.0)
    msched = ta.optim.LambdaLR(mopt, lam)
    for _ in range(30):
        assert msched.get_last_lr()[0] == pytest.approx(tsched.get_last_lr()[0], rel=1e-12)
        topt.step()
        tsched.step()
        msched.step()
