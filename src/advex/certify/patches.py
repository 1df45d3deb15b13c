"""Patches: linear bounds of convolutional neurons kept on their receptive fields.

Back-substituting a neuron of a convolutional layer through convolutions, per-channel affine
maps and ReLUs down to the input, its coefficients are nonzero only on its receptive field. So
each is kept as a small (C, K, K) patch anchored at (row * stride - pad, col * stride - pad) of
the current layer, instead of a whole map (the "patches mode" of auto_LiRPA): the same bound, a
fraction of the work. The layers' ``patch_back`` rules (advex.certify.layers) move patches down
one layer; this module holds the representation and its geometry.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Patches:
    """S linear functions per input of a (C, H, W) layer, each on a K x K window.

    ``coef`` (B, S, C, K, K) are the coefficients; the window of function s of input b starts at
    (row * stride - pad, col * stride - pad) with ``pos[b, s] = row * cols + col`` the neuron it
    bounds on the ``grid`` (rows, cols) of the layer it started from. ``bias_hi`` is None unless
    the lower and upper bounds share their coefficients (paired), then each has its bias."""

    coef: torch.Tensor
    pos: torch.Tensor
    grid: tuple[int, int]
    bias_lo: torch.Tensor
    bias_hi: torch.Tensor | None
    k: int = 1
    stride: int = 1
    pad: int = 0

    @classmethod
    def neurons(cls, idx: torch.Tensor, shape: tuple[int, int, int], paired: bool, dtype: torch.dtype) -> Patches:
        """The identity functions of the neurons idx (B, S) (flat indices into a (C, H, W) layer):
        S patches if ``paired`` (both bounds), else 2S, the second S negated (the upper bounds as
        lower bounds of -z)."""
        bsz, s = idx.shape
        c, h, w = shape
        ch, pos = idx // (h * w), idx % (h * w)
        n_spec = s if paired else 2 * s
        dev, dt = idx.device, dtype
        coef = torch.zeros(bsz, n_spec, c, 1, 1, device=dev, dtype=dt)
        one = torch.ones(bsz, s, 1, device=dev, dtype=dt)
        coef[:, :s].view(bsz, s, c).scatter_(2, ch.unsqueeze(-1), one)
        if not paired:
            coef[:, s:].view(bsz, s, c).scatter_(2, ch.unsqueeze(-1), -one)
        bias_lo = torch.zeros(bsz, n_spec, device=dev, dtype=dt)
        bias_hi = torch.zeros(bsz, n_spec, device=dev, dtype=dt) if paired else None
        return cls(coef, pos if paired else torch.cat([pos, pos], 1), (h, w), bias_lo, bias_hi)

    def window(self, m: torch.Tensor) -> torch.Tensor:
        """Each function's (C, K, K) window of the maps m (B, C, H, W): (B, S, C, K, K)."""
        return windows(m, self.pos, self.grid, self.k, self.stride, self.pad)


def windows(m: torch.Tensor, pos: torch.Tensor, grid: tuple[int, int], k: int, stride: int, pad: int):
    """(B, S, C, k, k) windows of maps m (B, C, H, W) at anchors pos (B, S) = row * cols + col
    of a (rows, cols) grid, the window of (row, col) starting at (row * stride - pad, ...)."""
    bsz, c, h, w = m.shape
    rows, cols = grid
    pad_b = max(0, (rows - 1) * stride + k - h - pad)
    pad_r = max(0, (cols - 1) * stride + k - w - pad)
    mp = F.pad(m, (pad, pad_r, pad, pad_b))
    win = F.unfold(mp, k, stride=stride)  # (B, C*k*k, L) over the anchors, row-major
    n_cols = (mp.shape[-1] - k) // stride + 1
    r, col = pos // cols, pos % cols
    at = (r * n_cols + col).unsqueeze(1).expand(-1, win.shape[1], -1)
    return win.gather(2, at).transpose(1, 2).reshape(bsz, pos.shape[1], c, k, k)


def transpose_patch(p: torch.Tensor, weight: torch.Tensor, stride: int, groups: int) -> torch.Tensor:
    """conv_transpose2d of many small patches (N, Co, K, K): one matmul and a fold (sum of
    overlapping kernels), much faster on a CPU than conv_transpose2d on tiny maps."""
    n, co, k, _ = p.shape
    if groups != 1:
        return F.conv_transpose2d(p, weight, stride=stride, groups=groups)
    ci, kk = weight.shape[1], weight.shape[-1]
    if k == 1:
        return (p.reshape(n, co) @ weight.reshape(co, ci * kk * kk)).reshape(n, ci, kk, kk)
    cols = p.flatten(2).transpose(1, 2) @ weight.reshape(co, ci * kk * kk)  # (N, K*K, Ci*k*k)
    out = (k - 1) * stride + kk
    return F.fold(cols.transpose(1, 2), (out, out), kk, stride=stride)
