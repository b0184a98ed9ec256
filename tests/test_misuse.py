"""Misuse of the engine, the nn modules and generation: each input gets PyTorch's answer where PyTorch
has one, else a clear error naming the value and what was expected (never a NumPy-internal crash
and never a silent wrong result). One test per misbehaviour found in issue 26."""

from __future__ import annotations

import numpy as np
import pytest

import tinyattn as ta
from tinyattn.autograd import Tensor
from helpers import import_torch


# ----------------------------------------------------------------------------------------------
# Tensor.from_op checks what a backward returns (the mistake notebook 01's "write your own op" invites)
# ----------------------------------------------------------------------------------------------

def cube(x, backward):
    return Tensor.from_op(x.data ** 3, (x,), backward, "cube")


def test_a_bare_array_instead_of_a_one_tuple_is_refused_naming_the_op():
    x = ta.tensor(np.arange(1.0, 7.0).reshape(2, 3), requires_grad=True)
    with pytest.raises(TypeError, match=r"'cube'.*not a tuple.*return \(grad,\)"):
        cube(x, lambda g: 3 * x.data ** 2 * g).sum().backward()
    assert x.grad is None  # nothing was accumulated


def test_the_wrong_number_of_gradients_is_refused():
    x = ta.tensor(np.ones(3), requires_grad=True)
    with pytest.raises(ValueError, match=r"'cube' returned 2 gradients for its 1 input"):
        cube(x, lambda g: (g, g)).sum().backward()


def test_a_gradient_of_another_shape_is_refused_even_if_it_broadcasts():
    x = ta.tensor(np.ones((2, 3)), requires_grad=True)
    for wrong in (np.ones(3), np.ones((1, 3)), np.ones(()), np.ones((3, 2))):
        with pytest.raises(ValueError, match=r"'cube'.*shape \(.*input 0, which has shape \(2, 3\)"):
            cube(x, lambda g, w=wrong: (w,)).sum().backward()


def test_a_correct_custom_op_still_works_and_none_means_no_gradient():
    x = ta.tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = ta.tensor(np.array([3.0, 4.0]), requires_grad=True)
    out = Tensor.from_op(x.data * 2, (x, y), lambda g: (2 * g, None), "double_first")
    out.sum().backward()
    assert x.grad.tolist() == [2.0, 2.0] and y.grad is None


# ----------------------------------------------------------------------------------------------
# pow at 0 and gather's indices, against PyTorch
# ----------------------------------------------------------------------------------------------

def test_x_to_the_zero_has_gradient_zero_at_zero_like_torch():
    torch = import_torch()
    data = np.array([0.0, 0.0, 2.0, -1.5])
    for exponent in (0.0, 0, 1.0, 2.0):
        x = ta.tensor(data, requires_grad=True)
        (x ** exponent).sum().backward()
        tx = torch.tensor(data, requires_grad=True)
        (tx ** exponent).sum().backward()
        np.testing.assert_array_equal(x.grad, tx.grad.numpy(), err_msg=f"x ** {exponent}")
    x, e = ta.tensor(data, requires_grad=True), ta.tensor(np.array([0.0, 2.0, 0.0, 3.0]), requires_grad=True)
    (x ** e).sum().backward()
    tx, te = torch.tensor(data, requires_grad=True), torch.tensor(e.data, requires_grad=True)
    (tx ** te).sum().backward()
    np.testing.assert_array_equal(x.grad, tx.grad.numpy())


def test_gather_refuses_what_torch_refuses_and_reads_a_corner_like_torch():
    torch = import_torch()
    data = np.arange(6.0).reshape(2, 3)
    x = ta.tensor(data)
    with pytest.raises(IndexError, match=r"index -1 is out of bounds for dimension 1 with size 3"):
        x.gather(1, np.array([[0], [-1]]))
    with pytest.raises(IndexError, match=r"index 3 is out of bounds"):
        x.gather(1, np.array([[3], [0]]))
    with pytest.raises(TypeError, match=r"integers, got dtype float"):
        x.gather(1, np.array([[0.0], [1.0]]))
    with pytest.raises(ValueError, match=r"same number of dimensions \(2\)"):
        x.gather(1, np.array([0, 1]))
    idx = np.array([[2, 0]])  # smaller than the input in dim 0: PyTorch reads the corner
    xg = ta.tensor(data, requires_grad=True)
    out = xg.gather(1, idx)
    out.sum().backward()
    tx = torch.tensor(data, requires_grad=True)
    tout = tx.gather(1, torch.tensor(idx))
    tout.sum().backward()
    np.testing.assert_array_equal(out.data, tout.detach().numpy())
    np.testing.assert_array_equal(xg.grad, tx.grad.numpy())


