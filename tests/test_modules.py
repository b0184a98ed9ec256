"""Module machinery, basic layers, save/load and optimizers, without PyTorch."""

from __future__ import annotations

import math
import os
import zipfile

import numpy as np
import pytest

import tinyattn as ta
import tinyattn.nn as nn
from helpers import assert_close, t64

RNG = np.random.default_rng(3)


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.body = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Dropout(0.5), nn.Linear(8, 4, bias=False))
        self.norm = nn.LayerNorm(4)
        self.blocks = nn.ModuleList([nn.Linear(4, 4) for _ in range(2)])

    def forward(self, idx):
        x = self.body(self.embed(idx))
        for block in self.blocks:
            x = block(x).relu() + x
        return self.norm(x)


def test_parameters_and_state_dict_keys_follow_pytorch_naming():
    model = Tiny()
    keys = list(model.state_dict())
    assert keys == ["embed.weight", "body.0.weight", "body.0.bias", "body.3.weight", "norm.weight",
                    "norm.bias", "blocks.0.weight", "blocks.0.bias", "blocks.1.weight", "blocks.1.bias"]
    assert [n for n, _ in model.named_parameters()] == keys
    assert model.num_parameters() == 40 + 40 + 32 + 8 + 2 * 20
    assert [type(m).__name__ for m in model.children()] == ["Embedding", "Sequential", "LayerNorm", "ModuleList"]
    assert len(list(model.modules())) == 1 + 1 + 1 + 4 + 1 + 1 + 2


def test_state_dict_round_trip_and_load_errors_name_keys():
    a, b = Tiny(), Tiny()
    b.load_state_dict(a.state_dict())
    idx = np.array([[1, 2, 3]])
    a.eval(), b.eval()
    assert_close(a(idx), b(idx).data, rtol=0, atol=0)
    sd = a.state_dict()
    sd["extra.weight"] = np.zeros(3)
    del sd["norm.bias"]
    with pytest.raises(KeyError, match=r"missing keys \['norm.bias'\], unexpected keys \['extra.weight'\]"):
        b.load_state_dict(sd)
    missing, unexpected = b.load_state_dict(sd, strict=False)
    assert missing == ["norm.bias"] and unexpected == ["extra.weight"]
    bad = a.state_dict()
    bad["body.0.weight"] = np.zeros((3, 3))
    with pytest.raises(ValueError, match=r"body.0.weight: checkpoint \(3, 3\) vs model \(8, 4\)"):
        b.load_state_dict(bad)


def test_state_dict_is_a_copy():
    model = nn.Linear(2, 2)
    sd = model.state_dict()
    sd["weight"][...] = 7
    assert not np.any(model.weight.data == 7)


def test_train_eval_switches_dropout_everywhere():
    model = Tiny()
    model.eval()
    assert all(not m.training for m in model.modules())
    idx = np.array([[1, 2]])
    assert_close(model(idx), model(idx).data, rtol=0, atol=0)
    model.train()
    assert all(m.training for m in model.modules())


def test_zero_grad_and_repr():
    model = Tiny()
    model(np.array([[1, 2]])).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    text = repr(model)
    assert "(body): Sequential(" in text and "(0): Linear(in_features=4, out_features=8, bias=True)" in text
    assert "(norm): LayerNorm((4,), eps=1e-05, elementwise_affine=True)" in text


def test_apply_visits_every_module_children_first():
    model = Tiny()
    seen = []
    model.apply(lambda m: seen.append(type(m).__name__))
    assert seen[-1] == "Tiny" and sorted(seen) == sorted(type(m).__name__ for m in model.modules())
    model.apply(lambda m: isinstance(m, nn.Linear) and nn.init.zeros_(m.weight))
    assert all(np.all(m.weight.data == 0) for m in model.modules() if isinstance(m, nn.Linear))


def test_double_casts_parameters_in_place():
    model = Tiny().double()
    assert all(p.dtype == np.float64 for p in model.parameters())
    assert model(np.array([[1]])).dtype == np.float64


def test_linear_init_bounds_and_layer_defaults():
    ta.manual_seed(0)
    lin = nn.Linear(400, 300)
    bound = 1 / math.sqrt(400)
    assert np.abs(lin.weight.data).max() <= bound and np.abs(lin.weight.data).max() > 0.95 * bound
    assert np.abs(lin.bias.data).max() <= bound and lin.weight.dtype == np.float32
    ln = nn.LayerNorm(6)
    assert np.all(ln.weight.data == 1) and np.all(ln.bias.data == 0)
    assert nn.LayerNorm(6, bias=False).bias is None
    emb = nn.Embedding(1000, 50, padding_idx=3)
    assert abs(emb.weight.data.std() - 1) < 0.02 and np.all(emb.weight.data[3] == 0)
    assert nn.Linear(3, 2, bias=False).bias is None


def test_module_gradcheck_through_linear_layernorm_embedding():
    model = Tiny().double().eval()
    x = t64(RNG, 2, 4)
    assert ta.gradcheck(lambda t: model.norm(model.blocks[0](t)), x)
    w = model.body[0].weight
    assert ta.gradcheck(lambda weight: nn.functional.linear(x, weight, model.body[0].bias), w)


