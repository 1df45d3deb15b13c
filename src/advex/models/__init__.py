"""Models: the :class:`Classifier` wrapper and the zoo (``load``, ``names``)."""

from advex.models.classifier import Classifier
from advex.models.zoo import DEFAULT_MODEL, describe, load, names, read_state_dict, resolve_device

__all__ = ["Classifier", "DEFAULT_MODEL", "describe", "load", "names", "read_state_dict", "resolve_device"]
