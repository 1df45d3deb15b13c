"""The face of certify: ``bounds`` and ``certify`` (the certifiers behind one call, with their
soundness checked), and ``worst_case_logits`` (the bounds as a differentiable loss, for
certified training)."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, replace

import torch
from torch import nn

from advex.certify.bab import FALSIFIED, VERIFIED, Problem, Verifier, check_settings
from advex.certify.bab import Settings as BabSettings
from advex.certify.bounds import TRAINING_METHODS, InputSet, check_method, paired_bounds, spec_bounds, training_margins
from advex.certify.graph import trace
from advex.errors import AdvexError, AdvexWarning
from advex.models import as_classifier, check_labels, check_pixels, frozen


class UnsoundBound(AdvexError):
    """A bound that a concrete input violates: a bug, never a result."""


@dataclass
class Bounds:
    """Lower and upper bounds (N, K) on every logit over the input set."""

    lower: torch.Tensor
    upper: torch.Tensor
    method: str
    eps: float
    norm: str
    time_s: float


@dataclass
class CertifyResult:
    """Per sample: ``certified`` (correct and every margin z_y - z_j provably > 0),
    ``lower`` (N, K) margin lower bounds (+inf at the true class), ``correct`` (clean),
    and with the attack, ``attacked`` (correct and not broken by PGD: an upper bound on
    the robust accuracy, where ``certified`` is a lower bound)."""

    certified: torch.Tensor
    lower: torch.Tensor
    correct: torch.Tensor
    attacked: torch.Tensor | None
    method: str
    eps: float
    norm: str
    time_s: float
    attack_time_s: float = 0.0
    x_adv: torch.Tensor | None = None  # the PGD points, reusable by another method's check
    # method="bab": per sample "verified", "falsified" or "timeout", the search's seconds and
    # domains, and for each falsified sample a counterexample inside the ball (re-checked)
    status: list[str] | None = None
    search_s: list[float] | None = None
    domains: list[int] | None = None
    counterexamples: dict[int, torch.Tensor] | None = None

    def __len__(self) -> int:
        return int(self.certified.numel())

    @property
    def certified_accuracy(self) -> float:
        return float(self.certified.float().mean())

    @property
    def clean_accuracy(self) -> float:
        return float(self.correct.float().mean())

    @property
    def attacked_accuracy(self) -> float | None:
        return None if self.attacked is None else float(self.attacked.float().mean())

    def rows(self) -> list[dict]:
        out = []
        for i in range(len(self)):
            m = self.lower[i]
            finite = m[torch.isfinite(m)]
            out.append(
                {
                    "correct": bool(self.correct[i]),
                    "certified": bool(self.certified[i]),
                    "attacked_robust": None if self.attacked is None else bool(self.attacked[i]),
                    "min_margin_lower_bound": round(float(finite.min()), 6) if finite.numel() else None,
                }
            )
            if self.status is not None:
                out[-1].update(status=self.status[i], search_s=round(self.search_s[i], 3), domains=self.domains[i])
        return out

    @property
    def undecided(self) -> float | None:
        """method="bab": the fraction of samples that timed out."""
        return None if self.status is None else sum(s == "timeout" for s in self.status) / max(len(self), 1)


def margin_spec(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(N, K-1, K): row j is e_y - e_j for each class j != y."""
    n = y.numel()
    eye = torch.eye(num_classes, device=y.device)
    C = eye[y].unsqueeze(1) - eye.unsqueeze(0)  # (N, K, K): row j = e_y - e_j
    keep = torch.ones(n, num_classes, dtype=torch.bool, device=y.device)
    keep[torch.arange(n, device=y.device), y] = False
    return C[keep].view(n, num_classes - 1, num_classes)


def _prepare(model: nn.Module, x: torch.Tensor, eps, norm: str, method: str, slope: str):
    if method == "bab":
        if norm != "linf":
            raise AdvexError("branch and bound (method='bab') verifies L-inf balls; for L2 use crown or alpha-crown")
        method = "alpha-crown"
    check_method(method, norm, slope, eps)
    clf = as_classifier(model)
    check_pixels(x)
    if any(m.training for m in clf.modules() if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.Dropout))):
        warnings.warn(
            "the model is in training mode: bounds are computed for eval mode (BatchNorm running statistics, "
            "no dropout); the model's mode is left as it was",
            AdvexWarning,
            stacklevel=3,
        )
    return clf, x.detach().to(clf.device, torch.float32)


