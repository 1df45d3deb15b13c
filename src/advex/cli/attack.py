"""``advex attack``: the optimisation attack of Szegedy et al. (2013) on your own photos.

The attack runs, the adversarial photos are written as 8-bit PNGs, and success is measured
on those files read back from disk: what a user would share is what was measured."""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import torch

from advex.cli import common, options
from advex.errors import AdvexError

NAME = "attack"
HELP = "attack your own photos"


def add_parser(sub) -> argparse.ArgumentParser:
    p = options.add_command(sub, NAME, HELP, __doc__)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", nargs="+", metavar="PATH", help="image files or folders (PNG/JPEG)")
    src.add_argument(
        "--data", metavar="PATH",
        help="labelled images: a folder with one sub-folder per class, or a CSV of path,label; untargeted attacks "
        "move away from these labels, and success is judged against them",
    )  # fmt: skip
    p.add_argument("--target", default=None, help="target class name or index, e.g. ostrich or 9")
    p.add_argument("--untargeted", action="store_true", help="push away from the current prediction instead")
    p.add_argument(
        "--arch", default=None, help="architecture of a checkpoint given to --model (default: efficientnet-lite0)"
    )
    add_attack_options(p, "advex-attack")
    return p


def add_attack_options(p: argparse.ArgumentParser, out: str) -> None:
    """The options of the Szegedy attack, shared by ``attack`` and ``demo``."""
    options.add_model(p, default="efficientnet-lite0")
    p.add_argument("--method", choices=["lbfgs", "adam"], default="lbfgs", help="solver (default: lbfgs)")
    options.add_norm(p, default="l2")
    p.add_argument(
        "--c", type=options.positive, default=None, help="fix the l2 trade-off c (default: per-image search)"
    )
    options.add_eps(
        p, many=False, zero_ok=False, default=None, help="fix the linf radius, e.g. 4/255 (default: search)"
    )
    p.add_argument(
        "--search-steps", type=options.integer(1), default=7, help="optimisations per image in the search (default: 7)"
    )
    p.add_argument("--max-iter", type=options.integer(1), default=None, help="solver iterations per optimisation")
    p.add_argument(
        "--lr", type=options.positive, default=1 / 255, help="Adam step size, pixels in [0, 1] (default 1/255)"
    )
    p.add_argument(
        "--confidence", type=options.number(0), default=0.0, help="required logit margin of the target (default: 0)"
    )
    p.add_argument(
        "--max-memory",
        type=options.positive,
        default=8.0,
        help="GB: refuse photos whose attack needs more; it works at full resolution, about 0.56 GB per "
        "megapixel with lbfgs, 0.24 with adam (default 8)",
    )
    options.add_batch_size(p, cpu=8, gpu=32, what="photos attacked together")
    options.add_run_options(p, out=out)


def run(args) -> int:
    from advex.data import find_images, image_size

    if args.untargeted and args.target is not None:
        raise AdvexError("give either --target CLASS or --untargeted, not both")
    if not args.untargeted and args.target is None:
        raise AdvexError("give --target CLASS (a name such as ostrich, or an index) or --untargeted")
    attack = make_attack(args)
    model = common.load_model(args.model, args.device, args.arch)
    if args.target is not None:
        model.class_index(args.target)  # fail on an unknown name before any work
    labels = None
    if args.data is not None:
        listed, names = common.open_files(args.data, model)
        files, labels = listed.paths, listed.labels
    else:
        files = find_images(args.images)
    sizes = [(f.stem, *image_size(f)) for f in files]
    for part in batches(len(files), common.batch_size(args, model.device)):  # before decoding
        check_memory(attack, [sizes[i] for i in part], args.max_memory)
    images = common.photos(files, max_megapixels=None)
    if args.data is not None:  # named by their paths: two class folders may hold the same file name
        images = [replace(im, name=_stem(nm)) for im, nm in zip(images, names)]
    title = f"{model.name}: target {args.target}" if args.target else f"{model.name}: untargeted"
    return attack_photos(args, model, attack, images, args.target, title=title, save_originals=False, labels=labels)


