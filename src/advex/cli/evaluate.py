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
    options.add_dataset(p)
    options.add_eps(p, many=True, zero_ok=True, required=True, help="radii, pixels in [0, 1], e.g. 0.1,0.2 or 8/255")
    options.add_norm(p)
    options.add_subset(p, n=1000)
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
    options.add_run_options(p, out="advex-evaluate", data=True, quiet=False)
    return p


def run(args) -> int:
    from advex.evaluation import evaluate
    from advex.report import accuracy_vs_eps, print_table, write_summary

    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
    model = common.load_model(args.model, args.device)
    data, images = common.subset(args)
    x, y = data.floats()
    t0 = time.perf_counter()
    ev = evaluate(
        model, x, y, args.eps, norm=args.norm, attacks=attacks, steps=args.steps, queries=args.queries,
        n_targets=args.n_targets, seed=args.seed,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_summary(
        out / "evaluation.json",
        ev.to_dict() | {"model": model.name, "dataset": args.dataset, "images": images, "wall_s": round(wall, 1)},
        command=["advex", *args.argv],
        device=model.device,
    )
    accuracy_vs_eps(
        ev.eps, ev.per_attack, ev.ensemble, out / "accuracy_vs_eps.png",
        f"{model.name} on {images} ({args.norm})", clean=ev.clean_acc,
    )  # fmt: skip
    print(f"{model.name}: clean accuracy {100 * ev.clean_acc:.1f}% on {len(x)} images; robust accuracy ({args.norm}):")
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
    print(f"wall time {wall:.1f} s; wrote {out}/evaluation.json and {out}/accuracy_vs_eps.png")
    return 0
