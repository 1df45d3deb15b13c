"""``advex certify``: prove robustness (IBP, CROWN, alpha-CROWN) beside a PGD attack: the
certified accuracy is a lower bound on the robust accuracy, the attacked one an upper bound,
and every bound is checked against the attack's points. ``--method smoothing`` certifies
the Gaussian-smoothed version of any network instead (Cohen et al. 2019), beside the
SmoothAdv attack (Salman et al. 2019)."""

from __future__ import annotations

import argparse
from pathlib import Path

from advex.cli import common, options, smoothing
from advex.errors import AdvexError

NAME = "certify"
HELP = "prove robustness: IBP, CROWN, alpha-CROWN bounds, beside a PGD attack"


def add_parser(sub) -> argparse.ArgumentParser:
    p = options.add_command(sub, NAME, HELP, __doc__)
    options.add_model(p, required=True)
    options.add_images(
        p, n=100, photos="your photos, certified at the network input (224x224 for the ImageNet default)"
    )
    options.add_eps(
        p, many=True, zero_ok=False,
        help="radius, or a grid, e.g. 0.1 or 1/255,2/255 (smoothing: the L2 radii of its table and attack; "
             "default 0.25,0.5,0.75,1.0)",
    )  # fmt: skip
    p.add_argument(
        "--method",
        default="crown",
        help="ibp, crown, alpha-crown, bab (complete: branch and bound, L-inf), or several comma-separated; or "
        "smoothing (randomized smoothing: any network)",
    )
    p.add_argument(
        "--timeout", type=options.number(0, above=True), default=60.0,
        help="bab: seconds of search per image that alpha-CROWN and PGD leave open (default 60)",
    )  # fmt: skip
    options.add_norm(p, default=None, help="perturbation norm (default linf; smoothing certifies l2 only)")
    p.set_defaults(_norm_default=lambda a: "l2" if smoothing.chosen(a) else "linf")
    p.add_argument("--slope", choices=["crown", "wong-kolter"], default="crown", help="ReLU lower slope (CROWN)")
    p.add_argument(
        "--alpha-steps", type=options.integer(1), default=20, help="alpha-CROWN optimisation steps (default 20)"
    )
    p.add_argument(
        "--attack-steps",
        type=options.integer(1),
        default=None,
        help="steps of the empirical check: PGD (default 50), SmoothAdv for smoothing (default 20)",
    )
    p.add_argument("--no-attack", action="store_true", help="skip the attack (and, for bounds, its soundness check)")
    smoothing.add_options(p)
    options.add_batch_size(p, cpu=100, gpu=1000, what="images bounded at once")
    options.add_resume(p)
    options.add_run_options(p, out="advex-certify", data=True)
    return p


