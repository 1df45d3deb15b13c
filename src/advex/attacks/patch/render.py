"""Drawing a patch into images, differentiably and batched: the affine warp of each placement
(``affine_grid`` + bilinear ``grid_sample``), compositing with premultiplied alpha, and the
random changes a printed patch sees under a camera (brightness, contrast, blur, noise) and
that a handful of training photos can be stretched with (crops, flips, colour)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from advex.attacks.patch.geometry import Placements, uniform


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
    c = uniform(n, *pr.contrast, generator).float().to(dev)
    b = uniform(n, -pr.brightness, pr.brightness, generator).float().to(dev)
    out = patch[None] * c[:, None, None, None] + b[:, None, None, None]
    if pr.blur > 0:
        sig = uniform(n, 0.0, pr.blur, generator).float().to(dev)
        out = _blur(out, sig, max(1, math.ceil(2 * pr.blur)))
    if pr.noise > 0:
        sd = uniform(n, 0.0, pr.noise, generator).float().to(dev)
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
    area = uniform(n, *crop, generator)
    logr = uniform(n, math.log(3 / 4), math.log(4 / 3), generator)
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
        j = [(1 + uniform(n, -colour, colour, generator)).to(x.device, x.dtype)[:, None, None, None] for _ in "bcs"]
        v = v * j[0]
        mean = v.mean((1, 2, 3), keepdim=True)
        v = (v - mean) * j[1] + mean
        if ch == 3:
            grey = v.mean(1, keepdim=True)
            v = (v - grey) * j[2] + grey
    return v.clamp(0, 1)
