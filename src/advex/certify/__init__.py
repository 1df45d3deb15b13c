"""Certification: prove that no input in a ball around x changes the prediction.

``bounds(model, x, eps=, method=)`` gives lower/upper bounds on every logit;
``certify(model, x, y, eps=, method=)`` bounds every margin z_y - z_j and, by default,
attacks the same inputs with PGD, so the gap between what is proven and what is attacked
is visible -- and a certified input that PGD breaks is a loud error, never a number.
``worst_case_logits(model, x, y, eps=, method=)`` is the same bounds as a differentiable
loss, for certified training (IBP, CROWN-IBP, the convex dual). ``Smooth(model, sigma)`` is
randomized smoothing (Cohen et al. 2019): L2 certificates for any network, from its
behaviour under Gaussian noise.

``verify(net, read_vnnlib(path))`` decides a VNN-COMP property (unsat / sat / timeout) by
branch and bound; ``export_onnx`` writes a network as the certifiers read it.

Inside: ``layers`` (each layer type with all its rules: interval, back-substitution, patches),
``graph`` (``trace``: an ``nn.Module`` to a list of layers), ``patches`` (receptive-field
coefficients), ``bounds`` (IBP, CROWN, final-layer alpha-CROWN over a traced network),
``alpha`` (alpha-CROWN with every bound's slopes optimised), ``bab`` (branch and bound),
``vnnlib`` (properties), ``verify`` (a property decided), ``export`` (ONNX out), ``api`` (this
face), ``smoothing`` (PREDICT and CERTIFY of a smoothed classifier).
"""

from advex.certify.alpha import alpha_crown
from advex.certify.api import (
    Bounds,
    CertifyResult,
    UnsoundBound,
    bounds,
    certify,
    margin_spec,
    worst_case_logits,
)
from advex.certify.bab import BRANCHING, FALSIFIED, SPLITS, TIMEOUT, VERIFIED
from advex.certify.bab import Settings as BabSettings
from advex.certify.bounds import METHODS, SLOPES, TRAINING_METHODS, check_method
from advex.certify.export import export_onnx
from advex.certify.graph import UnsupportedLayer, batchnorm_stats, trace
from advex.certify.smoothing import (
    ABSTAIN,
    Smooth,
    SmoothCertificate,
    SmoothPrediction,
    binomial_pvalue,
    clopper_pearson_lower,
)
from advex.certify.verify import SAT, UNSAT, Verdict, verify
from advex.certify.vnnlib import Property, Region, VnnlibError, read_vnnlib, robustness_vnnlib

__all__ = [
    "ABSTAIN",
    "BRANCHING",
    "FALSIFIED",
    "SAT",
    "SPLITS",
    "TIMEOUT",
    "UNSAT",
    "VERIFIED",
    "BabSettings",
    "Property",
    "Region",
    "Verdict",
    "VnnlibError",
    "alpha_crown",
    "export_onnx",
    "read_vnnlib",
    "robustness_vnnlib",
    "verify",
    "METHODS",
    "SLOPES",
    "TRAINING_METHODS",
    "Bounds",
    "CertifyResult",
    "Smooth",
    "SmoothCertificate",
    "SmoothPrediction",
    "UnsoundBound",
    "UnsupportedLayer",
    "batchnorm_stats",
    "binomial_pvalue",
    "bounds",
    "certify",
    "check_method",
    "clopper_pearson_lower",
    "margin_spec",
    "trace",
    "worst_case_logits",
]
