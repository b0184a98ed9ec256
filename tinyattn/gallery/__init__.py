"""The figures of ``python -m tinyattn.figures``, one module per topic.

Each module registers its figures with ``tinyattn.figures.figure``; importing this package
registers them all, in the order the README shows them.
"""

from . import engine  # noqa: F401
from . import attention  # noqa: F401
from . import encoder  # noqa: F401
from . import training  # noqa: F401
from . import efficient  # noqa: F401
from . import gpt  # noqa: F401
