"""``advex certify``: prove robustness (IBP, CROWN, alpha-CROWN) beside a PGD attack: the
certified accuracy is a lower bound on the robust accuracy, the attacked one an upper bound,
and every bound is checked against the attack's points."""

from __future__ import annotations

import argparse
from pathlib import Path

from advex.cli import common, options

NAME = "certify"
HELP = "prove robustness: IBP, CROWN, alpha-CROWN bounds, beside a PGD attack"


def add_parser(sub) -> argparse.ArgumentParser:
    p = options.add_command(sub, NAME, HELP, __doc__)
    options.add_model(p, required=True)
    options.add_dataset(p)
    options.add_eps(p, many=True, zero_ok=False, required=True, help="radius, or a grid, e.g. 0.1 or 1/255,2/255")
    p.add_argument("--method", default="crown", help="ibp, crown, alpha-crown, or several comma-separated")
    options.add_norm(p)
    p.add_argument("--slope", choices=["crown", "wong-kolter"], default="crown", help="ReLU lower slope (CROWN)")
    p.add_argument(
        "--alpha-steps", type=options.integer(1), default=20, help="alpha-CROWN optimisation steps (default 20)"
    )
    options.add_subset(p, n=100)
    p.add_argument(
        "--attack-steps", type=options.integer(1), default=50, help="PGD steps of the empirical check (default 50)"
    )
    p.add_argument("--no-attack", action="store_true", help="skip the PGD attack (and its soundness check)")
    p.add_argument("--batch-size", type=options.integer(1), default=None, help="images bounded at once (default 256)")
    options.add_run_options(p, out="advex-certify", data=True, quiet=False)
    return p


def run(args) -> int:
    from advex.certify import certify, check_method

    methods = args.method.split(",")
    for m in methods:
        for e in args.eps:
            check_method(m, args.norm, args.slope, e)
    model = common.load_model(args.model, args.device)
    data, images = common.subset(args)
    x, y = data.floats()
    runs = []
    for e in args.eps:
        x_adv = None  # one PGD run per eps; every method's bounds are checked against its points
        for m in methods:
            res = certify(model, x, y, eps=e, norm=args.norm, method=m, slope=args.slope,
                          alpha_steps=args.alpha_steps, attack=not args.no_attack, x_adv=x_adv,
                          attack_steps=args.attack_steps, batch_size=args.batch_size, seed=args.seed)  # fmt: skip
            x_adv = res.x_adv
            runs.append((e, m, res))
            att = res.attacked_accuracy
            print(
                f"eps {e:.5g} {m:11s}: certified {100 * res.certified_accuracy:6.2f}%  clean "
                f"{100 * res.clean_accuracy:6.2f}%"
                + (f"  under PGD-{args.attack_steps} {100 * att:6.2f}%" if att is not None else "")
                + f"  ({len(res) / res.time_s:.0f} images/s bounding)",
                flush=True,
            )
    _write(args, model, methods, runs, images)
    return 0


def _write(args, model, methods, runs, images: str) -> None:
    from advex.report import certified_vs_eps, write_summary

    attacked = {e: r.attacked for e, _, r in runs if r.attacked is not None}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = [
        {
            "eps": e,
            "method": m,
            "certified_accuracy": r.certified_accuracy,
            "clean_accuracy": r.clean_accuracy,
            "attacked_accuracy": attacked[e].float().mean().item() if e in attacked else None,
            "attack": f"PGD-{args.attack_steps}" if e in attacked else None,
            "bound_time_s": round(r.time_s, 3),
            "images_per_s": round(len(r) / r.time_s, 1),
            "per_sample": [
                {**row, "attacked_robust": bool(attacked[e][j]) if e in attacked else None}
                for j, row in enumerate(r.rows())
            ],
        }
        for e, m, r in runs
    ]
    write_summary(
        out / "certify.json",
        {"model": model.name, "dataset": images, "norm": args.norm,
         "slope": args.slope, "results": results},
        command=["advex", *args.argv],
        device=model.device,
    )  # fmt: skip
    wrote = f"{out}/certify.json"
    if len(args.eps) > 1:
        cert = {m: [r.certified_accuracy for _, m_, r in runs if m_ == m] for m in methods}
        att = [float(attacked[e].float().mean()) for e in args.eps] if attacked else None
        title = f"{model.name}: certified vs attacked ({args.norm})"
        certified_vs_eps(args.eps, cert, att, out / "certified.png", title, clean=runs[0][2].clean_accuracy)
        wrote += f" and {out}/certified.png"
    print(f"wrote {wrote}")
