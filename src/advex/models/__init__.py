"""Models: the :class:`Classifier` wrapper, how advex holds a model while it works on it
(``as_classifier``, ``frozen``, ``check_pixels``), and the zoo (``load``, ``names``)."""

from advex.models.classifier import Classifier, as_classifier, check_pixels, frozen
from advex.models.zoo import DEFAULT_MODEL, describe, load, names, read_state_dict, resolve_device

__all__ = [
    "Classifier",
    "DEFAULT_MODEL",
    "as_classifier",
    "check_pixels",
    "describe",
    "frozen",
    "load",
    "names",
    "read_state_dict",
    "resolve_device",
]
