"""Small models built from ``tinyattn.nn``: the date translator (an encoder-decoder)."""

from .translator import Translator, alignment_score, cross_attention_maps

__all__ = ["Translator", "alignment_score", "cross_attention_maps"]
