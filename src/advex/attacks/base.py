"""The attack protocol: what every attack shares, written once.

An attack is a small configured object. Calling it as ``attack(model, x, y=None, *,
target=None)`` runs :meth:`Attack.__call__`, which for every attack

1. accepts an advex ``Classifier`` or any ``nn.Module`` mapping [0, 1] pixels to logits,
   and freezes it for the call (eval mode, no parameter gradients; restored afterwards);
2. checks the inputs (a finite (N, C, H, W) batch in [0, 1], or a list of (C, H, W) photos
   of mixed sizes for attacks that take them), the labels ``y`` and the targets (a class
   index or name, or one per image), with one clear error for anything wrong;
3. predicts the clean images once, and leaves out those that are already adversarial
   (they are returned unchanged, counted as successes, at no cost). An attack whose
   first step is a gradient at the clean images themselves (:meth:`Attack.starts_at_clean`:
   FGSM, BIM, DeepFool, C&W's first search step) gets that pass with its graph kept
   (:class:`FirstPass`), so the clean prediction costs no pass of its own;
4. calls the subclass's :meth:`Attack.run` on a :class:`Batch` of the rest, which returns
   an :class:`Outcome` (the adversarial images, the work spent, anything extra);
5. predicts the adversarial images once (unless the attack returns their logits from its
   own last pass) and builds the :class:`AttackResult`.

A subclass implements ``run`` (and, where it has one, its own success criterion
``adversarial`` and input checks ``check``). Universal attacks, one perturbation for many
images (the adversarial patch), have their own protocol:
:class:`advex.attacks.universal.UniversalAttack`.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from advex.attacks.result import AttackResult, perturbation_norms
from advex.data import pack, unpack
from advex.errors import AdvexError, AdvexWarning
from advex.models import Classifier, as_classifier, check_labels, check_logits, check_pixels, frozen

Label = int | str
Targets = Label | Sequence[Label] | torch.Tensor | None
Labels = torch.Tensor | Sequence[int] | None


@dataclass
class FirstPass:
    """The clean images' forward pass with its graph kept, for an attack whose first step is
    a gradient at the clean images (:meth:`Attack.starts_at_clean`): the step differentiates
    this pass instead of making it again. ``x`` is the leaf it differentiates (every image of
    the call), ``z`` the logits with their graph, ``rows`` the call's images the batch holds."""

    x: torch.Tensor
    z: torch.Tensor
    rows: torch.Tensor | None = None

    def logits(self) -> torch.Tensor:
        """The batch's fp32 logits, with their graph."""
        z = self.z.float()
        return z if self.rows is None else z[self.rows]

    def grad(self, out: torch.Tensor, retain_graph: bool = False) -> torch.Tensor:
        """d out / d (the batch's clean images); ``out`` a scalar made from :meth:`logits`."""
        (g,) = torch.autograd.grad(out, self.x, retain_graph=retain_graph)
        return g if self.rows is None else g[self.rows]

    def subset(self, rows: torch.Tensor) -> FirstPass:
        return FirstPass(self.x, self.z, rows if self.rows is None else self.rows[rows])


