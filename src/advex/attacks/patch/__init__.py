"""The adversarial patch (Brown, Mané, Roy, Abadi & Gilmer 2017, "Adversarial Patch").

One universal patch p is trained so that wherever it is stuck into a scene the
classifier sees the target class: maximise, by Adam on the patch pixels kept in [0, 1],

    E_{x ~ images, l ~ locations, t ~ transformations} [ log P(target | A(p, x, l, t)) ]

(Brown et al., eq. 2), the expectation over transformations (EOT, Athalye et al. 2018)
taken by sampling. A places the transformed patch into x with a differentiable affine
warp (``affine_grid`` + bilinear ``grid_sample``), for a whole batch of images and
transformations at once: no per-image loops. The transformations are the paper's
location, scale and rotation, plus, for a patch that survives printing and a camera,
brightness, contrast, blur and noise.

The patch size is a fraction of the image area (Brown et al. sweep it); the patch keeps a
mask (a circle, as in the paper's sticker, or a square) whose covered area is that
fraction at scale 1.

The package, by concern: ``geometry`` (mask, size, placements), ``render`` (the warp, the
compositing, printability and augmentation), ``train`` (the :class:`Patch` attack, on the
:class:`~advex.attacks.base.UniversalAttack` protocol) and ``evaluate`` (``apply_patch``,
``evaluate_patch``), and ``state`` (:class:`PatchState`: where training stands, saved every
few steps so that a stopped run resumes to the same patch).
"""

from advex.attacks.patch.evaluate import PatchEvaluation, apply_patch, evaluate_patch
from advex.attacks.patch.geometry import SHAPES, Placements, patch_mask
from advex.attacks.patch.render import Printability, random_views, render, transform_patch
from advex.attacks.patch.state import PatchState
from advex.attacks.patch.train import Patch, PatchResult

__all__ = [
    "SHAPES",
    "Patch",
    "PatchEvaluation",
    "PatchResult",
    "PatchState",
    "Placements",
    "Printability",
    "apply_patch",
    "evaluate_patch",
    "patch_mask",
    "random_views",
    "render",
    "transform_patch",
]
