"""Patches: linear bounds of convolutional neurons kept on their receptive fields.

Back-substituting a neuron of a convolutional layer through convolutions, per-channel affine
maps and ReLUs down to the input, its coefficients are nonzero only on its receptive field. So
each is kept as a small (C, K, K) patch anchored at (row * stride - pad, col * stride - pad) of
the current layer, instead of a whole map (the "patches mode" of auto_LiRPA): the same bound, a
fraction of the work. The layers' ``patch_back`` rules (advex.certify.layers) move patches down
one layer; this module holds the representation and its geometry.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Patches:
    """S linear functions per input of a (C, H, W) layer, each on a K x K window.

    ``coef`` (B, S, C, K, K) are the coefficients; the window of function s of input b starts at
    (row * stride - pad, col * stride - pad) with ``pos[b, s] = row * cols + col`` the neuron it
    bounds on the ``grid`` (rows, cols) of the layer it started from. ``bias_hi`` is None unless
    the lower and upper bounds share their coefficients (paired), then each has its bias.

    ``outside`` (lazy zero padding): None, or a mask (B, S, 1, K, K) of the window entries that
    lie inside the layer; ``coef`` is then still to be zeroed outside it (:meth:`inside`). A
    ReLU's rule does that for free (its relaxation maps read as 0 on the padding), so a
    convolution leaves the mask to the next rule instead of multiplying every coefficient.

    ``group`` G: the functions come in runs of G that share one window (function s has the
    anchor of function s - s % G): every neuron of a few positions, the channels of a position
    together. The rules then cut one window per run and broadcast it over the run's G
    functions instead of copying it G times (:meth:`windows`, :meth:`runs`)."""

    coef: torch.Tensor
    pos: torch.Tensor
    grid: tuple[int, int]
    bias_lo: torch.Tensor
    bias_hi: torch.Tensor | None
    k: int = 1
    stride: int = 1
    pad: int = 0
    outside: torch.Tensor | None = None
    group: int = 1

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

    @classmethod
    def positions(cls, bsz: int, first: int, last: int, shape: tuple[int, int, int], dtype, device) -> Patches:
        """Every neuron of positions first..last - 1 (row * cols + col) of a (C, H, W) layer, both
        bounds: per position, C functions for the lower bounds then C negated ones for the upper
        (as lower bounds of -z), in runs of 2C sharing the position's window (``group``)."""
        c, h, w = shape
        n_pos = last - first
        eye = torch.eye(c, device=device, dtype=dtype)
        coef = torch.cat([eye, -eye]).view(1, 1, 2 * c, c, 1, 1).expand(bsz, n_pos, -1, -1, -1, -1)
        pos = torch.arange(first, last, device=device).repeat_interleave(2 * c).expand(bsz, -1)
        zeros = torch.zeros(bsz, n_pos * 2 * c, device=device, dtype=dtype)
        return cls(coef.reshape(bsz, n_pos * 2 * c, c, 1, 1), pos, (h, w), zeros, None, group=2 * c)

    def runs(self, t: torch.Tensor) -> torch.Tensor:
        """A per-function tensor (B, S, ...) as (B, S / G, G, rest flattened): to broadcast against
        :meth:`windows`."""
        return t.reshape(t.shape[0], t.shape[1] // self.group, self.group, -1)

    def window(self, m: torch.Tensor) -> torch.Tensor:
        """Each function's (C, K, K) window of the maps m (B, C, H, W): (B, S, C, K, K), zero
        outside the maps."""
        return windows(m, self.pos, self.grid, self.k, self.stride, self.pad)

    def windows(self, *maps: torch.Tensor) -> list[torch.Tensor]:
        """The windows of several maps of one shape, cut in one gather, one per run of ``group``
        functions: each (B, S / G, 1, C K K), to broadcast against :meth:`runs` of the functions."""
        c = maps[0].shape[1]
        anchors = self.pos[:, :: self.group]
        both = windows(torch.cat(maps, 1), anchors, self.grid, self.k, self.stride, self.pad)
        return [both[:, :, i * c : (i + 1) * c].flatten(2).unsqueeze(2) for i in range(len(maps))]

    def inside(self) -> Patches:
        """These patches with every coefficient outside the layer zeroed (see ``outside``)."""
        if self.outside is None:
            return self
        return replace(self, coef=self.coef * self.outside.to(self.coef.dtype), outside=None)


def windows(m: torch.Tensor, pos: torch.Tensor, grid: tuple[int, int], k: int, stride: int, pad: int):
    """(B, S, C, k, k) windows of maps m (B, C, H, W) at anchors pos (B, S) = row * cols + col
    of a (rows, cols) grid, the window of (row, col) starting at (row * stride - pad, ...)."""
    bsz, c, h, w = m.shape
    rows, cols = grid
    pad_b = max(0, (rows - 1) * stride + k - h - pad)
    pad_r = max(0, (cols - 1) * stride + k - w - pad)
    mp = F.pad(m, (pad, pad_r, pad, pad_b))
    # only the rows of anchors asked for are unfolded (a chunk of a few positions, not the map)
    row = pos // cols
    first, last = (int(r) for r in torch.aminmax(row)) if row.numel() else (0, 0)
    mp = mp[:, :, first * stride : last * stride + k]
    win = F.unfold(mp, k, stride=stride).transpose(1, 2)  # (B, L, C*k*k) over the anchors, row-major
    n_anchor, n_cols = win.shape[1], (mp.shape[-1] - k) // stride + 1
    at = (row - first) * n_cols + pos % cols + n_anchor * torch.arange(bsz, device=pos.device).unsqueeze(1)
    # whole rows of one table: a contiguous result, no per-element index
    return win.reshape(bsz * n_anchor, -1).index_select(0, at.flatten()).view(bsz, pos.shape[1], c, k, k)


def rowdot(a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """(B, R, G) sums of a (B, R, G, D) times w (B, R, 1, D) -- functions in runs of G against
    one window per run (:meth:`Patches.runs`, :meth:`Patches.windows`): one matrix-vector
    product per run where runs are long (no temporary), elementwise otherwise."""
    if a.shape[2] > 1:
        return torch.matmul(a, w.transpose(-1, -2)).squeeze(-1)
    return (a * w).sum(-1)


_MATRIX_ENTRIES = 1 << 22  # largest patch-to-patch matrix transpose_patch builds (16 MB in fp32)


def transpose_patch(p: torch.Tensor, weight: torch.Tensor, stride: int, groups: int) -> torch.Tensor:
    """conv_transpose2d of many small patches (N, Co, K, K), much faster on a CPU than
    conv_transpose2d on tiny maps: one matmul by the (Co K K, Ci K' K') matrix of the map itself
    where that matrix is small, else one matmul by the weights and a fold (sum of overlapping
    kernels; the fold runs a loop over the N patches on a CPU)."""
    n, co, k, _ = p.shape
    if groups != 1:
        return F.conv_transpose2d(p, weight, stride=stride, groups=groups)
    ci, kk = weight.shape[1], weight.shape[-1]
    if k == 1:
        return (p.reshape(n, co) @ weight.reshape(co, ci * kk * kk)).reshape(n, ci, kk, kk)
    out = (k - 1) * stride + kk
    if co * k * k * ci * out * out <= _MATRIX_ENTRIES:
        eye = torch.eye(co * k * k, device=p.device, dtype=p.dtype).view(-1, co, k, k)
        matrix = F.conv_transpose2d(eye, weight.to(p.dtype), stride=stride)  # differentiable in the weights
        return (p.reshape(n, -1) @ matrix.reshape(co * k * k, -1)).view(n, ci, out, out)
    cols = p.flatten(2).transpose(1, 2) @ weight.reshape(co, ci * kk * kk)  # (N, K*K, Ci*k*k)
    return F.fold(cols.transpose(1, 2), (out, out), kk, stride=stride)
