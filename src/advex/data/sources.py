"""TEMPORARY stub (replaced by the data-sources branch)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Batch:
    start: int
    stop: int
    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor
    skipped: list = field(default_factory=list)


class ImageFiles:
    pass


def open_images(path, classes=None, synonyms=None):
    raise NotImplementedError


def as_model_input(model):
    return lambda x: x


def stream(source, spans, prepare, *, workers=2, prefetch=2):
    for a, b in spans:
        x, y = source.floats(slice(a, b))
        yield Batch(a, b, x, y, torch.arange(a, b), [])
