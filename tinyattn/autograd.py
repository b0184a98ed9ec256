"""The autograd engine: an array-valued micrograd.

A ``Tensor`` wraps an ``np.ndarray`` (``.data``). Every differentiable op computes its result
with NumPy and, when gradients are on, records its parents and a ``_backward`` closure that maps
the gradient of the result to the gradients of the parents. ``Tensor.backward`` orders the graph
iteratively (no recursion) and walks it once in reverse topological order.

Only leaves (tensors created by the user with ``requires_grad=True``) receive ``.grad``, and they
accumulate it with ``+=``, as in PyTorch. Intermediate gradients live in a dictionary for the
duration of one backward pass, so the graph itself is never modified: a second ``.backward()``
through another output of the same graph works.
"""

from __future__ import annotations

import contextlib
import numbers
from collections import namedtuple

import numpy as np

__all__ = [
    "Tensor", "tensor", "no_grad", "enable_grad", "is_grad_enabled", "manual_seed", "get_rng",
    "zeros", "ones", "zeros_like", "ones_like", "randn", "rand", "arange", "full", "cat",
    "stack", "where", "unbroadcast", "gradcheck", "numerical_gradient", "reverse_topological",
    "float32", "float64", "int64", "bool_",
]

float32, float64, int64, bool_ = np.float32, np.float64, np.int64, np.bool_
DEFAULT_DTYPE = np.float32

_GRAD_ENABLED = True
_RNG = np.random.default_rng(0)

MaxResult = namedtuple("MaxResult", ["values", "indices"])

# ----------------------------------------------------------------------------------------------
# global state: gradient mode and the random generator
# ----------------------------------------------------------------------------------------------

def is_grad_enabled() -> bool:
    """Whether new ops record a graph (False inside ``no_grad()``)."""
    return _GRAD_ENABLED


@contextlib.contextmanager
def _grad_mode(enabled: bool):
    global _GRAD_ENABLED
    previous, _GRAD_ENABLED = _GRAD_ENABLED, enabled
    try:
        yield
    finally:
        _GRAD_ENABLED = previous


def no_grad():
    """Context manager: ops inside build no graph (for evaluation and parameter updates)."""
    return _grad_mode(False)


def enable_grad():
    """Context manager: turn graph building back on inside a ``no_grad()`` block."""
    return _grad_mode(True)


def manual_seed(seed: int) -> np.random.Generator:
    """Seed tinyattn's global generator (used by randn, rand, initializers and dropout)."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"manual_seed: seed must be an int >= 0, got {seed!r}")
    global _RNG
    _RNG = np.random.default_rng(seed)
    return _RNG


def get_rng() -> np.random.Generator:
    """The global generator that ``manual_seed`` resets."""
    return _RNG


# ----------------------------------------------------------------------------------------------
# the broadcasting rule
# ----------------------------------------------------------------------------------------------

def unbroadcast(grad: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum ``grad`` back to ``shape``: the adjoint of broadcasting ``shape`` to ``grad.shape``.

    If x of shape ``shape`` was broadcast to y = x + 0 of shape ``grad.shape``, every element
    of x fed several elements of y, so dL/dx is the sum of dL/dy over the axes that were added
    on the left and over the axes where x had size 1.
    """
    shape = tuple(shape)
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra < 0 or any(n not in (1, m) for n, m in zip(shape, grad.shape[extra:])):
        raise ValueError(f"cannot unbroadcast a gradient of shape {grad.shape} to {shape}: "
                         f"{shape} does not broadcast to {grad.shape}")
    axes = tuple(range(extra)) + tuple(
        extra + i for i, n in enumerate(shape) if n == 1 and grad.shape[extra + i] != 1
    )
    out = grad.sum(axis=axes, keepdims=True) if axes else grad
    return out.reshape(shape)


def _broadcast_shape(*shapes) -> tuple:
    try:
        return np.broadcast_shapes(*shapes)
    except ValueError:
        raise ValueError(
            "shapes " + " and ".join(str(tuple(s)) for s in shapes) + " cannot be broadcast together"
        ) from None


# ----------------------------------------------------------------------------------------------
# construction helpers
# ----------------------------------------------------------------------------------------------

def _as_array(data, dtype=None) -> np.ndarray:
    """An ndarray from data; Python floats default to float32 as in PyTorch."""
    if isinstance(data, Tensor):
        data = data.data
    if dtype is not None:
        return np.asarray(data, dtype=dtype)
    if isinstance(data, np.ndarray):
        return data
    if isinstance(data, np.generic):  # a NumPy scalar (e.g. from a full reduction) keeps its dtype
        return np.asarray(data)
    arr = np.asarray(data)
    if arr.dtype == np.float64:
        arr = arr.astype(DEFAULT_DTYPE)
    return arr


def _is_float(arr: np.ndarray) -> bool:
    return np.issubdtype(arr.dtype, np.floating)


