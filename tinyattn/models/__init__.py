"""Small models built from tinyattn's modules.

- ``TinyEncoder`` (notebook 06): an encoder that reads its answers off blank slots.
"""

from .encoder import TinyEncoder

__all__ = ["TinyEncoder"]
