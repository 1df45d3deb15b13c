"""Training-time augmentation, vectorised over the batch on the device (no per-image Python)."""

from __future__ import annotations

import torch


def augment_crop_flip(x: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop after zero padding by ``pad``, and random horizontal flip, for a whole
    (N, C, H, W) batch at once: the standard CIFAR-10 augmentation (He et al. 2016). The
    offsets and flips are drawn from ``gen``, so the same generator state gives the same batch."""
    n, c, h, w = x.shape
    dev = x.device
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=gen, device=gen.device).to(dev)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=gen, device=gen.device).to(dev)
    iy = oy[:, None] + torch.arange(h, device=dev)
    ix = ox[:, None] + torch.arange(w, device=dev)
    rows = xp.gather(2, iy[:, None, :, None].expand(n, c, h, w + 2 * pad))
    out = rows.gather(3, ix[:, None, None, :].expand(n, c, h, w))
    flip = torch.rand(n, generator=gen, device=gen.device).to(dev) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(-1), out)
