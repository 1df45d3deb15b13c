"""What every attack shares: the result type, target resolution, and model handling."""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from advex.errors import AdvexError, AdvexWarning
from advex.models.classifier import Classifier, as_classifier, check_pixels, frozen  # noqa: F401 - re-exported

Label = int | str
Targets = Label | Sequence[Label] | torch.Tensor | None


@dataclass
class AttackResult:
    """The outcome of an attack on a batch.

    ``x_adv`` has the form of the input: a (N, C, H, W) tensor, or a list of (C, H, W)
    tensors for a batch of mixed-size images. Per-image fields are (N,) tensors.
    Norms are of ``x_adv - x`` with pixels in [0, 1]; ``rms`` is Szegedy et al.'s
    distortion sqrt(mean(r^2)).
    """

    x_adv: torch.Tensor | list[torch.Tensor]
    success: torch.Tensor
    label: torch.Tensor  # prediction on the clean input
    confidence: torch.Tensor
    label_adv: torch.Tensor
    confidence_adv: torch.Tensor
    target: torch.Tensor | None
    l0: torch.Tensor
    l2: torch.Tensor
    linf: torch.Tensor
    rms: torch.Tensor
    grad_evals: torch.Tensor  # forward+backward passes spent on each image
    time_s: float
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.success.numel())

    @property
    def success_rate(self) -> float:
        return float(self.success.float().mean()) if len(self) else 0.0

    def rows(self, classes: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """One JSON-ready dict per image."""

        def name(i: int) -> str:
            return classes[i] if classes is not None else str(i)

        out = []
        for i in range(len(self)):
            row = {
                "label": int(self.label[i]),
                "label_name": name(int(self.label[i])),
                "confidence": round(float(self.confidence[i]), 6),
                "label_adv": int(self.label_adv[i]),
                "label_adv_name": name(int(self.label_adv[i])),
                "confidence_adv": round(float(self.confidence_adv[i]), 6),
                "target": None if self.target is None else int(self.target[i]),
                "success": bool(self.success[i]),
                "l0": int(self.l0[i]),
                "l2": round(float(self.l2[i]), 6),
                "linf": round(float(self.linf[i]), 6),
                "linf_255": round(float(self.linf[i]) * 255, 3),
                "rms": round(float(self.rms[i]), 7),
                "grad_evals": int(self.grad_evals[i]),
            }
            for k, v in self.extra.items():
                if isinstance(v, torch.Tensor) and v.ndim == 1 and v.numel() == len(self):
                    row[k] = v[i].item()
                elif isinstance(v, list) and len(v) == len(self):  # per-image JSON-ready values
                    row[k] = v[i]
            out.append(row)
        return out

    def to_json(self, classes: Sequence[str] | None = None) -> str:
        return json.dumps(
            {"time_s": self.time_s, "success_rate": self.success_rate, "images": self.rows(classes)}, indent=2
        )


def resolve_targets(model: Classifier, target: Targets, n: int, device: torch.device) -> torch.Tensor | None:
    """A (N,) long tensor of target classes from an index, a name, or one per image."""
    if target is None:
        return None
    if isinstance(target, torch.Tensor):
        t = target.to(device=device, dtype=torch.long).flatten()
        if t.numel() == 1:
            t = t.expand(n).clone()
    elif isinstance(target, (int, str)):
        t = torch.full((n,), model.class_index(target), dtype=torch.long, device=device)
    else:
        t = torch.tensor([model.class_index(v) for v in target], dtype=torch.long, device=device)
    if t.numel() != n:
        raise AdvexError(f"got {t.numel()} targets for {n} images; give one target or one per image")
    k = model.num_classes
    if k is not None and ((t < 0) | (t >= k)).any():
        raise AdvexError(f"target class out of range: the model has {k} classes")
    return t


def perturbation_norms(r: torch.Tensor, numel: torch.Tensor) -> dict[str, torch.Tensor]:
    """L0 (changed pixel values), L2, Linf and RMS of a (N, ...) perturbation.

    ``numel`` is the count of real (unpadded) values per image, for the RMS.
    """
    flat = r.flatten(1).float()
    l2 = flat.norm(dim=1)
    return {
        "l0": (flat.abs() > 1e-12).sum(1),
        "l2": l2,
        "linf": flat.abs().amax(1) if flat.shape[1] else torch.zeros_like(l2),
        "rms": l2 / numel.to(l2).sqrt(),
    }


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


@dataclass
class Setup:
    """What every attack on a batch starts from: the inputs on the model's device, the clean
    prediction, the labels to move away from (``y``) and the targets to move to (if any)."""

    clf: Classifier
    x: torch.Tensor
    label: torch.Tensor
    confidence: torch.Tensor
    y: torch.Tensor
    target: torch.Tensor | None
    start: float
    logits: torch.Tensor | None = None  # of the clean inputs

    @property
    def num_classes(self) -> int:
        return int(self.logits.shape[1]) if self.logits is not None else 0

    @property
    def targeted(self) -> bool:
        return self.target is not None

    @property
    def goal(self) -> torch.Tensor:
        """The class whose loss the attack works on: the target, or the true label."""
        return self.target if self.target is not None else self.y

    def hit(self, z: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """Success of logits ``z`` for images ``idx`` (all if None)."""
        goal = self.goal if idx is None else self.goal[idx]
        pred = z.argmax(1)
        return pred == goal if self.targeted else pred != goal


def setup(clf: Classifier, x: torch.Tensor, y, target: Targets) -> Setup:
    """Check the inputs, predict them once, and resolve labels and targets (call inside ``frozen``)."""
    start = time.perf_counter()
    check_pixels(x)
    dev = clf.device
    x = x.detach().to(dev, torch.float32)
    n = x.shape[0]
    with torch.no_grad():
        z0 = clf(x).float()
    warn_if_probabilities(z0)
    conf0, label0 = z0.softmax(-1).max(-1)
    yt = label0 if y is None else torch.as_tensor(y, device=dev, dtype=torch.long).flatten()
    if yt.numel() != n:
        raise AdvexError(f"got {yt.numel()} labels y for {n} images")
    return Setup(clf, x, label0, conf0, yt, resolve_targets(clf, target, n, dev), start, z0)


def finish(
    s: Setup,
    x_adv: torch.Tensor,
    grad_evals: torch.Tensor,
    *,
    success: torch.Tensor | None = None,
    extra: dict[str, Any] | None = None,
) -> AttackResult:
    """Predict ``x_adv`` once and assemble the AttackResult (success from that prediction
    unless the attack gives its own)."""
    with torch.no_grad():
        za = s.clf(x_adv).float()
    conf_a, label_a = za.softmax(-1).max(-1)
    ok = s.hit(za) if success is None else success
    n = s.x.shape[0]
    norms = perturbation_norms(x_adv - s.x, torch.full((n,), s.x[0].numel(), device=s.x.device))
    return AttackResult(
        x_adv=x_adv,
        success=ok.cpu(),
        label=s.label.cpu(),
        confidence=s.confidence.cpu(),
        label_adv=label_a.cpu(),
        confidence_adv=conf_a.cpu(),
        target=s.target.cpu() if s.target is not None else None,
        l0=norms["l0"].cpu(),
        l2=norms["l2"].cpu(),
        linf=norms["linf"].cpu(),
        rms=norms["rms"].cpu(),
        grad_evals=grad_evals.cpu(),
        time_s=time.perf_counter() - s.start,
        extra={k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in (extra or {}).items()},
    )
