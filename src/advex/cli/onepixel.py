"""``advex onepixel``: change 1, 3 or 5 pixels to change the prediction (Su, Vargas & Sakurai
2019), by differential evolution, on dataset images or your photos."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from advex.cli import common, options
from advex.errors import AdvexError

NAME = "onepixel"
HELP = "change 1, 3 or 5 pixels to change the prediction (Su et al. 2019)"


def add_parser(sub) -> argparse.ArgumentParser:
    p = options.add_command(sub, NAME, HELP, __doc__)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", choices=options.DATASETS, help="attack correctly classified test images")
    src.add_argument("--images", nargs="+", metavar="PATH", help="your photos (ImageNet default model)")
    options.add_model(
        p, help="zoo name, FILE.py[:NAME] or a checkpoint (default: DATASET-small, or efficientnet-lite0)"
    )
    p.add_argument("--n", type=options.integer(1), default=100, help="images from --dataset (default 100)")
    p.add_argument(
        "--pixels", type=options.integer(1), default=1, help="pixels to change (default 1; the paper: 1, 3, 5)"
    )
    p.add_argument("--target", default=None, help="target class name or index (default: untargeted)")
    p.add_argument("--population", type=options.integer(4), default=400, help="DE population per image (default 400)")
    p.add_argument("--iterations", type=options.integer(1), default=100, help="DE generations at most (default 100)")
    p.add_argument("--F", type=options.number(0, 2, above=True), default=0.5, help="DE mutation scale (default 0.5)")
    p.add_argument("--strategy", choices=["rand1", "best1"], default="rand1", help="DE mutation (default: rand1)")
    p.add_argument(
        "--threshold",
        type=options.number(0, 1),
        default=None,
        help="stop once p(true) < T (or p(target) > T); default: on success",
    )
    p.add_argument(
        "--batch-size", type=options.integer(1), default=None, help="images per forward pass (default: automatic)"
    )
    p.add_argument(
        "--precision", choices=["fp32", "bf16"], default="fp32", help="bf16: faster scoring, successes checked in fp32"
    )
    p.add_argument(
        "--figure-n", type=options.integer(1), default=12, help="images in figure.png (successes first; default 12)"
    )
    options.add_run_options(p, out="advex-onepixel", data=True, quiet=False)
    return p


def run(args) -> int:
    from advex.attacks import OnePixel

    attack = OnePixel(
        pixels=args.pixels, population=args.population, iterations=args.iterations, F=args.F,
        strategy=args.strategy, threshold=args.threshold, batch_size=args.batch_size, precision=args.precision,
        seed=args.seed,
    )  # fmt: skip
    model, x, y, target, names, source = _inputs(args)
    t0 = time.perf_counter()
    result = attack(model, x, y, target=target)
    wall = time.perf_counter() - t0
    options.note(f"model {model.name} on {model.device}; {attack!r}; {source}")
    _write(args, model, attack, result, x, target, names, source, wall)
    return 0


def _inputs(args):
    """The model, the images (photos at the network input, or the first --n test images the
    model gets right), their labels, the target and names, and a sentence saying which."""
    if args.images is not None:
        model = common.load_model(args.model or "efficientnet-lite0", args.device)
        target = model.class_index(args.target) if args.target is not None else None
        # attack the network's own input (e.g. 224x224), as Su et al. did (227x227): one
        # pixel of a photo at full resolution is averaged away by the resize
        x, names = common.photos_at_input(model, args.images)
        return (
            model,
            x,
            None,
            target,
            names,
            f"{len(names)} photos, attacked at the network input {tuple(x.shape[-2:])}",
        )
    from advex.evaluation import first_correct

    model = common.load_model(args.model or f"{args.dataset}-small", args.device)
    target = model.class_index(args.target) if args.target is not None else None
    data = common.dataset(args.dataset, "test", args.data_dir)
    idx = first_correct(model, data.images, data.labels, args.n, exclude=target)
    if idx.numel() == 0:
        raise AdvexError(f"{model.name} classifies none of the {args.dataset} test images correctly")
    x, y = data.floats(idx)
    skip = " and not of the target class" if target is not None else ""
    source = (
        f"the first {len(idx)} {args.dataset} test images {model.name} classifies correctly{skip} "
        f"(of the first {int(idx[-1]) + 1})"
    )
    return model, x, y, target, [f"test[{int(i)}]" for i in idx], source


def _write(args, model, attack, result, x, target, names, source, wall) -> None:
    from advex.data import save_png
    from advex.report import PixelItem, pixel_figure, print_table, write_summary

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = result.rows(model.classes)
    queries, ok = result.extra["queries"].float(), result.success
    for row, nm in zip(rows, names):
        row["image"] = nm
    if args.images is not None:
        for i, nm in enumerate(names):
            save_png(result.x_adv[i], out / f"{nm}_adv.png")
            save_png(x[i], out / f"{nm}_input.png")
            rows[i]["adversarial_png"] = str(out / f"{nm}_adv.png")
    order = sorted(range(len(rows)), key=lambda i: (not bool(ok[i]), i))[: args.figure_n]
    items = [
        PixelItem(names[i], x[i].cpu(), result.x_adv[i].cpu(), model.class_name(int(result.label[i])),
                  float(result.confidence[i]), model.class_name(int(result.label_adv[i])),
                  float(result.confidence_adv[i]), bool(ok[i]), [(p["row"], p["col"]) for p in rows[i]["pixels"]])
        for i in order
    ]  # fmt: skip
    kind = f"target {model.class_name(int(target))}" if target is not None else "untargeted"
    pixel_figure(items, out / "figure.png", title=f"{model.name}: {args.pixels}-pixel attack, {kind}")
    mq = float(queries[ok].mean()) if ok.any() else None
    write_summary(
        out / "onepixel.json",
        {
            "model": model.name, "attack": repr(attack), "images": source, "success_rate": result.success_rate,
            "successes": int(ok.sum()), "attacked": len(rows), "mean_queries": float(queries.mean()),
            "mean_queries_successful": mq, "attack_time_s": round(wall, 2),
            "time_per_image_s": round(wall / len(rows), 4), "results": rows,
        },
        command=["advex", *args.argv],
        device=model.device,
    )  # fmt: skip
    show = rows if len(rows) <= 20 else rows[:10]
    print_table(
        [
            {
                "image": r["image"],
                "orig": f"{r['label_name']} ({100 * r['confidence']:.0f}%)",
                "adv": f"{r['label_adv_name']} ({100 * r['confidence_adv']:.0f}%)",
                "px": "; ".join(f"({p['row']},{p['col']}) {p['old']}->{p['new']}" for p in r["pixels"]) or "-",
                "q": r["queries"],
                "ok": "yes" if r["success"] else "no",
            }
            for r in show
        ],
        [("image", "image"), ("orig", "original"), ("adv", "adversarial"), ("px", "pixels (row,col) old->new"),
         ("q", "queries"), ("ok", "success")],
        more=len(rows) - len(show),
    )  # fmt: skip
    print(
        f"\nsuccess {int(ok.sum())}/{len(rows)} ({100 * result.success_rate:.1f}%), mean queries "
        f"{float(queries.mean()):.0f}"
        + (f" ({mq:.0f} on successes)" if mq is not None else "")
        + f"; {wall:.1f} s ({1000 * wall / len(rows):.0f} ms per image)"
    )
    print(f"wrote {out}/onepixel.json and {out}/figure.png")
