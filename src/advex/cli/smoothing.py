"""``advex certify --method smoothing``: randomized smoothing (Cohen, Rosenfeld & Kolter 2019)
of any network on dataset images, your image folder or your photos, beside the SmoothAdv
attack (Salman et al. 2019) at the same L2 radii.

Per image: CERTIFY's class (or abstain) and L2 radius, the counts behind them, and whether
the smoothed classifier still gives the true class at the SmoothAdv point of each radius
(the majority of ``--attack-n`` fresh draws there). Certified accuracy at radius r (the
class right and the radius >= r) is a lower bound on the smoothed classifier's robust
accuracy, holding with probability 1 - alpha per image; the attacked accuracy an estimate of
an upper bound. Not a command of its own: ``certify`` hands over here.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from advex.cli import common, options
from advex.errors import AdvexError

RADII = (0.25, 0.5, 0.75, 1.0)


def chosen(args) -> bool:
    """Whether ``--method`` asks for smoothing."""
    return "smoothing" in [m.strip() for m in (args.method or "").split(",")]


def add_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("randomized smoothing (--method smoothing)")
    g.add_argument(
        "--sigma",
        type=options.positive,
        default=None,
        help="the noise's standard deviation, pixels in [0, 1] (e.g. 0.25, 0.5)",
    )
    g.add_argument("--n0", type=options.integer(1), default=100, help="draws that choose the class (default 100)")
    g.add_argument(
        "--n-samples",
        type=options.integer(1),
        default=100_000,
        help="draws that bound its probability (default 100000)",
    )
    g.add_argument(
        "--alpha",
        type=options.number(0, 1, above=True),
        default=0.001,
        help="chance that a certificate is wrong (default 0.001)",
    )
    g.add_argument(
        "--noise-batch",
        type=options.integer(1),
        default=None,
        help="noisy inputs per forward pass (default: about 64 MB of input, at most 1000 on a CPU)",
    )
    g.add_argument(
        "--attack-samples", type=options.integer(1), default=8, help="noise draws per SmoothAdv step (default 8)"
    )
    g.add_argument("--attack-n", type=options.integer(1), default=1000,
                   help="draws that judge the smoothed classifier at the attacked point (default 1000)")  # fmt: skip


def refuse_options(args) -> None:
    """The smoothing options given without ``--method smoothing``."""
    given = [o for o in ("sigma", "noise_batch") if getattr(args, o) is not None]
    if given:
        names = ", ".join("--" + o.replace("_", "-") for o in given)
        raise AdvexError(f"{names} go with --method smoothing; the bound methods (ibp, crown, alpha-crown) take none")


def _check(args) -> None:
    methods = [m.strip() for m in args.method.split(",")]
    if methods != ["smoothing"]:
        raise AdvexError(
            f"--method {args.method}: smoothing certifies the smoothed classifier, not the network the bound "
            "methods bound; run --method smoothing on its own"
        )
    if args.norm != "l2":
        raise AdvexError(
            "smoothing with Gaussian noise certifies L2 balls, not L-inf ones; use --norm l2 (the default for "
            "smoothing). An L-inf ball of radius e lies inside the L2 ball of radius e*sqrt(d), d = C*H*W "
            "(784 for MNIST, 3072 for CIFAR-10), so an L2 certificate of that radius covers it, loosely"
        )
    if args.sigma is None:
        raise AdvexError("--method smoothing needs --sigma, the noise's standard deviation (e.g. 0.25)")
    if args.n_samples < args.n0:
        raise AdvexError(
            f"--n-samples {args.n_samples} is below --n0 {args.n0}: the n0 draws only choose the class, the "
            "--n-samples draws bound its probability (Cohen et al.: 100 and 100000)"
        )
    if not args.alpha < 1:
        raise AdvexError(f"--alpha must be in (0, 1), the chance that a certificate is wrong; got {args.alpha:g}")
    if args.eps is None:
        args.eps = list(RADII)


def run(args) -> int:
    import torch

    from advex.attacks import SmoothAdv
    from advex.certify import Smooth
    from advex.evaluation import batch_seed

    _check(args)
    steps = args.attack_steps or 20
    procs = common.processes(args)
    model = common.load_model(args.model, args.device)
    source, images, ident, names = common.named_images(args, model)
    common.probe(model, source)
    smooth = Smooth(model, args.sigma, batch_size=args.noise_batch)
    journal = common.journal(args, model, ident, procs)

    def work(batch, bar) -> dict:
        """One batch: CERTIFY, then SmoothAdv at each radius and the smoothed classifier's
        majority class at the point it found, each seeded by the batch's position."""
        seed = batch_seed(args.seed, batch.start)
        cert = smooth.certify(batch.x, n0=args.n0, n=args.n_samples, alpha=args.alpha, seed=seed, status=bar.status)
        rows = cert.rows(batch.y)
        for row, i in zip(rows, batch.index.tolist()):
            row["image"] = names[i]
        t0, passes = time.perf_counter(), 0
        if not args.no_attack:
            kept = []
            for e in args.eps:
                bar.status(f"SmoothAdv L2 {e:g} ({steps} steps x {args.attack_samples} draws)")
                adv = SmoothAdv(eps=e, sigma=args.sigma, steps=steps, samples=args.attack_samples, seed=seed)
                x_adv = adv(model, batch.x, batch.y).x_adv
                gen = torch.Generator(smooth.model.device).manual_seed(seed + 1)
                counts = smooth.counts(x_adv.to(smooth.model.device), args.attack_n, generator=gen)
                kept.append((counts.argmax(1) == batch.y.cpu()).tolist())
                passes += len(batch.x) * (args.attack_n + (steps + 2) * args.attack_samples)
            for j, row in enumerate(rows):
                row["robust_under_attack"] = [k[j] for k in kept]
        return {"rows": rows, "forward_passes": cert.forward_passes, "certify_s": cert.time_s,
                "attack_s": time.perf_counter() - t0, "attack_passes": passes}  # fmt: skip

    done = common.run(args, model, source, work, journal, procs)
    if done is None:  # another process of a torchrun run: rank 0 writes
        return 0
    rows = [r for part in done.results for r in part["rows"]]
    results = [_at(e, j, rows, args, steps) for j, e in enumerate(args.eps)]
    _print(results, rows, args)
    common.warn_skipped(done.skipped)
    _write(args, model, images, rows, results, done, procs)
    journal.finish()
    return 0