def _chunks(n: int, batch_size: int | None):
    bs = batch_size or 256
    if bs < 1:
        raise AdvexError(f"batch_size must be >= 1, got {batch_size}")
    return [slice(s, s + bs) for s in range(0, n, bs)]


def bounds(
    model: nn.Module,
    x: torch.Tensor,
    *,
    eps: float,
    norm: str = "linf",
    method: str = "crown",
    slope: str = "crown",
    alpha_steps: int = 20,
    C: torch.Tensor | None = None,
    intersect_ibp: bool = True,
    batch_size: int | None = None,
) -> Bounds:
    """Lower/upper bounds on the logits (or on C z for a spec C (N, S, K)) of ``model``
    over the ``norm`` ball of radius ``eps`` around each x, clipped to [0, 1].

    ``slope="wong-kolter"`` with ``intersect_ibp=False`` is exactly the dual bound of Wong &
    Kolter (2018). By default only the neurons IBP leaves unstable are back-substituted and
    every bound is intersected with IBP's: usually much tighter on IBP-trained networks, and
    faster; with the Wong-Kolter slope (which depends on the intermediate bounds) a few final
    bounds can come out slightly looser than the exact dual."""
    start = time.perf_counter()
    if method == "bab":
        raise AdvexError("method='bab' decides each sample, it bounds no logits: use certify(..., method='bab'); "
                         "bounds() takes ibp, crown or alpha-crown")  # fmt: skip
    clf, x = _prepare(model, x, eps, norm, method, slope)
    lows, ups = [], []
    with frozen(clf), torch.no_grad():
        nodes = trace(clf, tuple(x.shape[1:]))
        k = nodes[-1].shape[0]
        for sl in _chunks(x.shape[0], batch_size):
            xb = x[sl]
            spec = torch.eye(k, device=x.device).expand(xb.shape[0], k, k) if C is None else C[sl].to(x)
            s = spec.shape[1]
            if method == "crown" and slope == "wong-kolter":  # one pass gives both sides
                lo, hi = paired_bounds(nodes, InputSet.ball(xb, eps, norm), spec, intersect_ibp)
                lows.append(lo)
                ups.append(hi)
                continue
            lb = spec_bounds(nodes, InputSet.ball(xb, eps, norm), torch.cat([spec, -spec], 1), method=method,
                             slope=slope, alpha_steps=alpha_steps, intersect_ibp=intersect_ibp)  # fmt: skip
            lows.append(lb[:, :s])
            ups.append(-lb[:, s:])
    return Bounds(torch.cat(lows).cpu(), torch.cat(ups).cpu(), method, float(eps), norm, time.perf_counter() - start)


