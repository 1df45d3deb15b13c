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

A candidate is scored only if it is new: once its coordinates are floored and its colours
rounded, a child often is the very image of its parent, of another member (a converged
population is mostly copies of its best) or of another child, and then takes that one's
fitness instead of a model query. The search is unchanged; on cifar10-small with 3 pixels
fewer than one candidate in seven is new by generation 50, one in fifty by 100.

Two deliberate differences from SciPy's DE (which Su et al.'s code called): generations
are synchronous (every child is scored against its parent at once, which is what makes
the whole population one forward pass), and a mutated coordinate outside the image is
redrawn uniformly, as SciPy does, while a colour outside [0, 1] is clipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from advex.attacks.base import Attack, Batch, Outcome
from advex.attacks.onepixel.scoring import Judge, Scorer, apply_pixels, build_scorer, places
from advex.data import to_uint8
from advex.errors import AdvexError


def distinct_others(m: int, p: int, k: int, gen: torch.Generator, dev) -> torch.Tensor:
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


def row_hash(keys: torch.Tensor) -> torch.Tensor:
    """A 64-bit hash of each row of ``keys`` (R, L) int64: a multiply-xor mix (products wrap)."""
    h = torch.zeros(keys.shape[0], dtype=torch.long, device=keys.device)
    for col in keys.unbind(1):
        h = (h ^ col) * 0x5851F42D4C957F2D
        h = h ^ (h >> 29)
    return h


def first_copies(keys: torch.Tensor) -> torch.Tensor:
    """For each row of ``keys`` (R, L) int64, the index of the first row equal to it (its own
    index if none comes before). Rows are grouped by a 64-bit hash and every row is compared
    with its group's first, so a hash collision leaves a row on its own, never merged wrongly."""
    r = keys.shape[0]
    _, group = torch.unique(row_hash(keys), return_inverse=True)
    idx = torch.arange(r, device=keys.device)
    first = torch.full((r,), r, device=keys.device).scatter_reduce_(0, group, idx, "amin")[group]
    return torch.where((keys.index_select(0, first) == keys).all(1), first, idx)


