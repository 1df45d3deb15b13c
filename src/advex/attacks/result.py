"""The result every per-image attack returns: ``AttackResult``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch


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