def certify(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: str = "linf",
    method: str = "crown",
    slope: str = "crown",
    alpha_steps: int = 20,
    attack: bool = True,
    attack_steps: int = 50,
    x_adv: torch.Tensor | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    timeout: float = 60.0,
    bab: BabSettings | None = None,
) -> CertifyResult:
    """Certify each (x, y) against every perturbation in the ``norm`` ball of radius ``eps``
    (clipped to [0, 1]) with ``method`` ("ibp", "crown", "alpha-crown", "bab").

    ``method="alpha-crown"`` optimises the ReLU slopes of every bound, intermediate layers'
    included (:mod:`advex.certify.alpha`), for the inputs CROWN does not already prove; the
    margins of those it proves are CROWN's bounds.

    ``method="bab"`` (L-inf) is complete verification by branch and bound
    (:mod:`advex.certify.bab`): alpha-CROWN and PGD first, the Square attack on what they
    leave open (``bab.square_queries`` queries), then, for each sample none settles, a search
    of at most ``timeout`` seconds (``bab`` for its other settings) that ends
    it verified, falsified (a counterexample in ``counterexamples``, re-checked by a fresh fp32
    pass) or timed out; ``status`` says which. ``certified`` is the verified samples,
    ``attacked`` those not falsified.

    With ``attack`` (the default), PGD attacks the same inputs: ``attacked`` is the
    empirical robust accuracy, and every bound is checked against the clean and the PGD
    points -- a violated bound, or a certified sample that PGD breaks, raises
    :class:`UnsoundBound`. ``x_adv`` gives attack points already found (e.g. the
    ``x_adv`` of another method's result on the same inputs) instead of running PGD again.
    """
    start = time.perf_counter()
    clf, x = _prepare(model, x, eps, norm, method, slope)
    settings = None
    if method == "bab":
        settings = replace(bab or BabSettings(), timeout=timeout if bab is None else bab.timeout)
        check_settings(settings)
        attack = True  # the search starts from what PGD leaves
    bound_method = "alpha-crown" if method == "bab" else method
    lows, correct = [], []
    with frozen(clf), torch.no_grad():
        nodes = trace(clf, tuple(x.shape[1:]))
        k = nodes[-1].shape[0]
        y = check_labels(y, x.shape[0], k, x.device)
        for sl in _chunks(x.shape[0], batch_size):
            xb, yb = x[sl], y[sl]
            correct.append(clf(xb).argmax(1) == yb)
            lows.append(spec_bounds(nodes, InputSet.ball(xb, eps, norm), margin_spec(yb, k), method=bound_method,
                                    slope=slope, alpha_steps=alpha_steps, skip_proven=True))  # fmt: skip
    margins_lb = torch.cat(lows)
    ok = torch.cat(correct)
    certified = ok & (margins_lb > 0).all(1)
    full = torch.full((x.shape[0], k), float("inf"), device=x.device)
    keep = torch.ones_like(full, dtype=torch.bool)
    keep[torch.arange(x.shape[0]), y] = False
    full[keep] = margins_lb.flatten()
    bound_time = time.perf_counter() - start
    attacked, attack_time = None, 0.0
    if attack or x_adv is not None:
        t0 = time.perf_counter()
        if x_adv is None:
            from advex.attacks import PGD

            x_adv = PGD(eps=eps, steps=attack_steps, norm=norm, seed=seed, early_stop=False)(clf, x, y).x_adv
        x_adv = x_adv.to(x.device)
        if x_adv.shape != x.shape:
            raise AdvexError(f"x_adv has shape {tuple(x_adv.shape)}, x has {tuple(x.shape)}")
        broken = _check_sound(clf, x, y, x_adv, full, keep, certified, method)
        attack_time = time.perf_counter() - t0
        attacked = (ok & ~broken).cpu()
        x_adv = x_adv.cpu()
    search = None
    if method == "bab":
        with frozen(clf):
            broken, x_adv = _square(clf, x, y, eps, ok & ~certified & ~broken, broken, x_adv, settings, seed)
            search = _search(clf, nodes, x, y, eps, margins_lb, ok, certified, broken, x_adv, settings)
        certified = torch.tensor([s == VERIFIED for s in search[0]])
        attacked = torch.tensor([s != FALSIFIED for s in search[0]])
    return CertifyResult(
        certified=certified.cpu(),
        lower=full.cpu(),
        correct=ok.cpu(),
        attacked=attacked,
        method=method,
        eps=float(eps),
        norm=norm,
        time_s=bound_time,
        attack_time_s=attack_time,
        x_adv=x_adv,
        **({} if search is None else dict(zip(("status", "search_s", "domains", "counterexamples"), search))),
    )


def _square(clf, x, y, eps, open_, broken, x_adv, settings, seed):
    """The Square attack (black-box: blind to masked gradients) on the samples alpha-CROWN and
    PGD leave open, all at once, before any search: what it breaks (re-checked by a fresh
    pass, in the ball) is falsified without a search."""
    if not settings.square_queries or not bool(open_.any()):
        return broken, x_adv
    from advex.attacks import Square

    idx = open_.nonzero().flatten()
    got = Square(eps=eps, queries=settings.square_queries, seed=seed)(clf, x[idx], y[idx]).x_adv.to(x.device)
    with torch.no_grad():
        wrong = clf(got).argmax(1) != y[idx]
    inside = ((got - x[idx]).flatten(1).abs().amax(1) <= eps + 1e-6) & (got.flatten(1).amin(1) >= 0)
    hit = wrong & inside & (got.flatten(1).amax(1) <= 1)
    if bool(hit.any()):
        broken, x_adv = broken.clone(), x_adv.clone()
        broken[idx[hit]] = True
        x_adv[idx[hit].cpu()] = got[hit].cpu()
    return broken, x_adv


