"""The GPT: its forward against a closed-form NumPy forward and against PyTorch with the same
weights, gradchecked in float64, cached generation equal to uncached, sampling that follows
softmax(z / temperature) restricted to the top k, and clear errors for bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

import tinyattn as ta
from tinyattn.models import GPT
from helpers import import_torch

V, BLOCK = 11, 12


def tiny(mlp=True, layers=2, heads=2, d=8, seed=0, dtype=np.float64):
    """A small GPT in float64 whose biases and norm weights are random (not 0 and 1)."""
    ta.manual_seed(seed)
    model = GPT(V, BLOCK, d_model=d, num_heads=heads, num_layers=layers, dim_feedforward=12, mlp=mlp)
    model.to(dtype)
    rng = np.random.default_rng(seed + 100)
    for name, p in model.named_parameters():
        if name.endswith("bias") or "ln" in name:
            p.data[...] = rng.normal(0.0 if name.endswith("bias") else 1.0, 0.3, p.shape)
        else:
            p.data[...] = rng.normal(0, 0.4, p.shape)
    return model


# ------------------------------------------------------------------------------------------------
# closed-form NumPy forward
# ------------------------------------------------------------------------------------------------

def _ln(x, w, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def _gelu(x):
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def numpy_forward(sd: dict, idx: np.ndarray, heads: int, layers: int, mlp: bool, ablate=None):
    """logits (B, T, V) from a state_dict, written out formula by formula.

    ``ablate`` = (layer, head): that head's output is replaced by zeros before W_o.
    """
    B, T = idx.shape
    x = sd["wte.weight"][idx] + sd["wpe.weight"][np.arange(T)]  # (B, T, E)
    E = x.shape[-1]
    D = E // heads
    for i in range(layers):
        p = f"blocks.{i}."
        h = _ln(x, sd[p + "ln_1.weight"], sd[p + "ln_1.bias"])
        q, k, v = (h @ sd[p + f"attn.{n}_proj.weight"].T + sd[p + f"attn.{n}_proj.bias"] for n in "qkv")
        out = np.zeros_like(x)  # (B, T, E)
        for hd in range(heads):
            cols = slice(hd * D, (hd + 1) * D)
            for b in range(B):
                for t in range(T):
                    s = q[b, t, cols] @ k[b, :t + 1, cols].T / math.sqrt(D)  # keys 0..t
                    w = np.exp(s - s.max())
                    w /= w.sum()
                    if ablate != (i, hd):
                        out[b, t, cols] = w @ v[b, :t + 1, cols]
        x = x + out @ sd[p + "attn.out_proj.weight"].T + sd[p + "attn.out_proj.bias"]
        if mlp:
            h = _ln(x, sd[p + "ln_2.weight"], sd[p + "ln_2.bias"])
            f = _gelu(h @ sd[p + "mlp.0.weight"].T + sd[p + "mlp.0.bias"])
            x = x + f @ sd[p + "mlp.2.weight"].T + sd[p + "mlp.2.bias"]
    return _ln(x, sd["ln_f.weight"], sd["ln_f.bias"]) @ sd["wte.weight"].T  # tied head


IDX = np.array([[1, 4, 2, 9, 0, 3, 3], [10, 0, 5, 5, 7, 2, 8]])  # (B=2, T=7)


@pytest.mark.parametrize("mlp", [True, False])
def test_forward_equals_closed_form_numpy(mlp):
    model = tiny(mlp=mlp)
    got = model(IDX)
    assert got.shape == (2, 7, V) and got.dtype == np.float64
    want = numpy_forward(model.state_dict(), IDX, heads=2, layers=2, mlp=mlp)
    np.testing.assert_allclose(got.data, want, rtol=1e-10, atol=1e-12)


def test_causal_a_later_token_never_changes_earlier_logits():
    model = tiny()
    changed = IDX.copy()
    changed[:, 4:] = (changed[:, 4:] + 1) % V
    np.testing.assert_array_equal(model(IDX).data[:, :4], model(changed).data[:, :4])
    assert np.abs(model(IDX).data[:, 4:] - model(changed).data[:, 4:]).max() > 1e-3


def test_num_params_counted_from_the_architecture():
    E, F_, L = 8, 12, 2
    per_block = 2 * E + 4 * (E * E + E) + 2 * E + (E * F_ + F_) + (F_ * E + E)
    assert tiny().num_params() == V * E + BLOCK * E + L * per_block + 2 * E  # no output matrix
    assert tiny(mlp=False).num_params() == V * E + BLOCK * E + L * (2 * E + 4 * (E * E + E)) + 2 * E
    assert "lm_head.weight" not in tiny().state_dict()


def _swap(model, tensors):
    """Point the model's parameter attributes at ``tensors`` (for gradcheck's float64 copies)."""
    slots = []
    for mod in model.modules():
        for name, p in list(mod._parameters.items()):
            if p is not None:
                slots.append((mod, name))
    for (mod, name), t in zip(slots, tensors):
        object.__setattr__(mod, name, t)


@pytest.mark.parametrize("mlp", [True, False])
def test_gradcheck_every_parameter(mlp):
    model = tiny(mlp=mlp, d=4, heads=2)
    params = list(model.parameters())
    idx = IDX[:, :5]

    def fn(*ps):
        _swap(model, ps)
        return model(idx)

    try:
        assert ta.gradcheck(fn, tuple(params), atol=1e-6, rtol=1e-5)
    finally:
        _swap(model, params)


# ------------------------------------------------------------------------------------------------
# PyTorch with the same weights
# ------------------------------------------------------------------------------------------------

def torch_forward(torch, sd, idx, heads, layers, mlp):
    """The same GPT written with torch.nn.functional (SDPA with is_causal=True)."""
    Fn = torch.nn.functional
    B, T = idx.shape
    x = sd["wte.weight"][torch.as_tensor(idx)] + sd["wpe.weight"][:T]
    E = x.shape[-1]
    for i in range(layers):
        p = f"blocks.{i}."
        h = Fn.layer_norm(x, (E,), sd[p + "ln_1.weight"], sd[p + "ln_1.bias"])
        q, k, v = (Fn.linear(h, sd[p + f"attn.{n}_proj.weight"], sd[p + f"attn.{n}_proj.bias"])
                   .view(B, T, heads, E // heads).transpose(1, 2) for n in "qkv")
        a = Fn.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, E)
        x = x + Fn.linear(a, sd[p + "attn.out_proj.weight"], sd[p + "attn.out_proj.bias"])
        if mlp:
            h = Fn.layer_norm(x, (E,), sd[p + "ln_2.weight"], sd[p + "ln_2.bias"])
            h = Fn.gelu(Fn.linear(h, sd[p + "mlp.0.weight"], sd[p + "mlp.0.bias"]))
            x = x + Fn.linear(h, sd[p + "mlp.2.weight"], sd[p + "mlp.2.bias"])
    return Fn.linear(Fn.layer_norm(x, (E,), sd["ln_f.weight"], sd["ln_f.bias"]), sd["wte.weight"])


@pytest.mark.parametrize("mlp", [True, False])
def test_forward_and_gradients_equal_pytorch(mlp):
    torch = import_torch()
    model = tiny(mlp=mlp)
    sd = {k: torch.tensor(v, requires_grad=True) for k, v in model.state_dict().items()}
    targets = np.roll(IDX, -1, axis=1)
    want = torch_forward(torch, sd, IDX, 2, 2, mlp)
    torch.nn.functional.cross_entropy(want.reshape(-1, V), torch.as_tensor(targets).reshape(-1)).backward()
    got = model(IDX)
    ta.nn.functional.cross_entropy(got.reshape(-1, V), targets.reshape(-1)).backward()
    np.testing.assert_allclose(got.data, want.detach().numpy(), rtol=1e-10, atol=1e-12)
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.grad, sd[name].grad.numpy(), rtol=1e-8, atol=1e-12, err_msg=name)


# ------------------------------------------------------------------------------------------------
# attention maps and head ablation
# ------------------------------------------------------------------------------------------------

def test_attention_maps_are_causal_distributions_that_reproduce_the_block_output():
    model = tiny()
    maps = model.attention_maps(IDX)  # (layers, B, H, T, T)
    assert maps.shape == (2, 2, 2, 7, 7)
    np.testing.assert_allclose(maps.sum(-1), 1.0, atol=1e-12)
    assert np.all(maps[..., np.triu_indices(7, 1)[0], np.triu_indices(7, 1)[1]] == 0)
    block = model.blocks[0]
    x = model.wte(IDX) + model.wpe(np.arange(7))  # (B, T, E)
    v = block.attn.v_proj(block.ln_1(x)).data.reshape(2, 7, 2, 4).transpose(0, 2, 1, 3)  # (B, H, T, D)
    heads = (maps[0] @ v).transpose(0, 2, 1, 3).reshape(2, 7, 8)  # (B, T, E)
    want = block.attn(block.ln_1(x), is_causal=True).data
    np.testing.assert_allclose(heads @ block.attn.out_proj.weight.data.T + block.attn.out_proj.bias.data,
                               want, rtol=1e-10, atol=1e-12)


def test_ablating_a_head_equals_dropping_its_output_and_is_undone_on_exit():
    model = tiny()
    before = model(IDX).data
    with model.ablate_head(1, 0):
        ablated = model(IDX).data
    want = numpy_forward(model.state_dict(), IDX, heads=2, layers=2, mlp=True, ablate=(1, 0))
    np.testing.assert_allclose(ablated, want, rtol=1e-10, atol=1e-12)
    assert np.abs(ablated - before).max() > 1e-3
    np.testing.assert_array_equal(model(IDX).data, before)
    with pytest.raises(ValueError, match="head 2 is out of range for 2 heads"), model.ablate_head(0, 2):
        pass


# ------------------------------------------------------------------------------------------------
# generation
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mlp", [True, False])
@pytest.mark.parametrize("temperature,top_k", [(0.0, None), (1.0, None), (0.7, 3)])
def test_cached_and_uncached_generation_agree(mlp, temperature, top_k):
    model = tiny(mlp=mlp)
    prompt = IDX[:, :3]
    a, la = model.generate(prompt, 9, temperature, top_k, use_cache=True, seed=5, return_logits=True)
    b, lb = model.generate(prompt, 9, temperature, top_k, use_cache=False, seed=5, return_logits=True)
    assert a.shape == (2, 12) and la.shape == (2, 9, V)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a[:, :3], prompt)
    assert np.abs(la - lb).max() <= 1e-9
    # each step's logits are the forward's logits at the previous position of the final sequence
    np.testing.assert_allclose(la, model(a[:, :-1]).data[:, 2:], rtol=1e-10, atol=1e-12)


def test_greedy_picks_the_argmax_and_top_1_is_greedy():
    model = tiny()
    out = model.generate(IDX[:, :2], 6, temperature=0)
    np.testing.assert_array_equal(out[:, 2:], model(out[:, :-1]).data[:, 1:].argmax(-1))
    np.testing.assert_array_equal(model.generate(IDX[:, :2], 6, temperature=1.3, top_k=1, seed=0), out)


def test_sampling_is_seeded():
    model = tiny()
    a = model.generate(IDX[:, :2], 8, seed=3)
    np.testing.assert_array_equal(a, model.generate(IDX[:, :2], 8, seed=3))
    assert not np.array_equal(a, model.generate(IDX[:, :2], 8, seed=4))
    ta.manual_seed(7)
    b = model.generate(IDX[:, :2], 8)
    ta.manual_seed(7)
    np.testing.assert_array_equal(b, model.generate(IDX[:, :2], 8))


@pytest.mark.parametrize("temperature,top_k", [(1.0, None), (2.0, None), (0.5, 4)])
def test_sampled_frequencies_follow_softmax_over_the_top_k(temperature, top_k):
    model = tiny()
    n = 20000
    prompt = np.tile(IDX[:1, :4], (n, 1))  # (n, 4): one prompt, n samples
    first = model.generate(prompt, 1, temperature, top_k, seed=0)[:, -1]
    z = model(IDX[:1, :4]).data[0, -1] / temperature  # (V,)
    if top_k is not None:
        z = np.where(z >= np.sort(z)[-top_k], z, -np.inf)
    p = np.exp(z - z.max())
    p /= p.sum()
    freq = np.bincount(first, minlength=V) / n
    assert np.all(freq[p == 0] == 0)
    np.testing.assert_array_less(np.abs(freq - p), 5 * np.sqrt(p * (1 - p) / n) + 1e-12)


def test_generation_leaves_the_training_mode_alone():
    model = tiny().train()
    model.generate(IDX[:, :2], 2)
    assert model.training
    assert model.generate(IDX[:, :2], 0).shape == (2, 2)


@pytest.mark.parametrize("kwargs,message", [
    (dict(idx=[[1, 11]]), r"token 11 is outside the vocabulary 0\.\.10"),
    (dict(idx=[[-1, 2]]), r"token -1 is outside the vocabulary"),
    (dict(idx=[[1.0, 2.0]]), r"expected \(B, T\) integer token ids"),
    (dict(idx=[1, 2]), r"shape \(2,\)"),
    (dict(max_new_tokens=11), r"2 tokens \+ 11 new tokens needs 13 positions.*block_size = 12"),
    (dict(max_new_tokens=-1), r"max_new_tokens must be an int >= 0"),
    (dict(top_k=0), r"top_k must be an int >= 1"),
    (dict(top_k=1.5), r"top_k must be an int >= 1"),
    (dict(temperature=-0.1), r"temperature must be >= 0"),
    (dict(temperature=float("nan")), r"temperature must be >= 0"),
])
def test_bad_generate_arguments_are_clear_errors(kwargs, message):
    model = tiny()
    args = dict(idx=[[1, 2]], max_new_tokens=3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        model.generate(np.array(args.pop("idx")), **args)


def test_forward_rejects_sequences_longer_than_the_position_table():
    with pytest.raises(ValueError, match=r"positions 0\.\.12 exceed the position table of block_size 12"):
        tiny()(np.zeros((1, 13), np.int64))
