"""Certification: prove that no input in a ball around x changes the prediction.

``bounds(model, x, eps=, method=)`` gives lower/upper bounds on every logit;
``certify(model, x, y, eps=, method=)`` bounds every margin z_y - z_j and, by default,
attacks the same inputs with PGD, so the gap between what is proven and what is attacked
is visible -- and a certified input that PGD breaks is a loud error, never a number.
``worst_case_logits(model, x, y, eps=, method=)`` is the same bounds as a differentiable
loss, for certified training (IBP, CROWN-IBP, the convex dual). ``Smooth(model, sigma)`` is
randomized smoothing (Cohen et al. 2019): L2 certificates for any network, from its
behaviour under Gaussian noise.

Inside: ``layers`` (each layer type with all its rules: interval, back-substitution, patches),
``graph`` (``trace``: an ``nn.Module`` to a list of layers), ``patches`` (receptive-field
coefficients), ``bounds`` (IBP, CROWN, alpha-CROWN over a traced network), ``api`` (this face),
``smoothing`` (PREDICT and CERTIFY of a smoothed classifier).
"""

from advex.certify.api import (
    Bounds,
    CertifyResult,
    UnsoundBound,
    bounds,
    certify,
    margin_spec,
    worst_case_logits,
)
from advex.certify.bounds import METHODS, SLOPES, TRAINING_METHODS, check_method
from advex.certify.graph import UnsupportedLayer, batchnorm_stats, trace
from advex.certify.smoothing import (
    ABSTAIN,
    Smooth,
    SmoothCertificate,
    SmoothPrediction,
    binomial_pvalue,
    clopper_pearson_lower,
)

__all__ = [
    "ABSTAIN",
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
