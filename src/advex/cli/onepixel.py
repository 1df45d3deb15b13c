"""``advex onepixel``: change 1, 3 or 5 pixels to change the prediction (Su, Vargas & Sakurai
2019), by differential evolution, on dataset images, your image folder or your photos.

The images are chosen before the run (the first ``--n`` the model classifies correctly, by
one cheap forward pass), then attacked in batches of ``--batch-size``, each seeded by its
position: the same results with one process or under ``torchrun``, and after ``--resume``."""

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
    options.add_images(
        p, n=100, photos="your photos, attacked at the network input (ImageNet default model)",
        n_help="the first N images the model classifies correctly (and not of the --target class)",
    )  # fmt: skip
    options.add_model(
        p, help="zoo name, FILE.py[:NAME] or a checkpoint (default: DATASET-small, else efficientnet-lite0)"
    )
    p.add_argument(
        "--pixels", type=options.integer(1), default=1, help="pixels to change (default 1; the paper: 1, 3, 5)"
    )
    p.add_argument("--target", default=None, help="target class name or index (default: untargeted)")
    p.add_argument("--population", type=options.integer(4), default=400, help="DE population per image (default 400)")
    p.add_argument("--iterations", type=options.integer(1), default=100, help="DE generations at most (default 100)")
    p.add_argument("--F", type=options.number(0, 2, above=True), default=0.5, help="DE mutation scale (default 0.5)")
    p.add_argument(
        "--strategy", choices=["rand1", "best1"], help="DE mutation (default: rand1 for 1 pixel, best1 for more)"
    )
    p.add_argument(
        "--threshold",
        type=options.number(0, 1),
        default=None,
        help="stop once p(true) < T (or p(target) > T); default: on success",
    )
    options.add_batch_size(p, cpu=100, gpu=1000, what="images attacked together, one journal entry each")
    p.add_argument(
        "--precision", choices=["fp32", "bf16"], default="fp32", help="bf16: faster scoring, successes checked in fp32"
    )
    p.add_argument(
        "--figure-n", type=options.integer(1), default=12, help="images in figure.png (successes first; default 12)"
    )
    options.add_resume(p)
    options.add_run_options(p, out="advex-onepixel", data=True)
    return p


def run(args) -> int:
    from advex.evaluation import batch_seed

    procs = common.processes(args)
    args.model = args.model or ("efficientnet-lite0" if args.dataset is None else f"{args.dataset}-small")
    model = common.load_model(args.model, args.device)
    target = model.class_index(args.target) if args.target is not None else None
    source, images, ident, names, skipped = _chosen(args, model, target)
    attack = _attack(args, args.seed)
    attack.check_size(*common.first_images(source, 1, model)[0].shape[-2:])  # before anything is written
    journal = common.journal(args, model, ident, procs, ignored=("figure_n",))  # the figure: drawn at the end

    def work(batch, bar) -> dict:
        """One batch attacked with its own seed: per image, the row the library gives (named),
        and the confidences unrounded, from which the figure is drawn again."""
        bar.status(f"{args.pixels}-pixel differential evolution")
        r = _attack(args, batch_seed(args.seed, batch.start))(model, batch.x, batch.y, target=target)
        rows = r.rows(model.classes)
        for row, i in zip(rows, batch.index.tolist()):
            row["image"] = names[i]
        return {"rows": rows, "confidence": r.confidence.tolist(), "confidence_adv": r.confidence_adv.tolist(),
                "time_s": r.time_s}  # fmt: skip

    t0 = time.perf_counter()
    done = common.run(args, model, source, work, journal, procs)
    if done is None:  # another process of a torchrun run: rank 0 writes
        return 0
    options.note(f"model {model.name} on {model.device}; {attack!r}; {images}")
    _write(args, model, attack, done, source, target, images, skipped, time.perf_counter() - t0, procs.world)
    journal.finish()
    return 0


def _attack(args, seed: int):
    from advex.attacks import OnePixel

    return OnePixel(
        pixels=args.pixels, population=args.population, iterations=args.iterations, F=args.F,
        strategy=args.strategy, threshold=args.threshold, precision=args.precision, seed=seed,
    )  # fmt: skip