@dataclass
class Batch:
    """The images an attack's :meth:`Attack.run` works on, on the model's device: the
    clean images ``x``, their clean ``logits``, the labels ``y`` to move away from and the
    ``target`` classes to move to (None: untargeted). For mixed-size photos ``x`` is a
    zero-padded canvas and ``sizes`` (M, 2) holds each photo's own (H, W). ``forward`` and
    ``hit`` take the rows of the batch that their input holds (default: all). ``first``: the
    clean images' pass with its graph, where the attack starts at them (else None; used once,
    by the first step)."""

    model: Classifier
    x: torch.Tensor
    y: torch.Tensor
    target: torch.Tensor | None
    logits: torch.Tensor
    criterion: Callable[[torch.Tensor, torch.Tensor, bool], torch.Tensor]
    sizes: torch.Tensor | None = None
    first: FirstPass | None = None

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def device(self) -> torch.device:
        return self.x.device

    @property
    def targeted(self) -> bool:
        return self.target is not None

    @property
    def goal(self) -> torch.Tensor:
        """The class whose loss the attack works on: the target, or the true label."""
        return self.target if self.target is not None else self.y

    @property
    def num_classes(self) -> int:
        return int(self.logits.shape[1])

    @property
    def valid(self) -> torch.Tensor:
        """(M, 1, H, W) bool: the pixels that belong to each image (all, unless mixed sizes)."""
        m, _, h, w = self.x.shape
        if self.sizes is None:
            return torch.ones(m, 1, h, w, dtype=torch.bool, device=self.device)
        sz = self.sizes.to(self.device)
        rows = torch.arange(h, device=self.device)[None, :, None] < sz[:, 0, None, None]
        cols = torch.arange(w, device=self.device)[None, None, :] < sz[:, 1, None, None]
        return (rows & cols)[:, None]

    @property
    def numel(self) -> torch.Tensor:
        """(M,) the number of real (unpadded) values in each image."""
        if self.sizes is None:
            return torch.full((len(self),), self.x[0].numel(), device=self.device)
        return (self.sizes[:, 0] * self.sizes[:, 1] * self.x.shape[1]).to(self.device)

    def forward(self, x: torch.Tensor, rows: torch.Tensor | None = None, *, reference: bool = False) -> torch.Tensor:
        """Logits (float32) of images ``x`` standing for the batch's ``rows``; ``reference``:
        from the fp32 classifier a fast twin stands for (:meth:`Classifier.fast`)."""
        model = self.model.reference if reference else self.model
        sizes = None
        if self.sizes is not None:
            sizes = self.sizes if rows is None else self.sizes[rows.cpu()]
        return model(x, sizes).float() if sizes is not None else model(x).float()

    def take_first(self) -> FirstPass | None:
        """The kept clean pass (see :class:`FirstPass`), handed over once: None from then on."""
        first, self.first = self.first, None
        return first

    def hit(self, z: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Success, by the attack's criterion, of logits ``z`` of the batch's ``rows``."""
        return self.criterion(z, self.goal if rows is None else self.goal[rows], self.targeted)

    def subset(self, rows: torch.Tensor) -> Batch:
        return Batch(
            self.model,
            self.x[rows],
            self.y[rows],
            None if self.target is None else self.target[rows],
            self.logits[rows],
            self.criterion,
            None if self.sizes is None else self.sizes[rows.cpu()],
            None if self.first is None else self.first.subset(rows),
        )


@dataclass
class Outcome:
    """What :meth:`Attack.run` returns for the M images of its batch.

    ``evals``: forward+backward passes spent per image (None: none, e.g. a black-box
    attack, which reports its queries in ``extra``). ``success``: the attack's own verdict
    where it has one (default: its criterion on a fresh prediction of ``x_adv``).
    ``extra``: per-image (M,) tensors or lists, and anything else, kept in the result.
    ``logits``: the fp32 logits of exactly ``x_adv`` where the attack already computed them
    (its last forward pass); the call then spends no pass of its own on the final prediction."""

    x_adv: torch.Tensor
    evals: torch.Tensor | None = None
    success: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    logits: torch.Tensor | None = None


def argmax_criterion(z: torch.Tensor, goal: torch.Tensor, targeted: bool) -> torch.Tensor:
    """The usual success: the prediction is the target, or is no longer the true label."""
    pred = z.argmax(1)
    return pred == goal if targeted else pred != goal


def margin(z: torch.Tensor, goal: torch.Tensor, targeted: bool) -> torch.Tensor:
    """How far the logits are from success: untargeted z_goal - max other, targeted max
    other - z_goal (success when negative)."""
    zg = z.gather(1, goal[:, None]).squeeze(1)
    other = z.scatter(1, goal[:, None], float("-inf")).amax(1)
    return other - zg if targeted else zg - other


class Attack:
    """Base of the per-image attacks; see the module docstring for what ``__call__`` does.

    Class attributes a subclass may set: ``mixed_sizes`` (takes a list of (C, H, W) images
    of different sizes), ``targeted_ok`` (False: untargeted only)."""

    mixed_sizes: ClassVar[bool] = False
    targeted_ok: ClassVar[bool] = True

    def __call__(
        self,
        model: nn.Module,
        x: torch.Tensor | Sequence[torch.Tensor],
        y: Labels = None,
        *,
        target: Targets = None,
    ) -> AttackResult:
        """Attack ``x`` (N, C, H, W) in [0, 1]; untargeted away from ``y`` (default: the
        model's prediction) or towards ``target`` (a class index or name, or one per image)."""
        start = time.perf_counter()
        if target is not None and not self.targeted_ok:
            raise AdvexError(f"{type(self).__name__} is untargeted; use target=None (or PGD/APGD/CW for a target)")
        clf = as_classifier(model)
        x, sizes, ragged = self._images(x)
        with frozen(clf), torch.no_grad():
            full = self._batch(clf, x, y, target, sizes)
            self.check(full)
            done = full.hit(full.logits)  # already adversarial: nothing to do
            todo = (~done).nonzero().flatten()
            out = self._run(full, todo)
            return self._result(full, todo, out, ragged, start)

    # ------------------------------------------------------------------ the subclass's part
    def run(self, batch: Batch) -> Outcome:
        """Attack the images of ``batch`` (none of which is adversarial yet)."""
        raise NotImplementedError

    def check(self, batch: Batch) -> None:
        """Attack-specific checks of the resolved inputs (all N images); raise AdvexError."""

    def adversarial(self, z: torch.Tensor, goal: torch.Tensor, targeted: bool) -> torch.Tensor:
        """This attack's success criterion on logits ``z`` (default: the argmax)."""
        return argmax_criterion(z, goal, targeted)

    def starts_at_clean(self) -> bool:
        """Whether :meth:`run`'s first gradient is taken at the clean images themselves and
        comes from ``batch.first`` where given (default: no)."""
        return False

    # ------------------------------------------------------------------ what every attack shares
    def _images(self, x) -> tuple[torch.Tensor, torch.Tensor | None, bool]:
        if isinstance(x, (list, tuple)):
            if not self.mixed_sizes:
                raise AdvexError(
                    f"{type(self).__name__} takes a (N, C, H, W) tensor of images of one size, got a list; "
                    "stack images of one size (Szegedy takes a list of photos of mixed sizes)"
                )
            if not x or not all(isinstance(im, torch.Tensor) and im.ndim == 3 for im in x):
                raise AdvexError("x must be a (N, C, H, W) tensor or a non-empty list of (C, H, W) tensors")
            for im in x:
                check_pixels(im[None])
            canvas, sizes = pack([im.detach() for im in x])
            return canvas, sizes, True
        check_pixels(x)
        return x, None, False

    def _batch(self, clf: Classifier, x: torch.Tensor, y: Labels, target: Targets, sizes) -> Batch:
        dev = clf.device
        x = x.detach().to(dev, torch.float32)
        n = x.shape[0]
        ref = clf.reference  # clean predictions in fp32, whatever the attack's passes run in
        first = None
        if sizes is None:  # the attack's images, and so all its passes, in the network's fast layout
            x = clf.fast_layout(x)
            if ref is clf and self.starts_at_clean():  # the clean pass is the first step's: keep its graph
                x = x.detach().requires_grad_(True)
                with torch.enable_grad():
                    first = FirstPass(x, check_logits(clf(x), n))
        if first is not None:
            z0, x = first.z.detach(), x.detach()
        else:
            z0 = ref(x, sizes) if sizes is not None else ref(x)
        z0 = check_logits(z0, n).float()
        if sizes is None and not clf.prefers_channels_last(x) and not x.is_contiguous():
            x, first = x.contiguous(), None  # e.g. it turned out to .view() its activations
        warn_if_probabilities(z0)
        k = z0.shape[1]
        yt = z0.argmax(1) if y is None else check_labels(y, n, k, dev)
        t = resolve_targets(clf, target, n, dev, k)
        return Batch(clf, x, yt, t, z0, self.adversarial, sizes, first)

    def _run(self, full: Batch, todo: torch.Tensor) -> Outcome:
        n = len(full)
        if todo.numel() == n:
            return self.run(full)
        first = full.take_first()  # the kept graph lives only as long as the batch using it
        if todo.numel() == 0:
            return Outcome(full.x.clone(), logits=full.logits)
        sub = full.subset(todo)
        if first is not None and 3 * todo.numel() >= 2 * n:
            # it is differentiated over all n images (a backward ~ 2 forwards): with fewer than
            # 2/3 of them left, a fresh first pass over those is cheaper
            sub.first = first.subset(todo)
        out = self.run(sub)
        x_adv = full.x.clone()
        x_adv[todo] = out.x_adv
        evals = None
        if out.evals is not None:
            evals = torch.zeros(n, dtype=torch.long, device=full.device)
            evals[todo] = out.evals.to(full.device)
        success = None
        if out.success is not None:
            success = torch.ones(n, dtype=torch.bool, device=full.device)
            success[todo] = out.success.to(full.device)
        extra = {k: _scatter(v, todo, n) for k, v in out.extra.items()}
        logits = None
        if out.logits is not None:
            logits = full.logits.clone()
            logits[todo] = out.logits
        return Outcome(x_adv, evals, success, extra, logits)

    def _result(self, full: Batch, todo: torch.Tensor, out: Outcome, ragged: bool, start: float) -> AttackResult:
        fast = full.model.reference is not full.model  # reduced precision: re-predict in fp32
        za = None if fast else out.logits
        if za is None:
            za = full.logits.clone()
            if todo.numel():
                za[todo] = full.forward(out.x_adv[todo], todo, reference=True)
        pa = za.softmax(-1)
        conf_a, label_a = pa.max(-1)
        conf0, label0 = full.logits.softmax(-1).max(-1)
        ok = full.hit(za) if out.success is None else out.success
        if fast and out.success is not None:
            ok = ok & full.hit(za)
        norms = perturbation_norms(out.x_adv - full.x, full.numel)
        n = len(full)
        evals = out.evals if out.evals is not None else torch.zeros(n, dtype=torch.long)
        extra = dict(out.extra)
        if full.targeted:
            extra.setdefault("target_confidence", pa.gather(1, full.target[:, None]).squeeze(1))
        # contiguous, whatever memory layout the passes ran in
        x_adv = unpack(out.x_adv, full.sizes) if ragged else out.x_adv.contiguous()
        return AttackResult(
            x_adv=x_adv,
            success=ok.cpu(),
            label=label0.cpu(),
            confidence=conf0.cpu(),
            label_adv=label_a.cpu(),
            confidence_adv=conf_a.cpu(),
            target=full.target.cpu() if full.target is not None else None,
            l0=norms["l0"].cpu(),
            l2=norms["l2"].cpu(),
            linf=norms["linf"].cpu(),
            rms=norms["rms"].cpu(),
            grad_evals=evals.cpu(),
            time_s=time.perf_counter() - start,
            extra={k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in extra.items()},
        )


def _scatter(v: Any, rows: torch.Tensor, n: int) -> Any:
    """A per-image value of the attacked ``rows`` spread over all n images: float tensors
    NaN, other tensors zero, lists empty for the images left out; anything else as it is."""
    if isinstance(v, torch.Tensor) and v.ndim >= 1 and v.shape[0] == rows.numel():
        fill = float("nan") if v.is_floating_point() else 0
        full = torch.full((n, *v.shape[1:]), fill, dtype=v.dtype, device=v.device)
        full[rows.to(v.device)] = v
        return full
    if isinstance(v, list) and len(v) == rows.numel():
        full_list: list[Any] = [[] for _ in range(n)]
        for r, item in zip(rows.tolist(), v):
            full_list[r] = item
        return full_list
    return v


def resolve_targets(
    model: Classifier, target: Targets, n: int, device: torch.device, num_classes: int | None = None
) -> torch.Tensor | None:
    """A (N,) long tensor of target classes from an index, a name, or one per image."""
    if target is None:
        return None
    if isinstance(target, torch.Tensor):
        if target.is_floating_point() or target.dtype == torch.bool:
            raise AdvexError(f"targets must be class indices (integers) or names, got a {target.dtype} tensor")
        t = target.to(device=device, dtype=torch.long).flatten()
        if t.numel() == 1:
            t = t.expand(n).clone()
    elif isinstance(target, (int, str)):
        t = torch.full((n,), model.class_index(target), dtype=torch.long, device=device)
    else:
        t = torch.tensor([model.class_index(v) for v in target], dtype=torch.long, device=device)
    if t.numel() != n:
        raise AdvexError(f"got {t.numel()} targets for {n} images; give one target or one per image")
    k = model.num_classes if model.num_classes is not None else num_classes
    if k is not None and ((t < 0) | (t >= k)).any():
        raise AdvexError(f"target class out of range: the model has {k} classes")
    return t


def warn_if_probabilities(logits: torch.Tensor) -> None:
    """Warn when a model's outputs look like probabilities: the losses here need logits."""
    z = logits.detach().float()
    if z.ndim == 2 and z.shape[1] > 1 and (z >= 0).all() and (z <= 1).all():
        if torch.allclose(z.sum(1), torch.ones(z.shape[0], device=z.device), atol=1e-3):
            warnings.warn(
                "the model's outputs are non-negative and sum to 1: it seems to return probabilities; "
                "attacks need logits (remove the final softmax)",
                AdvexWarning,
                stacklevel=4,
            )


def warn_if_255(eps: float, norm: str) -> None:
    """Warn when an L-inf radius looks like 0-255 units (pixels are in [0, 1])."""
    if norm == "linf" and eps > 1:
        warnings.warn(
            f"eps={eps} for L-inf is larger than the whole [0, 1] pixel range; eps is in [0, 1] "
            f"units (did you mean {eps}/255 = {eps / 255:.4f}?)",
            AdvexWarning,
            stacklevel=3,
        )


__all__ = [
    "Attack",
    "AttackResult",
    "Batch",
    "Outcome",
    "argmax_criterion",
    "margin",
    "perturbation_norms",
    "resolve_targets",
]
