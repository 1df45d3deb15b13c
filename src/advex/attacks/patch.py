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
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from advex.attacks.base import Targets, as_classifier, frozen, resolve_targets
from advex.data.images import quantize
from advex.errors import AdvexError
from advex.models.classifier import Classifier

SHAPES = ("circle", "square")


# ---------------------------------------------------------------------------- geometry
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


def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
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
    ang = _uniform(n, -rotation, rotation, generator)
    s = side * _uniform(n, scale[0], scale[1], generator)
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


def _theta(p: Placements, h: int, w: int, device) -> torch.Tensor:
    """(N, 2, 3) affine maps from image coordinates (``affine_grid``'s [-1, 1]) to patch
    coordinates: v = (2 / side) R(-angle) (q - centre), q the pixel position."""
    a = p.angle.to(device, torch.float32) * (math.pi / 180)
    cos, sin = a.cos(), a.sin()
    k = 2.0 / p.side.to(device, torch.float32)
    cy, cx = p.centre[:, 0].to(device, torch.float32), p.centre[:, 1].to(device, torch.float32)
    # q_x = (u_x + 1) W/2, q_y = (u_y + 1) H/2; image y points down, so a counter-clockwise
    # turn on screen is a clockwise one in (x, y)
    dx, dy = w / 2 - cx, h / 2 - cy
    row0 = torch.stack([k * cos * w / 2, -k * sin * h / 2, k * (cos * dx - sin * dy)], 1)
    row1 = torch.stack([k * sin * w / 2, k * cos * h / 2, k * (sin * dx + cos * dy)], 1)
    return torch.stack([row0, row1], 1)


def render(rgba: torch.Tensor, placements: Placements, h: int, w: int) -> torch.Tensor:
    """Warp (N or 1, C+1, P, P) patches (last channel the mask) onto (N, C+1, h, w) canvases.

    The colour is premultiplied by the mask before the bilinear warp, so that pixels on the
    patch's border, where the warp blends the patch with the transparent outside, are not
    darkened twice when composited."""
    n = placements.side.numel()
    theta = _theta(placements, h, w, rgba.device).to(rgba.dtype)
    grid = F.affine_grid(theta, [n, rgba.shape[1], h, w], align_corners=False)
    src = torch.cat([rgba[:, :-1] * rgba[:, -1:], rgba[:, -1:]], 1)
    src = src.expand(n, -1, -1, -1) if src.shape[0] == 1 else src
    return F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def composite(x: torch.Tensor, rgba_canvas: torch.Tensor) -> torch.Tensor:
    """Paste rendered (premultiplied) patches onto images: x (1 - alpha) + patch."""
    return x * (1 - rgba_canvas[:, -1:]) + rgba_canvas[:, :-1]


def fit_patch(patch: torch.Tensor, mask: torch.Tensor, side: float) -> torch.Tensor:
    """(1, C+1, P', P') patch+mask resampled (antialiased) to about ``side`` pixels, so that
    bilinear warping does not alias a patch stored at a much higher resolution."""
    rgba = torch.cat([patch, mask], 0)[None]
    p = rgba.shape[-1]
    target = max(2, math.ceil(side))
    if p > 1.5 * target:
        rgba = F.interpolate(rgba, size=(target, target), mode="bilinear", antialias=True, align_corners=False)
    return rgba


@dataclass
class Printability:
    """Per-sample changes a printed patch sees under a camera: contrast c and brightness b
    (patch -> c * patch + b), Gaussian blur of standard deviation up to ``blur`` patch
    pixels, Gaussian noise of standard deviation up to ``noise``. Zeros turn each off."""

    brightness: float = 0.1
    contrast: tuple[float, float] = (0.8, 1.2)
    blur: float = 1.0
    noise: float = 0.02

    @classmethod
    def none(cls) -> Printability:
        return cls(0.0, (1.0, 1.0), 0.0, 0.0)


