"""The figures of ``python -m tinyattn.figures``, one module per topic.

Each topic module registers its figures with ``registry.figure``; importing this package
registers them all, in the order the README shows them. Teaching helpers that are not figures
live in ``tinyattn.examples``.
"""

from . import engine  # noqa: F401  (each import registers that topic's figures)
from . import attention  # noqa: F401
from . import encoder  # noqa: F401
from . import training  # noqa: F401
from . import efficient  # noqa: F401
from . import zoo  # noqa: F401
from . import decoding  # noqa: F401
from . import gpt  # noqa: F401
from . import translation  # noqa: F401
from . import pretrained  # noqa: F401
from . import arena  # noqa: F401
from .registry import FIGURES, FigureSkipped, figure, make

__all__ = ["FIGURES", "FigureSkipped", "figure", "make"]
