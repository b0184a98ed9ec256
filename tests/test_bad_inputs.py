"""Every bad input a careless student is likely to give gets a clear TypeError/ValueError/
IndexError that names the bad value or shape — never a NumPy-internal error, a silent wrong
answer or a half-done job. Where PyTorch returns a result (empty sequences) tinyattn returns the
same result. The table of what each kind of bad input gets is in tests/README.md."""

from __future__ import annotations

import os
import zipfile

import numpy as np
import pytest

import tinyattn as ta
import tinyattn.efficient as eff
import tinyattn.nn as nn
import tinyattn.nn.functional as F

SDPA = F.scaled_dot_product_attention


def t(*shape, dtype=np.float64):
    return ta.tensor(np.random.default_rng(0).standard_normal(shape).astype(dtype))


# -- gradcheck never lies ---------------------------------------------------------------------------

def test_gradcheck_fails_on_a_nan_gradient_and_names_the_element():
    x = ta.tensor([-1.0, 4.0], requires_grad=True)
    with pytest.raises(AssertionError, match=r"index \(0,\).*analytic nan"):
        ta.gradcheck(lambda a: ta.where(a.data > 0, a.sqrt(), a * 0), x)


def test_gradcheck_fails_when_one_gradient_is_infinite():
    x = ta.tensor([0.0, 1.0], requires_grad=True)
    with pytest.raises(AssertionError, match="not finite"):
        ta.gradcheck(lambda a: (a * a).sqrt(), x)


@pytest.mark.parametrize("result", [np.ones(2), None, 1.5, ta.tensor([1, 2])], ids=["ndarray", "None", "float", "int"])
def test_gradcheck_explains_what_fn_must_return(result):
    x = ta.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(TypeError, match="fn must return a floating-point Tensor"):
        ta.gradcheck(lambda a: result, x)


# -- integer tensors --------------------------------------------------------------------------------

@pytest.mark.parametrize("call", [
    lambda x: F.softmax(x, dim=-1), lambda x: F.log_softmax(x, dim=-1), lambda x: F.gelu(x),
    lambda x: F.layer_norm(x, (3,)), lambda x: SDPA(x, x, x), lambda x: F.dropout(x, 0.5),
    lambda x: nn.Linear(3, 2)(x), lambda x: nn.MultiheadAttention(3, 1)(x, x, x),
    lambda x: nn.LayerNorm(3)(x),
], ids=["softmax", "log_softmax", "gelu", "layer_norm", "sdpa", "dropout", "Linear", "MHA", "LayerNorm"])
def test_integer_tensors_are_refused_with_the_dtype_named(call):
    x = ta.tensor([[1, 2, 3], [4, 5, 6]])
    assert x.dtype == np.int64
    with pytest.raises(TypeError, match=r"int64.*floating|floating.*int64"):
        call(x)


# -- shapes, dims and sizes -------------------------------------------------------------------------

def test_unsqueeze_and_stack_check_their_dim_as_pytorch():
    with pytest.raises(IndexError, match="dim 5"):
        t(2, 3).unsqueeze(5)
    assert t(2, 3).unsqueeze(-1).shape == (2, 3, 1) and t(2, 3).unsqueeze(2).shape == (2, 3, 1)
    with pytest.raises(IndexError, match="dim 7"):
        ta.stack([t(2), t(2)], dim=7)
    assert ta.stack([t(2), t(2)], dim=-1).shape == (2, 2)


def test_sdpa_mask_with_more_leading_dims_than_the_scores():
    q = t(2, 3, 4)
    with pytest.raises(ValueError, match=r"attn_mask has shape \(7, 2, 3, 5\).*\(2, 3, 5\)"):
        SDPA(q, t(2, 5, 4), t(2, 5, 4), attn_mask=np.ones((7, 2, 3, 5), bool))


def test_enable_gqa_needs_a_head_dimension():
    with pytest.raises(ValueError, match="enable_gqa.*head"):
        SDPA(t(4, 3, 8), t(5, 8), t(5, 8), enable_gqa=True)


@pytest.mark.parametrize("make", [
    lambda: nn.MultiheadAttention(0, 1), lambda: nn.TransformerEncoderLayer(8, 2, dim_feedforward=-1),
    lambda: eff.GroupedQueryAttention(8, 4, 0), lambda: nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2), -1),
    lambda: nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2), 0),
], ids=["E=0", "ff=-1", "kv_heads=0", "layers=-1", "layers=0"])
def test_sizes_must_be_positive(make):
    with pytest.raises(ValueError, match="positive|must be|>= 0"):
        make()


