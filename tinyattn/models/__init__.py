"""Small models built from tinyattn's modules.

- ``TinyEncoder`` (notebook 06): an encoder that reads its answers off blank slots.
- ``Translator`` (notebook 08): an encoder-decoder that translates dates, with cached greedy and
  beam decoding.
- ``GPT`` (notebook 09): a decoder-only language model with KV-cache generation.
"""

from .encoder import TinyEncoder
from .gpt import GPT, Block
from .translator import Translator, alignment_score, cross_attention_maps

__all__ = ["TinyEncoder", "Translator", "alignment_score", "cross_attention_maps", "GPT", "Block"]
