"""alpha-CROWN against the reference: advex's alpha-CROWN (final layer's slopes only, and every
intermediate bound's slopes too) vs ``auto_LiRPA``'s (the alpha,beta-CROWN team's library), same
networks, same inputs, one process: bound quality, certified count, time.

Run with the peers' virtual environment (auto_LiRPA 0.7.x installed from its source with
``pip install --no-deps`` beside the pinned torch; it is never a dependency of advex):

    /work/peers-venv/bin/python benchmarks/bench_alpha_peers.py
    /work/peers-venv/bin/python benchmarks/bench_alpha_peers.py --configs mnist-small-pgd@0.1 --n 5

For each MODEL@EPS config (zoo MNIST "small" networks; raw pixels, no normalisation, so the
Classifier's ``.net`` goes to auto_LiRPA as it is): the first --n test images, the L-inf ball
clipped to [0, 1], the margin specification e_y - e_j (j != y). Bounds, each (N, 9) lower bounds:

- ``advex_ibp``, ``advex_crown``: ``spec_bounds(method="ibp")``, ``spec_bounds(method="crown")``;
- ``advex_final``: alpha-CROWN with the final back-substitution's slopes only (``alpha_intermediate=False``);
- ``advex_new``: alpha-CROWN with every intermediate bound's slopes optimised too (``alpha_intermediate=True``);
- ``lirpa_crown``: ``compute_bounds(method="CROWN")`` with ``compare_crown_with_ibp`` (advex's CROWN
  intersects every bound with IBP's; so does this);
- ``lirpa_alpha``: ``compute_bounds(method="CROWN-Optimized")``, its optimiser matched to advex's (below);
- ``lirpa_alpha_default``: the same with all of auto_LiRPA's defaults but ``iteration`` = --steps;
- ``lirpa_alpha_ibp`` (``--lirpa-ibp``): ``lirpa_alpha`` with ``compare_crown_with_ibp`` too.

advex optimises with plain Adam at a fixed lr for --steps steps (--steps + 1 bound evaluations, the
last without a step) and keeps each bound's best value. Matched auto_LiRPA options
(:func:`lirpa_options`): ``iteration`` = --steps + 1 (its loop evaluates ``iteration`` times and steps
``iteration`` - 1 times), ``lr_alpha`` = --lr (default 0.5), ``lr_decay`` = 1 (default 0.98),
``early_stop_patience`` beyond --steps (default 10), Adam, and ``use_full_conv_alpha_thresh`` = 1e9
(one slope per conv neuron, as advex; by default a conv layer with more than 512 unstable neurons
shares one per channel). auto_LiRPA's alpha-CROWN optimises the slopes of every intermediate bound
(one alpha set per start node: each pre-activation layer feeding a ReLU, and the output); with no
``interm_bounds`` given, its ``fix_interm_bounds`` freezes nothing. Differences that remain: auto_LiRPA
keeps an image's best bounds only on iterations where the sum of its 9 bounds improves (advex: each
bound's own maximum); advex intersects each step's intermediate bounds with IBP's and the tightest
seen so far (the gradient passing straight through to the new bound, as auto_LiRPA's reference
bounds do), and its final bound with IBP's; ``lirpa_alpha`` intersects
nothing (``compare_crown_with_ibp`` is off by default: on, the gradient stops wherever IBP's bound
is the tighter, and its bounds are looser: ``--lirpa-ibp`` shows it).

CROWN equality: advex and auto_LiRPA intersect with IBP the same way, but auto_LiRPA back-substitutes
every neuron that is unstable in any image of the batch (advex: each image's own unstable neurons),
so the intervals of some stable neurons, and the IBP bounds built on them, differ; where IBP's final
bound is the tighter (IBP-trained networks) the CROWN bounds differ (on ``mnist-small-ibp-0.1`` at
0.1, 50 images: up to 0.22, auto_LiRPA's the tighter on average by 0.002).
``crown_max_abs_diff_crown_binds`` is the difference where both exceed advex's IBP bound.

Certified: the clean prediction is correct and all 9 lower bounds > 0. Soundness: at 200 points per
image in the box (100 uniform, 100 random vertices) every margin must be >= every method's bound (an
assertion). Times are for the N images in batches of --batch (--lirpa-batch for auto_LiRPA, halved
while it runs out of --lirpa-mem-gb; the batch used is recorded), after a warm-up on two images, with
the same torch thread count.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import subprocess
import sys
import time
from importlib.metadata import distribution, version
from pathlib import Path

import numpy as np
import torch

from advex.certify import margin_spec, trace
from advex.certify.bounds import InputSet, spec_bounds
from advex.data.datasets import load_dataset
from advex.models import load

HERE = Path(__file__).resolve().parent
CONFIGS = ["mnist-small@0.02", "mnist-small-pgd@0.1", "mnist-small-pgd@0.3", "mnist-small-ibp-0.1@0.1"]
TOL = 1e-4  # "tighter" / "looser" means by more than this (absolute)


def lirpa_options(steps: int, lr: float, ibp_variant: bool = False, default: bool = True) -> dict:
    """column -> (method, BoundedModule's bound_opts) of each auto_LiRPA run."""
    matched = {"iteration": steps + 1, "lr_alpha": lr, "lr_decay": 1.0, "early_stop_patience": steps + 10,
               "optimizer": "adam", "keep_best": True, "init_alpha": True}  # fmt: skip
    full_conv = {"use_full_conv_alpha_thresh": 10**9}
    runs = {
        "lirpa_crown": ("CROWN", {"compare_crown_with_ibp": True}),
        "lirpa_alpha": ("CROWN-Optimized", {**full_conv, "optimize_bound_args": matched}),
    }
    if default:
        runs["lirpa_alpha_default"] = ("CROWN-Optimized", {"optimize_bound_args": {"iteration": steps}})
    if ibp_variant:
        runs["lirpa_alpha_ibp"] = ("CROWN-Optimized", {**full_conv, "compare_crown_with_ibp": True,
                                                       "optimize_bound_args": matched})  # fmt: skip
    return runs


def lirpa_commit() -> str:
    """The commit auto_LiRPA was installed from: pip's record (a VCS install), else a COMMIT file or
    the git checkout in the source folder it was installed from."""
    try:
        info = json.loads(distribution("auto_LiRPA").read_text("direct_url.json") or "{}")
    except FileNotFoundError:
        return "unknown"
    if "vcs_info" in info:
        return info["vcs_info"]["commit_id"]
    src = Path(info.get("url", "").removeprefix("file://"))
    if (src / "COMMIT").is_file():
        return (src / "COMMIT").read_text().strip()
    got = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True)
    return got.stdout.strip() if got.returncode == 0 else "unknown"