# -- empty sequences: what PyTorch returns ----------------------------------------------------------

def test_empty_query_sequence_gives_an_empty_output():
    out = SDPA(t(2, 0, 4), t(2, 5, 4), t(2, 5, 3))
    assert out.shape == (2, 0, 3)
    assert eff.flash_attention(t(2, 0, 4), t(2, 5, 4), t(2, 5, 3)).shape == (2, 0, 3)
    assert eff.sliding_window_attention(t(2, 0, 4), t(2, 5, 4), t(2, 5, 3), window=2).shape == (2, 0, 3)
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True), 2).double()
    assert enc(t(3, 0, 8)).shape == (3, 0, 8)
    gqa = eff.GroupedQueryAttention(8, 4, 2).double()
    assert gqa(t(2, 0, 8)).shape == (2, 0, 8)


def test_empty_key_sequence_gives_zeros_and_zero_gradients():
    q = ta.tensor(t(2, 3, 4).data, requires_grad=True)
    out = SDPA(q, t(2, 0, 4), t(2, 0, 3))
    assert out.shape == (2, 3, 3) and np.all(out.data == 0)
    out.sum().backward()
    assert np.all(q.grad == 0)
    mha = nn.MultiheadAttention(8, 2, batch_first=True).double()
    o, w = mha(t(2, 3, 8), t(2, 0, 8), t(2, 0, 8))
    assert o.shape == (2, 3, 8) and w.shape == (2, 3, 0)
    assert np.allclose(o.data, mha.out_proj.bias.data)  # zero heads, then the output projection


# -- arguments -------------------------------------------------------------------------------------

@pytest.mark.parametrize("call, match", [
    (lambda: SDPA(t(2, 3), t(2, 3), t(2, 3), scale=ta.tensor(0.5)), "scale must be a number"),
    (lambda: SDPA(t(2, 3), t(2, 3), t(2, 3), dropout_p=None), "dropout_p must be a number"),
    (lambda: eff.flash_attention(t(2, 3), t(2, 3), t(2, 3), block_size=None), "block_size"),
    (lambda: eff.flash_attention(t(2, 3), t(2, 3), t(2, 3), block_size=float("inf")), "block_size"),
    (lambda: eff.sliding_window_attention(t(2, 3), t(2, 3), t(2, 3), window=None), "window"),
    (lambda: eff.sliding_window_attention(t(2, 3), t(2, 3), t(2, 3), window=float("inf")), "window"),
    (lambda: eff.GroupedQueryAttention(8, 4, None), "num_kv_heads"),
    (lambda: eff.linear_attention(t(2, 3), t(2, 3), t(2, 3), eps=0), "eps"),
    (lambda: eff.linear_attention(t(2, 3), t(2, 3), t(2, 3), eps=-1), "eps"),
    (lambda: eff.kv_cache_bytes(-1, 2, 3, 4), "num_layers"),
])
def test_bad_arguments_name_themselves(call, match):
    with pytest.raises((TypeError, ValueError), match=match):
        call()


# -- load_state_dict is all or nothing --------------------------------------------------------------

@pytest.mark.parametrize("bad", ["weights.npz", nn.Linear(3, 2), [1, 2]], ids=["path", "module", "list"])
def test_load_state_dict_needs_a_mapping(bad):
    with pytest.raises(TypeError, match="load_state_dict expects a dict"):
        nn.Linear(3, 2).load_state_dict(bad)


@pytest.mark.parametrize("value, match", [
    (np.array([[None] * 3] * 2, dtype=object), "numeric"),
    (np.ones((2, 3), complex), "complex"),
    ("abc", "numeric"),
], ids=["object", "complex", "string"])
def test_load_state_dict_validates_every_entry_before_copying_any(value, match):
    layer = nn.Linear(3, 2)
    before = {k: v.copy() for k, v in layer.state_dict().items()}
    with pytest.raises((TypeError, ValueError), match=match):
        layer.load_state_dict({"bias": np.zeros(2), "weight": value})
    for k, v in layer.state_dict().items():
        assert np.array_equal(v, before[k]), f"{k} changed by a failed load"