def _blur(p: torch.Tensor, sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, P, P) with one sigma per sample (grouped conv)."""
    n, c, hh, ww = p.shape
    t = torch.arange(-radius, radius + 1, device=p.device, dtype=p.dtype)
    k = torch.exp(-(t[None] ** 2) / (2 * sigma.clamp_min(1e-3)[:, None] ** 2))
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (N*C, K)
    x = F.pad(p.reshape(1, n * c, hh, ww), (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, k[:, None, :, None], groups=n * c)
    x = F.conv2d(x, k[:, None, None, :], groups=n * c)
    return x.reshape(n, c, hh, ww)


def transform_patch(patch: torch.Tensor, n: int, pr: Printability, generator: torch.Generator) -> torch.Tensor:
    """(N, C, P, P): the patch under N sampled printability changes (differentiable in patch)."""
    dev = patch.device
    c = _uniform(n, *pr.contrast, generator).float().to(dev)
    b = _uniform(n, -pr.brightness, pr.brightness, generator).float().to(dev)
    out = patch[None] * c[:, None, None, None] + b[:, None, None, None]
    if pr.blur > 0:
        sig = _uniform(n, 0.0, pr.blur, generator).float().to(dev)
        out = _blur(out, sig, max(1, math.ceil(2 * pr.blur)))
    if pr.noise > 0:
        sd = _uniform(n, 0.0, pr.noise, generator).float().to(dev)
        eps = torch.randn(out.shape, generator=generator).to(dev)
        out = out + eps * sd[:, None, None, None]
    return out.clamp(0, 1)


def random_views(
    x: torch.Tensor,
    n: int,
    generator: torch.Generator,
    *,
    crop: tuple[float, float] = (0.5, 1.0),
    flip: bool = True,
    colour: float = 0.2,
) -> torch.Tensor:
    """N augmented views of images x (M, C, H, W), same size: a random source image, a random
    crop of area fraction in ``crop`` (aspect 3/4 to 4/3) resized back, a horizontal flip with
    probability 1/2, brightness/contrast/saturation jitter of +-``colour``. One batched warp."""
    m, ch, h, w = x.shape
    src = torch.randint(m, (n,), generator=generator)
    area = _uniform(n, *crop, generator)
    logr = _uniform(n, math.log(3 / 4), math.log(4 / 3), generator)
    fw = (area * logr.exp()).sqrt().clamp(max=1.0)  # crop width / image width
    fh = (area / logr.exp()).sqrt().clamp(max=1.0)
    cx = (1 - fw) * (2 * torch.rand(n, generator=generator, dtype=torch.float64) - 1)
    cy = (1 - fh) * (2 * torch.rand(n, generator=generator, dtype=torch.float64) - 1)
    sx = torch.where(torch.rand(n, generator=generator) < 0.5, -fw, fw) if flip else fw
    theta = torch.zeros(n, 2, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx, cx, fh, cy
    grid = F.affine_grid(theta.to(x.device, x.dtype), [n, ch, h, w], align_corners=False)
    v = F.grid_sample(x[src.to(x.device)], grid, mode="bilinear", padding_mode="border", align_corners=False)
    if colour > 0:
        j = [(1 + _uniform(n, -colour, colour, generator)).to(x.device, x.dtype)[:, None, None, None] for _ in "bcs"]
        v = v * j[0]
        mean = v.mean((1, 2, 3), keepdim=True)
        v = (v - mean) * j[1] + mean
        if ch == 3:
            grey = v.mean(1, keepdim=True)
            v = (v - grey) * j[2] + grey
    return v.clamp(0, 1)


def _as_float(x: torch.Tensor, device) -> torch.Tensor:
    x = x.to(device)
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def _check_images(x: Any, what: str = "images") -> tuple[int, int, int]:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[0] == 0:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise AdvexError(f"{what} must be a non-empty (N, C, H, W) tensor (uint8, or float in [0, 1]), got {shape}")
    if x.dtype != torch.uint8:
        if not x.is_floating_point():
            raise AdvexError(f"{what} must be uint8 or float in [0, 1], got {x.dtype}")
        lo, hi = float(x.min()), float(x.max())
        if not (lo >= 0 and hi <= 1):  # NaN fails too
            raise AdvexError(f"{what} must be pixels in [0, 1], got values in [{lo:.3g}, {hi:.3g}]")
    return tuple(x.shape[1:])


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
    c, h, w = _check_images(images)
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
    x = _as_float(images, dev)
    return composite(x, render(rgba, placements, h, w)).clamp(0, 1), placements


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
        n, h, w, side, rotation=rotation, scale=scale, position=position, round_patch=_is_round(mask), generator=g
    )


def _is_round(mask: torch.Tensor) -> bool:
    """Whether a mask is (about) a disc, so that rotating it does not change its extent."""
    p = mask.shape[-1]
    return bool((mask - patch_mask("circle", p).to(mask)).abs().mean() < 0.02)


# ---------------------------------------------------------------------------- training
@dataclass
class PatchResult:
    """A trained universal patch and how training went.

    ``patch`` (C, P, P) is quantised to 8 bits (what a PNG stores; every success reported
    is measured with it); ``mask`` (1, P, P) is the shape's coverage of each pixel.
    ``curve`` has, per logged step, the mean loss -log P(target) and the fraction of that
    step's patched samples classified as the target.
    """

    patch: torch.Tensor
    mask: torch.Tensor
    size: float
    shape: str
    target: int
    target_name: str
    steps: int
    samples: int
    time_s: float
    curve: dict[str, list[float]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


class Patch:
    """Train a universal adversarial patch (Brown et al. 2017) by EOT and Adam.

    Args:
        size: fraction of the image area the patch covers at scale 1 (the paper sweeps it).
        shape: "circle" (the paper's sticker) or "square".
        steps: Adam steps; each draws ``batch_size`` images (with replacement), and for
            each a fresh location, scale, rotation and printability change.
        batch_size: patched samples per step (per model for an ensemble).
        lr: Adam step size on patch pixels in [0, 1].
        rotation: largest rotation, degrees (uniform in +-rotation).
        scale: range of the patch side as a multiple of the side for ``size``.
        printability: brightness/contrast/blur/noise ranges (``Printability.none()`` off).
        augment: also draw random crops, flips and colour changes of the training images
            (for a handful of photos; see :func:`random_views`).
        resolution: patch pixels per side (default: its largest rendered side, so one patch
            pixel is about one image pixel).
        log_every: record the curve every this many steps.
        seed: all randomness (initial patch, sampling) comes from it.
        progress: show a progress bar.
    """

    def __init__(
        self,
        *,
        size: float = 0.1,
        shape: str = "circle",
        steps: int = 500,
        batch_size: int = 16,
        lr: float = 0.02,
        rotation: float = 22.5,
        scale: tuple[float, float] = (0.8, 1.2),
        printability: Printability | None = None,
        augment: bool = False,
        resolution: int | None = None,
        log_every: int = 10,
        seed: int = 0,
        progress: bool = False,
    ) -> None:
        if not isinstance(size, (int, float)) or not 0 < size < 1:
            raise AdvexError(f"size is a fraction of the image area in (0, 1), got {size!r}")
        if shape not in SHAPES:
            raise AdvexError(f"shape must be one of {', '.join(SHAPES)}, got {shape!r}")
        if not isinstance(steps, int) or steps < 1:
            raise AdvexError(f"steps must be an integer >= 1, got {steps!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise AdvexError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if not lr > 0:
            raise AdvexError(f"lr must be > 0, got {lr}")
        if not 0 <= rotation <= 180:
            raise AdvexError(f"rotation is the largest angle in degrees, in [0, 180], got {rotation}")
        scale = tuple(float(v) for v in scale)
        if len(scale) != 2 or not 0 < scale[0] <= scale[1]:
            raise AdvexError(f"scale must be a range (lo, hi) with 0 < lo <= hi, got {scale}")
        if resolution is not None and (not isinstance(resolution, int) or resolution < 2):
            raise AdvexError(f"resolution must be an integer >= 2 (patch pixels per side), got {resolution!r}")
        self.size, self.shape, self.steps, self.batch_size, self.lr = float(size), shape, steps, batch_size, lr
        self.rotation, self.scale = float(rotation), scale
        self.printability = printability if printability is not None else Printability()
        self.augment, self.resolution = augment, resolution
        self.log_every, self.seed, self.progress = max(1, int(log_every)), seed, progress

    def __repr__(self) -> str:
        return (
            f"Patch(size={self.size}, shape={self.shape!r}, steps={self.steps}, batch_size={self.batch_size}, "
            f"lr={self.lr}, rotation={self.rotation}, scale={self.scale}, augment={self.augment}, seed={self.seed})"
        )

    def __call__(self, model: nn.Module | Sequence[nn.Module], images: torch.Tensor, target: Targets) -> PatchResult:
        """Train on ``images`` (N, C, H, W; uint8 or float in [0, 1]) for class ``target``
        (index or name) of ``model``, or of every model in a list (the paper's ensemble)."""
        start = time.perf_counter()
        models = [as_classifier(m) for m in (model if isinstance(model, (list, tuple)) else [model])]
        if not models:
            raise AdvexError("give at least one model")
        c, h, w = _check_images(images)
        if target is None:
            raise AdvexError("the patch needs a target class (index or name)")
        dev = models[0].device
        tgt = int(resolve_targets(models[0], target, 1, dev)[0])
        for m in models[1:]:
            resolve_targets(m, tgt, 1, m.device)
        side = check_size(self.size, h, w, math.pi / 4 if self.shape == "circle" else 1.0)
        res = self.resolution or max(2, math.ceil(side * self.scale[1]))
        mask = patch_mask(self.shape, res).to(dev)
        g = torch.Generator().manual_seed(self.seed)
        patch = torch.rand(c, res, res, generator=g).to(dev).requires_grad_(True)
        opt = torch.optim.Adam([patch], lr=self.lr)
        curve: dict[str, list[float]] = {"step": [], "loss": [], "success": []}
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=self.steps, desc="patch", unit="step")
        run_loss, run_ok, run_n = 0.0, 0.0, 0
        tg = torch.full((self.batch_size,), tgt, device=dev)
        with contextlib.ExitStack() as stack:
            for m in models:
                stack.enter_context(frozen(m))
            for step in range(1, self.steps + 1):
                idx = torch.randint(images.shape[0], (self.batch_size,), generator=g)
                x = _as_float(images[idx], dev)
                if self.augment:
                    x = random_views(x, self.batch_size, g)
                xp = self._patched(patch, mask, x, side, g)
                loss = torch.zeros((), device=dev)
                hits = torch.zeros((), device=dev)
                for m in models:
                    z = m(xp).float()
                    loss = loss + F.cross_entropy(z, tg) / len(models)
                    hits = hits + (z.argmax(1) == tgt).float().mean() / len(models)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                with torch.no_grad():
                    patch.clamp_(0, 1)
                run_loss, run_ok, run_n = run_loss + float(loss.detach()), run_ok + float(hits), run_n + 1
                if step % self.log_every == 0 or step == self.steps:
                    curve["step"].append(step)
                    curve["loss"].append(round(run_loss / run_n, 5))
                    curve["success"].append(round(run_ok / run_n, 4))
                    run_loss, run_ok, run_n = 0.0, 0.0, 0
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{float(loss.detach()):.3f}", target=f"{float(hits):.2f}")
        if bar is not None:
            bar.close()
        return PatchResult(
            patch=quantize(patch.detach()).cpu(),
            mask=mask.cpu(),
            size=self.size,
            shape=self.shape,
            target=tgt,
            target_name=models[0].class_name(tgt),
            steps=self.steps,
            samples=self.steps * self.batch_size,
            time_s=time.perf_counter() - start,
            curve=curve,
            settings={
                "size": self.size, "shape": self.shape, "steps": self.steps, "batch_size": self.batch_size,
                "lr": self.lr, "rotation": self.rotation, "scale": list(self.scale), "augment": self.augment,
                "resolution": res, "printability": vars(self.printability), "seed": self.seed,
                "models": [m.name for m in models], "image_size": [h, w],
            },
        )  # fmt: skip

    def _patched(self, patch, mask, x, side, g) -> torch.Tensor:
        n, _, h, w = x.shape
        pl = sample_placements(
            n, h, w, side, rotation=self.rotation, scale=self.scale, round_patch=self.shape == "circle", generator=g
        )
        rgb = transform_patch(patch, n, self.printability, g)
        rgba = torch.cat([rgb, mask[None].expand(n, -1, -1, -1)], 1)
        return composite(x, render(rgba, pl, h, w))


# ---------------------------------------------------------------------------- evaluation
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
    clf: Classifier = as_classifier(model)
    if placements < 1:
        raise AdvexError(f"placements must be >= 1, got {placements}")
    if batch_size < 1:
        raise AdvexError(f"batch_size must be >= 1, got {batch_size}")
    _check_images(images)
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
            x = _as_float(images[s : s + batch_size], dev)
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