def run(args) -> int:
    if smoothing.chosen(args):
        return smoothing.run(args)
    smoothing.refuse_options(args)
    from advex.certify import certify, check_method, trace
    from advex.evaluation import batch_seed

    if args.eps is None:
        raise AdvexError("--eps is required for --method ibp, crown and alpha-crown (the radius to prove)")
    args.attack_steps = args.attack_steps or 50
    methods = [m.strip() for m in args.method.split(",")]
    for m in methods:
        if m == "bab" and args.norm != "linf":
            raise AdvexError("--method bab verifies L-inf balls; for --norm l2 use crown or alpha-crown")
        for e in args.eps:
            check_method("alpha-crown" if m == "bab" else m, args.norm, args.slope, e)
    procs = common.processes(args)
    model = common.load_model(args.model, args.device)
    source, images, ident = common.images(args, model)
    trace(model, tuple(common.probe(model, source).shape[1:]))  # a layer the bounds do not cover: say so now
    journal = common.journal(args, model, ident, procs)

    def work(batch, bar) -> list[dict]:
        """Every (eps, method) on one batch: one PGD run per eps, every method's bounds checked
        against its points."""
        found = []
        for e in args.eps:
            x_adv = None
            for m in methods:
                bar.status(f"{m} eps {e:.4g}")
                r = certify(model, batch.x, batch.y, eps=e, norm=args.norm, method=m, slope=args.slope,
                            alpha_steps=args.alpha_steps, attack=not args.no_attack, x_adv=x_adv,
                            attack_steps=args.attack_steps, batch_size=len(batch.x),
                            seed=batch_seed(args.seed, batch.start), timeout=args.timeout)  # fmt: skip
                x_adv = r.x_adv
                found.append({"rows": r.rows(), "time_s": r.time_s})
        return found

    done = common.run(args, model, source, work, journal, procs)
    if done is None:  # another process of a torchrun run: rank 0 writes
        return 0
    runs = [(e, m) for e in args.eps for m in methods]
    results = [_combine(e, m, [part[k] for part in done.results], args) for k, (e, m) in enumerate(runs)]
    for r in results:
        att = r["attacked_accuracy"]
        print(
            f"eps {r['eps']:.5g} {r['method']:11s}: certified {100 * r['certified_accuracy']:6.2f}%  clean "
            f"{100 * r['clean_accuracy']:6.2f}%"
            + (f"  under PGD-{args.attack_steps} {100 * att:6.2f}%" if att is not None else "")
            + (f"  (bab: {r['falsified']} falsified, {r['timed_out']} timed out)" if r["method"] == "bab" else "")
            + f"  ({r['images_per_s']:.0f} images/s bounding)",
            flush=True,
        )
    common.warn_skipped(done.skipped)
    _write(args, model, methods, results, images, done, procs)
    journal.finish()
    return 0


def _combine(eps: float, method: str, parts: list[dict], args) -> dict:
    """One (eps, method)'s numbers over all batches."""
    rows = [row for p in parts for row in p["rows"]]
    n = max(len(rows), 1)
    seconds = sum(p["time_s"] for p in parts)
    attacked = None if args.no_attack else sum(r["attacked_robust"] for r in rows) / n
    return {
        "eps": eps,
        "method": method,
        "certified_accuracy": sum(r["certified"] for r in rows) / n,
        "clean_accuracy": sum(r["correct"] for r in rows) / n,
        "attacked_accuracy": attacked,
        "attack": None if args.no_attack else f"PGD-{args.attack_steps}",
        "bound_time_s": round(seconds, 3),
        "images_per_s": round(len(rows) / max(seconds, 1e-9), 1),
        "per_sample": rows,
        **({"falsified": sum(r["status"] == "falsified" for r in rows), "timed_out": sum(r["status"] == "timeout"
            for r in rows), "timeout_s": args.timeout} if method == "bab" else {}),
    }  # fmt: skip


def _write(args, model, methods, results, images: str, done, procs) -> None:
    from advex.report import certified_vs_eps, write_summary

    out = Path(args.out)
    timing = {"bound_time_s", "images_per_s"}
    write_summary(
        out / "certify.json",
        {"model": model.name, "dataset": images, "norm": args.norm, "slope": args.slope,
         "batch_size": done.batch_size, "skipped": [list(s) for s in done.skipped],
         "results": [{k: v for k, v in r.items() if k not in timing} for r in results],
         "run": {"processes": procs.world, "batches_from_journal": done.resumed,
                 "timing": [{k: r[k] for k in ("eps", "method", *sorted(timing))} for r in results]}},
        command=["advex", *args.argv],
        device=model.device,
    )  # fmt: skip
    wrote = f"{out}/certify.json"
    if len(args.eps) > 1:
        cert = {m: [r["certified_accuracy"] for r in results if r["method"] == m] for m in methods}
        att = None if args.no_attack else [r["attacked_accuracy"] for r in results if r["method"] == methods[0]]
        title = f"{model.name}: certified vs attacked ({args.norm})"
        certified_vs_eps(args.eps, cert, att, out / "certified.png", title, clean=results[0]["clean_accuracy"])
        wrote += f" and {out}/certified.png"
    print(f"wrote {wrote}")