def _axes(dim, ndim: int):
    """Normalize ``dim`` (None, int or tuple, negatives allowed) to a tuple of axes or None."""
    if dim is None:
        return None
    dims = (dim,) if isinstance(dim, numbers.Integral) else tuple(dim)
    out = []
    for d in dims:
        if not -max(ndim, 1) <= d < max(ndim, 1):
            raise IndexError(f"dim {d} is out of range for a tensor with {ndim} dimensions")
        out.append(int(d) % max(ndim, 1))
    return tuple(out)


def _new_axis(dim: int, ndim: int, op: str) -> int:
    """Where a new axis goes in an ndim-D tensor: dim in [−ndim − 1, ndim], as PyTorch checks."""
    if not -ndim - 1 <= dim <= ndim:
        raise IndexError(f"{op}: dim {dim} is out of range for a {ndim}-D tensor (a new axis "
                         f"goes at -{ndim + 1} ... {ndim})")
    return int(dim) % (ndim + 1)


def _other(x, like: "Tensor") -> "Tensor":
    """Wrap the other operand of a binary op; a Python scalar takes ``like``'s float dtype."""
    if isinstance(x, Tensor):
        return x
    if isinstance(x, numbers.Number) and not isinstance(x, bool) and _is_float(like.data):
        return Tensor(np.asarray(x, dtype=like.dtype))
    return Tensor(_as_array(x))


# ----------------------------------------------------------------------------------------------
# the Tensor
# ----------------------------------------------------------------------------------------------

