"""Small models built from tinyattn's modules."""

from .gpt import GPT, Block

__all__ = ["GPT", "Block"]