def _chosen(args, model, target):
    """The images to attack, fixed before the run: the photos at the network input, or the
    first ``--n`` of the dataset or folder (all of ``--indices``) the model classifies
    correctly and that are not of the target class. Returns them as a source, a sentence
    saying which, what identifies them in a journal, each source position's name, and the
    files found unreadable on the way."""
    from advex.evaluation import first_correct_in

    if args.images is not None:
        if args.split is not None or args.n is not None or args.indices is not None:
            raise AdvexError("--split, --n and --indices choose among --dataset or --data images; --images attacks "
                             "every photo given")  # fmt: skip
        # attack the network's own input (e.g. 224x224), as Su et al. did (227x227): one
        # pixel of a photo at full resolution is averaged away by the resize
        photos, names, digest = common.photo_set(model, args.images)
        if target is not None and (photos.labels == target).any():
            i = int((photos.labels == target).nonzero()[0])
            raise AdvexError(
                f"{model.name} already classifies photo {names[i]} as the target {model.class_name(target)!r}; "
                "give a different target, or leave that photo out"
            )
        images = f"{len(names)} photos, attacked at the network input {tuple(photos.shape[-2:])}"
        return photos, images, {"attacked": images, "pixels": digest}, names, []
    pool, phrase, names = common.candidates(args, model)
    common.probe(model, pool)
    n = (args.n or args._n_default) if args.indices is None else len(pool)
    idx, skipped = first_correct_in(model, pool, n, exclude=target)
    skip = " and not of the target class" if target is not None else ""
    if idx.numel() == 0:
        raise AdvexError(f"{model.name} classifies none of the {phrase} images correctly{skip}")
    if args.indices is None:
        images = f"the first {len(idx)} {phrase} images {model.name} classifies correctly{skip} " \
                 f"(of the first {int(idx[-1]) + 1})"  # fmt: skip
    else:
        images = f"the {len(idx)} of {phrase} that {model.name} classifies correctly{skip}"
    source = pool.select(idx)
    ident = {"attacked": images} | ({"files": source.fingerprint()} if args.data is not None else {})
    return source, images, ident, [names[i] for i in idx.tolist()], skipped


def _write(args, model, attack, done, source, target, images: str, skipped, wall: float, processes: int) -> None:
    """onepixel.json, figure.png (and for photos the input and adversarial PNGs) from the rows
    every batch gave: the adversarial images are the clean ones with the changed pixels."""
    import torch

    from advex.attacks import apply_changes
    from advex.data import save_png
    from advex.report import PixelItem, pixel_figure, write_summary

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [r for e in done.results for r in e["rows"]]
    conf = [c for e in done.results for c in e["confidence"]]
    conf_adv = [c for e in done.results for c in e["confidence_adv"]]
    at = [i for part in done.index for i in part]  # each row's position in the source
    ok = torch.tensor([r["success"] for r in rows], dtype=torch.bool)
    queries = torch.tensor([r["queries"] for r in rows]).float()
    order = sorted(range(len(rows)), key=lambda i: (not bool(ok[i]), i))[: args.figure_n]
    shown = list(range(len(rows))) if args.images is not None else order
    x, _ = common.first_images(source.select(torch.tensor([at[i] for i in shown])), len(shown), model)
    x = x.cpu()
    x_adv = apply_changes(x, [rows[i]["pixels"] for i in shown])
    if args.images is not None:
        for i in shown:
            save_png(x_adv[i], out / f"{rows[i]['image']}_adv.png")
            save_png(x[i], out / f"{rows[i]['image']}_input.png")
            rows[i]["adversarial_png"] = str(out / f"{rows[i]['image']}_adv.png")
    k = {i: j for j, i in enumerate(shown)}
    items = [
        PixelItem(rows[i]["image"], x[k[i]], x_adv[k[i]], rows[i]["label_name"], conf[i], rows[i]["label_adv_name"],
                  conf_adv[i], bool(ok[i]), [(p["row"], p["col"]) for p in rows[i]["pixels"]])
        for i in order
    ]  # fmt: skip
    kind = f"target {model.class_name(int(target))}" if target is not None else "untargeted"
    pixel_figure(items, out / "figure.png", title=f"{model.name}: {args.pixels}-pixel attack, {kind}")
    mq = float(queries[ok].mean()) if ok.any() else None
    attack_s = sum(e["time_s"] for e in done.results)
    skipped = list(skipped) + list(done.skipped)
    write_summary(
        out / "onepixel.json",
        {
            "model": model.name, "attack": repr(attack), "images": images, "success_rate": float(ok.float().mean()),
            "successes": int(ok.sum()), "attacked": len(rows), "mean_queries": float(queries.mean()),
            "mean_queries_successful": mq, "mean_scored": _mean_scored(rows), "batch_size": done.batch_size,
            "skipped": [list(s) for s in skipped],
            "results": rows,
            "run": {"wall_s": round(wall, 1), "attack_time_s": round(attack_s, 2),
                    "time_per_image_s": round(attack_s / len(rows), 4), "processes": processes,
                    "batches_from_journal": done.resumed},
        },
        command=["advex", *args.argv],
        device=model.device,
    )  # fmt: skip
    _print(rows, ok, queries, mq, attack_s)
    common.warn_skipped(skipped)
    print(f"wrote {out}/onepixel.json and {out}/figure.png")


def _mean_scored(rows) -> float:
    """Candidates the model scored per image (DE's repeats take their first's fitness);
    a journal written before advex counted them has queries only."""
    return sum(r.get("scored", r["queries"]) for r in rows) / len(rows)


def _print(rows, ok, queries, mq, seconds: float) -> None:
    from advex.report import print_table

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
        f"\nsuccess {int(ok.sum())}/{len(rows)} ({100 * float(ok.float().mean()):.1f}%), mean queries "
        f"{float(queries.mean()):.0f}"
        + (f" ({mq:.0f} on successes)" if mq is not None else "")
        + f", {_mean_scored(rows):.0f} scored by the model"
        + f"; attack {seconds:.1f} s ({1000 * seconds / len(rows):.0f} ms per image)"
    )