def _at(radius: float, j: int, rows: list[dict], args, steps: int) -> dict:
    """The numbers at one L2 radius over every image."""
    n = max(len(rows), 1)
    attacked = None if args.no_attack else sum(r["robust_under_attack"][j] for r in rows) / n
    return {
        "eps": radius,
        "method": "smoothing",
        "certified_accuracy": sum(r["correct"] and r["radius"] >= radius for r in rows) / n,
        "clean_accuracy": sum(r["correct"] for r in rows) / n,
        "attacked_accuracy": attacked,
        "attack": None if args.no_attack else f"SmoothAdv-{steps} ({args.attack_samples} draws/step, "
                                              f"judged by {args.attack_n} draws)",
    }  # fmt: skip


def _print(results: list[dict], rows: list[dict], args) -> None:
    from advex.report import print_table

    abstain = sum(r["abstain"] for r in rows)
    print(
        f"smoothing sigma {args.sigma:g}, n0 {args.n0}, n {args.n_samples}, alpha {args.alpha:g}: "
        f"{len(rows)} images, {abstain} abstained, smoothed accuracy {100 * results[0]['clean_accuracy']:.1f}%"
    )
    print_table(
        [{"r": f"{r['eps']:g}", "cert": f"{100 * r['certified_accuracy']:.1f}%",
          "att": "-" if r["attacked_accuracy"] is None else f"{100 * r['attacked_accuracy']:.1f}%"} for r in results],
        [("r", "L2 radius"), ("cert", "certified"), ("att", "under SmoothAdv")],
    )  # fmt: skip


def _write(args, model, images: str, rows: list[dict], results: list[dict], done, procs) -> None:
    from advex.report import certified_vs_radius, write_summary

    out = Path(args.out)
    parts = done.results
    seconds = sum(p["certify_s"] for p in parts)
    passes = sum(p["forward_passes"] for p in parts)
    write_summary(
        out / "certify.json",
        {"model": model.name, "dataset": images, "norm": "l2", "method": "smoothing", "sigma": args.sigma,
         "n0": args.n0, "n": args.n_samples, "alpha": args.alpha, "batch_size": done.batch_size,
         "skipped": [list(s) for s in done.skipped], "results": results,
         "abstained": sum(r["abstain"] for r in rows), "forward_passes": passes, "per_image": rows,
         "run": {"processes": procs.world, "batches_from_journal": done.resumed, "certify_s": round(seconds, 2),
                 "forward_passes_per_s": round(passes / max(seconds, 1e-9), 1),
                 "attack_s": round(sum(p["attack_s"] for p in parts), 2),
                 "attack_forward_passes": sum(p["attack_passes"] for p in parts)}},
        command=["advex", *args.argv],
        device=model.device,
    )  # fmt: skip
    attacked = None if args.no_attack else ([r["eps"] for r in results], [r["attacked_accuracy"] for r in results])
    certified_vs_radius(
        [r["radius"] for r in rows], [r["correct"] for r in rows], out / "certified.png",
        f"{model.name}, smoothing sigma {args.sigma:g}: certified vs attacked (L2)", attacked=attacked,
        clean=results[0]["clean_accuracy"],
    )  # fmt: skip
    print(f"wrote {out}/certify.json and {out}/certified.png ({passes} forward passes, {seconds:.1f} s certifying)")
