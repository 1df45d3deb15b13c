"""Where a patch goes: its mask (a circle or a square), its side for a given fraction of the
image area, and random placements (centre, side, rotation) that keep it inside the image."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from advex.errors import AdvexError

SHAPES = ("circle", "square")


def patch_mask(shape: str, side: int, supersample: int = 8) -> torch.Tensor:
    """A (1, side, side) mask: the fraction of each patch pixel the shape covers."""
    if shape not in SHAPES:
        raise AdvexError(f"patch shape must be one of {', '.join(SHAPES)}, got {shape!r}")
    if side < 1:
        raise AdvexError(f"patch side must be >= 1 pixel, got {side}")
    if shape == "square":
        return torch.ones(1, side, side)
    n = side * supersample
    c = (torch.arange(n, dtype=torch.float64) + 0.5) / n * 2 - 1
    inside = (c[:, None] ** 2 + c[None, :] ** 2 <= 1.0).float()
    return F.avg_pool2d(inside[None, None], supersample)[0].float()


def side_for(size: float, h: int, w: int, coverage: float) -> float:
    """Side (pixels) of the patch square whose mask covers ``size`` of an (h, w) image."""
    return math.sqrt(size * h * w / coverage)


def check_size(size: float, h: int, w: int, coverage: float, what: str = "patch") -> float:
    """The patch side for ``size``, or a clear error if it is not in (0, 1) or does not fit."""
    if not isinstance(size, (int, float)) or not 0 < size < 1:
        raise AdvexError(f"patch size is a fraction of the image area in (0, 1), got {size!r}")
    side = side_for(size, h, w, coverage)
    if side > min(h, w) + 1e-6:
        biggest = coverage * min(h, w) ** 2 / (h * w)
        raise AdvexError(
            f"a {what} covering {100 * size:.1f}% of a {h}x{w} image would be {side:.0f} px across: larger than "
            f"the image (this shape covers at most {100 * biggest:.1f}%)"
        )
    return side


@dataclass
class Placements:
    """Where and how each of N patches lands: centre (row, col) in pixels, side in pixels
    (of the patch square, before rotation), rotation in degrees (counter-clockwise)."""

    centre: torch.Tensor  # (N, 2)
    side: torch.Tensor  # (N,)
    angle: torch.Tensor  # (N,)

    def rows(self) -> list[dict[str, float]]:
        return [
            {"row": round(float(c[0]), 2), "col": round(float(c[1]), 2), "side": round(float(s), 2),
             "rotation": round(float(a), 2)}
            for c, s, a in zip(self.centre, self.side, self.angle)
        ]  # fmt: skip


def uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)


def sample_placements(
    n: int,
    h: int,
    w: int,
    side: float,
    *,
    rotation: float = 22.5,
    scale: tuple[float, float] = (1.0, 1.0),
    position: tuple[float, float] | None = None,
    round_patch: bool = False,
    generator: torch.Generator,
) -> Placements:
    """N random placements: rotation uniform in [-rotation, rotation] degrees, side times a
    scale uniform in ``scale`` (shrunk where needed to fit), centre uniform over the positions
    that keep the whole patch inside the image; or centred at ``position`` (fractions of
    height and width) when given."""
    ang = uniform(n, -rotation, rotation, generator)
    s = side * uniform(n, scale[0], scale[1], generator)
    rad = ang.abs() * math.pi / 180
    # half the extent of the rotated patch's bounding box (a circle's does not grow)
    grow = torch.ones_like(rad) if round_patch else (rad.cos() + rad.sin())
    s = torch.minimum(s, min(h, w) / grow)
    half = s * grow / 2
    if position is None:
        r = half + (h - 2 * half) * torch.rand(n, generator=generator, dtype=torch.float64)
        c = half + (w - 2 * half) * torch.rand(n, generator=generator, dtype=torch.float64)
    else:
        r = torch.full((n,), position[0] * h, dtype=torch.float64)
        c = torch.full((n,), position[1] * w, dtype=torch.float64)
    return Placements(torch.stack([r, c], 1).float(), s.float(), ang.float())


def placements_for(
    n: int,
    h: int,
    w: int,
    mask: torch.Tensor,
    size: float,
    position: tuple[float, float] | None = None,
    rotation: float = 22.5,
    scale: tuple[float, float] | float = (1.0, 1.0),
    seed: int | torch.Generator = 0,
) -> Placements:
    """Checked arguments -> N placements of a patch with ``mask`` on (h, w) images."""
    scale = (float(scale), float(scale)) if isinstance(scale, (int, float)) else tuple(scale)
    if len(scale) != 2 or not 0 < scale[0] <= scale[1]:
        raise AdvexError(f"scale must be a number > 0 or a range (lo, hi) with 0 < lo <= hi, got {scale}")
    if not 0 <= rotation <= 180:
        raise AdvexError(f"rotation is the largest angle in degrees, in [0, 180], got {rotation}")
    if position is not None and (len(position) != 2 or not all(0 <= v <= 1 for v in position)):
        raise AdvexError(f"position is the patch centre as (row, col) fractions of the image in [0, 1], got {position}")
    side = check_size(size, h, w, float(mask.mean()))
    g = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(int(seed))
    return sample_placements(
        n, h, w, side, rotation=rotation, scale=scale, position=position, round_patch=is_round(mask), generator=g
    )


def is_round(mask: torch.Tensor) -> bool:
    """Whether a mask is (about) a disc, so that rotating it does not change its extent."""
    p = mask.shape[-1]
    return bool((mask - patch_mask("circle", p).to(mask)).abs().mean() < 0.02)
