"""Certification: prove that no input in a ball around x changes the prediction.

``bounds(model, x, eps=, method=)`` gives lower/upper bounds on every logit;
``certify(model, x, y, eps=, method=)`` bounds every margin z_y - z_j and, by default,
attacks the same inputs with PGD, so the gap between what is proven and what is attacked
is visible -- and a certified input that PGD breaks is a loud error, never a number.
"""

from advex.certify.api import Bounds, CertifyResult, UnsoundBound, bounds, certify, margin_spec
from advex.certify.bounds import METHODS, SLOPES, check_method
from advex.certify.graph import UnsupportedLayer, trace

__all__ = [
    "METHODS",
    "SLOPES",
    "check_method",
    "Bounds",
    "CertifyResult",
    "UnsoundBound",
    "UnsupportedLayer",
    "bounds",
    "certify",
    "margin_spec",
    "trace",
]
