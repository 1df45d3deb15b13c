"""A VNNLIB property of a network, decided: ``unsat`` (no input of the box reaches the unsafe
region: verified), ``sat`` (a counterexample, re-checked) or ``timeout``, as VNN-COMP asks.

The property's unsafe region is a disjunction of conjunctions of atoms ``coef . Y + const <=
0``; each conjunction becomes one group of branch-and-bound specs ``coef . Y + const > 0``
(:class:`~advex.certify.bab.Problem`): the property holds when every group has a spec > 0 at
every point of the box. A property with several input boxes (regions) is decided box by box,
within one time limit. The box is rounded outward to fp32 for the proof and a counterexample
is taken inside the box as written (rounded inward), then checked once more in a fresh pass.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import torch
from torch import nn

from advex.certify.bab import FALSIFIED, VERIFIED, Problem, Settings, Verifier, check_settings
from advex.certify.graph import trace
from advex.certify.vnnlib import Property, Region
from advex.errors import AdvexError
from advex.models import frozen

UNSAT, SAT, TIMEOUT = "unsat", "sat", "timeout"


@dataclass
class Verdict:
    """``result`` (unsat / sat / timeout); for sat the counterexample ``x`` (flat inputs) and the
    network's outputs ``y`` there; the seconds, the domains bounded and why it stopped."""

    result: str
    x: torch.Tensor | None
    y: torch.Tensor | None
    time_s: float
    domains: int = 0
    reason: str = ""

    def vnncomp(self) -> str:
        """The VNN-COMP result file: the result on the first line, and for sat the assignment
        ``((X_0 v) ... (Y_0 v) ...)``."""
        if self.result != SAT:
            return self.result + "\n"
        pairs = [f"(X_{i} {float(v)!r})" for i, v in enumerate(self.x.tolist())]
        pairs += [f"(Y_{i} {float(v)!r})" for i, v in enumerate(self.y.tolist())]
        return "sat\n(" + "\n ".join(pairs) + ")\n"


def _f32(t: torch.Tensor, outward: bool, side: str) -> torch.Tensor:
    """A float64 bound in fp32, rounded so the fp32 box contains (outward) or lies in (inward)
    the float64 one."""
    f = t.float()
    up = side == "upper"
    toward = torch.full_like(f, float("inf") if up == outward else float("-inf"))
    short = f.double() < t if up == outward else f.double() > t
    return torch.where(short, torch.nextafter(f, toward), f)


def problem(region: Region, in_shape: tuple[int, ...], device) -> Problem:
    """The branch-and-bound problem of one region of a property for inputs of ``in_shape``: its
    box rounded outward to fp32, and one group of specs per conjunction of its unsafe region."""
    n = int(torch.Size(in_shape).numel())
    if region.lower.numel() != n:
        raise AdvexError(f"the property bounds {region.lower.numel()} inputs, the network takes {n} {tuple(in_shape)}")
    lo = _f32(region.lower, True, "lower").view(1, *in_shape).to(device)
    hi = _f32(region.upper, True, "upper").view(1, *in_shape).to(device)
    atoms = [(c, d, g) for g, conj in enumerate(region.unsafe) for c, d in conj]
    C = torch.stack([c for c, _, _ in atoms]).float().to(device)
    d = torch.tensor([d for _, d, _ in atoms], dtype=torch.float32, device=device)
    groups = torch.tensor([g for _, _, g in atoms], dtype=torch.long, device=device)
    return Problem(lo, hi, C, d, groups)


def verify(
    net: nn.Module,
    prop: Property,
    *,
    in_shape: tuple[int, ...] | None = None,
    timeout: float = 60.0,
    bab: Settings | None = None,
) -> Verdict:
    """Decide ``prop`` for ``net`` by branch and bound (:mod:`advex.certify.bab`) within
    ``timeout`` seconds in all: unsat when every region of the property is verified, sat at the
    first counterexample. ``in_shape``: one input's shape (an ONNX
    :class:`~advex.models.Graph` knows its own)."""
    t0 = time.perf_counter()
    in_shape = tuple(in_shape or getattr(net, "in_shape", None) or ())
    if not in_shape:
        raise AdvexError("verify needs in_shape, the shape of one input (an ONNX network knows its own)")
    settings = replace(bab or Settings(), timeout=timeout)
    check_settings(settings)
    nodes = trace(net, in_shape)
    k = nodes[-1].shape[0]
    if prop.outputs != k:
        raise AdvexError(f"the property speaks of {prop.outputs} outputs, the network gives {k}")
    p0 = next(iter(net.parameters()), None)
    device = p0.device if p0 is not None else torch.device("cpu")
    domains, reasons = 0, []
    for region in prop.regions:
        left = timeout - (time.perf_counter() - t0)
        if left <= 0:
            reasons.append("no time left for the next input box")
            break
        v = _decide(net, nodes, region, in_shape, device, replace(settings, timeout=left))
        domains += v.domains
        if v.result == SAT:
            return replace(v, time_s=time.perf_counter() - t0, domains=domains)
        if v.result == TIMEOUT:
            reasons.append(v.reason)
            break
    if len(reasons) == 0:
        return Verdict(UNSAT, None, None, time.perf_counter() - t0, domains)
    where = f" (input box {prop.regions.index(region) + 1} of {len(prop.regions)})" if len(prop.regions) > 1 else ""
    return Verdict(TIMEOUT, None, None, time.perf_counter() - t0, domains, reasons[0] + where)


def _decide(net, nodes, region: Region, in_shape, device, settings: Settings) -> Verdict:
    """One region: its box and the unsafe conjunctions there."""
    t0 = time.perf_counter()
    lo_in = _f32(region.lower, False, "lower").view(1, *in_shape).to(device)
    hi_in = _f32(region.upper, False, "upper").view(1, *in_shape).to(device)
    if bool((lo_in > hi_in).any()):  # a box thinner than fp32 can hold: take the fp32 nearest its lower side
        hi_in = torch.maximum(hi_in, lo_in)

    def sat(x: torch.Tensor, domains: int = 0) -> Verdict:
        with torch.no_grad():
            y = net(x.view(1, *in_shape).float())[0].float()
        return Verdict(SAT, x.flatten().cpu(), y.cpu(), time.perf_counter() - t0, domains)

    if any(not conj for conj in region.unsafe):  # a conjunction of nothing: every point is unsafe
        return sat((lo_in + hi_in) / 2)
    p = problem(region, in_shape, device)
    with frozen(net):
        got = Verifier(nodes, net, settings).verify(p)
    if got.status == VERIFIED:
        return Verdict(UNSAT, None, None, time.perf_counter() - t0, got.domains)
    if got.status == FALSIFIED:
        x = torch.maximum(torch.minimum(got.counterexample.view(1, *in_shape), hi_in), lo_in)
        with torch.no_grad():
            still = p.worst(net(x).float() @ p.C.T + p.d) <= 0
        if bool(still.all()):
            return sat(x, got.domains)
        return Verdict(TIMEOUT, None, None, time.perf_counter() - t0, got.domains,
                       "a counterexample on the fp32 box's edge left the property's box")  # fmt: skip
    return Verdict(TIMEOUT, None, None, time.perf_counter() - t0, got.domains, got.reason)