# ----------------------------------------------------------------------------------------------
# zero-size layers: what PyTorch does
# ----------------------------------------------------------------------------------------------

def test_zero_size_linear_like_torch():
    torch = import_torch()
    import tinyattn.nn as nn
    for n_in, n_out in ((0, 3), (3, 0), (0, 0)):
        with pytest.warns(UserWarning, match="zero-element"):
            ours = nn.Linear(n_in, n_out).double()
        with pytest.warns(UserWarning, match="zero-element"):
            theirs = torch.nn.Linear(n_in, n_out).double()
        ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
        x = np.random.default_rng(0).standard_normal((2, 4, n_in))
        tx, ox = torch.tensor(x, requires_grad=True), ta.tensor(x, requires_grad=True)
        ty, oy = theirs(tx), ours(ox)
        np.testing.assert_allclose(oy.data, ty.detach().numpy(), atol=1e-12)
        g = np.random.default_rng(1).standard_normal(oy.shape)
        ty.backward(torch.tensor(g))
        oy.backward(g)
        np.testing.assert_allclose(ox.grad, tx.grad.numpy(), atol=1e-12)
        np.testing.assert_allclose(ours.bias.grad, theirs.bias.grad.numpy(), atol=1e-12)
    with pytest.raises(ValueError, match=r"in_features must be an int >= 0, got -1"):
        nn.Linear(-1, 3)
    with pytest.raises(TypeError, match=r"out_features must be an int >= 0, got 2.5"):
        nn.Linear(3, 2.5)


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_dim_feedforward_zero_like_torch(kind):
    torch = import_torch()
    import tinyattn.nn as nn
    cls = "TransformerEncoderLayer" if kind == "encoder" else "TransformerDecoderLayer"
    with pytest.warns(UserWarning, match="zero-element"):
        ours = getattr(nn, cls)(8, 2, dim_feedforward=0, dropout=0.0).double()
    with pytest.warns(UserWarning, match="zero-element"):
        theirs = getattr(torch.nn, cls)(8, 2, dim_feedforward=0, dropout=0.0).double()
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    rng = np.random.default_rng(0)
    x, mem = rng.standard_normal((5, 2, 8)), rng.standard_normal((3, 2, 8))
    args = (x,) if kind == "encoder" else (x, mem)
    want = theirs(*(torch.tensor(a) for a in args)).detach().numpy()
    np.testing.assert_allclose(ours(*(ta.tensor(a) for a in args)).data, want, atol=1e-10)


# ----------------------------------------------------------------------------------------------
# generation arguments
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def translator():
    from tinyattn.models import Translator
    ta.manual_seed(0)
    return Translator(d_model=16, nhead=2, dim_feedforward=32, num_encoder_layers=1, num_decoder_layers=1)


def source(model):
    import tinyattn.data as data
    return data.encode_source(["1999-12-31", "2001-02-03"])


@pytest.mark.parametrize("decode", ["greedy_decode", "beam_search"])
def test_decoding_restores_the_training_flag(translator, decode):
    for flag in (True, False):
        translator.train(flag)
        getattr(translator, decode)(source(translator), max_len=3)
        assert translator.training is flag and all(m.training is flag for m in translator.modules())


@pytest.mark.parametrize("bad", [0, -1, 2.0, True, "3", 10 ** 6])
def test_max_len_must_be_a_positive_int_within_the_positions(translator, bad):
    for decode in (translator.greedy_decode, translator.beam_search):
        with pytest.raises((TypeError, ValueError), match=rf"max_len must be .*got {bad!r}"):
            decode(source(translator), max_len=bad)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), "1", None])
def test_length_penalty_must_be_finite(translator, bad):
    with pytest.raises(ValueError, match="length_penalty must be a finite number"):
        translator.beam_search(source(translator), beam_size=2, length_penalty=bad, max_len=3)


@pytest.mark.parametrize("bad", [0, 2.5, True])
def test_beam_size_must_be_a_positive_int(translator, bad):
    with pytest.raises((TypeError, ValueError), match="beam_size must be"):
        translator.beam_search(source(translator), beam_size=bad, max_len=3)


@pytest.fixture(scope="module")
def gpt():
    from tinyattn.models import GPT
    ta.manual_seed(0)
    return GPT(vocab_size=11, block_size=16, d_model=16, num_heads=2, num_layers=2)


def test_a_tiny_temperature_samples_the_argmax(gpt):
    prompt = np.array([[3, 1, 4], [1, 5, 9]])
    greedy = gpt.generate(prompt, 6, temperature=0)
    assert (greedy[:, 3:] != 0).any()  # the argmax is not simply token 0
    for t in (1e-3, 1e-30, 1e-300, 5e-324):
        np.testing.assert_array_equal(gpt.generate(prompt, 6, temperature=t, seed=1), greedy)


