"""Exact forward passes for a few changed pixels on CNNs too large for window tables.

:class:`~advex.attacks.onepixel.incremental.LocalForward` keeps one dense matrix per window
placement and every window of every activation cut out in advance. On the 7-layer CNN of
certified training (``cnn7``: 64-128 channels at 32 x 32 and 16 x 16, a 32,768 x 512 Linear)
those tables would take 1.4 GB for a single image. ``CropForward`` computes the same windows
(see that module) with nothing made in advance but the base images' activations:

- a convolution's output window is the convolution, unpadded, of the crop of its zero-padded
  input that the window reads: the base activation there, with the candidate's input windows
  written over it (with several pixels, every window of the candidate that reaches the crop:
  they agree where they overlap). So it holds a full pass's values. Crops are gathered
  channels-last, and all candidates' crops of a layer are one batched convolution.
- the first Linear sees only the last windows' change. Ordered by position, then channel,
  its weights meet each row of a window in one contiguous block, so the change is one
  matrix product per block on a view of the weights; a position several windows of a
  candidate hold counts once.

On cnn7 one pixel's windows take about an eighth of a full pass's multiply-adds.
Supported: the networks :func:`~advex.attacks.onepixel.incremental.split` accepts.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from advex.attacks.onepixel.incremental import (
    base_activations,
    candidates,
    first_rows,
    grouped,
    later_held,
    split,
    window_pairs,
    window_sizes,
)


class CropForward:
    """Logits of base images with a few pixels replaced, by convolutions of crops (module doc)."""

    MAX_BYTES = 2**31  # the base images' activations it keeps (cnn7: ~1 MB an image)
    PAYS = 0.9  # see pays

    def __init__(self, head: list[nn.Module], linear: nn.Linear, tail: nn.Module, base: torch.Tensor) -> None:
        self.head, self.tail = head, tail
        acts, self.lin_out = base_activations(head, linear, base)
        self.sizes = window_sizes(head, acts)
        # each convolution's base input, zero-padded, one row per (image, position), and the
        # size of its output map; multiply-adds of one pixel's windows and of a full pass
        self.inputs: dict[int, tuple[torch.Tensor, int, int, int, int]] = {}
        self.window_macs = self.full_macs = self.crop_floats = 0
        for i, m in enumerate(head):
            if isinstance(m, nn.Conv2d):
                ph, pw = m.padding
                padded = F.pad(acts[i], (pw, pw, ph, ph))
                self.inputs[i] = (_positions(padded), *padded.shape[-2:], *acts[i + 1].shape[-2:])
                (oh, ow), (kh, kw), (sh, sw) = self.sizes[i + 1], m.kernel_size, m.stride
                self.crop_floats += ((oh - 1) * sh + kh) * ((ow - 1) * sw + kw) * m.in_channels
                per_output = m.weight[0].numel() * m.out_channels
                self.window_macs += math.prod(self.sizes[i + 1]) * per_output
                self.full_macs += math.prod(acts[i + 1].shape[-2:]) * per_output
        c, hh, ww = acts[-1].shape[1:]
        self.last, self.last_hw = _positions(acts[-1]), (hh, ww)
        w = linear.weight.detach().view(-1, c, hh, ww)
        self.lin_weight = w.permute(2, 3, 1, 0).reshape(hh * ww * c, -1).contiguous()  # position-major
        self.window_macs += math.prod(self.sizes[-1]) * c * linear.out_features
        self.full_macs += linear.weight.numel()

    @classmethod
    def build(cls, net: nn.Module, base: torch.Tensor) -> CropForward | None:
        """A CropForward for ``net`` on ``base`` (N, C, H, W) images, or None if unsupported
        (or if the activations it keeps would take more than MAX_BYTES)."""
        parts = split(net)
        if parts is None:
            return None
        acts, _ = base_activations(*parts[:2], base[:1])  # one image's, to size them all
        if base.shape[0] * sum(a.numel() for a in acts) * base.element_size() > cls.MAX_BYTES:
            return None
        return cls(*parts, base)

    def pays(self, pixels: int) -> bool:
        """Whether scoring ``pixels``-pixel candidates this way beats full passes: while their
        windows' multiply-adds are at most PAYS of a full pass's. On cnn7 (one pixel's are
        14%) scoring probes on this CPU ran 9.8x full passes' speed at 1 pixel, 3x at 3, 1.5x
        at 5 and 6, 1.2x at 7 and 1.0x at 8: so up to 6 pixels there."""
        return pixels * self.window_macs <= self.PAYS * self.full_macs

    def chunk(self, pixels: int) -> int:
        """Candidates per call: their crops ~64 MB over all layers (cnn7: ~570 one-pixel
        candidates, ~95 six-pixel ones; smaller networks up to 8192)."""
        return max(32, min(8192, 2**24 // (pixels * self.crop_floats)))

    @torch.no_grad()
    def __call__(self, owner: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, value: torch.Tensor):
        """As :meth:`LocalForward.__call__ <advex.attacks.onepixel.incremental.LocalForward.__call__>`."""
        k, d, own, t, u, value = candidates(owner, rows, cols, value)
        if d > 1:
            value = _later_holds(t.view(k, d), u.view(k, d), value)
        win = value.reshape(k * d, 1, 1, -1)  # the windows, channels-last: (K * d, h, w, C)
        for i, m in enumerate(self.head):
            if isinstance(m, nn.Conv2d):
                win, t, u = self._conv(i, m, own, win, t, u, d)
            else:
                win = m(win.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.tail(self.lin_out.index_select(0, owner).add_(self._linear(own, win, t, u, d)))

    def _conv(self, i: int, m: nn.Conv2d, own, win, t, u, d: int):
        """The output windows of conv ``m`` (layer ``i``) and where they sit: ``m``, unpadded,
        on the crops of its padded input that they read, the candidate's input windows ``win``
        (at (t, u)) written in."""
        (kh, kw), (sh, sw), (ph, pw) = m.kernel_size, m.stride, m.padding
        base, hp, wp, oh_all, ow_all = self.inputs[i]
        (oh, ow), (wh, ww), c = self.sizes[i + 1], win.shape[1:3], win.shape[3]
        ot, ou = first_rows(t, m, 0, oh_all - oh), first_rows(u, m, 1, ow_all - ow)
        rh, rw = (oh - 1) * sh + kh, (ow - 1) * sw + kw  # the crop an output window reads
        top, left = ot * sh, ou * sw  # its corner in the padded input
        n, dev = own.numel(), own.device
        corner = own * (hp * wp) + top * wp + left
        crop = torch.empty(n * rh * rw + 1, c, dtype=base.dtype, device=dev)  # last row: entries outside any crop
        span = (torch.arange(rh, device=dev)[:, None] * wp + torch.arange(rw, device=dev)).flatten()
        torch.index_select(base, 0, (corner[:, None] + span).flatten(), out=crop[:-1])
        # every window of the candidate that reaches crop ``dst`` (window ``src``), written in
        if d == 1:
            dst = src = torch.arange(n, device=dev)
        else:
            grid = torch.arange(n, device=dev).view(-1, d)
            dst = grid[:, :, None].expand(-1, d, d).reshape(-1)
            src = grid[:, None, :].expand(-1, d, d).reshape(-1)
            r, q = t[src] + ph - top[dst], u[src] + pw - left[dst]
            near = ((r > -wh) & (r < rh) & (q > -ww) & (q < rw)).nonzero().flatten()
            dst, src = dst[near], src[near]
        r = (t[src] + ph - top[dst])[:, None, None] + torch.arange(wh, device=dev)[:, None]
        q = (u[src] + pw - left[dst])[:, None, None] + torch.arange(ww, device=dev)
        inside = (r >= 0) & (r < rh) & (q >= 0) & (q < rw)
        at = torch.where(inside, (dst[:, None, None] * rh + r) * rw + q, n * rh * rw)
        values = win.reshape(n, wh * ww, c)
        crop.index_copy_(0, at.flatten(), (values if d == 1 else values.index_select(0, src)).reshape(-1, c))
        x = crop[:-1].view(n, rh, rw, c).permute(0, 3, 1, 2)
        return F.conv2d(x, m.weight, m.bias, m.stride).permute(0, 2, 3, 1), ot, ou

    def _linear(self, own, win, t, u, d: int) -> torch.Tensor:
        """The first Linear's change: each window's change (new minus base values) times its
        weights, one contiguous block per window row; a position several windows of a
        candidate hold counts once."""
        n, wh, ww, c = win.shape
        hh, wwid = self.last_hw
        dev = own.device
        span = (torch.arange(wh, device=dev)[:, None] * wwid + torch.arange(ww, device=dev)).flatten()
        at = ((own * (hh * wwid) + t * wwid + u)[:, None] + span).flatten()
        delta = win.reshape(n, wh * ww, c) - self.last.index_select(0, at).view(n, wh * ww, c)
        if d > 1:
            held, keep = later_held(window_pairs(t, u, (wh, ww), d), wh * ww)
            if held is not None:
                delta[held] = delta[held] * keep.to(delta.dtype)[:, :, None]
        block = ((t[:, None] + torch.arange(wh, device=dev)) * wwid + u[:, None]).flatten()  # each row's first position
        z = grouped(delta.view(n * wh, ww * c), block, lambda p: self.lin_weight[p * c : (p + ww) * c])
        return z.view(-1, d * wh, z.shape[1]).sum(1)


def _positions(act: torch.Tensor) -> torch.Tensor:
    """(N * H * W, C): ``act`` (N, C, H, W) with one row per image and position."""
    return act.permute(0, 2, 3, 1).reshape(-1, act.shape[1]).contiguous()


def _later_holds(rows: torch.Tensor, cols: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``value`` (K, d, C) with each pixel that a later pixel of its candidate writes over given
    that one's colour, as writing them into the image in order leaves it."""
    value = value.clone()
    d = rows.shape[1]
    for j in range(d - 1):
        for later in range(j + 1, d):
            same = (rows[:, j] == rows[:, later]) & (cols[:, j] == cols[:, later])
            value[:, j] = torch.where(same[:, None], value[:, later], value[:, j])
    return value