def batches(n: int, size: int) -> list[range]:
    """The photos attacked together: ``size`` at a time (memory grows with their pixels)."""
    return [range(a, min(a + size, n)) for a in range(0, n, size)]


def _stem(name: str) -> str:
    """A file's path under --data as a name for its outputs: ``tabby/001.png`` -> ``tabby_001``."""
    return Path(name).with_suffix("").as_posix().replace("/", "_")


def make_attack(args):
    """The Szegedy attack the options describe."""
    from advex.attacks import Szegedy

    if args.eps is not None and args.norm != "linf":
        raise AdvexError("--eps fixes the L-inf radius: add --norm linf (with --norm l2, fix --c instead)")
    if args.c is not None and args.norm != "l2":
        raise AdvexError("--c is the trade-off of the l2 attack; with --norm linf fix --eps instead")
    return Szegedy(
        method=args.method, norm=args.norm, c=args.c, eps=args.eps, search_steps=args.search_steps,
        max_iter=args.max_iter, confidence=args.confidence, lr=args.lr, progress=not args.quiet,
    )  # fmt: skip


def check_memory(attack, photos: list[tuple[str, int, int]], limit_gb: float) -> None:
    """Refuse, before the work, ``photos`` (name, width, height) whose attack at full
    resolution would need more than ``limit_gb`` of memory."""
    w = max(pw for _, pw, _ in photos)
    h = max(ph for _, _, ph in photos)
    need = attack.memory_bytes(len(photos), h, w) / 1e9
    if need > limit_gb:
        name, bw, bh = max(photos, key=lambda p: p[1] * p[2])
        raise AdvexError(
            f"attacking {len(photos)} photo(s) at full resolution (the largest, {name}, is {bw}x{bh}, "
            f"{bw * bh / 1e6:.1f} megapixels) needs about {need:.1f} GB of memory, above --max-memory {limit_gb:g} GB; "
            "downscale the photos, attack fewer at a time (--batch-size), or raise --max-memory"
        )


def attack_photos(args, model, attack, images, target, *, title: str, save_originals: bool, labels=None) -> int:
    """Attack ``--batch-size`` photos at a time (away from their ``labels`` if given, else from
    the model's predictions), write PNGs, re-read them to measure success, then the figure,
    JSON and table."""
    from advex.report import FigureRow, three_column_figure, write_summary

    out = Path(args.out)
    rows, reread, ok, rms, attack_time = [], [], [], [], 0.0
    for part in batches(len(images), common.batch_size(args, model.device)):
        some = [images[i] for i in part]
        y = None if labels is None else labels[part.start : part.stop]
        t0 = time.perf_counter()
        result = attack(model, [im.pixels for im in some], y, target=target)
        attack_time += time.perf_counter() - t0
        out.mkdir(parents=True, exist_ok=True)
        r = _save_and_measure(out, model, some, result, save_originals, y)
        rows, reread, ok, rms = rows + r[0], reread + r[1], ok + [r[2]], rms + [r[3]]
    ok, rms = torch.cat(ok), torch.cat(rms)
    options.note(f"model {model.name} on {model.device}; {attack!r}; target {target or 'none (untargeted)'}")
    figure = [
        FigureRow(im.name, im.pixels, reread[i], row["original"], row["original_confidence"], row["adversarial"],
                  row["adversarial_confidence"], row["success"])
        for i, (im, row) in enumerate(zip(images, rows))
    ]  # fmt: skip
    three_column_figure(figure, out / "figure.png", title=title)
    summary = {
        "model": model.name,
        "attack": repr(attack),
        "success_measured_on": "8-bit PNGs re-read from disk",
        "success_rate": float(ok.float().mean()),
        "median_rms": float(rms.median()),
        "attack_time_s": round(attack_time, 2),
        "images": rows,
    }
    write_summary(out / "summary.json", summary, command=["advex", *args.argv], device=model.device)
    _print(rows)
    print(
        f"\nsuccess {int(ok.sum())}/{len(images)} (measured on the saved 8-bit PNGs), "
        f"median rms distortion {summary['median_rms']:.5f}, attack {attack_time:.1f} s"
    )
    print(f"wrote {out}/figure.png, {out}/summary.json and {len(images)} *_adv.png")
    return 0


