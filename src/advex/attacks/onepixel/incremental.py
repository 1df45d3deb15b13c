"""Exact forward passes for images that differ from a base image in a few pixels.

A one-pixel change reaches only a few activations of a convolutional network's first
layers: a k x k, stride-s convolution spreads a changed window of w activations to at most
(w + k - 2) // s + 1 outputs per axis. ``LocalForward`` runs the base images once, keeps
every intermediate activation, and for each candidate recomputes only the window of each
layer that can have changed: a convolution's output window is the base window plus the
input window's change times the convolution restricted to where that window sits (one
precomputed matrix per placement), so the values are those of a full forward pass, not an
approximation; up to the first ``Linear``, whose output is the base output plus the
weights of the window's entries times their change.
The layers after it are small and run densely.

With several pixels each pixel keeps its own window per layer, and the windows of one
candidate may overlap. Every window holds the exact new values at its positions: a
position several input windows share contributes its change once (from the last window
holding it), and a convolution's output window j is its base plus its own input window's
change mapped as above, plus the other output windows' changes where they overlap window j
(a window's change reaches nothing outside its own output window, so that is all of it).
The windows' values then agree wherever they overlap, so the element-wise layers stay
window by window. The last convolution's output is where the windows overlap most (three
random pixels' 3 x 3 windows on cifar10-small's 8 x 8 map: 76% of candidates, 80-93% once
the search converges), so with several pixels it is made whole instead: the base map plus
every window's change added where it sits (no overlap bookkeeping), and the Linear runs on
it as one matrix product.

Supported: an ``nn.Sequential`` (nested ones are flattened) of Conv2d (any kernel, stride,
padding; groups 1, dilation 1), element-wise layers (ReLU, LeakyReLU, Tanh, Sigmoid, ELU,
GELU, SiLU, Identity, BatchNorm2d in eval mode, Dropout in eval mode), then Flatten and a
Linear; anything after that Linear is run as it is. ``LocalForward.build`` returns None for
any other network, and the attack falls back to full forward passes; and where the tables
would be too big (cnn7), :mod:`advex.attacks.onepixel.crops` computes the same windows by
running each convolution on crops instead.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

_ELEMENTWISE = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Identity,
    nn.BatchNorm2d,
    nn.Dropout,
)


def _flatten(net: nn.Module) -> list[nn.Module]:
    if isinstance(net, nn.Sequential):
        return [m for sub in net for m in _flatten(sub)]
    return [net]


def split(net: nn.Module) -> tuple[list[nn.Module], nn.Linear, nn.Module] | None:
    """A supported network's layers before its Flatten (convolutions and element-wise layers,
    at least one convolution), the Linear after it and the rest; None for any other network."""
    layers = _flatten(net)
    head: list[nn.Module] = []
    for i, m in enumerate(layers):
        if isinstance(m, nn.Flatten):
            flat = m.start_dim == 1 and m.end_dim == -1
            if flat and i + 1 < len(layers) and isinstance(layers[i + 1], nn.Linear):
                if any(isinstance(h, nn.Conv2d) for h in head):
                    return head, layers[i + 1], nn.Sequential(*layers[i + 2 :])
            return None
        if isinstance(m, nn.Conv2d):
            if m.groups != 1 or m.dilation != (1, 1) or m.padding_mode != "zeros" or isinstance(m.padding, str):
                return None
        elif isinstance(m, (nn.BatchNorm2d, nn.Dropout)):
            if m.training:
                return None
        elif not isinstance(m, _ELEMENTWISE):
            return None
        head.append(m)
    return None


@torch.no_grad()
def base_activations(head: list[nn.Module], linear: nn.Linear, base: torch.Tensor):
    """The activation entering each ``head`` layer and the last one, and the Linear's output."""
    acts = [base]
    for m in head:
        acts.append(m(acts[-1]))
    return acts, linear(acts[-1].flatten(1))


def candidates(owner: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, value: torch.Tensor):
    """The arguments of :meth:`LocalForward.__call__` as K candidates of d pixels: K, d, the
    base image of each pixel's window (row k * d + j: candidate k's pixel j), its row and
    column, and ``value`` (K, d, C)."""
    if rows.dim() == 1:
        rows, cols, value = rows[:, None], cols[:, None], value[:, None]
    d = rows.shape[1]
    own = owner.repeat_interleave(d) if d > 1 else owner
    return owner.numel(), d, own, rows.reshape(-1), cols.reshape(-1), value


