"""Small models built from ``tinyattn.nn``: the date translator (an encoder-decoder)."""

from .translator import Translator

__all__ = ["Translator"]