class Lirpa:
    """auto_LiRPA's bounds for one network, in batches; its prints (early stops) are counted."""

    def __init__(self, net, x, bound_opts=None):
        from auto_LiRPA import BoundedModule

        with contextlib.redirect_stdout(io.StringIO()):
            self.module = BoundedModule(net, torch.empty_like(x[:1]), bound_opts=dict(bound_opts or {}), device="cpu")
        self.early_stops = 0

    def __call__(self, lower, upper, C, method, batch):
        from auto_LiRPA import BoundedTensor, PerturbationLpNorm

        out = []
        for s in range(0, lower.shape[0], batch):
            lo, hi = lower[s : s + batch], upper[s : s + batch]
            bx = BoundedTensor((lo + hi) / 2, PerturbationLpNorm(norm=np.inf, x_L=lo, x_U=hi))
            log = io.StringIO()
            with contextlib.redirect_stdout(log):
                lb, _ = self.module.compute_bounds(x=(bx,), C=C[s : s + batch], method=method, bound_upper=False)
            self.early_stops += log.getvalue().count("Early stop")
            out.append(lb.detach())
        return torch.cat(out)


def available_gb() -> float:
    """MemAvailable (Linux), in GiB; 0 where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 0.0


@contextlib.contextmanager
def memory_cap(gb: float):
    """Cap the process's address space at its size now + ``gb`` GiB (Linux), so that an allocation
    past it raises (torch: RuntimeError) instead of waking the OOM killer on a shared machine."""
    try:
        import resource

        size = int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (ImportError, OSError):
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = size + int(gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def run_lirpa(lirpa, lower, upper, C, method, batch, mem_gb):
    """(bounds, seconds, batch used): the batch is halved while auto_LiRPA runs out of memory (more
    than ``mem_gb`` GiB); only the run that finishes is timed."""
    batch = min(batch, lower.shape[0])
    while True:
        try:
            with memory_cap(mem_gb):
                t0 = time.perf_counter()
                got = lirpa(lower, upper, C, method, batch)
                return got, time.perf_counter() - t0, batch
        except (RuntimeError, MemoryError) as e:
            if (not isinstance(e, MemoryError) and "memory" not in str(e).lower()) or batch == 1:
                raise
            batch = max(1, batch // 2)
            print(f"auto_LiRPA ran out of memory ({mem_gb:.1f} GiB); {method} in batches of {batch}", file=sys.stderr,
                  flush=True)  # fmt: skip


def advex_run(nodes, x, eps, C, batch, **kw):
    out = []
    t0 = time.perf_counter()
    for s in range(0, x.shape[0], batch):
        inp = InputSet.ball(x[s : s + batch], eps, "linf")
        with torch.no_grad():
            out.append(spec_bounds(nodes, inp, C[s : s + batch], **kw).detach())
    return torch.cat(out), time.perf_counter() - t0


def soundness(net, lower, upper, C, bounds: dict, points: int = 200, seed: int = 0) -> float:
    """Assert every margin at ``points`` points per image in the box is >= every method's bound;
    return the smallest slack (sampled margin minus bound) over all methods."""
    g = torch.Generator().manual_seed(seed)
    n = lower.shape[0]
    half = points // 2
    u = torch.rand(n, points, *lower.shape[1:], generator=g)
    u[:, half:] = (u[:, half:] > 0.5).float()  # vertices of the box
    pts = lower.unsqueeze(1) + (upper - lower).unsqueeze(1) * u
    with torch.no_grad():
        logits = net(pts.flatten(0, 1)).view(n, points, -1)
    margins = torch.einsum("nsk,npk->nps", C, logits).amin(1)  # (N, 9): smallest sampled margin
    slack = float("inf")
    for name, lb in bounds.items():
        gap = margins - lb
        bad = gap < -(1e-5 + 1e-5 * lb.abs())
        assert not bad.any(), f"{name}: a sampled margin is below its lower bound ({int(bad.sum())} bounds)"
        slack = min(slack, float(gap.min()))
    return slack


def compare(a, b) -> dict:
    return {"tighter": int((a - b > TOL).sum()), "looser": int((b - a > TOL).sum()),
            "max_abs_diff": float((a - b).abs().max())}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=CONFIGS, help="MODEL@EPS (L-inf)")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--lirpa-batch", type=int, default=None, help="auto_LiRPA's batch (default: --batch)")
    ap.add_argument(
        "--lirpa-mem-gb",
        type=float,
        default=None,
        help="memory auto_LiRPA may take before its batch is halved (default: 60%% of what is available)",
    )
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--no-lirpa-default", action="store_true", help="skip auto_LiRPA with its default options")
    ap.add_argument("--lirpa-ibp", action="store_true", help="also auto_LiRPA matched + compare_crown_with_ibp")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default=str(HERE / "results" / "alpha_peers.json"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    lirpa_batch = args.lirpa_batch or args.batch
    mem_gb = args.lirpa_mem_gb or max(1.0, 0.6 * available_gb())
    x, y = load_dataset("mnist", "test", args.data_dir).subset(args.n).floats()
    C = margin_spec(y, 10)
    runs = lirpa_options(args.steps, args.lr, args.lirpa_ibp, not args.no_lirpa_default)
    alpha_kw = {"method": "alpha-crown", "alpha_steps": args.steps, "alpha_lr": args.lr}
    advex_runs = {"advex_ibp": {"method": "ibp"}, "advex_crown": {"method": "crown"},
                  "advex_final": {**alpha_kw, "alpha_intermediate": False},
                  "advex_new": {**alpha_kw, "alpha_intermediate": True}}  # fmt: skip
    rows, models = [], {}
    for config in args.configs:
        name, eps = config.rsplit("@", 1)
        eps = float(eps)
        if name not in models:
            model = load(name, device="cpu").eval()
            for stat, neutral in ((getattr(model, "mean", None), 0.0), (getattr(model, "std", None), 1.0)):
                if stat is not None and not torch.all(stat == neutral):
                    raise SystemExit(f"{name} normalises its input (mean {model.mean}, std {model.std}); "
                                     "this benchmark gives auto_LiRPA the bare .net")  # fmt: skip
            net = model.net.eval()
            with torch.no_grad():
                assert torch.equal(model(x[:4]), net(x[:4])), "the Classifier is not its bare .net"
            lirpa = {col: Lirpa(net, x, opts) for col, (_, opts) in runs.items()}
            models[name] = (net, trace(model, tuple(x.shape[1:])), lirpa)
        net, nodes, lirpa = models[name]
        lower, upper = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
        with torch.no_grad():
            correct = net(x).argmax(1) == y
        for kw in advex_runs.values():  # warm-up on two images
            advex_run(nodes, x[:2], eps, C[:2], 2, **kw)
        for col, (method, _) in runs.items():
            lirpa[col](lower[:2], upper[:2], C[:2], method, 2)
            lirpa[col].early_stops = 0
        b, t, used = {}, {}, {}
        for col, kw in advex_runs.items():
            b[col], t[col] = advex_run(nodes, x, eps, C, args.batch, **kw)
        for col, (method, _) in runs.items():
            b[col], t[col], used[col] = run_lirpa(lirpa[col], lower, upper, C, method, lirpa_batch, mem_gb)
        slack = soundness(net, lower, upper, C, b)
        crown_binds = (b["advex_crown"] > b["advex_ibp"] + 1e-3) & (b["lirpa_crown"] > b["advex_ibp"] + 1e-3)
        crown_diff = (b["advex_crown"] - b["lirpa_crown"]).abs()
        row = {
            "config": config,
            "model": name,
            "eps": eps,
            "images": args.n,
            "clean_correct": int(correct.sum()),
            "mean_bound": {k: round(float(v.mean()), 4) for k, v in b.items()},
            "certified": {k: int(((v > 0).all(1) & correct).sum()) for k, v in b.items()},
            "time_s": {k: round(v, 3) for k, v in t.items()},
            "new_vs_lirpa_alpha": compare(b["advex_new"], b["lirpa_alpha"]),
            "new_vs_final": compare(b["advex_new"], b["advex_final"]),
            "final_vs_lirpa_alpha": compare(b["advex_final"], b["lirpa_alpha"]),
            "crown_max_abs_diff": float(crown_diff.max()),
            "crown_max_abs_diff_crown_binds": float(crown_diff[crown_binds].max()) if crown_binds.any() else 0.0,
            "lirpa_batch": used,
            "lirpa_early_stops": {k: v.early_stops for k, v in lirpa.items()},
            "soundness_min_slack": round(slack, 6),
        }
        for col in ("lirpa_alpha_default", "lirpa_alpha_ibp"):
            if col in b:
                row[f"new_vs_{col}"] = compare(b["advex_new"], b[col])
        print(json.dumps(row), flush=True)
        rows.append(row)
    import auto_LiRPA

    result = {
        "rows": rows,
        "lirpa_options": {col: {"method": method, "bound_opts": opts} for col, (method, opts) in runs.items()},
        "advex_options": advex_runs,
        "versions": {
            "torch": torch.__version__,
            "auto_LiRPA": auto_LiRPA.__version__,
            "auto_LiRPA_commit": lirpa_commit(),
            "advex": version("advex"),
        },
        "command": "python benchmarks/bench_alpha_peers.py " + " ".join(sys.argv[1:]),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "lirpa_mem_gb": round(mem_gb, 1),
        },
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(table(rows))


def table(rows) -> str:
    cols = ["advex_ibp", "advex_crown", "lirpa_crown", "advex_final", "advex_new", "lirpa_alpha", "lirpa_alpha_ibp",
            "lirpa_alpha_default"]  # fmt: skip
    lines = ["| config | method | mean bound | certified | time (s) |", "| --- | --- | ---: | ---: | ---: |"]
    for r in rows:
        for c in cols:
            if c in r["mean_bound"]:
                lines.append(f"| {r['config']} | {c} | {r['mean_bound'][c]:.4f} | {r['certified'][c]}/{r['images']} "
                             f"| {r['time_s'][c]:.2f} |")  # fmt: skip

    def cmp(d):  # tighter/looser by > TOL, max |diff|
        return f"{d['tighter']}/{d['looser']}, {d['max_abs_diff']:.2e}" if d else "-"

    lines += ["", "Bound-by-bound (tighter/looser by more than 1e-4, max abs diff):", "",
              "| config | new vs lirpa_alpha | new vs lirpa_alpha_default | final-only vs lirpa_alpha "
              "| new vs final-only | CROWN max diff (where CROWN binds) |",
              "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['config']} | {cmp(r['new_vs_lirpa_alpha'])} | {cmp(r.get('new_vs_lirpa_alpha_default'))} "
                     f"| {cmp(r['final_vs_lirpa_alpha'])} | {cmp(r['new_vs_final'])} "
                     f"| {r['crown_max_abs_diff']:.1e} ({r['crown_max_abs_diff_crown_binds']:.1e}) |")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
