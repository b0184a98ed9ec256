"""The registry of efficient-attention variants: name -> the callable and what it claims.

Every variant file ends with one ``register(Variant(...))``; ``tinyattn/efficient/__init__.py``
imports the file (one line), and the arena, the claim tests and the figures find it here.

``kind`` says how a variant is judged:

- ``"attention"``: ``attend(q, k, v, is_causal=False, **options)`` maps (B, H, L, D) query, key
  and value tensors to the (B, H, L, D) output. The arena times it, measures its peak memory and
  its error against exact softmax attention; ``reference(q, k, v, is_causal, **options)`` (NumPy
  arrays in and out) is the dense computation its claim is about (exact softmax attention, or
  dense attention under the variant's own mask).
- ``"decoding"``: a cache or an attention module for token-by-token decoding; its claim is about
  decoding equal to the full forward, and its cost is cache bytes.
- ``"position"``: a position scheme (a bias or a rotation of the scores).

``claim`` is one of CLAIMS: ``"exact"`` (equals softmax attention to float64 round-off),
``"exact under its mask"``, ``"unbiased"`` (an estimator whose mean is softmax attention),
``"approximate"`` (with ``bound`` saying what controls the error), ``"exact cache"`` (decoding
equals the full forward; the model itself may differ from MHA) and ``"position scheme"``.

A random variant (random features, hashing, random blocks) takes a ``seed`` option, so that
``attend`` and ``reference`` with equal options use the same draw.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

__all__ = ["Variant", "register", "variants", "get", "CLAIMS", "KINDS"]

CLAIMS = ("exact", "exact under its mask", "unbiased", "approximate", "exact cache", "position scheme")
KINDS = ("attention", "decoding", "position")


@dataclasses.dataclass(frozen=True)
class Variant:
    """One member of the family. ``options`` are the arena's default settings for ``attend``."""

    name: str
    kind: str
    claim: str
    paper: str
    time: str
    memory: str
    summary: str
    attend: Callable | None = None
    reference: Callable | None = None
    options: dict = dataclasses.field(default_factory=dict)
    bound: str = ""
    causal: bool = True  # attend supports is_causal=True (Linformer's projections mix the future: False)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Variant {self.name!r}: kind {self.kind!r} is not one of {KINDS}")
        if self.claim not in CLAIMS:
            raise ValueError(f"Variant {self.name!r}: claim {self.claim!r} is not one of {CLAIMS}")
        if self.kind == "attention" and (self.attend is None or self.reference is None):
            raise ValueError(f"Variant {self.name!r}: an attention variant needs attend and reference")
        if self.claim == "approximate" and not self.bound:
            raise ValueError(f"Variant {self.name!r}: an approximate variant says what bounds its error")


_VARIANTS: dict[str, Variant] = {}


def register(variant: Variant) -> Variant:
    """Add ``variant`` under its name (a name is registered once) and return it."""
    if variant.name in _VARIANTS:
        raise ValueError(f"an efficient-attention variant named {variant.name!r} is registered already")
    _VARIANTS[variant.name] = variant
    return variant


def variants(kind: str | None = None) -> list[Variant]:
    """The registered variants in registration order, optionally only those of one ``kind``."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind {kind!r} is not one of {KINDS}")
    return [v for v in _VARIANTS.values() if kind is None or v.kind == kind]


def get(name: str) -> Variant:
    """The variant registered as ``name``."""
    try:
        return _VARIANTS[name]
    except KeyError:
        raise KeyError(f"no efficient-attention variant named {name!r}; registered: "
                       f"{', '.join(_VARIANTS)}") from None