def _save_and_measure(out: Path, model, images, result, save_originals: bool, labels=None):
    """Write each adversarial photo as an 8-bit PNG, read it back, and measure on what was
    read: the prediction, success (untargeted: away from ``labels`` if given, else from the
    clean prediction), and the perturbation. Returns one JSON row per photo, the re-read
    images, and the success and rms distortion per photo."""
    from advex.data import load_image, pack, save_png

    adv_paths = [out / f"{im.name}_adv.png" for im in images]
    for im, xa, path in zip(images, result.x_adv, adv_paths):
        if save_originals:
            save_png(im.pixels, out / f"{im.name}_orig.png")
        save_png(xa, path)
    reread = [load_image(p).pixels for p in adv_paths]
    xb, sizes = pack(reread)
    x0, _ = pack([im.pixels for im in images])
    label, conf, prob = (t.cpu() for t in model.predict(xb.to(model.device), sizes))
    away = result.label if labels is None else torch.as_tensor(labels).cpu()
    success = label == result.target if result.target is not None else label != away
    r = (xb - x0).flatten(1)
    l2, linf = r.norm(dim=1), r.abs().amax(1)
    rms = l2 / (sizes[:, 0] * sizes[:, 1] * 3).float().sqrt()
    rows = [
        {
            "image": im.name,
            "source": im.source,
            "adversarial_png": str(adv_paths[i]),
            "size": [int(sizes[i, 0]), int(sizes[i, 1])],
            **({} if labels is None else {"label": model.class_name(int(labels[i]))}),
            "original": model.class_name(int(result.label[i])),
            "original_confidence": round(float(result.confidence[i]), 4),
            "adversarial": model.class_name(int(label[i])),
            "adversarial_confidence": round(float(conf[i]), 4),
            "target": None if result.target is None else model.class_name(int(result.target[i])),
            "target_confidence": None if result.target is None else round(float(prob[i, result.target[i]]), 4),
            "l2": round(float(l2[i]), 4),
            "linf": round(float(linf[i]), 5),
            "linf_255": int(round(float(linf[i]) * 255)),
            "rms": round(float(rms[i]), 6),
            "c": _number(result.extra, "c", i),
            "eps": _number(result.extra, "eps", i),
            "grad_evals": int(result.grad_evals[i]),
            "success": bool(success[i]),
        }
        for i, im in enumerate(images)
    ]
    return rows, reread, success, rms


def _print(rows) -> None:
    from advex.report import print_table

    print_table(
        [
            {
                "image": row["image"],
                "label": row.get("label"),
                "orig": f"{row['original']} ({100 * row['original_confidence']:.1f}%)",
                "adv": row["adversarial"],
                "conf": f"{100 * row['adversarial_confidence']:.1f}%",
                "l2": f"{row['l2']:.3f}",
                "linf": f"{row['linf']:.4f}",
                "linf_255": row["linf_255"],
                "rms": f"{row['rms']:.5f}",
                "ok": "yes" if row["success"] else "NO",
            }
            for row in rows
        ],
        [("image", "image"), *([("label", "label")] if "label" in rows[0] else []), ("orig", "original"),
         ("adv", "adversarial"), ("conf", "confidence"), ("l2", "L2"), ("linf", "Linf"), ("linf_255", "Linf/255"),
         ("rms", "rms"), ("ok", "success")],
    )  # fmt: skip


def _number(extra: dict, key: str, i: int) -> float | None:
    """Image ``i``'s ``key`` of the attack's extras; None where it was not attacked (NaN, or no
    image of the batch was: all already misclassified)."""
    v = extra.get(key)
    return None if v is None or torch.isnan(v[i]) else float(v[i])