class OnePixel(Attack):
    """Change at most ``pixels`` pixels to change the prediction (Su et al. 2019).

    Args:
        pixels: pixels the attack may change (the paper: 1, 3 and 5).
        population: DE candidates per image (paper: 400); at least 4.
        iterations: DE generations at most (paper: 100).
        F: mutation scale (paper: 0.5).
        strategy: ``"rand1"`` (the paper's ``x_r1 + F (x_r2 - x_r3)``) or ``"best1"``
            (``x_best + F (x_r1 - x_r2)``, what SciPy's default runs in Su et al.'s code).
            Default: rand1 for one pixel, best1 for more (measured on cifar10-small at the
            paper's budget: rand1 44% against best1's 41% with one pixel, 62% against 78%
            with three, 68% against 86% with five).
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
        incremental: on an ``nn.Sequential`` CNN (convolutions, element-wise layers, then
            Flatten and Linear: the zoo's small/large nets and ``cnn7``), score candidates by
            recomputing only the activations the pixels can reach (exact; on cifar10-small
            ~7x faster than full passes for one pixel, ~2x for three and ~1.6x for five; on a
            trained cnn7 8.9x, 3.3x and 1.5x; not used where the pixels' windows would cost
            about as much as a full pass: 8 or more pixels on cifar10-small, 5 or more on
            MNIST's small net and the ``large`` net, 7 or more on cnn7; see
            :mod:`advex.attacks.onepixel.incremental` and :mod:`advex.attacks.onepixel.crops`);
            other networks (the ResNet) always run whole. Successes are confirmed by a full
            pass.
        seed: seed of the attack's own generator (results are deterministic).

    ``result.extra`` holds ``queries`` (candidates DE evaluated per image: the population at
    every generation it ran, as the paper and SciPy count them), ``scored`` (of those, the
    ones the model scored: a candidate the same 8-bit image as one already scored takes its
    fitness), ``generations`` and ``pixels``: for each image, the changed pixels as dicts with
    ``row``, ``col``, ``old`` and ``new`` colours (0-255).
    """

    def __init__(
        self,
        *,
        pixels: int = 1,
        population: int = 400,
        iterations: int = 100,
        F: float = 0.5,
        strategy: str | None = None,
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
        if strategy is None:
            strategy = "rand1" if pixels == 1 else "best1"
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

    def check_size(self, h: int, w: int) -> None:
        """Refuse images of ``h`` x ``w`` with fewer pixels than the attack changes (a run
        checks its first image with it before any work)."""
        if self.pixels > h * w:
            raise AdvexError(f"pixels={self.pixels} is more than the {h}x{w} image has ({h * w})")

    def check(self, batch: Batch) -> None:
        self.check_size(*batch.x.shape[-2:])
        if batch.targeted:
            same = (batch.target == batch.y).nonzero().flatten()
            if same.numel():
                i = int(same[0])
                raise AdvexError(
                    f"image {i}: the target {batch.model.class_name(int(batch.target[i]))!r} is its true class; "
                    "give a different target (or none, for an untargeted attack)"
                )

    def _judge(self, batch: Batch) -> Judge:
        """Fitness (lower is fitter), hit and stop flags of logits ``z`` of the images ``owner``.

        Fitness is compared, never read: -log(1 - p_true) (untargeted) and -log p_target
        (targeted) order candidates as the probabilities do, without the float32 saturation
        at p = 1 that would freeze the search on confidently classified images."""
        goal, targeted, th = batch.goal, batch.targeted, self.threshold

        def flags(z, owner):
            g = goal[owner]
            zg = z.gather(1, g[:, None]).squeeze(1)
            lse = z.logsumexp(1)
            if targeted:
                f = lse - zg  # -log p_target
                h = z.argmax(1) == g
                st = h if th is None else f < -math.log(th)
            else:
                f = lse - z.scatter(1, g[:, None], float("-inf")).logsumexp(1)  # -log(1 - p_true)
                h = z.argmax(1) != g
                st = h if th is None else f < -math.log1p(-th)
            return f, h, st

        return flags

    def run(self, batch: Batch) -> Outcome:
        x = batch.x
        n, c, h, w = x.shape
        scorer = build_scorer(
            batch.model, x, pixels=self.pixels, precision=self.precision, incremental=self.incremental,
            batch_size=self.batch_size,
        )  # fmt: skip
        de = _Evolution(self, n, c, h, w, x.device)
        best = de.search(scorer, self._judge(batch))
        x_adv = apply_pixels(x, best)
        extra = {"queries": de.queries, "scored": de.scored, "generations": de.gens}
        return Outcome(x_adv, extra=extra | {"pixels": changed_pixels(x, x_adv, best)})


@dataclass
class _Evolution:
    """Differential evolution for n images at once (populations of ``attack.population``
    candidates of ``attack.pixels`` (row, col, colour) tuples), with the bookkeeping:
    candidates evaluated, candidates scored and generations per image, and the fittest
    successful candidate so far."""

    attack: OnePixel
    n: int
    c: int
    h: int
    w: int
    dev: torch.device

    def __post_init__(self) -> None:
        a = self.attack
        self.d, self.p, self.dim = a.pixels, a.population, 2 + self.c
        self.gen = torch.Generator(self.dev).manual_seed(a.seed)
        self.scale = torch.tensor([self.h, self.w] + [1.0] * self.c, device=self.dev)
        self.queries = torch.zeros(self.n, dtype=torch.long, device=self.dev)
        self.scored = torch.zeros(self.n, dtype=torch.long, device=self.dev)
        self.gens = torch.zeros(self.n, dtype=torch.long, device=self.dev)
        self.best = torch.zeros(self.n, self.d, self.dim, device=self.dev)  # the candidate each image returns
        self.best_fit = torch.full((self.n,), torch.inf, device=self.dev)  # of its fittest success so far
        self.found = torch.zeros(self.n, dtype=torch.bool, device=self.dev)

    def coords(self, shape) -> torch.Tensor:
        return torch.rand(*shape, 2, generator=self.gen, device=self.dev) * self.scale[:2]

    def search(self, scorer: Scorer, judge: Judge) -> torch.Tensor:
        """Run DE to the end for every image; returns each image's candidate (n, d, 2 + C):
        its fittest success, or, failing that, its fittest candidate."""
        a, p, d, c = self.attack, self.p, self.d, self.c
        act = torch.arange(self.n, device=self.dev)
        colours = a.colour_mean + a.colour_sd * torch.randn(self.n, p, d, c, generator=self.gen, device=self.dev)
        pop = torch.cat([self.coords((self.n, p, d)), colours.clamp(0, 1)], -1)  # (m, p, d, dim)
        fit, leave = self.evaluate(scorer, judge, act, pop)
        for g in range(a.iterations + 1):
            if g == a.iterations:
                leave = torch.ones_like(leave)
            if leave.any():  # stopped, or out of generations
                nf = leave & ~self.found[act]  # no success: return the fittest candidate
                self.best[act[nf]] = pop[nf, fit[nf].argmin(1)]
                self.gens[act[leave]] = g
                act, pop, fit = act[~leave], pop[~leave], fit[~leave]
                if act.numel() == 0:
                    break
            child = self.mutate(pop, fit)
            f_c, leave = self.evaluate(scorer, judge, act, child, (pop, fit))
            win = f_c < fit  # a child replaces its parent only if it is fitter
            pop = torch.where(win[..., None, None], child, pop)
            fit = torch.where(win, f_c, fit)
        return self.best

    def evaluate(self, scorer: Scorer, judge: Judge, act: torch.Tensor, cand: torch.Tensor, known=None):
        """Score the (m, p, d, dim) candidates of images ``act``: fitness, and which stop;
        keep each image's fittest success. Only new candidates are scored: one that is the
        same image as a member of the population ``known`` (pop, fit) takes its fitness (and
        can be neither a first success nor a stop: that member's were counted when it was
        scored), one that repeats an earlier candidate takes that one's result."""
        m, p = act.numel(), self.p
        owner = act.repeat_interleave(p)
        cand = cand.reshape(m * p, self.d, self.dim)
        keys, f = self.keys(owner, cand), torch.zeros(m * p, device=self.dev)
        if known is not None:  # the members first, with their fitness
            keys = torch.cat([self.keys(owner, known[0].reshape(m * p, self.d, self.dim)), keys])
            f = torch.cat([known[1].reshape(-1), f])
        rows = torch.arange(keys.shape[0] - m * p, keys.shape[0], device=self.dev)  # the candidates' rows
        first = first_copies(keys)[rows]  # the row each candidate takes its result from
        new = (first == rows).nonzero().flatten()
        hit = torch.zeros(keys.shape[0], dtype=torch.bool, device=self.dev)
        stop = torch.zeros_like(hit)
        if new.numel():
            f[rows[new]], hit[rows[new]], stop[rows[new]] = scorer(owner[new], cand[new], judge)
        f, hit, stop = f[first].view(m, p), hit[first].view(m, p), stop[first].view(m, p)
        self.queries[act] += p
        self.scored.index_add_(0, owner[new], torch.ones_like(new))
        fj, j = torch.where(hit, f, torch.inf).min(1)
        better = fj < self.best_fit[act]
        if better.any():
            idx = act[better]
            self.best[idx] = cand.view(m, p, self.d, self.dim)[better, j[better]]
            self.best_fit[idx] = fj[better]
            self.found[idx] = True
        return f, stop.any(1)

    def keys(self, owner: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        """(K, 1 + d * (1 + C)) int64: the image, then each pixel's place and 8-bit colour: equal
        rows are the same candidate image (as the scorers write it)."""
        rows, cols = places(cand, self.h, self.w)
        colour = to_uint8(cand[..., 2:]).long()
        pixels = torch.cat([(rows * self.w + cols)[..., None], colour], -1).flatten(1)
        return torch.cat([owner[:, None], pixels], 1)

    def mutate(self, pop: torch.Tensor, fit: torch.Tensor) -> torch.Tensor:
        """One DE generation's children: rand1 ``x_r1 + F (x_r2 - x_r3)`` or best1
        ``x_best + F (x_r1 - x_r2)``; a coordinate that leaves the image is redrawn (SciPy's
        rule), a colour outside [0, 1] clipped."""
        m, p, d, dim = pop.shape
        flat = pop.view(m, p, d * dim)
        if self.attack.strategy == "rand1":
            r = distinct_others(m, p, 3, self.gen, self.dev)
            base = flat.gather(1, r[..., 0:1].expand(m, p, d * dim))
            r = r[..., 1:]
        else:
            r = distinct_others(m, p, 2, self.gen, self.dev)
            base = flat.gather(1, fit.argmin(1).view(m, 1, 1).expand(m, p, d * dim))
        a = flat.gather(1, r[..., 0:1].expand(m, p, d * dim))
        b = flat.gather(1, r[..., 1:2].expand(m, p, d * dim))
        child = (base + self.attack.F * (a - b)).view(m, p, d, dim)
        coords = child[..., :2]
        outside = (coords < 0) | (coords >= self.scale[:2])
        if outside.any():
            coords = torch.where(outside, self.coords((m, p, d)), coords)
        return torch.cat([coords, child[..., 2:].clamp(0, 1)], -1)


def changed_pixels(x: torch.Tensor, x_adv: torch.Tensor, best: torch.Tensor) -> list[list[dict]]:
    """Per image, the pixels whose colour changed: row, col, old and new colour (0-255)."""
    n, c, h, w = x.shape
    out: list[list[dict]] = []
    xs, xa = (x * 255).round().long().cpu(), (x_adv * 255).round().long().cpu()
    cand = best.cpu()
    for i in range(n):  # reporting only: at most `pixels` entries per image
        items, seen = [], set()
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


def apply_changes(x: torch.Tensor, changes: list[list[dict]]) -> torch.Tensor:
    """The adversarial images again, from the clean ones ``x`` (N, C, H, W) and each image's
    changed pixels as ``result.extra["pixels"]`` lists them (``row``, ``col``, ``new`` colour
    0-255): exact, since the attack writes whole 8-bit levels. A journalled run keeps only the
    changes, not the images."""
    out = x.clone()
    for i, items in enumerate(changes):
        for p in items:
            out[i, :, p["row"], p["col"]] = torch.tensor(p["new"], dtype=out.dtype, device=out.device) / 255
    return out
