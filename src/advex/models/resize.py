"""Differentiable crop + resize as a separable linear map, batched over images of mixed sizes.

Resizing an (H, W) image to (h, w) with an antialiased bilinear (triangle) filter is
``A_h @ img @ A_w.T`` for two small matrices. Building the matrices once per input size
makes preprocessing exact (identical to ``F.interpolate(..., antialias=True)`` on the
crop), differentiable, and lets one batched matmul resize a zero-padded batch whose
images all have different sizes: each image gets its own matrices, zero where the
canvas is padding. Attacks can therefore optimise a perturbation at the photo's own
resolution and save the adversarial photo at that resolution.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F


@lru_cache(maxsize=256)
def _resize_1d(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) matrix of the antialiased bilinear resize of a 1-D signal."""
    if n_in == n_out:
        return torch.eye(n_in, dtype=torch.float64)
    eye = torch.eye(n_in, dtype=torch.float64).reshape(n_in, 1, 1, n_in)
    cols = F.interpolate(eye, size=(1, n_out), mode="bilinear", antialias=True, align_corners=False)
    return cols.reshape(n_in, n_out).t().contiguous()


def crop_box(h: int, w: int, out_h: int, out_w: int, crop_fraction: float) -> tuple[int, int, int, int]:
    """Centre crop (top, left, height, width) with the output's aspect ratio.

    The crop is the largest box of aspect out_h:out_w that fits the image, scaled by
    ``crop_fraction`` (0.875 is the usual ImageNet "resize 256, crop 224").
    """
    s = crop_fraction * min(h / out_h, w / out_w)
    ch = max(1, min(h, round(out_h * s)))
    cw = max(1, min(w, round(out_w * s)))
    return (h - ch) // 2, (w - cw) // 2, ch, cw


@lru_cache(maxsize=256)
def _axis_matrix(n: int, n_canvas: int, n_out: int, start: int, length: int) -> torch.Tensor:
    m = torch.zeros(n_out, n_canvas, dtype=torch.float64)
    m[:, start : start + length] = _resize_1d(length, n_out)
    return m


def resize_matrices(
    sizes: list[tuple[int, int]],
    canvas: tuple[int, int],
    out: tuple[int, int],
    crop_fraction: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stacked (N, out_h, H) and (N, out_w, W) matrices for images of the given sizes."""
    rows, cols = [], []
    for h, w in sizes:
        top, left, ch, cw = crop_box(h, w, out[0], out[1], crop_fraction)
        rows.append(_axis_matrix(h, canvas[0], out[0], top, ch))
        cols.append(_axis_matrix(w, canvas[1], out[1], left, cw))
    return torch.stack(rows), torch.stack(cols)


def apply_resize(x: torch.Tensor, a_h: torch.Tensor, a_w: torch.Tensor) -> torch.Tensor:
    """``a_h @ x @ a_w.T`` per image and channel; a_h/a_w are (N|1, h, H) and (N|1, w, W)."""
    y = torch.matmul(a_h.unsqueeze(1), x)
    return torch.matmul(y, a_w.transpose(-1, -2).unsqueeze(1))
