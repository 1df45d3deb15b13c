"""The one-pixel attack (Su, Vargas & Sakurai 2019) by batched differential evolution.

A candidate is ``pixels`` tuples (row, col, colour); the search is differential evolution
(DE) as the paper specifies: a population of 400 candidates per image, up to 100
generations, the mutation ``x_r1 + F (x_r2 - x_r3)`` with F = 0.5 and no crossover, a
child replacing its parent only when it is fitter. Initial coordinates are uniform over
the image and colours Gaussian (mean 128, sd 127 in 0-255 units) clipped to the valid
range; coordinates are rounded (down) and colours to whole 8-bit levels when applied, so
the adversarial image is exactly what a saved 8-bit PNG holds.

Fitness is the probability of the true class (untargeted, lower is fitter) or of the
target (targeted, higher is fitter). Selection only compares fitness values, so the
comparison is made on ``-log(1 - p_true)`` and ``-log p_target``: the same order as the
probabilities, but without the float32 saturation at p = 1 that would otherwise freeze
the search on confidently classified images.

Batched: the populations of all unfinished images are one tensor; one forward pass (in
chunks of ``batch_size`` images) scores every candidate of every image, and an image
leaves the batch the generation it succeeds. Peers run SciPy-style DE one image at a time.

Two deliberate differences from SciPy's DE (which Su et al.'s code called): generations
are synchronous (every child is scored against its parent at once, which is what makes
the whole population one forward pass), and a mutated coordinate outside the image is
redrawn uniformly, as SciPy does, while a colour outside [0, 1] is clipped.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from advex.attacks._local import LocalForward
from advex.attacks.base import AttackResult, Targets, as_classifier, finish, frozen, setup
from advex.data.images import quantize
from advex.errors import AdvexError


def _distinct_others(m: int, p: int, k: int, gen: torch.Generator, dev) -> torch.Tensor:
    """(m, p, k) indices: for each member i of each of m populations of size p, k distinct
    other members (all != i), uniformly, with no rejection loop."""
    taken = torch.arange(p, device=dev).view(1, p, 1).expand(m, p, 1)
    out = []
    for j in range(k):
        v = torch.randint(0, p - 1 - j, (m, p), generator=gen, device=dev)
        for e in taken.sort(-1).values.unbind(-1):  # rank v among the values not yet taken
            v = v + (v >= e).long()
        out.append(v)
        taken = torch.cat([taken, v[..., None]], -1)
    return torch.stack(out, -1)


def _default_chunk(dev: torch.device, numel: int) -> int:
    """Images per forward pass. On a CPU, batches of a few hundred small images stay in
    cache and run ~4x faster per image than batches of thousands (cifar10-small: 120k vs
    30k images/s on 2 cores); on a GPU, large batches are what fills it."""
    if dev.type == "cpu":
        return max(8, min(512, 2**20 // numel))
    return max(1, min(8192, 2**25 // numel))


class OnePixel:
    """Change at most ``pixels`` pixels to change the prediction (Su et al. 2019).

    Args:
        pixels: pixels the attack may change (the paper: 1, 3 and 5).
        population: DE candidates per image (paper: 400); at least 4.
        iterations: DE generations at most (paper: 100).
        F: mutation scale (paper: 0.5).
        strategy: ``"rand1"`` (the paper's ``x_r1 + F (x_r2 - x_r3)``) or ``"best1"``
            (``x_best + F (x_r1 - x_r2)``, what SciPy's default runs in Su et al.'s code).
        threshold: the paper's probability early stop: an untargeted image stops once the
            true class's probability is below it, a targeted one once the target's is
            above it. ``None`` (default) stops as soon as the prediction is changed
            (untargeted) or is the target (targeted).
        colour_mean, colour_sd: initial colours, pixel units (paper: 128/255, 127/255).
        batch_size: most images per forward pass (default: ~4 MB of input on a CPU, which
            keeps the pass in cache, ~128 MB on a GPU).
        precision: ``"bf16"`` scores candidates with a bfloat16 copy of the network (opt-in;
            ~1.5x faster on this project's AVX-512 BF16 CPU); DE only compares fitness
            values, and every success or stop is re-checked in fp32 before it counts. Where
            the incremental path applies it is used instead (it is exact and faster).
        incremental: for one pixel on an ``nn.Sequential`` CNN (convolutions, element-wise
            layers, then Flatten and Linear: the zoo's small/large nets), score candidates by
            recomputing only the activations the pixel can reach (exact; ~6x faster on
            cifar10-small; see ``advex.attacks._local``); other networks always run whole.
            Successes are confirmed by a full pass.
        seed: seed of the attack's own generator (results are deterministic).

    ``result.extra`` holds ``queries`` (images the model scored per image), ``generations``
    and ``pixels``: for each image, the changed pixels as dicts with ``row``, ``col``,
    ``old`` and ``new`` colours (0-255).
    """

    def __init__(
        self,
        *,
        pixels: int = 1,
        population: int = 400,
        iterations: int = 100,
        F: float = 0.5,
        strategy: str = "rand1",
        threshold: float | None = None,
        colour_mean: float = 128 / 255,
        colour_sd: float = 127 / 255,
        batch_size: int | None = None,
        precision: str = "fp32",
        incremental: bool = True,
        seed: int = 0,
    ) -> None:
        if isinstance(pixels, bool) or not isinstance(pixels, int) or pixels < 1:
            raise AdvexError(f"pixels must be a whole number >= 1, got {pixels!r}")
        if isinstance(population, bool) or not isinstance(population, int) or population < 4:
            raise AdvexError(
                f"population must be a whole number >= 4 (each mutation needs 3 distinct other candidates), "
                f"got {population!r}"
            )
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
            raise AdvexError(f"iterations must be a whole number >= 1, got {iterations!r}")
        if not 0 < F <= 2:
            raise AdvexError(f"F must be in (0, 2], got {F}")
        if strategy not in ("rand1", "best1"):
            raise AdvexError(f"strategy must be 'rand1' (the paper's) or 'best1', got {strategy!r}")
        if threshold is not None and not 0 < threshold < 1:
            raise AdvexError(f"threshold must be a probability in (0, 1) or None, got {threshold}")
        if not 0 <= colour_mean <= 1 or not colour_sd >= 0:
            raise AdvexError("colour_mean must be in [0, 1] and colour_sd >= 0 (pixel units: 128/255, 127/255)")
        if precision not in ("fp32", "bf16"):
            raise AdvexError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
        if batch_size is not None and batch_size < 1:
            raise AdvexError(f"batch_size must be >= 1, got {batch_size}")
        self.pixels, self.population, self.iterations = pixels, population, iterations
        self.F, self.strategy, self.threshold = float(F), strategy, threshold
        self.colour_mean, self.colour_sd = float(colour_mean), float(colour_sd)
        self.batch_size, self.seed, self.precision = batch_size, seed, precision
        self.incremental = bool(incremental)

    def __repr__(self) -> str:
        th = "" if self.threshold is None else f", threshold={self.threshold:g}"
        th += "" if self.precision == "fp32" else f", precision={self.precision!r}"
        return (
            f"OnePixel(pixels={self.pixels}, population={self.population}, iterations={self.iterations}, "
            f"F={self.F:g}, strategy={self.strategy!r}{th})"
        )

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def apply(x: torch.Tensor, cand: torch.Tensor, owner: torch.Tensor | None = None) -> torch.Tensor:
        """Images ``x[owner]`` (M, C, H, W) with candidates ``cand`` (M, d, 2 + C) written in:
        coordinates floored, colours rounded to 8-bit levels (``owner`` None: ``x`` is (M, C, H, W))."""
        return OnePixel._write(x, torch.cat([cand[..., :2], quantize(cand[..., 2:])], -1), owner)

    @staticmethod
    def _write(x: torch.Tensor, cand: torch.Tensor, owner: torch.Tensor | None) -> torch.Tensor:
        """Copies of ``x[owner]`` with the values ``cand[..., 2:]`` written at the floored coordinates."""
        m = cand.shape[0]
        _, c, h, w = x.shape
        rows = cand[..., 0].floor().long().clamp_(0, h - 1)
        cols = cand[..., 1].floor().long().clamp_(0, w - 1)
        flat = x.reshape(-1, c, h * w)
        flat = flat[owner] if owner is not None else flat.clone()
        idx = (rows * w + cols)[:, None, :].expand(m, c, -1)
        flat.scatter_(2, idx, cand[..., 2:].transpose(1, 2).to(flat.dtype))
        return flat.view(m, c, h, w)

    def _score(self, clf, x, xn, owner, cand, goal, targeted, chunk, local=None, bf16=None):
        """Fitness (lower is fitter), hit and stop flags of candidates ``cand`` (K, d, 2+C) on
        images ``x[owner]``. ``xn``: the normalised images where the model only normalises
        (no resize): normalised colours are written into them and the network is called
        directly, one pass over the batch fewer. ``local``: the incremental scorer;
        ``bf16``: (network, images) copies in bfloat16, or (None, None) for autocast where
        the model resizes its input. Either makes the scoring "fast", and
        a fast success or stop is confirmed by a full fp32 pass."""
        norm = (clf.mean.view(-1), clf.std.view(-1))

        def logits(o, cs, fast):
            if fast and local is not None:
                h, w = x.shape[-2:]
                rows = cs[:, 0, 0].floor().long().clamp_(0, h - 1)
                cols = cs[:, 0, 1].floor().long().clamp_(0, w - 1)
                return local(o, rows, cols, (quantize(cs[:, 0, 2:]) - norm[0]) / norm[1]).float()
            if xn is not None:
                cs = torch.cat([cs[..., :2], (quantize(cs[..., 2:]) - norm[0]) / norm[1]], -1)
                if fast:
                    return bf16[0](self._write(bf16[1], cs, o)).float()
                return clf.net(self._write(xn, cs, o)).float()
            imgs = self.apply(x, cs, o)
            if not fast:
                return clf(imgs).float()
            with torch.autocast(x.device.type, dtype=torch.bfloat16):
                return clf(imgs).float()

        def flags(z, g):
            zg = z.gather(1, g[:, None]).squeeze(1)
            lse = z.logsumexp(1)
            if targeted:
                f = lse - zg  # -log p_target
                h = z.argmax(1) == g
                st = h if self.threshold is None else f < -math.log(self.threshold)
            else:
                f = lse - z.scatter(1, g[:, None], float("-inf")).logsumexp(1)  # -log(1 - p_true)
                h = z.argmax(1) != g
                st = h if self.threshold is None else f < -math.log1p(-self.threshold)
            return f, h, st

        fast = bf16 is not None or local is not None
        fit, hit, stop = [], [], []
        for s in range(0, cand.shape[0], chunk):
            o, cs, g = owner[s : s + chunk], cand[s : s + chunk], goal[owner[s : s + chunk]]
            f, h, st = flags(logits(o, cs, fast), g)
            if fast and (h | st).any():  # a success or stop found the fast way is confirmed by a full fp32 pass
                k = (h | st).nonzero().flatten()
                f[k], h[k], st[k] = flags(logits(o[k], cs[k], False), g[k])
            fit.append(f)
            hit.append(h)
            stop.append(st)
        return torch.cat(fit), torch.cat(hit), torch.cat(stop)

    _bf16_cache: tuple = (None, None)

    def _bf16_net(self, net: nn.Module) -> nn.Module:
        """A bfloat16 copy of ``net``, made once per network (and per change of its weights)."""
        key = (id(net), tuple(p._version for p in net.parameters()))
        if self._bf16_cache[0] != key:
            self._bf16_cache = (key, copy.deepcopy(net).to(torch.bfloat16).eval())
        return self._bf16_cache[1]

    # ------------------------------------------------------------------ attack
    @torch.no_grad()
    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, target: Targets = None
    ) -> AttackResult:
        clf = as_classifier(model)
        with frozen(clf):
            st = setup(clf, x, y, target)
            x, goal, targeted = st.x, st.goal, st.targeted
            n, c, h, w = x.shape
            dev = x.device
            d, p = self.pixels, self.population
            if d > h * w:
                raise AdvexError(f"pixels={d} is more than the {h}x{w} image has ({h * w})")
            if targeted:
                same = (st.target == st.y).nonzero().flatten()
                if same.numel():
                    i = int(same[0])
                    raise AdvexError(
                        f"image {i}: the target {clf.class_name(int(st.target[i]))!r} is its true class; "
                        "give a different target (or none, for an untargeted attack)"
                    )
            chunk = self.batch_size or _default_chunk(dev, c * h * w)
            xn = None if clf.resizes(h, w) else clf.preprocess(x)
            local = bf16 = None
            if self.incremental and d == 1 and xn is not None:  # (fp32, and faster than bf16)
                local = LocalForward.build(clf.net, xn)
                if local is not None and self.batch_size is None:
                    chunk = 8192  # no full images are built: large chunks pay
            if self.precision == "bf16" and local is None:  # resized inputs: autocast instead of copies
                bf16 = (self._bf16_net(clf.net), xn.to(torch.bfloat16)) if xn is not None else (None, None)
            gen = torch.Generator(dev).manual_seed(self.seed)
            dim = 2 + c
            scale = torch.tensor([h, w] + [1.0] * c, device=dev)

            def random_coords(shape):
                return torch.rand(*shape, 2, generator=gen, device=dev) * scale[:2]

            queries = torch.zeros(n, dtype=torch.long, device=dev)
            gens = torch.zeros(n, dtype=torch.long, device=dev)
            best = torch.zeros(n, d, dim, device=dev)  # the candidate each image returns
            best_fit = torch.full((n,), torch.inf, device=dev)  # of the fittest successful one so far
            found = st.hit(st.logits)  # already misclassified (or already the target): nothing to change
            changed = torch.zeros(n, dtype=torch.bool, device=dev)

            def record(act, cand, f, hit):
                """Keep, per image, the fittest candidate that reached the goal so far."""
                fh = torch.where(hit, f, torch.inf)
                fj, j = fh.min(1)
                better = fj < best_fit[act]
                if better.any():
                    idx = act[better]
                    best[idx] = cand[better, j[better]]
                    best_fit[idx] = fj[better]
                    found[idx] = True
                    changed[idx] = True

            def evaluate(act, cand):
                """Score the (m, p, d, dim) candidates of images ``act``: fitness, and which stop."""
                m = act.numel()
                f, h, s = self._score(
                    clf, x, xn, act.repeat_interleave(p), cand.view(m * p, d, dim), goal, targeted, chunk, local, bf16
                )
                f, h, s = f.view(m, p), h.view(m, p), s.view(m, p)
                queries[act] += p
                record(act, cand, f, h)
                return f, s.any(1)

            act = (~found).nonzero().flatten()
            m = act.numel()
            if m:
                colours = self.colour_mean + self.colour_sd * torch.randn(m, p, d, c, generator=gen, device=dev)
                pop = torch.cat([random_coords((m, p, d)), colours.clamp(0, 1)], -1)  # (m, p, d, dim)
                fit, leave = evaluate(act, pop)
            for g in range(self.iterations + 1):
                if m == 0:
                    break
                if g == self.iterations:
                    leave = torch.ones_like(leave)
                if leave.any():  # stopped, or out of generations
                    nf = leave & ~found[act]  # no success: return the fittest candidate
                    if nf.any():
                        best[act[nf]] = pop[nf, fit[nf].argmin(1)]
                        changed[act[nf]] = True
                    gens[act[leave]] = g
                    stay = ~leave
                    act, pop, fit = act[stay], pop[stay], fit[stay]
                    m = act.numel()
                    if m == 0:
                        break
                # one DE generation for the images still running
                flat = pop.view(m, p, d * dim)
                if self.strategy == "rand1":  # x_r1 + F (x_r2 - x_r3)
                    r = _distinct_others(m, p, 3, gen, dev)
                    base = flat.gather(1, r[..., 0:1].expand(m, p, d * dim))
                    r = r[..., 1:]
                else:  # x_best + F (x_r1 - x_r2)
                    r = _distinct_others(m, p, 2, gen, dev)
                    base = flat.gather(1, fit.argmin(1).view(m, 1, 1).expand(m, p, d * dim))
                a = flat.gather(1, r[..., 0:1].expand(m, p, d * dim))
                b = flat.gather(1, r[..., 1:2].expand(m, p, d * dim))
                child = (base + self.F * (a - b)).view(m, p, d, dim)
                coords = child[..., :2]
                outside = (coords < 0) | (coords >= scale[:2])
                if outside.any():  # SciPy's rule: redraw a coordinate that left the image
                    coords = torch.where(outside, random_coords((m, p, d)), coords)
                child = torch.cat([coords, child[..., 2:].clamp(0, 1)], -1)
                f_c, leave = evaluate(act, child)
                win = f_c < fit  # a child replaces its parent only if it is fitter
                pop = torch.where(win[..., None, None], child, pop)
                fit = torch.where(win, f_c, fit)

            x_adv = x.clone()
            if changed.any():
                ci = changed.nonzero().flatten()
                x_adv[ci] = self.apply(x[ci], best[ci])
            pixel_lists = _changes(x, x_adv, best, changed)
            return finish(
                st,
                x_adv,
                torch.zeros(n, dtype=torch.long),
                extra={"queries": queries, "generations": gens, "pixels": pixel_lists},
            )


def _changes(x: torch.Tensor, x_adv: torch.Tensor, best: torch.Tensor, changed: torch.Tensor) -> list[list[dict]]:
    """Per image, the pixels whose colour changed: row, col, old and new colour (0-255)."""
    n, c, h, w = x.shape
    out: list[list[dict]] = []
    xs, xa = (x * 255).round().long().cpu(), (x_adv * 255).round().long().cpu()
    cand = best.cpu()
    for i in range(n):  # reporting only: at most `pixels` entries per image
        items, seen = [], set()
        if bool(changed[i]):
            for r_, c_ in cand[i, :, :2].floor().long().tolist():
                r_, c_ = min(max(r_, 0), h - 1), min(max(c_, 0), w - 1)
                if (r_, c_) in seen:
                    continue
                seen.add((r_, c_))
                old, new = xs[i, :, r_, c_].tolist(), xa[i, :, r_, c_].tolist()
                if old != new:
                    items.append({"row": r_, "col": c_, "old": old, "new": new})
        out.append(items)
    return out
