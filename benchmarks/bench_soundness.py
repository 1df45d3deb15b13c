"""Soundness and tightness of the certifiers on random and trained networks.

    python benchmarks/bench_soundness.py            # results/soundness.json
    python benchmarks/bench_soundness.py --n 20 --points 500

For each network, the first --n test images and for each --points points in its L-inf ball
(half of them vertices of the box, where linear pieces take their extremes; clipped to
[0, 1]), so n * points outputs per network (10,000 by default), plus the PGD point of each
image. For IBP, CROWN and alpha-CROWN: every sampled and PGD output must lie inside the logit
bounds of ``bounds`` and above the margin lower bounds of ``certify``, and no certified image
may be broken by PGD. Also reported: the mean margin lower bound of each method (tightness;
CROWN and alpha-CROWN must never be looser than IBP, checked per margin) and the certified
accuracy of each method on the same images.

Random networks: ``small`` (Wong et al., default PyTorch initialisation) and ``large``
(Shi et al.'s IBP initialisation: with PyTorch's, IBP leaves every neuron of it unstable
and CROWN takes tens of minutes for 20 images), a
narrow CNN7 (BatchNorm with random eval statistics, some negative scales) and a residual
network with average pooling; trained: the certified and adversarially trained zoo models.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from torch import nn

from advex.certify import bounds, certify
from advex.data.datasets import load_dataset
from advex.models import load
from advex.models.archs import Residual, cnn7, ibp_init, make_classifier

HERE = Path(__file__).resolve().parent


def _randomise_bn(net: nn.Module, g: torch.Generator) -> nn.Module:
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
                m.weight.copy_(torch.randn(m.num_features, generator=g))
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return net.eval()


def _ibp_large() -> nn.Module:
    clf = make_classifier("mnist", "large")
    ibp_init(clf.net)
    return clf.eval()


def networks(which: list[str] | None):
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    out = {
        "random small (MNIST)": lambda: (make_classifier("mnist", "small").eval(), "mnist", 0.02),
        "random large, IBP init (MNIST)": lambda: (_ibp_large(), "mnist", 0.01),
        "random CNN7, width 8 (CIFAR-10)": lambda: (
            _randomise_bn(cnn7(3, 32, 10, width=8, linear=64), g),
            "cifar10",
            1 / 255,
        ),
        "random residual + avg pool (CIFAR-10)": lambda: (
            nn.Sequential(
                nn.Conv2d(3, 8, 3, padding=1),
                Residual(nn.Sequential(nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))),
                nn.ReLU(),
                nn.AvgPool2d(2),
                Residual(
                    nn.Sequential(nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1)), nn.Conv2d(8, 16, 1, stride=2)
                ),
                nn.ReLU(),
                nn.AdaptiveAvgPool2d(2),
                nn.Flatten(),
                nn.Linear(64, 10),
            ).eval(),
            "cifar10",
            2 / 255,
        ),
        "mnist-small-ibp-0.1": lambda: (load("mnist-small-ibp-0.1", device="cpu"), "mnist", 0.1),
        "mnist-small-ibp-0.3": lambda: (load("mnist-small-ibp-0.3", device="cpu"), "mnist", 0.3),
        "mnist-small-pgd": lambda: (load("mnist-small-pgd", device="cpu"), "mnist", 0.1),
        "cifar10-small-pgd": lambda: (load("cifar10-small-pgd", device="cpu"), "cifar10", 2 / 255),
    }
    for extra in ("mnist-large-ibp-0.1", "mnist-large-ibp-0.3"):
        try:
            load(extra, device="cpu")
        except Exception:  # not registered yet
            continue
        eps = float(extra.rsplit("-", 1)[1])
        out[extra] = lambda name=extra, e=eps: (load(name, device="cpu"), "mnist", e)
    return {k: v for k, v in out.items() if not which or k in which}


def samples(x: torch.Tensor, eps: float, points: int, g: torch.Generator) -> torch.Tensor:
    d = (torch.rand((points, *x.shape), generator=g) * 2 - 1) * eps
    d[: points // 2] = torch.sign(d[: points // 2]) * eps
    return (x[None] + d).clamp(0, 1)  # (points, N, C, H, W)


def check(net, dataset: str, eps: float, n: int, points: int, data_dir) -> dict:
    x, y = load_dataset(dataset, "test", data_dir).subset(n).floats()
    g = torch.Generator().manual_seed(1)
    pts = samples(x, eps, points, g)
    with torch.no_grad():
        z = torch.cat([net(p) for p in pts]).view(points, n, -1)  # (P, N, K)
    k = z.shape[-1]
    margins = z.gather(2, y.view(1, n, 1).expand(points, n, 1)) - z  # (P, N, K): z_y - z_j
    rec: dict = {"dataset": dataset, "eps": eps, "images": n, "points": points * n, "methods": {}}
    lowers = {}
    for method in ("ibp", "crown", "alpha-crown"):
        t0 = time.perf_counter()
        b = bounds(net, x, eps=eps, method=method)
        res = certify(net, x, y, eps=eps, method=method, attack_steps=40)  # raises UnsoundBound on a violation
        dt = time.perf_counter() - t0
        with torch.no_grad():
            zp = net(res.x_adv)
        logit_viol = torch.maximum(b.lower[None] - z, z - b.upper[None]).clamp_min(0)
        pgd_viol = torch.maximum(b.lower - zp, zp - b.upper).clamp_min(0)
        finite = torch.isfinite(res.lower)
        margin_viol = (res.lower[None] - margins).clamp_min(0)[:, finite]
        broken = res.certified & ~res.attacked
        lowers[method] = res.lower
        rec["methods"][method] = {
            "logit_bound_violations": int((logit_viol > 1e-5).sum() + (pgd_viol > 1e-5).sum()),
            "margin_bound_violations": int((margin_viol > 1e-5).sum()),
            "worst_violation": float(max(logit_viol.max(), pgd_viol.max(), margin_viol.max())),
            "certified_but_broken_by_pgd": int(broken.sum()),
            "mean_margin_lower_bound": float(res.lower[finite].mean()),
            "certified_acc": res.certified_accuracy,
            "pgd_acc": res.attacked_accuracy,
            "clean_acc": res.clean_accuracy,
            "time_s": round(dt, 2),
        }
    fin = torch.isfinite(lowers["ibp"])
    rec["crown_looser_than_ibp"] = int((lowers["crown"][fin] < lowers["ibp"][fin] - 1e-5).sum())
    rec["alpha_looser_than_crown"] = int((lowers["alpha-crown"][fin] < lowers["crown"][fin] - 1e-5).sum())
    rec["margins"] = int(fin.sum())
    rec["classes"] = k
    return rec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20, help="test images per network")
    ap.add_argument("--points", type=int, default=500, help="sampled points per image")
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default=str(HERE / "results" / "soundness.json"))
    args = ap.parse_args()
    torch.manual_seed(0)
    path = Path(args.out)
    previous = json.loads(path.read_text())["results"] if path.exists() and args.only else {}
    results = dict(previous)  # --only updates those networks' records and keeps the rest
    for name, make in networks(args.only).items():
        net, dataset, eps = make()
        rec = check(net, dataset, eps, args.n, args.points, args.data_dir)
        results[name] = rec
        m = rec["methods"]
        print(
            f"{name:40s} eps {eps:.4g}: {rec['points']} points; violations "
            + ", ".join(f"{k} {v['logit_bound_violations'] + v['margin_bound_violations']}" for k, v in m.items())
            + "; mean margin bound "
            + " / ".join(f"{v['mean_margin_lower_bound']:.3f}" for v in m.values())
            + "; certified "
            + " / ".join(f"{100 * v['certified_acc']:.0f}%" for v in m.values())
            + f"; CROWN looser than IBP on {rec['crown_looser_than_ibp']} of {rec['margins']} margins",
            flush=True,
        )
    out = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "command": "python benchmarks/bench_soundness.py " + (f"--n {args.n} --points {args.points}"),
        "results": results,
    }
    path.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