class Tensor:
    """An n-dimensional array that remembers how it was computed.

    ``data``: the ``np.ndarray``; ``grad``: an ndarray of the same shape after ``backward`` (for
    leaves that require grad), else None.

    Ops keep references to the arrays they need for the backward (not copies), so changing
    ``.data`` in place between forward and backward silently corrupts the gradients, as in
    PyTorch. Change ``.data`` only outside a graph (e.g. in an optimizer step).
    """

    __array_priority__ = 1000  # ndarray (op) Tensor defers to Tensor's reflected operators

    def __init__(self, data, requires_grad: bool = False, dtype=None):
        self.data = _as_array(data, dtype)
        self.grad = None
        self._parents = ()
        self._backward = None
        self._op = ""
        self._retain = False
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    # -- metadata --------------------------------------------------------------------------
    @property
    def shape(self) -> tuple:
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def is_leaf(self) -> bool:
        return self._backward is None

    @property
    def parents(self) -> tuple:
        """The tensors this one was computed from (empty for a leaf or outside a graph)."""
        return self._parents

    @property
    def op(self) -> str:
        """The name of the op that made this tensor ("" for a leaf), e.g. "add", "matmul", "softmax"."""
        return self._op

    @classmethod
    def from_op(cls, data, parents, backward, op: str) -> "Tensor":
        """A tensor computed by ``op`` from ``parents``: the one way every op enters the graph.

        data: the result (an ndarray); parents: the input tensors; backward(g) -> one gradient
        (an ndarray shaped like that parent, or None) per parent, given g = dL/d(result). When
        gradients are on and some parent requires grad, the result remembers parents, backward
        and the op's name; otherwise it is a plain constant. ``backward`` must return a tuple (even
        for one parent) of gradients shaped exactly like their parents; ``Tensor.backward`` checks
        that and names the op when it is not so. A new op is written like this::

            def cube(x):
                return Tensor.from_op(x.data ** 3, (x,), lambda g: (3 * x.data ** 2 * g,), "cube")
        """
        out = cls(data)
        parents = tuple(parents)
        if _GRAD_ENABLED and any(p.requires_grad for p in parents):
            out.requires_grad = True
            out._parents, out._backward, out._op = parents, backward, op
        return out

    def size(self, dim=None):
        return self.shape if dim is None else self.shape[dim]

    def dim(self) -> int:
        return self.ndim

    def numel(self) -> int:
        return self.data.size

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        body = np.array2string(self.data, precision=4, separator=", ", prefix="tensor(")
        extra = ", requires_grad=True" if self.requires_grad else ""
        if self.data.dtype not in (np.float32, np.int64, np.bool_):
            extra = f", dtype={self.data.dtype}" + extra
        return f"tensor({body}{extra})"

    __hash__ = object.__hash__

    # -- conversion ------------------------------------------------------------------------
    def numpy(self) -> np.ndarray:
        return self.data

    def item(self):
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return self.data.item()

    def tolist(self):
        return self.data.tolist()

    def detach(self) -> "Tensor":
        """The same data, cut from the graph (shares memory, like PyTorch)."""
        return Tensor(self.data)

    def requires_grad_(self, flag: bool = True) -> "Tensor":
        if flag and not _is_float(self.data):
            raise TypeError(f"only floating-point tensors can require gradients, got {self.dtype}")
        if not self.is_leaf:
            raise RuntimeError("requires_grad_ can only be changed on leaf tensors")
        self.requires_grad = flag
        return self

    def retain_grad(self) -> "Tensor":
        """Keep ``.grad`` on this non-leaf tensor after backward (for inspecting a graph)."""
        self._retain = True
        return self

    def to(self, dtype) -> "Tensor":
        """Cast to ``dtype``; differentiable for float-to-float casts."""
        dtype = np.dtype(dtype)
        if dtype == self.dtype:
            return self
        if not np.issubdtype(dtype, np.floating):
            return Tensor(self.data.astype(dtype))
        src = self.dtype
        return Tensor.from_op(self.data.astype(dtype), (self,), lambda g: (g.astype(src),), "cast")

    def float(self) -> "Tensor":
        return self.to(np.float32)

    def double(self) -> "Tensor":
        return self.to(np.float64)

    def long(self) -> "Tensor":
        return Tensor(self.data.astype(np.int64))

    def bool(self) -> "Tensor":
        return Tensor(self.data.astype(np.bool_))

    # -- backward --------------------------------------------------------------------------
    def backward(self, gradient=None) -> None:
        """Accumulate d(self)/d(leaf) into ``leaf.grad`` for every leaf that requires grad.

        ``gradient`` is dL/d(self), same shape as self; it may be omitted only for a scalar.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad (no graph)")
        if gradient is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"grad can be implicitly created only for scalar outputs; this tensor has "
                    f"shape {self.shape}: pass gradient= of that shape, or reduce it first"
                )
            gradient = np.ones_like(self.data)
        else:
            gradient = np.asarray(_as_array(gradient), dtype=self.dtype)
            if gradient.shape != self.shape:
                raise ValueError(
                    f"gradient has shape {gradient.shape} but the tensor has shape {self.shape}"
                )
        grads = {id(self): gradient}
        for node in reverse_topological(self):
            g = grads.pop(id(node), None)
            if g is None:
                continue
            if node._backward is None or node._retain:
                if node.grad is None:
                    node.grad = g.astype(node.dtype, copy=True)
                else:
                    node.grad += g
            if node._backward is None:
                continue
            for parent, pg in zip(node._parents, _checked_gradients(node, node._backward(g))):
                if pg is None or not parent.requires_grad:
                    continue
                key = id(parent)
                grads[key] = grads[key] + pg if key in grads else pg

    # -- elementwise arithmetic ------------------------------------------------------------
    def __add__(self, other):
        other = _other(other, self)
        a, b = self, other

        def backward(g):
            ga = unbroadcast(g, a.shape) if a.requires_grad else None
            gb = unbroadcast(g, b.shape) if b.requires_grad else None
            return ga, gb

        return Tensor.from_op(self.data + other.data, (a, b), backward, "add")

    def __radd__(self, other):
        return _other(other, self) + self

    def __sub__(self, other):
        other = _other(other, self)
        a, b = self, other

        def backward(g):
            ga = unbroadcast(g, a.shape) if a.requires_grad else None
            gb = unbroadcast(-g, b.shape) if b.requires_grad else None
            return ga, gb

        return Tensor.from_op(self.data - other.data, (a, b), backward, "sub")

    def __rsub__(self, other):
        return _other(other, self) - self

    def __mul__(self, other):
        other = _other(other, self)
        a, b = self, other

        def backward(g):
            ga = unbroadcast(g * b.data, a.shape) if a.requires_grad else None
            gb = unbroadcast(g * a.data, b.shape) if b.requires_grad else None
            return ga, gb

        return Tensor.from_op(self.data * other.data, (a, b), backward, "mul")

    def __rmul__(self, other):
        return _other(other, self) * self

    def __truediv__(self, other):
        other = _other(other, self)
        a, b = self, other

        def backward(g):
            ga = unbroadcast(g / b.data, a.shape) if a.requires_grad else None
            gb = unbroadcast(-g * a.data / (b.data * b.data), b.shape) if b.requires_grad else None
            return ga, gb

        return Tensor.from_op(self.data / other.data, (a, b), backward, "div")

    def __rtruediv__(self, other):
        return _other(other, self) / self

    def __neg__(self):
        return Tensor.from_op(-self.data, (self,), lambda g: (-g,), "neg")

    def __pow__(self, exponent):
        a = self
        if isinstance(exponent, numbers.Number):
            p = exponent
            out = self.data ** p

            def backward(g):
                if p == 0:  # d(x⁰)/dx = 0 everywhere, x = 0 included (0 · 0⁻¹ would be NaN)
                    return (np.zeros_like(g),)
                return (g * p * self.data ** (p - 1),)

            return Tensor.from_op(out, (a,), backward, "pow")
        b = _other(exponent, self)
        out = self.data ** b.data

        def backward_t(g):
            ga = None
            if a.requires_grad:  # b · a^(b − 1), and 0 where b = 0 (as PyTorch; 0 · 0⁻¹ would be NaN)
                da = np.where(b.data == 0, 0, b.data * a.data ** np.where(b.data == 0, 1, b.data - 1))
                ga = unbroadcast(g * da, a.shape)
            gb = None
            if b.requires_grad:
                log_a = np.log(np.where(a.data > 0, a.data, 1))
                gb = unbroadcast(g * out * log_a, b.shape)
            return ga, gb

        return Tensor.from_op(out, (a, b), backward_t, "pow")

    def __rpow__(self, base):
        return _other(base, self) ** self

    # -- comparisons (no gradient) ---------------------------------------------------------
    def _compare(self, other, op):
        return Tensor(op(self.data, other.data if isinstance(other, Tensor) else other))

    def __eq__(self, other):
        return self._compare(other, np.equal)

    def __ne__(self, other):
        return self._compare(other, np.not_equal)

    def __lt__(self, other):
        return self._compare(other, np.less)

    def __le__(self, other):
        return self._compare(other, np.less_equal)

    def __gt__(self, other):
        return self._compare(other, np.greater)

    def __ge__(self, other):
        return self._compare(other, np.greater_equal)

    def __invert__(self):
        return Tensor(~self.data)

    def __and__(self, other):
        return self._compare(other, np.logical_and)

    def __or__(self, other):
        return self._compare(other, np.logical_or)

    # -- matrix product --------------------------------------------------------------------
    def __matmul__(self, other):
        other = _other(other, self)
        a, b = self, other
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError(f"matmul needs at least 1-D operands, got shapes {a.shape} and {b.shape}")
        if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
            raise ValueError(
                f"matmul shape mismatch: {a.shape} @ {b.shape} (inner sizes {a.shape[-1]} and "
                f"{b.shape[-2 if b.ndim > 1 else 0]} differ)"
            )
        X = a.data[None, :] if a.ndim == 1 else a.data  # (..., n, k)
        W = b.data[:, None] if b.ndim == 1 else b.data  # (..., k, m)
        try:
            batch = np.broadcast_shapes(X.shape[:-2], W.shape[:-2])
        except ValueError:
            raise ValueError(f"matmul batch dimensions do not broadcast: {a.shape} @ {b.shape}") from None

        def backward(g):  # Y = X W: dX = G Wᵀ, dW = Xᵀ G with G = dL/dY
            G = g.reshape(batch + (X.shape[-2], W.shape[-1]))  # (..., n, m), vector axes restored
            ga = gb = None
            if a.requires_grad:
                ga = unbroadcast(G @ np.swapaxes(W, -1, -2), X.shape).reshape(a.shape)  # (..., n, k)
            if b.requires_grad:
                gb = unbroadcast(np.swapaxes(X, -1, -2) @ G, W.shape).reshape(b.shape)  # (..., k, m)
            return ga, gb

        return Tensor.from_op(a.data @ b.data, (a, b), backward, "matmul")

    def __rmatmul__(self, other):
        return _other(other, self) @ self

    # -- reductions ------------------------------------------------------------------------
    def sum(self, dim=None, keepdim: bool = False):
        axes = _axes(dim, self.ndim)
        shape = self.shape

        def backward(g):
            if axes is not None and not keepdim:
                g = np.expand_dims(g, axes)
            return (np.broadcast_to(g, shape),)

        return Tensor.from_op(np.sum(self.data, axis=axes, keepdims=keepdim), (self,), backward, "sum")

    def mean(self, dim=None, keepdim: bool = False):
        axes = _axes(dim, self.ndim)
        count = self.data.size if axes is None else int(np.prod([self.shape[i] for i in axes]))
        return self.sum(dim, keepdim) / count

    def amax(self, dim=None, keepdim: bool = False):
        """Maximum over ``dim``; the gradient is shared evenly among tied maxima (as PyTorch)."""
        axes = _axes(dim, self.ndim)
        out = np.max(self.data, axis=axes, keepdims=True)

        def backward(g):
            hit = (self.data == out).astype(g.dtype)
            share = hit / hit.sum(axis=axes, keepdims=True)
            if axes is not None and not keepdim:
                g = np.expand_dims(g, axes)
            return (share * g,)

        value = out if keepdim else (out.reshape(()) if axes is None else np.squeeze(out, axes))
        return Tensor.from_op(value, (self,), backward, "amax")

    def max(self, dim=None, keepdim: bool = False):
        """``max()`` -> the largest element; ``max(dim)`` -> ``(values, indices)`` as PyTorch."""
        if dim is None:
            return self.amax()
        axis = _axes(dim, self.ndim)[0]
        idx = np.expand_dims(np.argmax(self.data, axis=axis), axis)
        values = self.gather(axis, Tensor(idx))
        if not keepdim:
            values, idx = values.squeeze(axis), np.squeeze(idx, axis)
        return MaxResult(values, Tensor(idx))

    def argmax(self, dim=None, keepdim: bool = False):
        if dim is None:
            return Tensor(np.asarray(np.argmax(self.data)))
        return Tensor(np.argmax(self.data, axis=_axes(dim, self.ndim)[0], keepdims=keepdim))

    def gather(self, dim: int, index):
        """``out[..., i, ...] = self[..., index[..., i, ...], ...]`` along ``dim``."""
        axis = _axes(dim, self.ndim)[0]
        idx = _as_array(index)
        if not np.issubdtype(idx.dtype, np.integer):
            raise TypeError(f"gather: index must hold integers, got dtype {idx.dtype}")
        if idx.ndim != self.ndim:
            raise ValueError(f"gather: index has shape {idx.shape} but the input has shape {self.shape}; "
                             f"expected an index with the same number of dimensions ({self.ndim})")
        n = self.shape[axis]
        if idx.size and (idx.min() < 0 or idx.max() >= n):  # PyTorch raises for a negative index too
            bad = int(idx.min()) if idx.min() < 0 else int(idx.max())
            raise IndexError(f"gather: index {bad} is out of bounds for dimension {dim} with size {n} "
                             f"(expected 0 ... {n - 1})")
        if any(idx.shape[d] > self.shape[d] for d in range(self.ndim) if d != axis):
            raise ValueError(f"gather: index has shape {idx.shape}, larger than the input's {self.shape} "
                             f"outside dimension {dim}; expected at most the input's size there")
        idx = idx.astype(np.intp)
        shape = self.shape
        region = tuple(slice(None) if d == axis else slice(0, idx.shape[d]) for d in range(self.ndim))

        def backward(g):
            grad = np.zeros(shape, dtype=g.dtype)
            _scatter_add_along_axis(grad[region], idx, g, axis)  # grad[region] is a view of grad
            return (grad,)

        out = np.take_along_axis(self.data[region], idx, axis)  # as PyTorch, a smaller index reads a corner
        return Tensor.from_op(out, (self,), backward, "gather")

    # -- elementwise functions -------------------------------------------------------------
    def exp(self):
        out = np.exp(self.data)
        return Tensor.from_op(out, (self,), lambda g: (g * out,), "exp")

    def log(self):
        x = self.data
        return Tensor.from_op(np.log(x), (self,), lambda g: (g / x,), "log")

    def sqrt(self):
        out = np.sqrt(self.data)
        return Tensor.from_op(out, (self,), lambda g: (g / (2 * out),), "sqrt")

    def tanh(self):
        out = np.tanh(self.data)
        return Tensor.from_op(out, (self,), lambda g: (g * (1 - out * out),), "tanh")

    def sigmoid(self):
        out = 0.5 * (1 + np.tanh(0.5 * self.data))
        return Tensor.from_op(out, (self,), lambda g: (g * out * (1 - out),), "sigmoid")

    def relu(self):
        x = self.data
        return Tensor.from_op(np.maximum(x, 0), (self,), lambda g: (g * (x > 0),), "relu")

    def abs(self):
        x = self.data
        return Tensor.from_op(np.abs(x), (self,), lambda g: (g * np.sign(x),), "abs")

    # -- shape ops -------------------------------------------------------------------------
    def reshape(self, *shape):
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        src = self.shape
        try:
            out = self.data.reshape(shape)
        except ValueError:
            raise ValueError(
                f"cannot reshape a tensor of shape {src} ({self.data.size} elements) to {tuple(shape)}"
            ) from None
        return Tensor.from_op(out, (self,), lambda g: (g.reshape(src),), "reshape")

    view = reshape

    def flatten(self, start_dim: int = 0, end_dim: int = -1):
        s, e = _axes((start_dim, end_dim), self.ndim)
        return self.reshape(self.shape[:s] + (-1,) + self.shape[e + 1:])

    def transpose(self, dim0: int, dim1: int):
        d0, d1 = _axes((dim0, dim1), self.ndim)
        return Tensor.from_op(np.swapaxes(self.data, d0, d1), (self,), lambda g: (np.swapaxes(g, d0, d1),),
                              "transpose")

    @property
    def T(self):
        return self.permute(*reversed(range(self.ndim)))

    def permute(self, *dims):
        dims = dims[0] if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims
        axes = _axes(dims, self.ndim)
        if sorted(axes) != list(range(self.ndim)):
            raise ValueError(f"permute{tuple(dims)} is not a permutation of {self.ndim} dims")
        inverse = tuple(np.argsort(axes))
        return Tensor.from_op(np.transpose(self.data, axes), (self,), lambda g: (np.transpose(g, inverse),),
                              "permute")

    def unsqueeze(self, dim: int):
        axis = _new_axis(dim, self.ndim, "unsqueeze")
        return self.reshape(self.shape[:axis] + (1,) + self.shape[axis:])

    def squeeze(self, dim=None):
        axes = _axes(dim, self.ndim)
        if axes is None:
            return self.reshape(tuple(n for n in self.shape if n != 1))
        keep = [n for i, n in enumerate(self.shape) if not (i in axes and n == 1)]
        return self.reshape(tuple(keep))

    def expand(self, *shape):
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        lead = len(shape) - self.ndim
        shape = tuple(self.shape[i - lead] if n == -1 else n for i, n in enumerate(shape))
        src = self.shape
        try:
            out = np.broadcast_to(self.data, shape)
        except ValueError:
            raise ValueError(f"expand: a tensor of shape {src} cannot be expanded to {shape} (only "
                             f"size-1 dims grow, and new dims go on the left)") from None
        return Tensor.from_op(out, (self,), lambda g: (unbroadcast(g, src),), "expand")

    def contiguous(self):
        return self

    def repeat_interleave(self, repeats: int, dim: int):
        axis = _axes(dim, self.ndim)[0]
        if isinstance(repeats, bool) or not isinstance(repeats, numbers.Integral) or repeats < 0:
            raise ValueError(f"repeat_interleave: repeats must be an int >= 0, got {repeats!r}")
        shape = self.shape

        def backward(g):
            split = shape[:axis] + (shape[axis], repeats) + shape[axis + 1:]
            return (g.reshape(split).sum(axis=axis + 1),)

        out = np.repeat(self.data, repeats, axis=axis)
        return Tensor.from_op(out, (self,), backward, "repeat_interleave")

    def __getitem__(self, index):
        index = _index(index)
        shape = self.shape
        advanced = _is_advanced(index)

        def backward(g):
            grad = np.zeros(shape, dtype=g.dtype)
            if advanced:
                np.add.at(grad, index, g)  # repeated indices accumulate
            else:
                grad[index] = g
            return (grad,)

        return Tensor.from_op(self.data[index], (self,), backward, "index")

    def masked_fill(self, mask, value):
        """Elements where ``mask`` (bool, broadcastable to self) is True become ``value``."""
        mask = _as_array(mask)
        if mask.dtype != np.bool_:
            raise TypeError(f"masked_fill needs a bool mask, got dtype {mask.dtype}")
        if _broadcast_shape(mask.shape, self.shape) != self.shape:
            raise ValueError(f"mask of shape {mask.shape} does not broadcast to {self.shape}")
        out = np.where(mask, np.asarray(value, dtype=self.dtype), self.data)
        zero = np.zeros((), self.dtype)
        return Tensor.from_op(out, (self,), lambda g: (np.where(mask, zero, g),), "masked_fill")


def _checked_gradients(node: Tensor, grads) -> tuple:
    """What ``node``'s backward returned, checked: one gradient (or None) per parent, each an array
    of exactly that parent's shape. A mistake here would otherwise be broadcast silently into a
    wrong gradient (a bare array where a 1-tuple belongs is read as one gradient per row)."""
    parents, op = node._parents, node._op or "an op"
    n = len(parents)
    if not isinstance(grads, (tuple, list)):
        raise TypeError(
            f"the backward of {op!r} returned a {type(grads).__name__}, not a tuple: it must return "
            f"one gradient per input ({n} input{'s' if n != 1 else ''}), e.g. `return (grad,)` for "
            f"one input, with None for an input that gets no gradient")
    if len(grads) != n:
        raise ValueError(f"the backward of {op!r} returned {len(grads)} gradients for its {n} "
                         f"input{'s' if n != 1 else ''}; expected one per input (None for no gradient)")
    out = []
    for i, (parent, pg) in enumerate(zip(parents, grads)):
        if pg is not None:
            pg = np.asarray(pg)
            if pg.shape != parent.shape:
                raise ValueError(
                    f"the backward of {op!r} returned a gradient of shape {pg.shape} for input {i}, "
                    f"which has shape {parent.shape}; the gradient must have exactly the input's "
                    f"shape (sum over broadcast axes with tinyattn.unbroadcast)")
        out.append(pg)
    return tuple(out)


def reverse_topological(root: Tensor, grad_only: bool = True):
    """The graph of ``root``, each node after every node that uses it (iterative DFS).

    grad_only: just the nodes that require grad (all that backward visits); False: every tensor,
    constants included (for drawing the graph).
    """
    order, seen = [], set()
    stack = [(root, False)]
    while stack:
        node, done = stack.pop()
        if done:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        stack.extend((p, False) for p in reversed(node._parents)
                     if (p.requires_grad or not grad_only) and id(p) not in seen)
    return reversed(order)


def _index(index):
    """Turn Tensors inside an index into ndarrays."""
    if isinstance(index, tuple):
        return tuple(i.data if isinstance(i, Tensor) else i for i in index)
    return index.data if isinstance(index, Tensor) else index


def _is_advanced(index) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, (list, np.ndarray)) for i in items)


def _scatter_add_along_axis(out: np.ndarray, idx: np.ndarray, values: np.ndarray, axis: int):
    """``out[..., idx[..., i, ...], ...] += values[..., i, ...]`` along ``axis`` (repeats add)."""
    grids = np.indices(idx.shape, sparse=True)
    full = tuple(idx if d == axis else grids[d] for d in range(idx.ndim))
    np.add.at(out, full, values)


# ----------------------------------------------------------------------------------------------
# factories and multi-input ops
# ----------------------------------------------------------------------------------------------

def tensor(data, requires_grad: bool = False, dtype=None) -> Tensor:
    """A new leaf tensor (a copy of ``data``). Python floats become float32, ints int64."""
    arr = np.array(_as_array(data, dtype), copy=True)
    return Tensor(arr, requires_grad=requires_grad)


def _shape(shape):
    return tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape


def zeros(*shape, dtype=None, requires_grad=False) -> Tensor:
    return Tensor(np.zeros(_shape(shape), dtype or DEFAULT_DTYPE), requires_grad)


def ones(*shape, dtype=None, requires_grad=False) -> Tensor:
    return Tensor(np.ones(_shape(shape), dtype or DEFAULT_DTYPE), requires_grad)


def full(shape, fill_value, dtype=None, requires_grad=False) -> Tensor:
    return Tensor(np.full(shape, fill_value, dtype or DEFAULT_DTYPE), requires_grad)


def zeros_like(x: Tensor, requires_grad=False) -> Tensor:
    return Tensor(np.zeros_like(x.data), requires_grad)


def ones_like(x: Tensor, requires_grad=False) -> Tensor:
    return Tensor(np.ones_like(x.data), requires_grad)


def randn(*shape, dtype=None, requires_grad=False) -> Tensor:
    """Standard normal samples from the global generator (see ``manual_seed``)."""
    return Tensor(_RNG.standard_normal(_shape(shape), dtype=dtype or DEFAULT_DTYPE), requires_grad)


def rand(*shape, dtype=None, requires_grad=False) -> Tensor:
    """Uniform [0, 1) samples from the global generator."""
    return Tensor(_RNG.random(_shape(shape), dtype=dtype or DEFAULT_DTYPE), requires_grad)


def arange(start, end=None, step=1, dtype=None) -> Tensor:
    """Like ``torch.arange``: int64 for integer arguments, float32 otherwise."""
    if end is None:
        start, end = 0, start
    if step == 0:
        raise ValueError(f"arange: step must be nonzero, got {step!r}")
    ints = all(isinstance(v, numbers.Integral) for v in (start, end, step))
    return Tensor(np.arange(start, end, step, dtype=dtype or (np.int64 if ints else DEFAULT_DTYPE)))


def cat(tensors, dim: int = 0) -> Tensor:
    """Concatenate along an existing ``dim``."""
    tensors = [t if isinstance(t, Tensor) else Tensor(t) for t in tensors]
    if not tensors:
        raise ValueError("cat expects a non-empty list of tensors, got an empty one")
    axis = _axes(dim, tensors[0].ndim)[0]
    sizes = np.cumsum([t.shape[axis] for t in tensors])[:-1]
    try:
        out = np.concatenate([t.data for t in tensors], axis=axis)
    except ValueError:
        shapes = ", ".join(str(t.shape) for t in tensors)
        raise ValueError(f"cat along dim {dim}: shapes {shapes} differ outside that dim") from None
    return Tensor.from_op(out, tuple(tensors), lambda g: tuple(np.split(g, sizes, axis=axis)), "cat")


def stack(tensors, dim: int = 0) -> Tensor:
    """Stack equal-shaped tensors along a new ``dim``."""
    tensors = [t if isinstance(t, Tensor) else Tensor(t) for t in tensors]
    if not tensors:
        raise ValueError("stack expects a non-empty list of tensors, got an empty one")
    shapes = {t.shape for t in tensors}
    if len(shapes) != 1:
        raise ValueError(f"stack needs equal shapes, got {sorted(shapes)}")
    axis = _new_axis(dim, tensors[0].ndim, "stack")
    out = np.stack([t.data for t in tensors], axis=axis)
    return Tensor.from_op(out, tuple(tensors), lambda g: tuple(np.moveaxis(g, axis, 0)), "stack")


def where(condition, x, y) -> Tensor:
    """``x`` where ``condition`` (bool) is True, else ``y``; all three broadcast."""
    cond = _as_array(condition)
    if cond.dtype != np.bool_:
        raise TypeError(f"where needs a bool condition, got dtype {cond.dtype}")
    ref = x if isinstance(x, Tensor) else y if isinstance(y, Tensor) else Tensor(_as_array(x))
    x, y = _other(x, ref), _other(y, ref)
    _broadcast_shape(cond.shape, x.shape, y.shape)

    def backward(g):
        zero = np.zeros((), g.dtype)
        gx = unbroadcast(np.where(cond, g, zero), x.shape) if x.requires_grad else None
        gy = unbroadcast(np.where(cond, zero, g), y.shape) if y.requires_grad else None
        return gx, gy

    return Tensor.from_op(np.where(cond, x.data, y.data), (x, y), backward, "where")


# ----------------------------------------------------------------------------------------------
# gradcheck
# ----------------------------------------------------------------------------------------------

def numerical_gradient(f, x: Tensor, eps: float = 1e-6) -> np.ndarray:
    """dF/dx by central differences: (F(x + eps·e_j) − F(x − eps·e_j)) / (2 eps) for every j.

    f() -> float reads ``x`` (it is perturbed in place, one element at a time, and restored);
    returns an array of x's shape. Costs 2·x.numel() calls of f.
    """
    flat = x.data.reshape(-1)  # a view: perturbing it perturbs the input
    if not np.shares_memory(flat, x.data):
        raise ValueError("numerical_gradient needs a tensor whose data is contiguous")
    numeric = np.empty(flat.shape, dtype=np.float64)
    for j in range(flat.size):
        orig = flat[j]
        flat[j] = orig + eps
        plus = f()
        flat[j] = orig - eps
        minus = f()
        flat[j] = orig
        numeric[j] = (plus - minus) / (2 * eps)
    return numeric.reshape(x.shape)


def gradcheck(fn, inputs, eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-3) -> bool:
    """Compare autograd's gradients of ``fn`` with central finite differences, in float64.

    ``inputs``: a Tensor or a tuple of them (and other arguments, passed through). Each float
    tensor with ``requires_grad=True`` is checked; all float tensors are copied to float64
    first, so the originals are untouched. ``fn`` may return a Tensor or a tuple of Tensors;
    they are reduced to the scalar L = sum_k sum(w_k * out_k) with fixed random weights w_k, so
    dL/dx tests the whole vector-Jacobian product of every input.

    Returns True, or raises ``AssertionError`` naming the input, the worst index and the
    analytic and numeric values there (a NaN or infinite gradient on either side fails).
    """
    inputs = inputs if isinstance(inputs, (tuple, list)) else (inputs,)
    args = [
        Tensor(x.data.astype(np.float64), requires_grad=x.requires_grad)
        if isinstance(x, Tensor) and _is_float(x.data) else x
        for x in inputs
    ]
    checked = [i for i, x in enumerate(args) if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input has requires_grad=True, nothing to check")
    weights_rng = np.random.default_rng(12345)
    weights = []

    def scalar_loss():
        result = fn(*args)
        outs = result if isinstance(result, (tuple, list)) else (result,)
        outs = [o for o in outs if isinstance(o, Tensor) and _is_float(o.data)]
        if not outs:
            got = f"a Tensor of dtype {result.dtype}" if isinstance(result, Tensor) else type(result).__name__
            raise TypeError(f"gradcheck: fn must return a floating-point Tensor (or a tuple of them) "
                            f"computed from the inputs with tinyattn ops; it returned {got}")
        while len(weights) < len(outs):
            weights.append(weights_rng.standard_normal(outs[len(weights)].shape))
        total = None
        for w, o in zip(weights, outs):
            term = (o.double() * Tensor(w)).sum()
            total = term if total is None else total + term
        return total

    with enable_grad():
        loss = scalar_loss()
        if not loss.requires_grad:
            raise AssertionError("gradcheck: the output does not depend on any checked input")
        loss.backward()
    for i in checked:
        x = args[i]
        analytic = np.zeros_like(x.data) if x.grad is None else x.grad.copy()
        with no_grad():
            numeric = numerical_gradient(lambda: scalar_loss().item(), x, eps)
        finite = np.isfinite(analytic) & np.isfinite(numeric)
        if not finite.all():  # a NaN never compares as wrong, so look for it first
            worst = tuple(map(int, np.argwhere(~finite)[0]))
            raise AssertionError(
                f"gradcheck failed for input {i} (shape {x.shape}) at index {worst}: "
                f"analytic {analytic[worst]:.10g}, numeric {numeric[worst]:.10g} (a gradient that "
                f"is not finite)")
        err = np.abs(analytic - numeric) - (atol + rtol * np.abs(numeric))
        if np.any(err > 0):
            worst = np.unravel_index(np.argmax(err), x.shape)
            raise AssertionError(
                f"gradcheck failed for input {i} (shape {x.shape}) at index {tuple(map(int, worst))}: "
                f"analytic {analytic[worst]:.10g}, numeric {numeric[worst]:.10g} "
                f"(|diff| {abs(analytic[worst] - numeric[worst]):.3g}, atol {atol}, rtol {rtol})"
            )
    return True