def test_caches_of_different_lengths_are_refused(gpt):
    from tinyattn.efficient import KVCache
    caches = [KVCache() for _ in gpt.blocks]
    gpt(np.array([[1, 2, 3]]), caches)  # both hold 3 positions
    with pytest.raises(ValueError, match=r"all of one length; got lengths \[3, 0\]"):
        gpt(np.array([[4]]), [caches[0], KVCache()])


@pytest.mark.parametrize("bad", [2.0, -1, True, "2"])
def test_max_new_tokens_must_be_an_int_at_least_zero(gpt, bad):
    with pytest.raises((TypeError, ValueError), match=r"max_new_tokens must be an int"):
        gpt.generate(np.array([[1, 2]]), bad)


@pytest.mark.parametrize("bad", [-1, 0, 2.5, True, None])
def test_encode_batch_size_must_be_a_positive_int(bad):
    from tinyattn.pretrained import BertConfig, BertModel, BertTokenizer
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "cat"])}
    config = BertConfig(vocab_size=6, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=16, max_position_embeddings=16)
    model = BertModel(config, BertTokenizer(vocab))
    assert model.encode(["cat", "cat cat"], batch_size=1).shape == (2, 8)
    with pytest.raises(ValueError, match=rf"batch_size must be an int >= 1, got {bad!r}"):
        model.encode(["cat", "cat cat"], batch_size=bad)


# ----------------------------------------------------------------------------------------------
# odd argument types and values for functional ops, modules, the engine and generation: found by
# probing; each was a NumPy-internal error, a ZeroDivisionError or a silent wrong answer
# ----------------------------------------------------------------------------------------------

def _bad_calls():
    import tinyattn.nn as nn
    import tinyattn.nn.functional as F
    from tinyattn.models import GPT
    x = ta.randn(2, 3, 8)
    ta.manual_seed(0)
    gpt = GPT(11, 16, 16, 2, 1)
    return {
        "softmax(dim=1.5)": (lambda: F.softmax(x, dim=1.5), TypeError, r"dim must be an int, got 1.5"),
        "log_softmax(dim=None)": (lambda: F.log_softmax(x, dim=None),
            TypeError, r"dim must be an int, got None"),
        "layer_norm(eps='a')": (lambda: F.layer_norm(x, 8, eps="a"),
            TypeError, r"eps must be a number >= 0, got 'a'"),
        "LayerNorm(-1)": (lambda: nn.LayerNorm(-1),
            ValueError, r"normalized_shape \(-1,\) has a negative size"),
        "LayerNorm(2.5)": (lambda: nn.LayerNorm(2.5),
            TypeError, r"normalized_shape must be an int or a tuple"),
        "Embedding(-1, 3)": (lambda: nn.Embedding(-1, 3),
            ValueError, r"num_embeddings must be an int >= 0, got -1"),
        "Embedding(3, 2.5)": (lambda: nn.Embedding(3, 2.5),
            TypeError, r"embedding_dim must be an int >= 0, got 2.5"),
        "embedding(1-D weight)": (lambda: F.embedding(np.array([0]), ta.randn(3)), ValueError,
                                  r"weight has shape \(3,\); expected \(num_embeddings, embedding_dim\)"),
        "cross_entropy(label_smoothing=2)": (lambda: F.cross_entropy(ta.randn(2, 3), np.array([0, 1]),
                                                                     label_smoothing=2.0), ValueError,
                                             r"label_smoothing has to be between 0 and 1, but got 2.0"),
        "cross_entropy(weight of 5 for 3 classes)": (lambda: F.cross_entropy(ta.randn(2, 3), np.array([0, 1]),
                                                                             weight=ta.ones(5)), ValueError,
                                                     r"weight has shape \(5,\); expected .* \(3,\)"),
        "PositionalEncoding(0)": (lambda: nn.PositionalEncoding(0, 10),
            ValueError, r"d_model must be a positive int"),
        "causal_mask(-1)": (lambda: nn.causal_mask(-1), ValueError, r"L must be an int >= 0, got -1"),
        "causal_mask(2.5)": (lambda: nn.causal_mask(2.5), ValueError, r"L must be an int >= 0, got 2.5"),
        "rotary(base=0)": (lambda: F.apply_rotary_pos_emb(ta.randn(2, 4), base=0.0), ValueError,
                           r"base must be a number > 0, got 0.0"),
        "repeat_interleave(-1)": (lambda: x.repeat_interleave(-1, dim=1), ValueError,
                                  r"repeats must be an int >= 0, got -1"),
        "repeat_interleave(1.5)": (lambda: x.repeat_interleave(1.5, dim=1), ValueError,
                                   r"repeats must be an int >= 0, got 1.5"),
        "expand((3, 3, 8))": (lambda: x.expand(3, 3, 8),
            ValueError, r"shape \(2, 3, 8\) cannot be expanded to \(3, 3, 8\)"),
        "argmax(dim=5)": (lambda: x.argmax(dim=5), IndexError, r"dim 5 is out of range"),
        "cat([])": (lambda: ta.cat([]), ValueError, r"non-empty list"),
        "stack([])": (lambda: ta.stack([]), ValueError, r"non-empty list"),
        "GPT(vocab_size=2.0)": (lambda: GPT(2.0, 16),
            ValueError, r"vocab_size must be a positive int, got 2.0"),
        "GPT(caches=3)": (lambda: gpt([[1]], caches=3), TypeError, r"caches must be a list of KVCache"),
        "generate(temperature='1')": (lambda: gpt.generate([[1]], 2, temperature="1"), ValueError,
                                      r"temperature must be >= 0 .*got '1'"),
        "generate(temperature=None)": (lambda: gpt.generate([[1]], 2, temperature=None), ValueError,
                                       r"temperature must be >= 0 \(a number"),
        "generate(top_p='0.5')": (lambda: gpt.generate([[1]], 2, top_p="0.5"), ValueError,
                                  r"top_p must be in \(0, 1\] \(a number\) or None, got '0.5'"),
        "generate(seed='x')": (lambda: gpt.generate([[1]], 2, seed="x"),
            ValueError, r"seed must be an int >= 0"),
        "generate(on_token=3)": (lambda: gpt.generate([[1]], 2, on_token=3),
            TypeError, r"on_token must be a function"),
        "cross_entropy(C=0)": (lambda: F.cross_entropy(ta.randn(2, 0), np.array([0, 0])),
            IndexError, r"target 0 is out of bounds for 0 classes"),
        "arange(step=0)": (lambda: ta.arange(0, 5, 0), ValueError, r"step must be nonzero, got 0"),
        "manual_seed('x')": (lambda: ta.manual_seed("x"), ValueError, r"seed must be an int >= 0, got 'x'"),
        "unbroadcast((2, 3) to (4,))": (lambda: ta.unbroadcast(np.ones((2, 3)), (4,)),
            ValueError, r"\(4,\) does not broadcast to \(2, 3\)"),
    }


