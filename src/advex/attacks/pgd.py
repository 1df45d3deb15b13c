"""Projected gradient descent in the L-inf ball (Madry et al. 2018), as a raw batched routine.

``pgd_linf`` returns adversarial inputs only; it is the inner maximisation that
adversarial training and robust-accuracy evaluation call thousands of times, so it does
no bookkeeping. It differentiates with respect to the input alone (parameter gradients
are never accumulated) and leaves the model's mode as it finds it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def pgd_linf(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float | torch.Tensor,
    step_size: float | torch.Tensor,
    steps: int,
    *,
    random_start: bool = True,
    generator: torch.Generator | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Maximise ``loss_fn(model(x + d), y)`` (default cross-entropy) over ``|d| <= eps``, x+d in [0, 1].

    Sign-gradient ascent of ``steps`` steps of ``step_size`` from a uniform random start
    in the ball (``random_start``). ``eps`` and ``step_size`` may be per-image tensors.
    """
    loss_fn = loss_fn or (lambda z, t: F.cross_entropy(z, t, reduction="sum"))
    eps_t = torch.as_tensor(eps, dtype=x.dtype, device=x.device).reshape(-1, *([1] * (x.ndim - 1)))
    alpha = torch.as_tensor(step_size, dtype=x.dtype, device=x.device).reshape(-1, *([1] * (x.ndim - 1)))
    x = x.detach()
    if random_start:
        u = torch.rand(x.shape, generator=generator, device=generator.device if generator else x.device)
        d = (2 * u.to(x.device, x.dtype) - 1) * eps_t
    else:
        d = torch.zeros_like(x)
    d = (x + d).clamp(0, 1) - x
    for _ in range(steps):
        d.requires_grad_(True)
        with torch.enable_grad():
            loss = loss_fn(model(x + d), y)
            (g,) = torch.autograd.grad(loss, d)
        with torch.no_grad():
            d = torch.maximum(torch.minimum(d + alpha * g.sign(), eps_t), -eps_t)
            d = (x + d).clamp(0, 1) - x
    return (x + d).detach()