# -- ta.save / ta.load -------------------------------------------------------------------------------

def test_save_accepts_any_key_and_refuses_non_dicts(tmp_path):
    p = tmp_path / "w.npz"
    ta.save({"file": np.ones(2), "allow_pickle": np.zeros(1)}, p)
    back = ta.load(p)
    assert np.array_equal(back["file"], np.ones(2)) and np.array_equal(back["allow_pickle"], [0.0])
    with pytest.raises(TypeError, match="save expects a dict"):
        ta.save([np.ones(2)], p)


def test_load_says_what_is_wrong_with_the_file_and_names_it(tmp_path):
    text = tmp_path / "text.npz"
    text.write_text("not an archive")
    with pytest.raises(ValueError, match=rf"{text}.*not an \.npz archive") as err:
        ta.load(text)
    assert "pickle" not in str(err.value)
    npy = tmp_path / "array.npy"
    np.save(npy, np.ones(3))
    with pytest.raises(ValueError, match="not an .npz archive"):
        ta.load(npy)
    good = tmp_path / "good.npz"
    ta.save({"w": np.arange(1000.0)}, good)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:600])
    with pytest.raises(ValueError, match=rf"{truncated}.*truncated or corrupt"):
        ta.load(truncated)
    raw = bytearray(good.read_bytes())
    raw[200] ^= 0xFF  # flip bits inside the array data: the CRC no longer matches
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="truncated or corrupt"):
        ta.load(corrupt)
    member = tmp_path / "member.npz"
    with zipfile.ZipFile(member, "w") as z:
        z.writestr("w.npy", b"hello, I am text")
    with pytest.raises(ValueError, match="member 'w' is not an array"):
        ta.load(member)
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        ta.load(tmp_path / "missing.npz")


def test_data_changed_between_forward_and_backward_is_documented():
    assert "between forward and backward" in ta.Tensor.__doc__


# -- the CLIs check their arguments and output paths before any work --------------------------------

@pytest.mark.parametrize("args, message", [
    (["--seed", "-1"], "--seed must be >= 0"),
    (["--log-every", "0"], "--log-every must be positive"),
    (["--threads", "0"], "--threads must be positive"),
    (["--steps", "0"], "--steps must be positive"),
    (["--save", "run.json"], "the training log is written to PATH with .json"),
])
def test_train_cli_refuses_bad_arguments_before_training(args, message, capsys):
    from tinyattn import train

    with pytest.raises(SystemExit) as exit_:
        train.main(["--task", "reverse", *args])
    assert exit_.value.code == 2
    err = capsys.readouterr()
    assert message in err.err and "training on" not in err.out


def test_train_cli_checks_the_save_path_before_training(tmp_path, capsys):
    from tinyattn import train

    (tmp_path / "run.json").mkdir()  # the log's place is taken by a folder
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for save, message in [(tmp_path, "is a folder"), (tmp_path / "run.npz", "run.json is a folder"),
                          (blocker / "run.npz", "is a file, not a folder")]:
        with pytest.raises(SystemExit):
            train.main(["--task", "reverse", "--save", str(save)])
        err = capsys.readouterr()
        assert message in err.err and "training on" not in err.out, err


def test_figures_cli_checks_the_output_folder_before_rendering(tmp_path, capsys):
    from tinyattn import figures

    afile = tmp_path / "afile"
    afile.write_text("x")
    for out, message in [("", "name is empty"), (str(afile), "is a file; expected a folder"),
                         (str(afile / "sub"), "is a file, not a folder")]:
        with pytest.raises(SystemExit):
            figures.main(["--only", "masks", "--out", out])
        err = capsys.readouterr()
        assert message in err.err and "written" not in err.out
    assert not any(p.suffix == ".png" for p in tmp_path.rglob("*"))


def test_unwritable_folder_is_refused(tmp_path, monkeypatch):
    from tinyattn.serialization import check_writable

    monkeypatch.setattr(os, "access", lambda path, mode: os.fspath(path) != str(tmp_path))
    with pytest.raises(ValueError, match=rf"{tmp_path} is not writable"):
        check_writable(tmp_path / "x.npz")
    (tmp_path / "ok").mkdir()
    assert check_writable(tmp_path / "ok" / "sub" / "x.npz")  # missing folders below a writable one
