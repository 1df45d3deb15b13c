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
    "Classifier",
    "Graph",
    "OnnxError",
    "Scale",
    "Sum",
    "onnx_package",
    "Residual",
    "ibp_init",
    "load_weights",
    "make_classifier",
    "DEFAULT_MODEL",
    "as_classifier",
    "check_labels",
    "check_logits",
    "check_pixels",
    "describe",
    "frozen",
    "ibp_init",
    "load",
    "load_onnx",
    "load_weights",
    "make_classifier",
    "names",
    "read_state_dict",
    "resolve_device",
]
