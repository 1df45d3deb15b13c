"""advex: adversarial examples for PyTorch -- craft them, defend against them, certify.

Submodules load on first use: ``advex.models``, ``advex.attacks``, ``advex.data``,
``advex.report``.
"""

import importlib

__version__ = "0.1.0"
_SUBMODULES = ("attacks", "data", "models", "report")


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"advex.{name}")
    raise AttributeError(f"module 'advex' has no attribute {name!r}")
