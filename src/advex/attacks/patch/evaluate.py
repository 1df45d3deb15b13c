"""Using a patch: sticking it into images (``apply_patch``) and measuring its targeted success
over images and random placements (``evaluate_patch``)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from advex.attacks.base import Targets, resolve_targets
from advex.attacks.patch.geometry import Placements, patch_mask, placements_for
from advex.attacks.patch.render import Printability, composite, fit_patch, render, transform_patch
from advex.attacks.patch.train import as_float
from advex.attacks.universal import check_images
from advex.data import quantize
from advex.errors import AdvexError
from advex.models import Classifier, as_classifier, frozen


def _check_patch(patch: Any, mask: torch.Tensor | None, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(patch, torch.Tensor) or patch.ndim != 3 or patch.shape[-1] != patch.shape[-2]:
        shape = tuple(patch.shape) if isinstance(patch, torch.Tensor) else type(patch).__name__
        raise AdvexError(f"patch must be a square (C, P, P) tensor in [0, 1], got {shape}")
    if patch.shape[0] != channels:
        raise AdvexError(f"patch has {patch.shape[0]} channels but the images have {channels}")
    if not (float(patch.detach().min()) >= 0 and float(patch.detach().max()) <= 1):
        raise AdvexError("patch pixels must be in [0, 1]")
    if mask is None:
        mask = torch.ones(1, *patch.shape[-2:])
    if mask.shape != (1, *patch.shape[-2:]):
        raise AdvexError(f"mask must be (1, {patch.shape[-1]}, {patch.shape[-1]}), got {tuple(mask.shape)}")
    if float(mask.sum()) <= 0:
        raise AdvexError("the patch mask is empty (fully transparent)")
    return patch.float(), mask.float().to(patch.device)


def apply_patch(
    images: torch.Tensor,
    patch: torch.Tensor,
    *,
    size: float = 0.1,
    mask: torch.Tensor | str | None = None,
    position: tuple[float, float] | None = None,
    rotation: float = 22.5,
    scale: tuple[float, float] | float = (1.0, 1.0),
    printability: Printability | None = None,
    placements: Placements | None = None,
    seed: int | torch.Generator = 0,
) -> tuple[torch.Tensor, Placements]:
    """Stick ``patch`` (C, P, P) in [0, 1] into every image (N, C, H, W), batched.

    ``size`` is the fraction of the image area the mask covers at scale 1; ``mask`` is a
    (1, P, P) tensor, "circle" or "square" (None: the whole square). Placements are random
    (seeded): rotation uniform in +-``rotation`` degrees, scale uniform in ``scale``, the
    centre anywhere the whole patch fits; or ``position`` = (row, col) fractions of the
    image for the centre; or exactly ``placements``. Returns the patched images (float)
    and the placements used.
    """
    c, h, w = check_images(images)
    dev = images.device
    if isinstance(mask, str):
        mask = patch_mask(mask, patch.shape[-1]) if isinstance(patch, torch.Tensor) and patch.ndim == 3 else None
    patch, mask = _check_patch(patch, mask, c)
    patch, mask = patch.to(dev), mask.to(dev)
    n = images.shape[0]
    if placements is None:
        placements = placements_for(n, h, w, mask, size, position, rotation, scale, seed)
    elif placements.side.numel() != n:
        raise AdvexError(f"got {placements.side.numel()} placements for {n} images")
    rgba = fit_patch(patch, mask, float(placements.side.max()))
    if printability is not None:
        g = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(int(seed) + 1)
        rgb = transform_patch(rgba[0, :-1], n, printability, g)
        rgba = torch.cat([rgb, rgba[:, -1:].expand(n, -1, -1, -1)], 1)
    x = as_float(images, dev)
    return composite(x, render(rgba, placements, h, w)).clamp(0, 1), placements


@dataclass
class PatchEvaluation:
    """Targeted success of a patch over images x placements.

    ``success_rate`` counts the (image, placement) pairs classified as the target, over the
    images not already predicted as the target without the patch (``eligible``). Per image:
    the clean prediction, and for each placement the prediction with the patch.
    """

    target: int
    success_rate: float
    eligible: torch.Tensor  # (N,) bool
    label: torch.Tensor  # (N,)
    confidence: torch.Tensor
    label_patched: torch.Tensor  # (N, K)
    confidence_patched: torch.Tensor  # (N, K)
    target_prob: torch.Tensor  # (N, K) probability of the target with the patch
    placements: list[Placements]  # K, each for all N images
    example: torch.Tensor  # (N, C, H, W) the images with the first placement
    time_s: float

    @property
    def hits(self) -> torch.Tensor:
        return self.label_patched == self.target


@torch.no_grad()
def evaluate_patch(
    model: nn.Module,
    patch: torch.Tensor,
    images: torch.Tensor,
    target: Targets,
    *,
    size: float = 0.1,
    mask: torch.Tensor | str | None = None,
    placements: int = 10,
    rotation: float = 22.5,
    scale: tuple[float, float] | float = (1.0, 1.0),
    position: tuple[float, float] | None = None,
    batch_size: int = 64,
    seed: int = 0,
) -> PatchEvaluation:
    """Targeted success of ``patch`` on ``images`` at ``placements`` random (seeded)
    placements each (or at ``position``), batched; images are never seen in training."""
    start = time.perf_counter()
    clf: Classifier = as_classifier(model).reference  # a fast twin's fp32 original: judged in fp32
    if placements < 1:
        raise AdvexError(f"placements must be >= 1, got {placements}")
    if batch_size < 1:
        raise AdvexError(f"batch_size must be >= 1, got {batch_size}")
    check_images(images)
    dev = clf.device
    tgt = int(resolve_targets(clf, target, 1, dev)[0])
    g = torch.Generator().manual_seed(seed)
    n = images.shape[0]
    labels: list[torch.Tensor] = []
    confs: list[torch.Tensor] = []
    pls: list[Placements] = []
    example = None
    with frozen(clf):
        for s in range(0, n, batch_size):
            x = as_float(images[s : s + batch_size], dev)
            z = clf(x).float().softmax(-1)
            cf, lb = z.max(-1)
            labels.append(lb.cpu())
            confs.append(cf.cpu())
        h, w = images.shape[-2:]
        if isinstance(mask, str) or mask is None:
            mask_t = patch_mask(mask, patch.shape[-1]) if isinstance(mask, str) else torch.ones(1, *patch.shape[-2:])
        else:
            mask_t = mask
        row_l, row_c, row_t = [], [], []
        for _ in range(placements):
            # all N placements of a round drawn at once: the batch size does not change them
            pl = placements_for(n, h, w, mask_t, size, position, rotation, scale, g)
            pls.append(pl)
            kl, kc, kt = [], [], []
            for s in range(0, n, batch_size):
                sl = slice(s, s + batch_size)
                part = Placements(pl.centre[sl], pl.side[sl], pl.angle[sl])
                xp, _ = apply_patch(images[sl].to(dev), patch.to(dev), mask=mask_t, placements=part)
                xp = quantize(xp)
                if len(pls) == 1:
                    example = xp.cpu() if example is None else torch.cat([example, xp.cpu()])
                pz = clf(xp).float().softmax(-1)
                c_, l_ = pz.max(-1)
                kl.append(l_.cpu())
                kc.append(c_.cpu())
                kt.append(pz[:, tgt].cpu())
            row_l.append(torch.cat(kl))
            row_c.append(torch.cat(kc))
            row_t.append(torch.cat(kt))
    label = torch.cat(labels)
    lp, cp, tp = torch.stack(row_l, 1), torch.stack(row_c, 1), torch.stack(row_t, 1)
    eligible = label != tgt
    hits = (lp == tgt)[eligible]
    return PatchEvaluation(
        target=tgt,
        success_rate=float(hits.float().mean()) if hits.numel() else 0.0,
        eligible=eligible,
        label=label,
        confidence=torch.cat(confs),
        label_patched=lp,
        confidence_patched=cp,
        target_prob=tp,
        placements=pls,
        example=example,
        time_s=time.perf_counter() - start,
    )