def test_save_load_round_trip_atomic_and_pickle_free(tmp_path):
    model = Tiny()
    path = tmp_path / "ckpt.npz"
    ta.save(model.state_dict(), path)
    assert sorted(os.listdir(tmp_path)) == ["ckpt.npz"], "no temporary file may be left behind"
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask, "a normal file's permissions"
    loaded = ta.load(path)
    assert list(loaded) == list(model.state_dict())
    for k, v in model.state_dict().items():
        assert_close(loaded[k], v, rtol=0, atol=0)
    with zipfile.ZipFile(path) as z:
        assert all(name.endswith(".npy") for name in z.namelist())
    with pytest.raises(TypeError, match="not a numeric array"):
        ta.save({"bad": np.array([object()])}, tmp_path / "bad.npz")
    assert not (tmp_path / "bad.npz").exists()
    assert sorted(os.listdir(tmp_path)) == ["ckpt.npz"]


def test_save_leaves_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "ckpt.npz"
    ta.save({"a": np.ones(3)}, path)

    class Boom:
        def __array__(self, dtype=None, copy=None):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        ta.save({"a": np.ones(3), "b": Boom()}, path)
    assert_close(ta.load(path)["a"], np.ones(3))
    assert sorted(os.listdir(tmp_path)) == ["ckpt.npz"]


# -- optimizers against hand-written NumPy updates -----------------------------------------------

def quadratic_problem():
    target = RNG.standard_normal((3, 4))
    p = ta.tensor(RNG.standard_normal((3, 4)), requires_grad=True)

    def loss_and_grad():
        p.grad = None
        loss = ((p - ta.tensor(target)) ** 2).sum()
        loss.backward()
        return p.grad.copy()

    return p, loss_and_grad


def test_sgd_momentum_weight_decay_matches_the_update_rule():
    p, grad = quadratic_problem()
    opt = ta.optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.01)
    theta, buf = p.data.copy(), None
    for _ in range(5):
        g = grad() + 0.01 * theta
        buf = g if buf is None else 0.9 * buf + g
        theta = theta - 0.1 * buf
        opt.step()
        assert_close(p.data, theta, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("cls,decoupled", [(ta.optim.Adam, False), (ta.optim.AdamW, True)])
def test_adam_and_adamw_match_the_update_rule(cls, decoupled):
    p, grad = quadratic_problem()
    opt = cls([p], lr=0.05, betas=(0.8, 0.95), eps=1e-7, weight_decay=0.1)
    theta, m, v = p.data.copy(), 0.0, 0.0
    for t in range(1, 6):
        g = grad()
        if decoupled:
            theta = theta * (1 - 0.05 * 0.1)
        else:
            g = g + 0.1 * theta
        m = 0.8 * m + 0.2 * g
        v = 0.95 * v + 0.05 * g * g
        theta = theta - 0.05 * (m / (1 - 0.8 ** t)) / (np.sqrt(v / (1 - 0.95 ** t)) + 1e-7)
        opt.step()
        assert_close(p.data, theta, rtol=1e-10, atol=1e-12)


def test_optimizers_reduce_a_loss_and_reject_bad_settings():
    for make in (lambda ps: ta.optim.SGD(ps, lr=0.1, momentum=0.5, nesterov=True),
                 lambda ps: ta.optim.Adam(ps, lr=0.1, amsgrad=True), lambda ps: ta.optim.AdamW(ps, lr=0.1)):
        p, grad = quadratic_problem()
        opt = make([p])
        first = None
        for _ in range(30):
            g = grad()
            first = first if first is not None else np.sum(g * g)
            opt.step()
        assert np.sum(grad() ** 2) < 0.1 * first
    with pytest.raises(ValueError, match="empty"):
        ta.optim.SGD([], lr=0.1)
    with pytest.raises(ValueError, match="betas"):
        ta.optim.Adam([ta.zeros(1, requires_grad=True)], betas=(1.2, 0.9))


def test_noam_schedule_warms_up_then_decays():
    p = ta.zeros(1, requires_grad=True)
    opt = ta.optim.Adam([p], lr=1.0)
    sched = ta.optim.LambdaLR(opt, ta.optim.noam_lambda(d_model=512, warmup_steps=4000))
    lrs = []
    for _ in range(12000):
        lrs.append(sched.get_last_lr()[0])
        sched.step()
    steps = np.arange(1, 12001)
    expected = 512 ** -0.5 * np.minimum(steps ** -0.5, steps * 4000 ** -1.5)
    assert_close(np.array(lrs), expected, rtol=1e-12)
    assert int(np.argmax(lrs)) + 1 == 4000
    assert ta.optim.lr_scheduler.LambdaLR is ta.optim.LambdaLR


def test_buffers_persistent_in_state_dict_and_cast_with_the_module():
    class WithBuffers(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2)
            self.register_buffer("running", ta.zeros(2))
            self.register_buffer("scratch", ta.ones(3), persistent=False)

    m = WithBuffers()
    assert list(m.state_dict()) == ["running", "lin.weight", "lin.bias"]
    assert [n for n, _ in m.named_buffers()] == ["running", "scratch"]
    sd = m.state_dict()
    sd["running"] = np.array([4.0, 5.0])
    m.load_state_dict(sd)
    assert_close(m.running.data, [4.0, 5.0])
    m.double()
    assert m.running.dtype == np.float64 and m.scratch.dtype == np.float64
