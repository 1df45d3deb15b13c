"""``advex evaluate``: robust accuracy over an eps grid, per attack and for the worst case over
the ensemble (the AutoAttack protocol: APGD-CE, APGD-T with DLR, Square), with the sanity
checks of Carlini et al. (2019) that flag an evaluation not to trust."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from advex.cli import common, options

NAME = "evaluate"
HELP = "robust accuracy over an eps grid under an attack ensemble (AutoAttack)"


def add_parser(sub) -> argparse.ArgumentParser:
    p = options.add_command(sub, NAME, HELP, __doc__)
    options.add_model(p, required=True)
    options.add_images(p, n=1000)
    options.add_eps(p, many=True, zero_ok=True, required=True, help="radii, pixels in [0, 1], e.g. 0.1,0.2 or 8/255")
    options.add_norm(p)
    p.add_argument(
        "--attacks",
        default="apgd-ce,apgd-t,square",
        help="comma-separated: apgd-ce, apgd-t, square, pgd, fgsm (default: the AutoAttack trio)",
    )
    p.add_argument(
        "--steps", type=options.integer(1), default=100, help="iterations of the gradient attacks (default 100)"
    )
    p.add_argument("--queries", type=options.integer(1), default=5000, help="Square's query budget (default 5000)")
    p.add_argument("--n-targets", type=options.integer(1), default=9, help="target classes tried by APGD-T (default 9)")
    options.add_batch_size(p, cpu=100, gpu=500)
    options.add_resume(p)
    options.add_run_options(p, out="advex-evaluate", data=True)
    return p


def run(args) -> int:
    from advex.evaluation import attack_batch, batch_seed, check_request, combine, sanity_checks
    from advex.report import accuracy_vs_eps, print_table, write_summary

    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
    procs = common.processes(args)
    model = common.load_model(args.model, args.device)
    source, images, ident = common.images(args, model)
    args.eps = check_request(args.eps, args.norm, attacks)
    common.probe(model, source)
    journal = common.journal(args, model, ident, procs)
    settings = dict(norm=args.norm, attacks=attacks, steps=args.steps, queries=args.queries, n_targets=args.n_targets)

    def work(batch, bar):
        return attack_batch(model, batch.x, batch.y, args.eps, **settings, seed=batch_seed(args.seed, batch.start),
                            status=bar.status)  # fmt: skip

    t0 = time.perf_counter()
    done = common.run(args, model, source, work, journal, procs)
    if done is None:  # another process of a torchrun run: rank 0 writes
        return 0
    ev = combine(done.results, args.eps, args.norm, {**settings, "seed": args.seed})
    x, y = common.first_images(source, 200, model)
    ev.warnings = sanity_checks(model, x, y, ev, steps=args.steps, seed=args.seed, batch_size=len(x))
    wall = time.perf_counter() - t0
    out = Path(args.out)
    results = ev.to_dict()
    run_ = {"wall_s": round(wall, 1), "times_s": results.pop("times_s"), "processes": procs.world,
            "batches_from_journal": done.resumed}  # fmt: skip
    write_summary(
        out / "evaluation.json",
        results | {"model": model.name, "dataset": images, "images": images, "batch_size": done.batch_size,
                   "skipped": [list(s) for s in done.skipped], "run": run_},
        command=["advex", *args.argv],
        device=model.device,
    )  # fmt: skip
    accuracy_vs_eps(
        ev.eps, ev.per_attack, ev.ensemble, out / "accuracy_vs_eps.png",
        f"{model.name} on {images} ({args.norm})", clean=ev.clean_acc,
    )  # fmt: skip
    print(f"{model.name}: clean accuracy {100 * ev.clean_acc:.1f}% on {ev.n} images; robust accuracy ({args.norm}):")
    print_table(
        [
            {
                "eps": f"{e:.4g}" + (f" ({255 * e:.3g}/255)" if 0 < e < 1 else ""),
                **{a: f"{100 * ev.per_attack[a][i]:.1f}%" for a in ev.per_attack},
                "ens": f"{100 * ev.ensemble[i]:.1f}%",
            }
            for i, e in enumerate(ev.eps)
        ],
        [("eps", "eps")] + [(a, a) for a in ev.per_attack] + [("ens", "ensemble")],
    )
    for w in ev.warnings:
        options.note(f"WARNING: {w}")
    common.warn_skipped(done.skipped)
    print(f"wall time {wall:.1f} s; wrote {out}/evaluation.json and {out}/accuracy_vs_eps.png")
    journal.finish()
    return 0
