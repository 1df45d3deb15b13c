"""Scoring one-pixel candidates: the logits of images with a few pixels replaced.

Differential evolution spends nearly all its time here: every generation scores a
population of candidates for every image. The way to score is chosen once per attack, by
:func:`build_scorer`, and used through one interface (:class:`Scorer`):

- the model resizes its input (a photo attacked at its own resolution): candidates are
  written into the pixel images and the whole model runs (``precision="bf16"``: under
  bfloat16 autocast);
- otherwise the normalised images are made once, normalised colours are written straight
  into them and the network runs without the model's per-pass normalisation
  (``precision="bf16"``: a bfloat16 copy of the network on bfloat16 images);
- for a few pixels on a plain CNN (see :mod:`advex.attacks.onepixel.incremental`), only the
  activations the pixels reach are recomputed: exact, and several times fewer operations
  (one pixel; less with more, and not used where the pixels' windows would cost about as
  much as a full pass); by precomputed window tables, or where those would be too big (cnn7)
  by convolutions of crops (:mod:`advex.attacks.onepixel.crops`);
- a fast twin of the model (``model.fast(...)``) scores first and the fp32 original confirms.

The bf16, incremental and twin scorers are "fast": a success or stop they find is re-scored by
the exact fp32 full pass before it counts.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch

from advex.attacks.onepixel.crops import CropForward
from advex.attacks.onepixel.incremental import LocalForward
from advex.data import quantize
from advex.models import Classifier

Logits = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (owner (K,), cand (K, d, 2+C)) -> (K, classes)
Judge = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def places(cand: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The pixel each of candidates ``cand`` (..., 2 + C) writes in an ``h`` x ``w`` image:
    its coordinates (row, col) floored, kept inside the image."""
    return cand[..., 0].floor().long().clamp_(0, h - 1), cand[..., 1].floor().long().clamp_(0, w - 1)


def write_pixels(x: torch.Tensor, cand: torch.Tensor, owner: torch.Tensor | None = None) -> torch.Tensor:
    """Copies of images ``x[owner]`` (``owner`` None: of ``x``) with the values
    ``cand[..., 2:]`` (K, d, C) written at the floored coordinates ``cand[..., :2]`` (row, col)."""
    m = cand.shape[0]
    _, c, h, w = x.shape
    rows, cols = places(cand, h, w)
    flat = x.reshape(-1, c, h * w)
    flat = flat[owner] if owner is not None else flat.clone()
    idx = (rows * w + cols)[:, None, :].expand(m, c, -1)
    flat.scatter_(2, idx, cand[..., 2:].transpose(1, 2).to(flat.dtype))
    return flat.view(m, c, h, w)


def apply_pixels(x: torch.Tensor, cand: torch.Tensor, owner: torch.Tensor | None = None) -> torch.Tensor:
    """Images ``x[owner]`` with candidates ``cand`` (K, d, 2 + C) applied as a saved PNG holds
    them: coordinates floored, colours rounded to 8-bit levels."""
    return write_pixels(x, torch.cat([cand[..., :2], quantize(cand[..., 2:])], -1), owner)


class Scorer:
    """Scores candidates in chunks of ``chunk`` images: ``exact`` gives fp32 logits of a full
    pass; ``fast`` (optional) is tried first, and what it finds is re-checked by ``exact``."""

    def __init__(self, exact: Logits, chunk: int, fast: Logits | None = None, kind: str = "full") -> None:
        self.exact, self.fast, self.chunk, self.kind = exact, fast, chunk, kind

    def __call__(self, owner: torch.Tensor, cand: torch.Tensor, judge: Judge):
        """Fitness, hit and stop flags of candidates ``cand`` (K, d, 2+C) on images ``owner``
        (K,): ``judge(logits, owner)`` turns logits into the three."""
        fit, hit, stop = [], [], []
        for s in range(0, cand.shape[0], self.chunk):
            o, cs = owner[s : s + self.chunk], cand[s : s + self.chunk]
            f, h, st = judge((self.fast or self.exact)(o, cs), o)
            if self.fast is not None and (h | st).any():  # found the fast way: confirmed by a full fp32 pass
                k = (h | st).nonzero().flatten()
                f[k], h[k], st[k] = judge(self.exact(o[k], cs[k]), o[k])
            fit.append(f)
            hit.append(h)
            stop.append(st)
        return torch.cat(fit), torch.cat(hit), torch.cat(stop)


def build_scorer(
    model: Classifier,
    x: torch.Tensor,
    *,
    pixels: int,
    precision: str = "fp32",
    incremental: bool = True,
    batch_size: int | None = None,
) -> Scorer:
    """The fastest exact-or-confirmed way to score candidates on images ``x`` (see the module doc).
    ``model`` may be a fast twin (:meth:`Classifier.fast`): it then scores first, and its fp32
    original (``model.reference``) confirms."""
    h, w = x.shape[-2:]
    chunk = batch_size or default_chunk(x.device, x[0].numel())
    twin, model = (model, model.reference) if model.reference is not model else (None, model)
    if twin is not None:

        def twin_logits(o, cs):
            return twin(apply_pixels(x, cs, o)).float()

        if model.resizes(h, w):

            def exact(o, cs):
                return model(apply_pixels(x, cs, o)).float()
        else:
            exact = _input_writer(model, model.net, model.preprocess(x))
        return Scorer(exact, chunk, twin_logits, "twin")
    if model.resizes(h, w):  # the pixels pass through the model's resize: run it whole

        def pixel_logits(o, cs):
            return model(apply_pixels(x, cs, o)).float()

        fast = None
        if precision == "bf16":

            def fast(o, cs):
                with torch.autocast(x.device.type, dtype=torch.bfloat16):
                    return model(apply_pixels(x, cs, o)).float()

        return Scorer(pixel_logits, chunk, fast, "full" if fast is None else "bf16")

    xn = model.preprocess(x)  # the network's input, made once
    exact = _input_writer(model, model.net, xn)
    local = (LocalForward.build(model.net, xn) or CropForward.build(model.net, xn)) if incremental else None
    if local is not None and local.pays(pixels):

        def incremental_logits(o, cs):
            rows, cols = places(cs, h, w)
            return local(o, rows, cols, model.normalise(quantize(cs[..., 2:]), -1)).float()

        return Scorer(exact, batch_size or local.chunk(pixels), incremental_logits, "incremental")
    if precision == "bf16":
        net16 = copy.deepcopy(model.net).to(torch.bfloat16).eval()
        return Scorer(exact, chunk, _input_writer(model, net16, xn.to(torch.bfloat16)), "bf16")
    return Scorer(exact, chunk)


def _input_writer(model: Classifier, net, xn: torch.Tensor) -> Logits:
    """Logits of ``net`` on the normalised images ``xn`` with normalised candidate colours written in."""

    def logits(o, cs):
        cs = torch.cat([cs[..., :2], model.normalise(quantize(cs[..., 2:]), -1)], -1)
        return net(write_pixels(xn, cs, o)).float()

    return logits


def default_chunk(dev: torch.device, numel: int) -> int:
    """Images per forward pass. On a CPU, batches of a few hundred small images stay in
    cache and run ~4x faster per image than batches of thousands (cifar10-small: 120k vs
    30k images/s on 2 cores); on a GPU, large batches are what fills it."""
    if dev.type == "cpu":
        return max(8, min(512, 2**20 // numel))
    return max(1, min(8192, 2**25 // numel))
