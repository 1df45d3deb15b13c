"""The Square attack (Andriushchenko et al. 2020): a score-based black-box attack that
uses the model only through its outputs, in the L-inf and L2 balls.

L-inf: start from vertical stripes of +-eps; at each iteration set one random square
window (side from the paper's schedule, p_init halved at 10, 50, 200, ... of 10,000
iterations rescaled to the budget) to a random +-eps per channel. L2: start from a grid of
"pseudo-Gaussian" squares scaled to norm eps; at each iteration move the perturbation mass
of a second window into a new pseudo-Gaussian square in the first, keeping the norm at eps
(the paper's Algorithm 3). A change is kept if the margin loss (true logit minus the best
other; for a target, best other minus target) goes down. Batched: every unbroken image makes
one query per iteration; broken ones stop.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from advex.attacks.base import Attack, Batch, Outcome, margin, warn_if_255
from advex.errors import AdvexError


def _p_at(p_init: float, it: int, n_queries: int) -> float:
    it = int(it / n_queries * 10000)
    for k, t in enumerate((10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)):
        if it <= t:
            return p_init / 2**k
    return p_init / 512


class Square(Attack):
    """Square attack (``norm="linf"`` or ``"l2"``) with ``queries`` model evaluations per image."""

    def __init__(
        self, *, eps: float, queries: int = 5000, p_init: float = 0.8, norm: str = "linf", seed: int = 0
    ) -> None:
        if norm not in ("linf", "l2"):
            raise AdvexError(f"Square supports norm 'linf' or 'l2', got {norm!r}")
        if not eps > 0:
            raise AdvexError(f"eps must be > 0, got {eps}")
        warn_if_255(eps, norm)
        if queries < 1:
            raise AdvexError(f"queries must be >= 1, got {queries}")
        if not 0 < p_init <= 1:
            raise AdvexError(f"p_init must be in (0, 1], got {p_init}")
        self.eps, self.queries, self.p_init, self.seed, self.norm = float(eps), queries, p_init, seed, norm

    def __repr__(self) -> str:
        return f"Square(eps={self.eps:g}, norm={self.norm!r}, queries={self.queries}, p_init={self.p_init})"

    def run(self, batch: Batch) -> Outcome:
        x, goal, targeted = batch.x, batch.goal, batch.targeted
        n, c, h, w = x.shape
        dev = x.device
        gen = torch.Generator(dev).manual_seed(self.seed)
        queries = torch.ones(n, dtype=torch.long, device=dev)  # the start is one query
        if self.norm == "linf":  # vertical stripes
            signs = torch.randint(0, 2, (n, c, 1, w), generator=gen, device=dev).float() * 2 - 1
            best = (x + self.eps * signs).clamp(0, 1)
        else:
            best = (x + _l2_init(n, c, h, w, self.eps, gen, dev)).clamp(0, 1)
        z = batch.forward(best)
        loss = margin(z, goal, targeted)
        logits = z.clone()  # of best
        # the images still running, kept compact (row i is image rows[i]): a broken image is
        # written back and dropped once, so an iteration indexes nothing else
        run = (loss >= 0).nonzero().flatten()
        rows, xr, br, lr_, gr = run, x[run], best[run], loss[run], goal[run]
        for it in range(1, self.queries):
            if rows.numel() == 0:
                break
            p = _p_at(self.p_init, it, self.queries)
            if self.norm == "l2":
                cand = _l2_step(xr, br, self.eps, p, gen)
            else:  # in place: br holds the proposals while they are scored, then keeps the better ones
                undo = _linf_step(xr, br, self.eps, p, gen)
                cand = br
            zc = batch.forward(cand, rows)
            lc = margin(zc, gr, targeted)
            queries[rows] += 1
            better = lc < lr_
            if self.norm == "linf":
                undo(better)
            if better.any():
                if self.norm == "l2":
                    br[better] = cand[better]
                lr_[better] = lc[better]
                logits[rows[better]] = zc[better]
                broken = lr_ < 0
                if broken.any():
                    best[rows[broken]] = br[broken]
                    keep = ~broken
                    rows, xr, br, lr_, gr = rows[keep], xr[keep], br[keep], lr_[keep], gr[keep]
        best[rows] = br
        return Outcome(best, extra={"queries": queries}, logits=logits)


def _linf_step(
    x: torch.Tensor, xbest: torch.Tensor, eps: float, p: float, gen: torch.Generator
) -> Callable[[torch.Tensor], None]:
    """One L-inf proposal per image, written into ``xbest`` in place: a random square window of
    side ~sqrt(p h w) set to a random +-eps per channel, the rest of the perturbation kept.
    Returns ``undo(keep)``, which puts the old window back in the images not in ``keep``. Only
    the windows are touched (gathers and scatters), never a whole image."""
    m, c, h, w = x.shape
    dev = x.device
    s = max(1, min(h, w, round((p * h * w) ** 0.5)))
    r0 = torch.randint(0, h - s + 1, (m,), generator=gen, device=dev)
    c0 = torch.randint(0, w - s + 1, (m,), generator=gen, device=dev)
    vals = (torch.randint(0, 2, (m, c, 1), generator=gen, device=dev).float() * 2 - 1) * eps
    off = torch.arange(s, device=dev)
    pos = ((r0[:, None] + off)[:, :, None] * w + (c0[:, None] + off)[:, None, :]).view(m, 1, s * s).expand(m, c, -1)
    window = (x.reshape(m, c, h * w).gather(2, pos) + vals).clamp_(0, 1)
    flat = xbest.view(m, c, h * w)
    old = flat.gather(2, pos)
    flat.scatter_(2, pos, window)
    return lambda keep: flat.scatter_(2, pos, torch.where(keep[:, None, None], window, old))


# ------------------------------------------------------------------------------ L2 helpers
def _rect_pert(a: int, b: int, dev) -> torch.Tensor:
    """Concentric rectangles with weights 1/(k+1)^2, unit L2 norm (the paper's building block)."""
    d = torch.zeros(a, b, device=dev)
    ca, cb = a // 2 + 1, b // 2 + 1
    r0, c0 = ca - 1, cb - 1
    for k in range(max(ca, cb)):
        d[max(r0, 0) : min(r0 + 2 * k + 1, a), max(c0, 0) : min(c0 + 2 * k + 1, b)] += 1.0 / (k + 1) ** 2
        r0, c0 = r0 - 1, c0 - 1
    return d / d.norm().clamp_min(1e-12)


def _square_pert(s: int, gen: torch.Generator, dev) -> torch.Tensor:
    """An s x s square: two opposite-signed pseudo-Gaussian halves, randomly transposed."""
    d = torch.zeros(s, s, device=dev)
    d[: s // 2] = _rect_pert(s // 2, s, dev) if s // 2 else 0
    d[s // 2 :] = -_rect_pert(s - s // 2, s, dev)
    d = d / d.norm().clamp_min(1e-12)
    if torch.rand(1, generator=gen, device=gen.device).item() > 0.5:
        d = d.t()
    return d


def _l2_init(n: int, c: int, h: int, w: int, eps: float, gen, dev) -> torch.Tensor:
    delta = torch.zeros(n, c, h, w, device=dev)
    s = max(h // 5, 1)
    top = (h - s * 5) // 2
    for i in range(h // s):
        for j in range(w // s):
            r, q = top + i * s, top + j * s
            if r + s > h or q + s > w or r < 0 or q < 0:
                continue
            signs = torch.randint(0, 2, (n, c, 1, 1), generator=gen, device=gen.device).to(dev).float() * 2 - 1
            delta[:, :, r : r + s, q : q + s] += _square_pert(s, gen, dev) * signs
    norm = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return delta / norm * eps


def _l2_step(x: torch.Tensor, xbest: torch.Tensor, eps: float, p: float, gen) -> torch.Tensor:
    """One proposal of Algorithm 3: move the mass of window 2 into a new square in window 1."""
    n, c, h, w = x.shape
    dev = x.device
    delta = xbest - x
    s = max(int(round((p * h * w) ** 0.5)), 3)
    s = min(s + (s % 2 == 0), h, w)
    r1, c1 = (int(torch.randint(0, max(1, h - s + 1), (1,), generator=gen, device=gen.device)) for _ in range(2))
    for _ in range(20):  # a second window that does not overlap the first
        r2, c2 = (int(torch.randint(0, max(1, h - s + 1), (1,), generator=gen, device=gen.device)) for _ in range(2))
        if abs(r2 - r1) >= s or abs(c2 - c1) >= s:
            break
    win1 = (slice(None), slice(None), slice(r1, r1 + s), slice(c1, c1 + s))
    win2 = (slice(None), slice(None), slice(r2, r2 + s), slice(c2, c2 + s))
    norm_w1 = delta[win1].pow(2).sum((2, 3), keepdim=True).sqrt()
    norm_img = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    both = torch.zeros_like(delta)
    both[win1] = 1
    both[win2] = 1
    norm_windows = (delta * both).pow(2).sum((2, 3), keepdim=True).sqrt()
    signs = torch.randint(0, 2, (n, c, 1, 1), generator=gen, device=gen.device).to(dev).float() * 2 - 1
    new = _square_pert(s, gen, dev).view(1, 1, s, s) * signs + delta[win1] / (norm_w1 + 1e-10)
    budget = ((eps**2 - norm_img**2).clamp_min(0) / c + norm_windows**2).sqrt()
    new = new / new.pow(2).sum((2, 3), keepdim=True).sqrt().clamp_min(1e-12) * budget
    delta = delta.clone()
    delta[win2] = 0.0
    delta[win1] = new
    delta = delta / delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1) * eps
    return (x + delta).clamp(0, 1)
