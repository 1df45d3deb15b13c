"""Models: the :class:`Classifier` wrapper, how advex holds a model while it works on it
(``as_classifier``, ``frozen``) and checks what goes in and out (``check_pixels``,
``check_labels``, ``check_logits``), the zoo (``load``, ``names``) and the architectures advex
trains (``make_classifier``, ``ARCHS``, ``ibp_init``), and networks read from ONNX (``load_onnx``)."""

from advex.models.archs import ARCHS, Residual, ibp_init, make_classifier
from advex.models.classifier import Classifier, as_classifier, check_labels, check_logits, check_pixels, frozen
from advex.models.onnx import Graph, OnnxError, Scale, Sum, load_onnx, onnx_package
from advex.models.zoo import DEFAULT_MODEL, describe, load, load_weights, names, read_state_dict, resolve_device

__all__ = [
    "ARCHS",
    "DEFAULT_MODEL",
    "as_classifier",
    "check_labels",
    "check_logits",
    "check_pixels",
    "Classifier",
    "describe",
    "frozen",
    "Graph",
    "ibp_init",
    "load",
    "load_onnx",
    "load_weights",
    "make_classifier",
    "names",
    "onnx_package",
    "OnnxError",
    "read_state_dict",
    "Residual",
    "resolve_device",
    "Scale",
    "Sum",
]
