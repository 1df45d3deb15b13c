"""Choosing the images to attack: the first ones the model gets right."""

from __future__ import annotations

import torch

from advex.errors import AdvexError
from advex.models import frozen


@torch.no_grad()
def first_correct(
    model, images: torch.Tensor, labels: torch.Tensor, n: int, *, exclude: int | None = None, batch_size: int = 1000
) -> torch.Tensor:
    """Indices of the first ``n`` images (uint8 or float in [0, 1]) the model classifies
    correctly, skipping those labelled ``exclude`` (e.g. the target of a targeted attack).
    Predicts in batches and stops as soon as it has ``n``."""
    if n < 1:
        raise AdvexError(f"n must be >= 1, got {n}")
    p = next(iter(model.parameters()), None)
    dev = p.device if p is not None else torch.device("cpu")
    chosen: list[torch.Tensor] = []
    have = 0
    for s in range(0, len(labels), batch_size):
        xb = images[s : s + batch_size].to(dev)
        xb = xb.float().div(255.0) if xb.dtype == torch.uint8 else xb.float()
        yb = labels[s : s + batch_size].to(dev)
        with frozen(model):
            ok = model(xb).argmax(1) == yb
        if exclude is not None:
            ok &= yb != exclude
        idx = ok.nonzero().flatten().cpu() + s
        chosen.append(idx[: n - have])
        have += chosen[-1].numel()
        if have >= n:
            break
    return torch.cat(chosen) if chosen else torch.zeros(0, dtype=torch.long)


@torch.no_grad()
def first_correct_in(
    model, source, n: int, *, exclude: int | None = None, batch_size: int = 1000, workers: int = 2
) -> tuple[torch.Tensor, list[tuple[str, str]]]:
    """Positions in ``source`` (an ``ArrayDataset`` or ``ImageFiles``) of the first ``n``
    readable images the model classifies correctly, skipping those labelled ``exclude``, and
    the files skipped as unreadable on the way. Forward passes only, streamed in batches at
    the model's input, stopping once it has ``n``: the cheap pass that fixes which images a
    long run attacks before it starts, the same in every torchrun process."""
    from advex.data import as_model_input, stream

    if n < 1:
        raise AdvexError(f"n must be >= 1, got {n}")
    dev = model.device
    spans = [(a, min(a + batch_size, len(source))) for a in range(0, len(source), batch_size)]
    chosen: list[torch.Tensor] = []
    skipped: list[tuple[str, str]] = []
    have = 0
    batches = stream(source, spans, as_model_input(model), workers=workers)
    try:
        for b in batches:
            skipped += b.skipped
            if len(b.y) == 0:
                continue
            with frozen(model):
                ok = model(b.x.to(dev)).argmax(1).cpu() == b.y
            if exclude is not None:
                ok &= b.y != exclude
            chosen.append(b.index[ok][: n - have])
            have += chosen[-1].numel()
            if have >= n:
                break
    finally:
        batches.close()
    return (torch.cat(chosen) if chosen else torch.zeros(0, dtype=torch.long)), skipped
