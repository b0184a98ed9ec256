"""Small models built from tinyattn's modules.

- ``TinyEncoder`` (notebook 06): an encoder that reads its answers off blank slots.
- ``Translator`` (notebook 08): an encoder-decoder that translates dates, with cached greedy and
  beam decoding.
"""

from .encoder import TinyEncoder
from .translator import Translator, alignment_score, cross_attention_maps

__all__ = ["TinyEncoder", "Translator", "alignment_score", "cross_attention_maps"]