def window_sizes(head: list[nn.Module], acts: list[torch.Tensor]) -> list[tuple[int, int]]:
    """The size of the window one pixel can change in each activation ``acts`` (the input to
    each head layer, then the last): 1 x 1 at the input, grown by every convolution (a k x k,
    stride-s one makes w into (w + k - 2) // s + 1, at most the whole map)."""
    sizes = [(1, 1)]
    for i, m in enumerate(head):
        h, w = sizes[-1]
        if isinstance(m, nn.Conv2d):
            oh, ow = acts[i + 1].shape[-2:]
            (kh, kw), (sh, sw) = m.kernel_size, m.stride
            h, w = min(oh, (h + kh - 2) // sh + 1), min(ow, (w + kw - 2) // sw + 1)
        sizes.append((h, w))
    return sizes


def first_rows(t: torch.Tensor, m: nn.Conv2d, axis: int, last: int) -> torch.Tensor:
    """The first output row (``axis`` 0; column: 1) of conv ``m`` that can see an input window
    starting at ``t``, kept at most ``last`` so the whole output window fits."""
    k, s, p = m.kernel_size[axis], m.stride[axis], m.padding[axis]
    return torch.div(t + p - k + s, s, rounding_mode="floor").clamp(0, last)


class LocalForward:
    """Logits of base images with a few pixels replaced, computed locally (see the module doc)."""

    MAX_TABLE_BYTES = 2**29  # the per-image window tables of all layers, for all base images

    def __init__(self, head: list[nn.Module], linear: nn.Linear, tail: nn.Module, base: torch.Tensor) -> None:
        self.head, self.tail = head, tail
        acts, self.lin_out = base_activations(head, linear, base)
        self.sizes = sizes = window_sizes(head, acts)
        # multiply-adds of one pixel's windows and of a full pass, through the convolutions
        self.window_macs = self.full_macs = 0
        for i, m in enumerate(head):
            if isinstance(m, nn.Conv2d):
                self.window_macs += m.in_channels * math.prod(sizes[i]) * m.out_channels * math.prod(sizes[i + 1])
                self.full_macs += acts[i + 1][0].numel() * m.weight[0].numel()
        self.last = max(i for i, m in enumerate(head) if isinstance(m, nn.Conv2d))
        # Every window of every activation a convolution reads or writes, cut out of the base
        # activations once (one row per image and position), so a lookup is one row gather.
        self.tables: dict[int, tuple[torch.Tensor, torch.Tensor, int, int, int, int]] = {}
        self.maps: dict[tuple[int, int, int, bool], torch.Tensor] = {}
        for i, m in enumerate(head):
            if not isinstance(m, nn.Conv2d):
                continue
            t_in = _windows(acts[i], sizes[i])
            t_out = _windows(acts[i + 1], sizes[i + 1])
            h_in = acts[i].shape[-2] - sizes[i][0] + 1
            w_in = acts[i].shape[-1] - sizes[i][1] + 1
            oh_all, ow_all = acts[i + 1].shape[-2:]
            lh, lw = oh_all - sizes[i + 1][0] + 1, ow_all - sizes[i + 1][1] + 1
            self.tables[i] = (t_in, t_out, h_in, w_in, lh, lw)
        c, hh, ww = acts[-1].shape[1:]
        wh, wwid = sizes[-1]
        self.pos_h, self.pos_w = hh - wh + 1, ww - wwid + 1
        self.base_win = _windows(acts[-1], (wh, wwid))
        # the Linear's weights cut into the windows its input can change in, one per position
        wl = linear.weight.detach().view(-1, c, hh, ww)
        self.win_weights = torch.stack(
            [
                wl[:, :, t : t + wh, u : u + wwid].reshape(wl.shape[0], -1).t().contiguous()
                for t in range(self.pos_h)
                for u in range(self.pos_w)
            ]
        )  # (positions, C*wh*ww, out)
        # several pixels: the last convolution's output made whole, position-major (N, H*W*O)
        pre = acts[self.last + 1]
        self.base_pre = pre.permute(0, 2, 3, 1).reshape(pre.shape[0], -1).contiguous()
        self.last_hw = pre.shape[-2:]
        oh, ow = sizes[self.last + 1]
        self.offsets = (torch.arange(oh)[:, None] * pre.shape[-1] + torch.arange(ow)).flatten().to(pre.device)
        self.lin_weight = wl.permute(0, 2, 3, 1).reshape(wl.shape[0], -1).t().contiguous()  # (H*W*C, out)
        self.lin_bias = linear.bias.detach() if linear.bias is not None else None

    def pays(self, pixels: int) -> bool:
        """Whether scoring ``pixels``-pixel candidates this way beats full passes: for one pixel
        always (as issue 5 found it), for more while their windows' convolution work, with
        ~50k multiply-adds of gathers and sums per window, is at most two thirds of a full
        pass's convolutions. Fitted to where full passes caught up on this CPU: 8 pixels on
        cifar10-small (~1.6x faster at 5), 5-6 on the ``large`` net (1.3x at 4, 0.77x at 6),
        5-6 on MNIST's small net (~1.3x at 4); so up to 7, 4 and 4 pixels."""
        return pixels == 1 or 3 * pixels * (self.window_macs + 50_000) <= 2 * self.full_macs

    def chunk(self, pixels: int) -> int:
        """Candidates per call: one pixel's windows are small, so large calls pay (~8192
        windows); several pixels make the last convolution's output whole, ~8 MB a call."""
        return 8192 if pixels == 1 else max(64, 2**21 // self.base_pre.shape[1])

    @classmethod
    def build(cls, net: nn.Module, base: torch.Tensor) -> LocalForward | None:
        """A LocalForward for ``net`` on ``base`` (N, C, H, W) images, or None if unsupported
        (or if its window tables would take more than MAX_TABLE_BYTES)."""
        parts = split(net)
        if parts is None:
            return None
        head, linear, _ = parts
        one, _ = base_activations(head, linear, base[:1])  # sized before any pass or table over all
        if _table_bytes(head, linear, one, window_sizes(head, one), base.shape[0]) > cls.MAX_TABLE_BYTES:
            return None  # (CNN7's tables would take seconds and GBs)
        return cls(*parts, base)

    @torch.no_grad()
    def __call__(self, owner: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, value: torch.Tensor):
        """Logits of base image ``owner[k]`` with pixel (``rows[k]``, ``cols[k]``) set to
        ``value[k]`` (C,), already normalised as the network's input; or, with ``rows`` and
        ``cols`` (K, d) and ``value`` (K, d, C), with d pixels set (of two at the same
        place, the later one holds)."""
        k, d, own, t, u, value = candidates(owner, rows, cols, value)
        win = value.reshape(k * d, -1, 1, 1)
        pairs = window_pairs(t, u, (1, 1), d) if d > 1 else None  # the windows that overlap
        for i, m in enumerate(self.head):
            if isinstance(m, nn.Conv2d) and i == self.last and d > 1:
                return self._whole(i, m, owner, own, win, t, u, pairs)
            if isinstance(m, nn.Conv2d):
                win, t, u, pairs = self._conv(i, m, own, win, t, u, pairs)
            else:
                win = m(win)
        pos = t * self.pos_w + u
        delta = win.flatten(1) - self.base_win.index_select(0, own * (self.pos_h * self.pos_w) + pos)
        # the Linear's change, grouped by window position: one small matmul per position
        return self.tail(self.lin_out.index_select(0, owner).add_(grouped(delta, pos, lambda p: self.win_weights[p])))

    def _whole(self, i: int, m: nn.Conv2d, owner, own, win, t, u, pairs) -> torch.Tensor:
        """The logits of candidates on images ``owner`` whose d windows each (``win``, image
        ``own`` per window) reach the last convolution ``m`` (layer ``i``): its output made
        whole (the base map plus the windows' changes added where they sit), then the layers
        after it, densely."""
        ot, ou, change = self._change(i, m, own, win, t, u, pairs, positions_first=True)
        k, o, (hh, ww) = owner.numel(), m.out_channels, self.last_hw
        out = self.base_pre.index_select(0, owner)  # (K, H*W*O), position-major
        at = torch.arange(k, device=own.device).repeat_interleave(own.numel() // k) * (hh * ww) + ot * ww + ou
        out.view(-1, o).index_add_(0, (at[:, None] + self.offsets).flatten(), change.view(-1, o))
        x = out.view(k, hh, ww, o).permute(0, 3, 1, 2)
        for layer in self.head[i + 1 :]:
            x = layer(x)
        x = x.permute(0, 2, 3, 1).reshape(k, -1)
        z = x @ self.lin_weight if self.lin_bias is None else torch.addmm(self.lin_bias, x, self.lin_weight)
        return self.tail(z)

    def _conv(self, i: int, m: nn.Conv2d, own, win, t, u, pairs):
        """New pre-activations of the output windows of conv ``m`` (layer ``i``), where they
        sit, and which of them overlap: each is its base plus its own change
        (:meth:`_change`), plus the changes of the candidate's other output windows where they
        overlap it (a window's change reaches nothing outside its own output window)."""
        t_out, lh, lw = self.tables[i][1], self.tables[i][4], self.tables[i][5]
        ot, ou, change = self._change(i, m, own, win, t, u, pairs)
        oh, ow = self.sizes[i + 1]
        out = t_out.index_select(0, own * (lh * lw) + ot * lw + ou).add_(change)  # the base plus the change
        if pairs is not None:
            pairs = window_pairs(ot, ou, (oh, ow), pairs.d)
            out.index_add_(0, *_overlaps(change, pairs, oh * ow))
        return out.view(-1, m.out_channels, oh, ow), ot, ou, pairs

    def _change(self, i: int, m: nn.Conv2d, own, win, t, u, pairs, positions_first: bool = False):
        """Where the output windows of conv ``m`` (layer ``i``) sit, and the change each
        input window ``win`` (new values at (t, u), ``pairs`` of them overlapping: see
        :func:`window_pairs`; None: one window per candidate) makes in its own. That change is the
        input window's change times the convolution's linear map from input window to output
        window, which depends only on where the input window sits in the region the output
        window reads (a few cases, each one matrix, made once); a position several input
        windows hold changes once. ``positions_first``: the change's entries ordered by
        position, then channel (else channel, then position)."""
        (sh, sw), (ph, pw) = m.stride, m.padding
        t_in, _, h_in, w_in, lh, lw = self.tables[i]
        ot, ou = first_rows(t, m, 0, lh - 1), first_rows(u, m, 1, lw - 1)
        r0, c0 = t + ph - ot * sh, u + pw - ou * sw  # the window's offset in the region read
        delta = win.flatten(1) - t_in.index_select(0, own * (h_in * w_in) + t * w_in + u)
        if pairs is not None:
            delta = _owned(delta, pairs, self.sizes[i][0] * self.sizes[i][1])
        change = grouped(  # by offset (from -stride, a kernel smaller than its stride skipping rows)
            delta,
            (r0 + 2048) * 4096 + c0 + 2048,
            lambda q: self._map(i, m, q // 4096 - 2048, q % 4096 - 2048, win.shape, positions_first),
        )
        return ot, ou, change

    def _map(self, i: int, m: nn.Conv2d, r0: int, c0: int, shape, positions_first: bool = False) -> torch.Tensor:
        """(C*wh*ww, O*oh*ow): conv ``m`` restricted to an input window at offset (r0, c0) of
        the region its output window reads (window entries outside the region read nothing);
        ``positions_first``: columns ordered (oh*ow, O)."""
        key = (i, r0, c0, positions_first)
        if key not in self.maps:
            (kh, kw), (sh, sw) = m.kernel_size, m.stride
            oh, ow = self.sizes[i + 1]
            rh, rw = (oh - 1) * sh + kh, (ow - 1) * sw + kw
            c, wh, ww = shape[1:]
            top, left = max(0, -r0), max(0, -c0)  # a kernel smaller than its stride skips rows
            basis = torch.zeros(c * wh * ww, c, top + rh + wh + r0, left + rw + ww + c0, device=m.weight.device)
            j = torch.arange(c * wh * ww, device=basis.device)
            basis[j, j // (wh * ww), top + r0 + (j // ww) % wh, left + c0 + j % ww] = 1.0
            basis = basis[:, :, top : top + rh, left : left + rw]
            out = F.conv2d(basis.to(m.weight.dtype), m.weight, None, stride=m.stride)
            if positions_first:
                out = out.permute(0, 2, 3, 1)
            self.maps[key] = out.reshape(c * wh * ww, -1).contiguous()
        return self.maps[key]


class Pairs(NamedTuple):
    """The overlapping windows of candidates with d windows each (row k * d + j: candidate k's
    window j): rows ``dst`` and ``src`` of every ordered pair of one candidate's windows that
    share a position, and ``at`` (P, h * w): for each of window dst's positions, the same
    position's index in window src (h * w where src does not hold it)."""

    dst: torch.Tensor
    src: torch.Tensor
    at: torch.Tensor
    d: int


def window_pairs(t: torch.Tensor, u: torch.Tensor, size: tuple[int, int], d: int) -> Pairs:
    """The :class:`Pairs` of windows of ``size`` at (t, u), d per candidate."""
    h, w = size
    k = t.numel() // d
    rows = torch.arange(k * d, device=t.device).view(k, d)
    dst = rows[:, :, None].expand(k, d, d).reshape(-1)
    src = rows[:, None, :].expand(k, d, d).reshape(-1)
    a = t.index_select(0, dst) - t.index_select(0, src)  # window dst's row r is window src's row r + a
    b = u.index_select(0, dst) - u.index_select(0, src)
    near = ((a.abs() < h) & (b.abs() < w) & (dst != src)).nonzero().flatten()
    dst, src, a, b = dst[near], src[near], a[near], b[near]
    r = torch.arange(h, device=t.device)[None, :, None] + a[:, None, None]
    c = torch.arange(w, device=t.device)[None, None, :] + b[:, None, None]
    at = torch.where((r >= 0) & (r < h) & (c >= 0) & (c < w), r * w + c, h * w).view(-1, h * w)
    return Pairs(dst, src, at, d)


def _owned(delta: torch.Tensor, pairs: Pairs, hw: int) -> torch.Tensor:
    """``delta`` (K * d, C * h * w), the changes of the windows, with every position that a
    later window of the same candidate also holds set to 0 (in place): summed, every changed
    position then counts once."""
    rows, keep = later_held(pairs, hw)
    if rows is not None:
        d = delta.view(delta.shape[0], -1, hw)
        d[rows] = d[rows] * keep.to(d.dtype)[:, None, :]
    return delta


def later_held(pairs: Pairs, hw: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The windows (rows) some of whose ``hw`` positions a later window of the same candidate
    also holds, and for each a (rows, hw) 0/1 mask: 0 at those positions; None, None if none."""
    later = (pairs.src > pairs.dst).nonzero().flatten()
    if not later.numel():
        return None, None
    rows, slot = pairs.dst[later].unique(return_inverse=True)
    held = torch.zeros(rows.numel(), hw, device=pairs.at.device)
    held.index_add_(0, slot, (pairs.at[later] < hw).to(held.dtype))  # by how many later windows
    return rows, (held == 0).float()


def _overlaps(change: torch.Tensor, pairs: Pairs, hw: int):
    """Rows and values to add to the output windows so each also holds its candidate's other
    windows' ``change`` (K * d, O * h * w) where they overlap: for each overlapping pair, window
    src's change moved onto window dst's positions (zero where src does not reach)."""
    vals = change.view(change.shape[0], -1, hw).index_select(0, pairs.src)
    vals = F.pad(vals, (0, 1)).gather(2, pairs.at[:, None, :].expand(-1, vals.shape[1], -1))
    return pairs.dst, vals.reshape(pairs.dst.numel(), change.shape[1])


def grouped(x: torch.Tensor, key: torch.Tensor, matrix) -> torch.Tensor:
    """Row k of the result is ``x[k] @ matrix(key[k])``: rows sorted by key, one matmul per
    key, and put back in their order."""
    order = key.argsort()
    keys, counts = key.index_select(0, order).unique_consecutive(return_counts=True)
    parts = x.index_select(0, order).split(counts.tolist())
    out = torch.cat([d @ matrix(int(q)) for d, q in zip(parts, keys.tolist())])
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel(), device=order.device)
    return out.index_select(0, inverse)


def _table_bytes(head: list[nn.Module], linear: nn.Linear, acts: list[torch.Tensor], sizes, images: int) -> int:
    """The bytes :class:`LocalForward`'s tables would take for ``images`` images, from one
    image's activations ``acts``: every window a convolution reads or writes, the windows the
    Linear reads with its weights cut per window, the last convolution's whole output and the
    Linear's weights reordered."""

    def per_image(act: torch.Tensor, size: tuple[int, int]) -> int:  # entries of all its windows
        (_, c, h, w), (wh, ww) = act.shape, size
        return (h - wh + 1) * (w - ww + 1) * c * wh * ww

    last = max(i for i, m in enumerate(head) if isinstance(m, nn.Conv2d))
    n = sum(
        images * (per_image(acts[i], sizes[i]) + per_image(acts[i + 1], sizes[i + 1]))
        for i, m in enumerate(head)
        if isinstance(m, nn.Conv2d)
    )
    n += per_image(acts[-1], sizes[-1]) * (images + linear.out_features)
    n += images * acts[last + 1][0].numel() + linear.weight.numel()
    return n * acts[0].element_size()


def _windows(act: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N * positions, C * h * w): every (h, w) window of ``act`` (N, C, H, W), row-major by
    image, then window row, then window column."""
    n, c = act.shape[:2]
    h, w = size
    v = act.unfold(2, h, 1).unfold(3, w, 1)  # (N, C, H-h+1, W-w+1, h, w)
    return v.permute(0, 2, 3, 1, 4, 5).reshape(n * v.shape[2] * v.shape[3], c * h * w).contiguous()
