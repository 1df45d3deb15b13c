"""Patch files: a trained patch as a printable RGBA PNG, and back.

The PNG holds the patch enlarged by a whole factor k with nearest-neighbour blocks (so a
print shows exactly the pixels the network was trained on), the mask as alpha (a circle
drawn sharp at the print resolution), and the training settings as JSON in a PNG text
chunk ``advex``. Reading it back averages each k x k block, which returns the trained
patch exactly; any other square PNG (with or without alpha) is accepted as a patch too.
"""

from __future__ import annotations

import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from advex.data.images import atomic_write_bytes, to_uint8
from advex.errors import AdvexError

META_KEY = "advex"


@dataclass
class LoadedPatch:
    patch: torch.Tensor  # (3, P, P) in [0, 1]
    mask: torch.Tensor  # (1, P, P) in [0, 1]
    meta: dict[str, Any] = field(default_factory=dict)
    source: str = ""


def save_patch(
    path: str | os.PathLike,
    patch: torch.Tensor,
    mask: torch.Tensor,
    *,
    pixels: int = 600,
    sharp_mask: torch.Tensor | None = None,
    meta: dict[str, Any] | None = None,
) -> int:
    """Write ``patch`` (C, P, P) with ``mask`` as alpha to an RGBA PNG about ``pixels`` across
    (atomically); ``sharp_mask`` (1, kP, kP) is the mask drawn at the print resolution.
    Returns the enlargement factor k."""
    p = patch.shape[-1]
    k = max(1, math.ceil(pixels / p))
    rgb = patch.detach().cpu()
    if rgb.shape[0] == 1:
        rgb = rgb.expand(3, -1, -1)
    big = rgb.repeat_interleave(k, 1).repeat_interleave(k, 2)
    alpha = sharp_mask if sharp_mask is not None and sharp_mask.shape[-1] == p * k else None
    if alpha is None:
        alpha = mask.detach().cpu().repeat_interleave(k, 1).repeat_interleave(k, 2)
    arr = to_uint8(torch.cat([big, alpha.cpu()], 0)).permute(1, 2, 0).numpy()
    info = PngImagePlugin.PngInfo()
    info.add_text(META_KEY, json.dumps({**(meta or {}), "resolution": p, "enlarged": k}))
    buf = io.BytesIO()
    Image.fromarray(arr, "RGBA").save(buf, format="PNG", pnginfo=info)
    atomic_write_bytes(path, buf.getvalue())
    return k


def load_patch(path: str | os.PathLike) -> LoadedPatch:
    """Read a patch PNG written by :func:`save_patch`, or any square image (its alpha, if
    any, is the mask; else the whole square)."""
    p = Path(path)
    if not p.is_file():
        raise AdvexError(f"patch file not found: {p}")
    try:
        with Image.open(p) as im:
            im.load()
            text = dict(getattr(im, "text", {}) or {})
            rgba = np.asarray(im.convert("RGBA"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise AdvexError(f"cannot read patch {p} as an image ({type(e).__name__}); give a PNG written by "
                         "`advex patch train`, or any square PNG/JPEG") from None  # fmt: skip
    h, w = rgba.shape[:2]
    if h != w:
        raise AdvexError(f"patch {p} is {w}x{h}; a patch image must be square")
    meta: dict[str, Any] = {}
    if META_KEY in text:
        try:
            meta = json.loads(text[META_KEY])
        except json.JSONDecodeError:
            meta = {}
        if not isinstance(meta, dict):
            meta = {}
    t = torch.from_numpy(rgba).permute(2, 0, 1).float().div_(255.0)
    k = meta.get("enlarged")
    if isinstance(k, int) and k > 1 and h % k == 0 and meta.get("resolution") == h // k:
        t = F.avg_pool2d(t[None], k)[0]  # blocks of one value: exactly the trained patch
        t[:3] = t[:3].mul(255).round().div(255)
    if float(t[3].sum()) <= 0:
        raise AdvexError(f"patch {p} is fully transparent")
    return LoadedPatch(t[:3].contiguous(), t[3:].contiguous(), meta, str(p))