BAD_CALLS = _bad_calls()


@pytest.mark.parametrize("name", list(BAD_CALLS))
def test_odd_arguments_get_a_clear_error(name):
    call, error, message = BAD_CALLS[name]
    with pytest.raises(error, match=message):
        call()


def test_zero_size_layer_norm_and_all_ignored_targets_like_torch():
    torch = import_torch()
    import tinyattn.nn as nn
    import tinyattn.nn.functional as F
    x = ta.tensor(np.zeros((2, 0)), requires_grad=True)
    y = nn.LayerNorm(0).double()(x)
    y.sum().backward()
    assert y.shape == tuple(torch.nn.LayerNorm(0)(torch.zeros(2, 0)).shape) and x.grad.shape == (2, 0)
    logits, target = np.random.default_rng(0).standard_normal((2, 3)), np.array([-100, -100])
    want = torch.nn.functional.cross_entropy(torch.tensor(logits), torch.tensor(target))
    assert np.isnan(F.cross_entropy(ta.tensor(logits), target).item()) and torch.isnan(want)


def test_generate_restores_the_training_flag_even_when_on_token_raises(gpt):
    def stop(tokens):
        raise KeyboardInterrupt

    gpt.train(True)
    with pytest.raises(KeyboardInterrupt):
        gpt.generate(np.array([[1, 2]]), 3, on_token=stop)
    assert gpt.training and all(m.training for m in gpt.modules())


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_of_a_scalar_and_of_empty_rows_like_torch(name):
    torch = import_torch()
    import tinyattn.nn.functional as F
    x = ta.tensor(np.array(0.7), requires_grad=True)
    y = getattr(F, name)(x, dim=0)
    y.backward(np.array(2.0))
    tx = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    ty = getattr(torch, name)(tx, 0)
    ty.backward(torch.tensor(2.0, dtype=torch.float64))
    assert (y.item(), float(x.grad)) == (ty.item(), tx.grad.item())
    empty = ta.tensor(np.zeros((2, 0)), requires_grad=True)
    out = getattr(F, name)(empty, dim=-1)
    out.backward(np.zeros((2, 0)))
    assert out.shape == tuple(getattr(torch, name)(torch.zeros(2, 0), -1).shape) and empty.grad.shape == (2, 0)
