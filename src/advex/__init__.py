"""advex: adversarial examples for PyTorch -- craft them, defend against them, certify.

``import advex`` is cheap; each subpackage loads on first use: ``advex.attacks``,
``advex.certify``, ``advex.data``, ``advex.defences``, ``advex.evaluation``,
``advex.models``, ``advex.report`` (and ``advex.cli``, the command line). See
docs/architecture.md for what each holds and may import.
"""

import importlib

__version__ = "0.1.0"
_SUBPACKAGES = ("attacks", "certify", "cli", "data", "defences", "evaluation", "models", "report")


def __getattr__(name: str):
    if name in _SUBPACKAGES:
        return importlib.import_module(f"advex.{name}")
    raise AttributeError(f"module 'advex' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_SUBPACKAGES])
