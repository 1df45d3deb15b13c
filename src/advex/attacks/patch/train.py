"""Training a universal patch: Brown et al.'s EOT objective by Adam on the patch pixels."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from advex.attacks.patch.geometry import SHAPES, check_size, patch_mask, sample_placements
from advex.attacks.patch.render import Printability, composite, random_views, render, transform_patch
from advex.attacks.patch.state import PatchState
from advex.attacks.universal import UniversalAttack
from advex.data import quantize
from advex.errors import AdvexError
from advex.models import Classifier


@dataclass
class PatchResult:
    """A trained universal patch and how training went.

    ``patch`` (C, P, P) is quantised to 8 bits (what a PNG stores; every success reported
    is measured with it); ``mask`` (1, P, P) is the shape's coverage of each pixel.
    ``curve`` has, per logged step, the mean loss -log P(target) and the fraction of that
    step's patched samples classified as the target.
    """

    patch: torch.Tensor
    mask: torch.Tensor
    size: float
    shape: str
    target: int
    target_name: str
    steps: int
    samples: int
    time_s: float
    curve: dict[str, list[float]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


class Patch(UniversalAttack):
    """Train a universal adversarial patch (Brown et al. 2017) by EOT and Adam.

    Args:
        size: fraction of the image area the patch covers at scale 1 (the paper sweeps it).
        shape: "circle" (the paper's sticker) or "square".
        steps: Adam steps; each draws ``batch_size`` images (with replacement), and for
            each a fresh location, scale, rotation and printability change.
        batch_size: patched samples per step (per model for an ensemble).
        lr: Adam step size on patch pixels in [0, 1].
        rotation: largest rotation, degrees (uniform in +-rotation).
        scale: range of the patch side as a multiple of the side for ``size``.
        printability: brightness/contrast/blur/noise ranges (``Printability.none()`` off).
        augment: also draw random crops, flips and colour changes of the training images
            (for a handful of photos; see :func:`random_views`).
        resolution: patch pixels per side (default: its largest rendered side, so one patch
            pixel is about one image pixel).
        log_every: record the curve every this many steps.
        seed: all randomness (initial patch, sampling) comes from it.
        progress: show a progress bar.
    """

    def __init__(
        self,
        *,
        size: float = 0.1,
        shape: str = "circle",
        steps: int = 500,
        batch_size: int = 16,
        lr: float = 0.02,
        rotation: float = 22.5,
        scale: tuple[float, float] = (0.8, 1.2),
        printability: Printability | None = None,
        augment: bool = False,
        resolution: int | None = None,
        log_every: int = 10,
        seed: int = 0,
        progress: bool = False,
    ) -> None:
        if not isinstance(size, (int, float)) or not 0 < size < 1:
            raise AdvexError(f"size is a fraction of the image area in (0, 1), got {size!r}")
        if shape not in SHAPES:
            raise AdvexError(f"shape must be one of {', '.join(SHAPES)}, got {shape!r}")
        if not isinstance(steps, int) or steps < 1:
            raise AdvexError(f"steps must be an integer >= 1, got {steps!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise AdvexError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if not lr > 0:
            raise AdvexError(f"lr must be > 0, got {lr}")
        if not 0 <= rotation <= 180:
            raise AdvexError(f"rotation is the largest angle in degrees, in [0, 180], got {rotation}")
        scale = tuple(float(v) for v in scale)
        if len(scale) != 2 or not 0 < scale[0] <= scale[1]:
            raise AdvexError(f"scale must be a range (lo, hi) with 0 < lo <= hi, got {scale}")
        if resolution is not None and (not isinstance(resolution, int) or resolution < 2):
            raise AdvexError(f"resolution must be an integer >= 2 (patch pixels per side), got {resolution!r}")
        self.size, self.shape, self.steps, self.batch_size, self.lr = float(size), shape, steps, batch_size, lr
        self.rotation, self.scale = float(rotation), scale
        self.printability = printability if printability is not None else Printability()
        self.augment, self.resolution = augment, resolution
        self.log_every, self.seed, self.progress = max(1, int(log_every)), seed, progress

    def __repr__(self) -> str:
        return (
            f"Patch(size={self.size}, shape={self.shape!r}, steps={self.steps}, batch_size={self.batch_size}, "
            f"lr={self.lr}, rotation={self.rotation}, scale={self.scale}, augment={self.augment}, seed={self.seed})"
        )

    def fit(
        self,
        models: list[Classifier],
        images: torch.Tensor,
        target: int,
        *,
        state: PatchState | None = None,
        checkpoint: Callable[[PatchState], None] | None = None,
        checkpoint_every: int = 50,
    ) -> PatchResult:
        """Train on ``images`` (N, C, H, W; uint8 or float in [0, 1]) for class ``target`` of
        every model (one, or the paper's ensemble); called by ``patch(model(s), images, target)``.

        For runs that may be stopped: ``checkpoint(state)`` is called every ``checkpoint_every``
        steps and after the last one with where training stands (a :class:`PatchState`, to
        save), and ``state`` continues from such a state, as if never stopped: the same
        settings, images and models give the same patch to the bit."""
        start = time.perf_counter()
        c, h, w = images.shape[1:]
        dev = models[0].device
        side = self.side(h, w)
        res = self.resolution or max(2, math.ceil(side * self.scale[1]))
        mask = patch_mask(self.shape, res).to(dev)
        g = torch.Generator().manual_seed(self.seed)
        patch = torch.rand(c, res, res, generator=g).to(dev).requires_grad_(True)
        opt = torch.optim.Adam([patch], lr=self.lr)
        curve = _Curve(self.log_every, self.steps)
        done, spent = (0, 0.0) if state is None else self._restore(state, patch, opt, g, curve)
        if not isinstance(checkpoint_every, int) or checkpoint_every < 1:
            raise AdvexError(f"checkpoint_every must be an integer >= 1, got {checkpoint_every!r}")
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=self.steps, initial=done, desc="patch", unit="step")
        for step in range(done + 1, self.steps + 1):
            with torch.enable_grad():
                loss, hits = self._step(models, images, patch, mask, side, target, opt, g)
            curve.add(step, loss, hits)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}", target=f"{hits:.2f}")
            if checkpoint is not None and (step % checkpoint_every == 0 or step == self.steps):
                seconds = spent + time.perf_counter() - start
                checkpoint(
                    PatchState(step, patch.detach().clone(), opt.state_dict(), g.get_state(), curve.state(), seconds)
                )
        if bar is not None:
            bar.close()
        return PatchResult(
            patch=quantize(patch.detach()).cpu(),
            mask=mask.cpu(),
            size=self.size,
            shape=self.shape,
            target=target,
            target_name=models[0].class_name(target),
            steps=self.steps,
            samples=self.steps * self.batch_size,
            time_s=spent + time.perf_counter() - start,
            curve=curve.points,
            settings={
                "size": self.size, "shape": self.shape, "steps": self.steps, "batch_size": self.batch_size,
                "lr": self.lr, "rotation": self.rotation, "scale": list(self.scale), "augment": self.augment,
                "resolution": res, "printability": vars(self.printability), "seed": self.seed,
                "models": [m.name for m in models], "image_size": [h, w],
            },
        )  # fmt: skip

    def side(self, h: int, w: int) -> float:
        """The patch side in pixels on ``h`` x ``w`` images at scale 1; a clear error if it does not
        fit them (a command checks this before it writes anything)."""
        return check_size(self.size, h, w, math.pi / 4 if self.shape == "circle" else 1.0)

    def _restore(self, state: PatchState, patch, opt, g, curve: _Curve) -> tuple[int, float]:
        """Put a saved state back into the patch, the optimiser, the generator and the curve;
        returns the steps done and the seconds they took."""
        if tuple(state.patch.shape) != tuple(patch.shape):
            raise AdvexError(
                f"the saved training state is of a {tuple(state.patch.shape)} patch; these settings and images make "
                f"a {tuple(patch.shape)} one"
            )
        if not 0 <= state.step <= self.steps:
            raise AdvexError(f"the saved training state is at step {state.step}, beyond steps={self.steps}")
        with torch.no_grad():
            patch.copy_(state.patch.to(patch.device))
        opt.load_state_dict(state.optimizer)
        g.set_state(state.generator)
        curve.restore(state.curve)
        return state.step, state.seconds

    def _step(self, models, images, patch, mask, side, target, opt, g) -> tuple[float, float]:
        """One Adam step on a fresh batch of images, placements and printability changes;
        returns the mean loss -log P(target) and the fraction of patched samples that hit it."""
        dev = patch.device
        idx = torch.randint(images.shape[0], (self.batch_size,), generator=g)
        x = as_float(images[idx], dev)
        if self.augment:
            x = random_views(x, self.batch_size, g)
        xp = self._patched(patch, mask, x, side, g)
        tg = torch.full((self.batch_size,), target, device=dev)
        loss = torch.zeros((), device=dev)
        hits = torch.zeros((), device=dev)
        for m in models:
            z = m(m.fast_layout(xp)).float()  # channels-last on a CPU where it pays
            loss = loss + F.cross_entropy(z, tg) / len(models)
            hits = hits + (z.argmax(1) == target).float().mean() / len(models)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            patch.clamp_(0, 1)
        return float(loss.detach()), float(hits)

    def _patched(self, patch, mask, x, side, g) -> torch.Tensor:
        n, _, h, w = x.shape
        pl = sample_placements(
            n, h, w, side, rotation=self.rotation, scale=self.scale, round_patch=self.shape == "circle", generator=g
        )
        rgb = transform_patch(patch, n, self.printability, g)
        rgba = torch.cat([rgb, mask[None].expand(n, -1, -1, -1)], 1)
        return composite(x, render(rgba, pl, h, w))


def as_float(x: torch.Tensor, device) -> torch.Tensor:
    x = x.to(device)
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


class _Curve:
    """The training curve: mean loss and target rate over every ``every`` steps."""

    def __init__(self, every: int, steps: int) -> None:
        self.every, self.steps = every, steps
        self.points: dict[str, list[float]] = {"step": [], "loss": [], "success": []}
        self._loss, self._ok, self._n = 0.0, 0.0, 0

    def add(self, step: int, loss: float, hits: float) -> None:
        self._loss, self._ok, self._n = self._loss + loss, self._ok + hits, self._n + 1
        if step % self.every == 0 or step == self.steps:
            self.points["step"].append(step)
            self.points["loss"].append(round(self._loss / self._n, 5))
            self.points["success"].append(round(self._ok / self._n, 4))
            self._loss, self._ok, self._n = 0.0, 0.0, 0

    def state(self) -> dict:
        """The curve so far and the steps added since its last point (JSON)."""
        return {"points": {k: list(v) for k, v in self.points.items()}, "pending": [self._loss, self._ok, self._n]}

    def restore(self, state: dict) -> None:
        self.points = {k: list(v) for k, v in state["points"].items()}
        self._loss, self._ok, self._n = state["pending"]