def _search(clf, nodes, x, y, eps, margins_lb, ok, certified, broken, x_adv, settings):
    """Branch and bound on each sample that alpha-CROWN (``certified``) and PGD (``broken``)
    leave open; the others are settled as they stand (a clean mistake is its own
    counterexample). Returns the status, seconds, domains and counterexamples per sample."""
    verifier = Verifier(nodes, clf, settings)
    status, seconds, domains, cex = [], [], [], {}
    k = nodes[-1].shape[0]
    for i in range(x.shape[0]):
        t0 = time.perf_counter()
        if not ok[i]:
            status.append(FALSIFIED)
            cex[i] = x[i].cpu()
            n = 0
        elif certified[i]:
            status.append(VERIFIED)
            n = 0
        elif broken[i]:
            status.append(FALSIFIED)
            cex[i] = x_adv[i]
            n = 0
        else:
            C = margin_spec(y[i : i + 1], k)[0]
            open_ = margins_lb[i] <= 0  # the margins alpha-CROWN proved stay proved in every domain
            xi = x[i : i + 1]
            lo, hi = (xi - eps).clamp(0, 1), (xi + eps).clamp(0, 1)
            got = verifier.verify(Problem(lo, hi, C[open_], torch.zeros(int(open_.sum()), device=x.device)))
            status.append(got.status)
            n = got.domains
            if got.status == FALSIFIED:
                cex[i] = got.counterexample.cpu()
        seconds.append(time.perf_counter() - t0)
        domains.append(n)
    if cex:  # every counterexample, once more, in one pass: in the ball, and misclassified
        ids = list(cex)
        pts = torch.stack([cex[i] for i in ids]).to(x.device).float()
        with torch.no_grad():
            wrong = clf(pts).argmax(1) != y[ids]
        flat = pts.flatten(1)
        inside = ((pts - x[ids]).flatten(1).abs().amax(1) <= eps + 1e-6) & (flat.amin(1) >= 0) & (flat.amax(1) <= 1)
        if not bool((wrong & inside).all()):
            i = ids[int((~(wrong & inside)).nonzero()[0])]
            raise UnsoundBound(f"the counterexample of sample {i} does not hold up in a fresh pass; please report this")
    return status, seconds, domains, cex


def _check_sound(clf, x, y, x_adv, lower, keep, certified, method: str) -> torch.Tensor:
    """Every margin lower bound (N, K) against the margins at the clean and the attack points,
    and every certified sample against the attack: a violation raises :class:`UnsoundBound`.
    Returns which samples the attack broke."""
    with frozen(clf), torch.no_grad():
        pred_adv = None
        for name, pts in (("the clean input", x), ("the attack point", x_adv)):
            z = clf(pts).float()
            pred_adv = z.argmax(1)
            m = z.gather(1, y[:, None]) - z  # (N, K) margins, 0 at y
            bad = keep & (m < lower - 1e-4 * (1 + lower.abs().where(keep, torch.zeros_like(lower))))
            if bad.any():
                i = int(bad.any(1).nonzero()[0])
                raise UnsoundBound(
                    f"{method} bound violated at {name} of sample {i}: margin {float(m[i][bad[i]].min()):.6g} "
                    f"below its lower bound {float(lower[i][bad[i]].min()):.6g}; please report this"
                )
    broken = pred_adv != y
    if (certified & broken).any():
        i = int((certified & broken).nonzero()[0])
        raise UnsoundBound(f"sample {i} is certified by {method} but the attack broke it; please report this")
    return broken


def worst_case_logits(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    method: str = "ibp",
    beta: float = 1.0,
    batch_stats: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> torch.Tensor:
    """The worst-case logits (N, K) of ``model`` over the L-inf ball of radius ``eps`` around
    each x (clipped to [0, 1]): -(lower bound of z_y - z_j) for each class j, 0 at y. Their
    cross-entropy with y is the robust loss of certified training; differentiable in the
    model's parameters.

    ``method``: ``"ibp"`` (Gowal et al. 2019), ``"crown-ibp"`` (Zhang et al. 2020: beta *
    CROWN-IBP + (1 - beta) * IBP, ``beta`` used by this method only) or ``"convex"`` (the dual
    bound of Wong & Kolter 2018). ``batch_stats``: from :func:`batchnorm_stats` around the clean
    forward pass, so training-mode BatchNorm is bounded with that batch's statistics (Shi et al.
    2021); without it, BatchNorm must be in eval mode."""
    if method not in TRAINING_METHODS:
        raise AdvexError(f"unknown certified-training method {method!r}; use one of {', '.join(TRAINING_METHODS)}")
    nodes = trace(model, tuple(x.shape[1:]), detach=False, batch_stats=batch_stats)
    k = nodes[-1].shape[0]
    lb = training_margins(nodes, x, eps, margin_spec(y, k), method, beta)
    worst = torch.zeros(len(y), k, device=x.device, dtype=lb.dtype)
    keep = torch.ones_like(worst, dtype=torch.bool)
    keep[torch.arange(len(y), device=x.device), y] = False
    return worst.masked_scatter(keep, -lb)
