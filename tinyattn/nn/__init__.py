"""Neural-network layers and functions with ``torch.nn``'s names (``ta.nn.Linear``, ...)."""

from . import functional, init, utils
from .modules import *  # noqa: F401,F403 - the public layer classes, listed in modules.__all__
from .modules import __all__ as _modules_all

__all__ = ["functional", "init", "utils"] + list(_modules_all)
