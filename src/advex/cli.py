"""The ``advex`` command line: parses, calls the library, prints, saves."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from advex import __version__
from advex.errors import AdvexError

DEMO_TARGET = "ostrich"


# ---------------------------------------------------------------------------- helpers
def _load_model(spec: str, arch: str | None, device: str | None):
    from advex.models import DEFAULT_MODEL, load, names

    p = Path(spec)
    if spec not in names() and p.suffix in (".safetensors", ".pt", ".pth", ".bin"):
        return load(arch or DEFAULT_MODEL, weights=p, device=device)
    if arch is not None:
        raise AdvexError("--arch names the architecture of a checkpoint given to --model; drop it for zoo names")
    return load(spec, device=device)


def _table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    cells = [[h for _, h in columns]] + [[str(r[k]) for k, _ in columns] for r in rows]
    widths = [max(len(c[j]) for c in cells) for j in range(len(columns))]
    lines = ["  ".join(c[j].ljust(widths[j]) for j in range(len(columns))) for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _photos_at_input(model, paths) -> tuple:
    """Photos cropped/resized to the model's input size (8-bit), and their names."""
    from advex.data import load_images, pack, quantize

    images = load_images(paths)
    for im in images:
        for note in im.notes:
            print(f"note: {note}", file=sys.stderr)
    canvas, sizes = pack([im.pixels for im in images])
    if model.input_size is None and len({tuple(s_) for s_ in sizes.tolist()}) > 1:
        raise AdvexError(f"{model.name} has no input size to resize to: give photos of one size")
    x = quantize(model.fit_input(canvas, sizes if model.input_size is not None else None))
    return x, [im.name for im in images]


def _machine() -> str:
    import torch

    return f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs, torch {torch.__version__}"


def _run_attack(args, model, images, target, title: str, save_originals: bool) -> int:
    """Attack, write PNGs, re-read them to measure success, then the figure and JSON."""
    import torch

    from advex.attacks import Szegedy
    from advex.data.images import atomic_write_bytes, load_image, pack, save_png
    from advex.report import FigureRow, three_column_figure

    for im in images:
        for note in im.notes:
            print(f"note: {note}", file=sys.stderr)
    attack = Szegedy(
        method=args.method,
        norm=args.norm,
        c=args.c,
        eps=args.eps,
        search_steps=args.search_steps,
        max_iter=args.max_iter,
        confidence=args.confidence,
        lr=args.lr,
        progress=not args.quiet,
    )
    print(f"model {model.name} on {model.device}; {attack!r}; target {target or 'none (untargeted)'}", file=sys.stderr)
    t0 = time.perf_counter()
    result = attack(model, [im.pixels for im in images], target=target)
    attack_time = time.perf_counter() - t0

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    adv_paths = []
    for im, xa in zip(images, result.x_adv):
        if save_originals:
            save_png(im.pixels, out / f"{im.name}_orig.png")
        path = out / f"{im.name}_adv.png"
        save_png(xa, path)
        adv_paths.append(path)

    # Success is measured on what was saved: re-read the 8-bit PNGs from disk.
    reread = [load_image(p).pixels for p in adv_paths]
    xb, sizes = pack(reread)
    x0, _ = pack([im.pixels for im in images])
    dev = model.device
    label, conf, prob = model.predict(xb.to(dev), sizes)
    label, conf, prob = label.cpu(), conf.cpu(), prob.cpu()
    if result.target is not None:
        success = label == result.target
    else:
        success = label != result.label
    r = (xb - x0).flatten(1)
    numel = (sizes[:, 0] * sizes[:, 1] * 3).float()
    l2, linf = r.norm(dim=1), r.abs().amax(1)
    rms = l2 / numel.sqrt()

    rows, fig_rows = [], []
    for i, im in enumerate(images):
        rows.append(
            {
                "image": im.name,
                "source": im.source,
                "adversarial_png": str(adv_paths[i]),
                "size": [int(sizes[i, 0]), int(sizes[i, 1])],
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
                "c": None if torch.isnan(result.extra["c"][i]) else float(result.extra["c"][i]),
                "eps": None if torch.isnan(result.extra["eps"][i]) else float(result.extra["eps"][i]),
                "grad_evals": int(result.grad_evals[i]),
                "success": bool(success[i]),
            }
        )
        fig_rows.append(
            FigureRow(
                im.name,
                im.pixels,
                reread[i],
                rows[-1]["original"],
                rows[-1]["original_confidence"],
                rows[-1]["adversarial"],
                rows[-1]["adversarial_confidence"],
                bool(success[i]),
            )
        )
    three_column_figure(fig_rows, out / "figure.png", title=title)
    summary = {
        "advex_version": __version__,
        "command": " ".join(["advex", *args.argv]),
        "model": model.name,
        "device": str(dev),
        "attack": repr(attack),
        "success_measured_on": "8-bit PNGs re-read from disk",
        "success_rate": float(success.float().mean()),
        "median_rms": float(rms.median()),
        "attack_time_s": round(attack_time, 2),
        "machine": _machine(),
        "images": rows,
    }
    atomic_write_bytes(out / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())

    cols = [
        ("image", "image"),
        ("orig", "original"),
        ("adv", "adversarial"),
        ("conf", "confidence"),
        ("l2", "L2"),
        ("linf", "Linf"),
        ("linf_255", "Linf/255"),
        ("rms", "rms"),
        ("ok", "success"),
    ]
    table_rows = [
        {
            "image": r_["image"],
            "orig": f"{r_['original']} ({100 * r_['original_confidence']:.1f}%)",
            "adv": r_["adversarial"],
            "conf": f"{100 * r_['adversarial_confidence']:.1f}%",
            "l2": f"{r_['l2']:.3f}",
            "linf": f"{r_['linf']:.4f}",
            "linf_255": r_["linf_255"],
            "rms": f"{r_['rms']:.5f}",
            "ok": "yes" if r_["success"] else "NO",
        }
        for r_ in rows
    ]
    print(_table(table_rows, cols))
    print(
        f"\nsuccess {int(success.sum())}/{len(images)} (measured on the saved 8-bit PNGs), "
        f"median rms distortion {float(rms.median()):.5f}, attack {attack_time:.1f} s"
    )
    print(f"wrote {out}/figure.png, {out}/summary.json and {len(images)} *_adv.png")
    return 0


# ---------------------------------------------------------------------------- commands
def cmd_demo(args) -> int:
    from advex.data import sample_photos

    t0 = time.perf_counter()
    model = _load_model(args.model, None, args.device)
    images = sample_photos()
    rc = _run_attack(
        args,
        model,
        images,
        DEMO_TARGET,
        title=f'{model.name}: every photo plus an imperceptible r is an "{DEMO_TARGET}"',
        save_originals=True,
    )
    print(f"demo wall time {time.perf_counter() - t0:.1f} s")
    return rc


def cmd_attack(args) -> int:
    from advex.data import load_images

    if args.untargeted and args.target is not None:
        raise AdvexError("give either --target CLASS or --untargeted, not both")
    if not args.untargeted and args.target is None:
        raise AdvexError("give --target CLASS (a name such as ostrich, or an index) or --untargeted")
    images = load_images(args.images)
    model = _load_model(args.model, args.arch, args.device)
    if args.target is not None:
        model.class_index(args.target)  # fail on an unknown name before any work
    title = f"{model.name}: target {args.target}" if args.target else f"{model.name}: untargeted"
    return _run_attack(args, model, images, args.target, title=title, save_originals=False)


def cmd_train(args) -> int:
    from advex.defences import TrainConfig, train

    cfg = TrainConfig(
        dataset=args.dataset,
        arch=args.arch,
        defence=args.defence,
        eps=args.eps,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        optimizer=args.optimizer,
        weight_decay=args.weight_decay,
        attack_steps=args.attack_steps,
        step_size=args.step_size,
        eps_ramp=args.eps_ramp,
        trades_beta=args.trades_beta,
        kappa_end=args.kappa_end,
        init=args.init,
        eval_n=args.eval_n,
        eval_steps=args.eval_steps,
        train_n=args.train_n,
        max_steps=args.max_steps,
        seed=args.seed,
        data_dir=args.data_dir,
    )
    if not args.resume:
        cfg.resolved()  # bad options fail before anything is read or written
    run = train(
        cfg,
        args.out,
        resume=args.resume,
        device=args.device,
        progress=not args.quiet,
        command=" ".join(["advex", *args.argv]),
        download=args.download,
    )
    card = run.card
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    if card and run.rank == 0:
        rob = (
            f", robust {100 * card['robust_acc']:.2f}% ({card['robust_eval']})"
            if card["robust_acc"] is not None
            else ""
        )
        print(f"clean test accuracy {100 * card['clean_acc']:.2f}%{rob}; {card['train_time_s']} s; wrote {args.out}/")
    return 0


def cmd_evaluate(args) -> int:
    import torch

    from advex.data.datasets import load_dataset
    from advex.evaluation import evaluate
    from advex.report import accuracy_vs_eps

    eps = [_fraction(e) for e in args.eps.split(",")] if args.eps else None
    if not eps or any(e < 0 for e in eps):
        raise AdvexError("--eps takes a comma-separated list of values >= 0, e.g. 0.1,0.2,0.3 or 2/255,8/255")
    if args.norm == "linf" and max(eps) > 1:
        raise AdvexError(f"--eps {max(eps):g} is larger than the [0, 1] pixel range; give eps in [0, 1] (e.g. 8/255)")
    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
    model = _load_model(args.model, None, args.device)
    data = load_dataset(args.dataset, "test", args.data_dir).subset(args.n)
    x, y = data.floats()
    t0 = time.perf_counter()
    ev = evaluate(
        model,
        x,
        y,
        eps,
        norm=args.norm,
        attacks=attacks,
        steps=args.steps,
        queries=args.queries,
        n_targets=args.n_targets,
        seed=args.seed,
    )
    wall = time.perf_counter() - t0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = ev.to_dict() | {
        "model": model.name,
        "dataset": args.dataset,
        "wall_s": round(wall, 1),
        "command": " ".join(["advex", *args.argv]),
        "device": str(model.device),
        "torch": torch.__version__,
    }
    from advex.data.images import atomic_write_bytes

    atomic_write_bytes(out / "evaluation.json", (json.dumps(summary, indent=2) + "\n").encode())
    accuracy_vs_eps(
        ev.eps,
        ev.per_attack,
        ev.ensemble,
        out / "accuracy_vs_eps.png",
        f"{model.name} on {len(x)} {args.dataset} test images ({args.norm})",
        clean=ev.clean_acc,
    )
    cols = [("eps", "eps")] + [(a, a) for a in ev.per_attack] + [("ens", "ensemble")]
    rows = [
        {
            "eps": f"{e:.4g}" + (f" ({255 * e:.3g}/255)" if 0 < e < 1 else ""),
            **{a: f"{100 * ev.per_attack[a][i]:.1f}%" for a in ev.per_attack},
            "ens": f"{100 * ev.ensemble[i]:.1f}%",
        }
        for i, e in enumerate(ev.eps)
    ]
    print(f"{model.name}: clean accuracy {100 * ev.clean_acc:.1f}% on {len(x)} images; robust accuracy ({args.norm}):")
    print(_table(rows, cols))
    for w in ev.warnings:
        print(f"WARNING: {w}", file=sys.stderr)
    print(f"wall time {wall:.1f} s; wrote {out}/evaluation.json and {out}/accuracy_vs_eps.png")
    return 0


def cmd_onepixel(args) -> int:
    from advex.attacks import OnePixel
    from advex.data.images import atomic_write_bytes, save_png
    from advex.report import PixelItem, pixel_figure

    if (args.images is None) == (args.dataset is None):
        raise AdvexError("give either --dataset mnist|cifar10 or --images PATH...")
    if args.figure_n < 1:
        raise AdvexError(f"--figure-n must be >= 1, got {args.figure_n}")
    attack = OnePixel(
        pixels=args.pixels,
        population=args.population,
        iterations=args.iterations,
        F=args.F,
        strategy=args.strategy,
        threshold=args.threshold,
        batch_size=args.batch_size,
        precision=args.precision,
        seed=args.seed,
    )
    names: list[str]
    if args.images is not None:
        model = _load_model(args.model or "efficientnet-lite0", None, args.device)
        target = model.class_index(args.target) if args.target is not None else None
        # attack the network's own input (e.g. 224x224), as Su et al. did (227x227): one
        # pixel of a photo at full resolution is averaged away by the resize
        x, names = _photos_at_input(model, args.images)
        y = None
        source = f"{len(names)} photos, attacked at the network input {tuple(x.shape[-2:])}"
    else:
        from advex.data.datasets import load_dataset
        from advex.evaluation import first_correct

        if args.n < 1:
            raise AdvexError(f"--n must be >= 1, got {args.n}")
        model = _load_model(args.model or f"{args.dataset}-small", None, args.device)
        target = model.class_index(args.target) if args.target is not None else None
        data = load_dataset(args.dataset, "test", args.data_dir)
        idx = first_correct(model, data.images, data.labels, args.n, exclude=target)
        if idx.numel() == 0:
            raise AdvexError(f"{model.name} classifies none of the {args.dataset} test images correctly")
        x, y = data.floats(idx)
        names = [f"test[{int(i)}]" for i in idx]
        skip = " and not of the target class" if target is not None else ""
        source = (
            f"the first {len(idx)} {args.dataset} test images {model.name} classifies correctly{skip} "
            f"(of the first {int(idx[-1]) + 1})"
        )
    print(f"model {model.name} on {model.device}; {attack!r}; {source}", file=sys.stderr)
    t0 = time.perf_counter()
    result = attack(model, x, y, target=target)
    wall = time.perf_counter() - t0

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = result.rows(model.classes)
    queries = result.extra["queries"].float()
    ok = result.success
    for r_, nm in zip(rows, names):
        r_["image"] = nm
    if args.images is not None:
        for i, nm in enumerate(names):
            save_png(result.x_adv[i], out / f"{nm}_adv.png")
            save_png(x[i], out / f"{nm}_input.png")
            rows[i]["adversarial_png"] = str(out / f"{nm}_adv.png")
    order = sorted(range(len(rows)), key=lambda i: (not bool(ok[i]), i))[: args.figure_n]
    items = [
        PixelItem(
            names[i],
            x[i].cpu(),
            result.x_adv[i].cpu(),
            model.class_name(int(result.label[i])),
            float(result.confidence[i]),
            model.class_name(int(result.label_adv[i])),
            float(result.confidence_adv[i]),
            bool(ok[i]),
            [(p["row"], p["col"]) for p in result.extra["pixels"][i]],
        )
        for i in order
    ]
    kind = f"target {model.class_name(int(target))}" if target is not None else "untargeted"
    pixel_figure(items, out / "figure.png", title=f"{model.name}: {args.pixels}-pixel attack, {kind}")
    summary = {
        "advex_version": __version__,
        "command": " ".join(["advex", *args.argv]),
        "model": model.name,
        "device": str(model.device),
        "attack": repr(attack),
        "images": source,
        "success_rate": result.success_rate,
        "successes": int(ok.sum()),
        "attacked": len(rows),
        "mean_queries": float(queries.mean()),
        "mean_queries_successful": float(queries[ok].mean()) if ok.any() else None,
        "attack_time_s": round(wall, 2),
        "time_per_image_s": round(wall / len(rows), 4),
        "machine": _machine(),
        "results": rows,
    }
    atomic_write_bytes(out / "onepixel.json", (json.dumps(summary, indent=2) + "\n").encode())
    show = rows if len(rows) <= 20 else rows[:10]
    table = [
        {
            "image": r_["image"],
            "orig": f"{r_['label_name']} ({100 * r_['confidence']:.0f}%)",
            "adv": f"{r_['label_adv_name']} ({100 * r_['confidence_adv']:.0f}%)",
            "px": "; ".join(f"({p['row']},{p['col']}) {p['old']}->{p['new']}" for p in r_["pixels"]) or "-",
            "q": r_["queries"],
            "ok": "yes" if r_["success"] else "no",
        }
        for r_ in show
    ]
    cols = [("image", "image"), ("orig", "original"), ("adv", "adversarial"), ("px", "pixels (row,col) old->new")]
    print(_table(table, cols + [("q", "queries"), ("ok", "success")]))
    if len(rows) > len(show):
        print(f"... {len(rows) - len(show)} more in onepixel.json")
    mq = summary["mean_queries_successful"]
    print(
        f"\nsuccess {int(ok.sum())}/{len(rows)} ({100 * result.success_rate:.1f}%), mean queries "
        f"{float(queries.mean()):.0f}"
        + (f" ({mq:.0f} on successes)" if mq is not None else "")
        + f"; {wall:.1f} s ({1000 * wall / len(rows):.0f} ms per image)"
    )
    print(f"wrote {out}/onepixel.json and {out}/figure.png")
    return 0


# ---------------------------------------------------------------------------- patch
def _range(value: str) -> tuple[float, float]:
    """ "LO,HI" or one number."""
    try:
        parts = [float(v) for v in value.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or LO,HI, got {value!r}") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected a number or LO,HI, got {value!r}")
    return parts[0], parts[1]


def _patch_images(args, model, split: str, n: int | None, paths):
    """(images, names, source text): photos at the network input, or the first n dataset images (uint8)."""
    if paths is not None:
        x, names = _photos_at_input(model, paths)
        return x, names, f"{len(names)} photos at the network input {tuple(x.shape[-2:])}"
    from advex.data.datasets import load_dataset

    if n is not None and n < 1:
        raise AdvexError(f"the number of images must be >= 1, got {n}")
    data = load_dataset(args.dataset, split, args.data_dir).subset(n)
    return data.images, [f"{split}[{i}]" for i in range(len(data))], f"{len(data)} {args.dataset} {split} images"


def _scene_items(ev, names, model, k: int):
    from advex.report import SceneItem

    # images already predicted as the target prove nothing: show the others, hits first
    eligible = [i for i in range(len(names)) if bool(ev.eligible[i])] or list(range(len(names)))
    order = sorted(eligible, key=lambda i: (not bool(ev.hits[i, 0]), i))[:k]
    return [
        SceneItem(
            names[i],
            ev.example[i],
            model.class_name(int(ev.label[i])),
            float(ev.confidence[i]),
            model.class_name(int(ev.label_patched[i, 0])),
            float(ev.confidence_patched[i, 0]),
            bool(ev.hits[i, 0]),
        )
        for i in order
    ]


def _evaluation_json(ev, names, model) -> dict:
    hits = ev.hits
    per = []
    for i, nm in enumerate(names):
        per.append(
            {
                "image": nm,
                "label": model.class_name(int(ev.label[i])),
                "confidence": round(float(ev.confidence[i]), 4),
                "eligible": bool(ev.eligible[i]),
                "hits": int(hits[i].sum()),
                "placements": int(hits.shape[1]),
                "patched": [
                    {
                        "label": model.class_name(int(ev.label_patched[i, k])),
                        "confidence": round(float(ev.confidence_patched[i, k]), 4),
                        "target_prob": round(float(ev.target_prob[i, k]), 4),
                        **ev.placements[k].rows()[i],
                    }
                    for k in range(hits.shape[1])
                ],
            }  # fmt: skip
        )
    return {
        "success_rate": ev.success_rate,
        "images": len(names),
        "eligible_images": int(ev.eligible.sum()),
        "placements_per_image": int(hits.shape[1]),
        "mean_target_prob": float(ev.target_prob[ev.eligible].mean()) if ev.eligible.any() else None,
        "time_s": round(ev.time_s, 2),
        "per_image": per,
    }


def cmd_patch_train(args) -> int:

    from advex.attacks import Patch, Printability, evaluate_patch
    from advex.attacks.patch import patch_mask
    from advex.data import load_patch, save_patch
    from advex.data.images import atomic_write_bytes
    from advex.report import patch_curve, patch_sheet

    if (args.images is None) == (args.dataset is None):
        raise AdvexError("give either --images PATH... (photos) or --dataset mnist|cifar10")
    if args.eval_images is not None and args.dataset is not None:
        raise AdvexError("--eval-images goes with --images; with --dataset the test split is the held-out set")
    if args.placements < 1 or args.sheet_n < 1 or args.print_px < 16:
        raise AdvexError("--placements and --sheet-n must be >= 1 and --print-px >= 16")
    photos = args.images is not None
    model = _load_model(args.model or ("efficientnet-lite0" if photos else f"{args.dataset}-small"), None, args.device)
    ensemble = [model] + [_load_model(m, None, args.device) for m in args.ensemble or []]
    target = model.class_index(args.target)
    augment = photos if args.augment is None else args.augment
    attack = Patch(
        size=args.size,
        shape=args.shape,
        steps=args.steps,
        batch_size=args.batch_size or (16 if photos else 128),
        lr=args.lr,
        rotation=args.rotation,
        scale=args.scale,
        printability=Printability() if args.printability else Printability.none(),
        augment=augment,
        seed=args.seed,
        progress=not args.quiet,
    )
    x, names, source = _patch_images(args, model, "train", args.n, args.images)
    if args.eval_images is not None:
        xe, enames, esource = _patch_images(args, model, "test", None, args.eval_images)
        held_out = True
    elif args.dataset is not None:
        xe, enames, esource = _patch_images(args, model, "test", args.eval_n, None)
        held_out = True
    else:
        xe, enames, esource, held_out = x, names, source + " (the training photos: not held out)", False
    tname = model.class_name(target)
    print(f"model {model.name} on {model.device}; {attack!r}; target {tname}; training on {source}", file=sys.stderr)
    result = attack(ensemble if len(ensemble) > 1 else model, x, target)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"target": target, "target_name": tname, "size": args.size, "shape": args.shape, "model": model.name}
    res = result.patch.shape[-1]
    k = max(1, -(-args.print_px // res))
    sharp = patch_mask(args.shape, res * k, supersample=1) if args.shape == "circle" else None
    save_patch(out / "patch.png", result.patch, result.mask, pixels=args.print_px, sharp_mask=sharp, meta=meta)
    # every number reported is measured with the patch as the PNG gives it back
    lp = load_patch(out / "patch.png")
    patch, mask = _patch_channels(lp, x.shape[1])
    ev_kw = dict(size=args.size, mask=mask, placements=args.placements, rotation=args.rotation, seed=args.seed)
    ev = evaluate_patch(model, patch, xe, target, **ev_kw)
    ev_train = None
    if held_out:
        ev_train = evaluate_patch(model, patch, x[: max(len(enames), 16)], target, **ev_kw)
    items = _scene_items(ev, enames, model, args.sheet_n)
    where = "held-out" if held_out else "training"
    patch_sheet(
        items,
        out / "sheet.png",
        patch=patch * mask + (1 - mask),
        title=f"{model.name}: a {100 * args.size:g}% patch -> {tname} ({where} images, random placements): "
        f"{100 * ev.success_rate:.0f}%",
    )
    patch_curve(result.curve, out / "curve.png", title=f"training: {tname}, {100 * args.size:g}% patch")
    summary = {
        "advex_version": __version__,
        "command": " ".join(["advex", *args.argv]),
        "model": model.name,
        "ensemble": [m.name for m in ensemble],
        "device": str(model.device),
        "attack": repr(attack),
        "target": target,
        "target_name": tname,
        "training_images": source,
        "evaluation_images": esource,
        "held_out": held_out,
        "train_time_s": round(result.time_s, 2),
        "samples": result.samples,
        "settings": result.settings,
        "curve": result.curve,
        "evaluation": _evaluation_json(ev, enames, model),
        "training_set_success_rate": ev_train.success_rate if ev_train is not None else ev.success_rate,
        "patch_png": str(out / "patch.png"),
        "patch_png_enlarged": k,
        "machine": _machine(),
    }
    atomic_write_bytes(out / "patch.json", (json.dumps(summary, indent=2) + "\n").encode())
    print(
        f"trained {args.steps} steps in {result.time_s:.1f} s; targeted success ({tname}) on {esource}, "
        f"{args.placements} random placements each: {100 * ev.success_rate:.1f}% "
        f"({int(ev.eligible.sum())} images not already {tname})"
    )
    if ev_train is not None:
        print(f"on training images: {100 * ev_train.success_rate:.1f}%")
    print(f"wrote {out}/patch.png ({res * k} px, {k}x the trained {res} px), sheet.png, curve.png, patch.json")
    return 0


def _patch_channels(lp, channels: int):
    """A PNG patch (RGB) for images of ``channels`` channels: grey (the mean) for 1."""
    if channels == 1:
        return lp.patch.mean(0, keepdim=True), lp.mask
    if channels != lp.patch.shape[0]:
        raise AdvexError(f"the patch has {lp.patch.shape[0]} channels but the images have {channels}")
    return lp.patch, lp.mask


def _position(value: str) -> tuple[float, float]:
    try:
        r, c = (float(v) for v in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--position takes ROW,COL fractions of the image, e.g. 0.5,0.5; got {value!r}"
        ) from None
    return r, c


def cmd_patch_apply(args) -> int:
    from advex.attacks import evaluate_patch
    from advex.data import load_patch, save_png
    from advex.data.images import atomic_write_bytes
    from advex.report import patch_sheet

    if (args.images is None) == (args.dataset is None):
        raise AdvexError("give either --images PATH... or --dataset mnist|cifar10")
    if args.placements < 1 or args.sheet_n < 1 or args.save_n < 0:
        raise AdvexError("--placements and --sheet-n must be >= 1, --save-n >= 0")
    lp = load_patch(args.patch)
    meta = lp.meta
    photos = args.images is not None
    if args.model is not None:
        model = _load_model(args.model, None, args.device)
    elif meta.get("model") is not None:  # a name from the file: a zoo model only, never code
        from advex.models import load

        try:
            model = load(str(meta["model"]), device=args.device, allow_code=False)
        except AdvexError as e:
            raise AdvexError(f"{args.patch} records its model as {meta['model']!r}: {e}; give --model") from None
    else:
        model = _load_model("efficientnet-lite0" if photos else f"{args.dataset}-small", None, args.device)
    if args.target is None and meta.get("target_name") is None:
        raise AdvexError(f"{args.patch} does not record its target class: give --target")
    target = model.class_index(args.target if args.target is not None else meta["target_name"])
    size = args.size if args.size is not None else meta.get("size", 0.1)
    x, names, source = _patch_images(args, model, "test", args.n if not photos else None, args.images)
    patch, mask = _patch_channels(lp, x.shape[1])
    ev = evaluate_patch(
        model,
        patch,
        x,
        target,
        size=size,
        mask=mask,
        placements=args.placements,
        rotation=args.rotation,
        scale=args.scale,
        position=args.position,
        seed=args.seed,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    saved = []
    for i, nm in enumerate(names[: len(names) if photos else args.save_n]):
        fn = out / (f"{nm}_patched.png" if photos else f"{nm.replace('[', '_').replace(']', '')}_patched.png")
        save_png(ev.example[i] if ev.example.shape[1] == 3 else ev.example[i].expand(3, -1, -1), fn)
        saved.append(str(fn))
    tname = model.class_name(target)
    patch_sheet(
        _scene_items(ev, names, model, args.sheet_n),
        out / "sheet.png",
        patch=patch * mask + (1 - mask),
        title=f"{model.name}: {Path(args.patch).name} ({100 * size:g}% of the image) -> {tname}: "
        f"{100 * ev.success_rate:.0f}%",
    )
    summary = {
        "advex_version": __version__,
        "command": " ".join(["advex", *args.argv]),
        "model": model.name,
        "patch": str(args.patch),
        "patch_meta": meta,
        "target": target,
        "target_name": tname,
        "size": size,
        "images": source,
        "placement": "fixed position" if args.position is not None else "random (seeded)",
        "evaluation": _evaluation_json(ev, names, model),
        "patched_pngs": saved,
        "machine": _machine(),
    }
    atomic_write_bytes(out / "apply.json", (json.dumps(summary, indent=2) + "\n").encode())
    rows = []
    for i, nm in enumerate(names[:20]):
        rows.append(
            {
                "image": nm,
                "orig": f"{model.class_name(int(ev.label[i]))} ({100 * float(ev.confidence[i]):.0f}%)",
                "new": f"{model.class_name(int(ev.label_patched[i, 0]))} "
                f"({100 * float(ev.confidence_patched[i, 0]):.0f}%)",
                "hits": f"{int(ev.hits[i].sum())}/{args.placements}",
            }
        )
    print(_table(rows, [("image", "image"), ("orig", "without patch"), ("new", "with patch"), ("hits", "target hits")]))
    if len(names) > 20:
        print(f"... {len(names) - 20} more in apply.json")
    print(
        f"\ntargeted success ({tname}): {100 * ev.success_rate:.1f}% of {int(ev.eligible.sum())} images x "
        f"{args.placements} placements (images already predicted {tname} left out)"
    )
    print(f"wrote {out}/apply.json, {out}/sheet.png" + (f" and {len(saved)} patched PNGs" if saved else ""))
    return 0


# ---------------------------------------------------------------------------- certify
def cmd_certify(args) -> int:

    from advex.certify import certify
    from advex.certify.bounds import check_method
    from advex.data.datasets import load_dataset
    from advex.data.images import atomic_write_bytes
    from advex.report import certified_vs_eps

    try:
        eps = [_fraction(e) for e in args.eps.split(",")]
    except argparse.ArgumentTypeError as e:
        raise AdvexError(f"--eps: {e}") from None
    methods = args.method.split(",")
    for m in methods:
        for e in eps:
            check_method(m, args.norm, args.slope, e)
    if args.n < 1:
        raise AdvexError(f"--n must be >= 1, got {args.n}")
    model = _load_model(args.model, None, args.device)
    data = load_dataset(args.dataset, "test", args.data_dir).subset(args.n)
    x, y = data.floats()
    runs = []
    for e in eps:
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
    attacked = {e: r.attacked for e, _, r in runs if r.attacked is not None}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {
        "advex_version": __version__,
        "command": " ".join(["advex", *args.argv]),
        "model": model.name,
        "device": str(model.device),
        "dataset": f"the first {len(y)} {args.dataset} test images",
        "norm": args.norm,
        "slope": args.slope,
        "results": [
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
        ],
        "machine": _machine(),
    }
    atomic_write_bytes(out / "certify.json", (json.dumps(summary, indent=2) + "\n").encode())
    wrote = f"{out}/certify.json"
    if len(eps) > 1:
        cert = {m: [r.certified_accuracy for e_, m_, r in runs if m_ == m] for m in methods}
        att = [float(attacked[e].float().mean()) for e in eps] if attacked else None
        certified_vs_eps(eps, cert, att, out / "certified.png", f"{model.name}: certified vs attacked ({args.norm})",
                         clean=runs[0][2].clean_accuracy)  # fmt: skip
        wrote += f" and {out}/certified.png"
    print(f"wrote {wrote}")
    return 0


def cmd_models(args) -> int:
    from advex.models import describe

    for name, text in describe().items():
        print(f"{name:20s} {text}")
    return 0


# ---------------------------------------------------------------------------- parser
def _seed(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seed takes an integer, got {value!r}") from None


def _positive(value: str) -> float:
    try:
        v = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {value!r}")
    return v


def _fraction(value: str) -> float:
    """A number or a fraction such as 8/255."""
    try:
        if "/" in value:
            num, den = value.split("/", 1)
            return float(num) / float(den)
        return float(value)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a number or a fraction like 8/255, got {value!r}") from None


def _add_attack_options(p: argparse.ArgumentParser, out_default: str) -> None:
    p.add_argument(
        "--model",
        default="efficientnet-lite0",
        help="zoo name (see `advex models`), FILE.py[:NAME], or a checkpoint (.safetensors/.pt) of --arch",
    )
    p.add_argument("--method", choices=["lbfgs", "adam"], default="lbfgs", help="solver (default: lbfgs)")
    p.add_argument("--norm", choices=["l2", "linf"], default="l2", help="perturbation norm (default: l2)")
    p.add_argument("--c", type=_positive, default=None, help="fix the l2 trade-off c (default: per-image search)")
    p.add_argument("--eps", type=_fraction, default=None, help="fix the linf radius, e.g. 4/255 (default: search)")
    p.add_argument("--search-steps", type=int, default=7, help="optimisations per image in the search (default: 7)")
    p.add_argument("--max-iter", type=int, default=None, help="solver iterations per optimisation")
    p.add_argument("--lr", type=_positive, default=1 / 255, help="Adam step size, pixels in [0, 1] (default: 1/255)")
    p.add_argument("--confidence", type=float, default=0.0, help="required logit margin of the target (default: 0)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, mps or auto (default)")
    p.add_argument("--seed", type=_seed, default=0, help="random seed (default: 0)")
    p.add_argument("--out", default=out_default, help=f"output folder (default: {out_default})")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="advex", description="Adversarial examples: craft, defend, certify.")
    parser.add_argument("--version", action="version", version=f"advex {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("demo", help='turn the sample photos into "ostrich" (Szegedy et al. 2013)')
    _add_attack_options(p, "advex-demo")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("attack", help="attack your own photos")
    p.add_argument("--images", nargs="+", required=True, metavar="PATH", help="image files or folders (PNG/JPEG)")
    p.add_argument("--target", default=None, help="target class name or index, e.g. ostrich or 9")
    p.add_argument("--untargeted", action="store_true", help="push away from the current prediction instead")
    p.add_argument(
        "--arch", default=None, help="architecture of a checkpoint given to --model (default: efficientnet-lite0)"
    )
    _add_attack_options(p, "advex-attack")
    p.set_defaults(func=cmd_attack)

    p = sub.add_parser("train", help="train a model on MNIST or CIFAR-10, optionally adversarially")
    p.add_argument("--dataset", required=True, choices=["mnist", "cifar10"])
    p.add_argument(
        "--arch",
        default="small",
        help="small, large (Wong et al. 2018), cnn7 (certified-training CNN) or resnet (default: small)",
    )
    p.add_argument(
        "--defence",
        default="none",
        help="none, pgd (Madry et al.), trades (Zhang et al.), fast (Wong et al.), "
        "ibp (Gowal et al.), crown-ibp (Zhang et al. 2020), convex (Wong & Kolter 2018)",
    )
    p.add_argument("--eps", type=_fraction, default=0.0, help="L-inf radius, pixels in [0, 1] (e.g. 0.3, or 8/255)")
    p.add_argument("--epochs", type=int, default=None, help="default: 10 (MNIST), 30 (CIFAR-10)")
    p.add_argument("--batch-size", type=int, default=None, help="global batch size (default 128)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (cosine schedule)")
    p.add_argument("--optimizer", choices=["sgd", "adam"], default=None, help="default: adam (MNIST), sgd (CIFAR)")
    p.add_argument("--weight-decay", type=float, default=None, help="default: 0 (MNIST), 5e-4 (CIFAR)")
    p.add_argument("--attack-steps", type=int, default=None, help="PGD/TRADES steps (default 20 MNIST, 7 CIFAR)")
    p.add_argument("--step-size", type=float, default=None, help="attack step (default 2.5 * eps / steps)")
    p.add_argument("--eps-ramp", type=float, default=None, help="fraction of training to ramp eps from 0")
    p.add_argument("--trades-beta", type=float, default=6.0, help="TRADES trade-off (default 6)")
    p.add_argument(
        "--kappa-end", type=float, default=None, help="certified training: final natural-loss weight (ibp 0.5, else 0)"
    )
    p.add_argument(
        "--init",
        choices=["default", "ibp"],
        default=None,
        help="weight initialisation: ibp (Shi et al. 2021; default for certified training) or default (PyTorch's)",
    )
    p.add_argument("--eval-n", type=int, default=1000, help="test images for per-epoch robust accuracy")
    p.add_argument("--eval-steps", type=int, default=20, help="PGD steps of the per-epoch robust accuracy")
    p.add_argument("--train-n", type=int, default=None, help="use only the first N training images")
    p.add_argument("--max-steps", type=int, default=None, help="stop after N optimiser steps")
    p.add_argument("--data-dir", default=None, help="dataset folder (else $ADVEX_DATA, ../shared/datasets, cache)")
    p.add_argument("--download", action="store_true", help="download the dataset if missing (checked)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last epoch")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="robust accuracy over an eps grid under an attack ensemble (AutoAttack)")
    p.add_argument("--model", required=True, help="zoo name (see `advex models`) or FILE.py[:NAME]")
    p.add_argument("--dataset", required=True, choices=["mnist", "cifar10"])
    p.add_argument("--eps", required=True, help="comma-separated radii, pixels in [0, 1], e.g. 0.1,0.2,0.3 or 8/255")
    p.add_argument("--norm", choices=["linf", "l2"], default="linf")
    p.add_argument("--n", type=int, default=1000, help="first N test images (default 1000)")
    p.add_argument(
        "--attacks",
        default="apgd-ce,apgd-t,square",
        help="comma-separated: apgd-ce, apgd-t, square, pgd, fgsm (default: the AutoAttack trio)",
    )
    p.add_argument("--steps", type=int, default=100, help="iterations of the gradient attacks (default 100)")
    p.add_argument("--queries", type=int, default=5000, help="Square's query budget (default 5000)")
    p.add_argument("--n-targets", type=int, default=9, help="target classes tried by APGD-T (default 9)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--out", default="advex-evaluate", help="output folder (default advex-evaluate)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("onepixel", help="change 1, 3 or 5 pixels to change the prediction (Su et al. 2019)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", choices=["mnist", "cifar10"], help="attack correctly classified test images")
    src.add_argument("--images", nargs="+", metavar="PATH", help="your photos (ImageNet default model)")
    p.add_argument(
        "--model", default=None, help="zoo name or FILE.py[:NAME] (default: DATASET-small, or efficientnet-lite0)"
    )
    p.add_argument("--n", type=int, default=100, help="images from --dataset (default 100)")
    p.add_argument("--pixels", type=int, default=1, help="pixels to change (default 1; the paper: 1, 3, 5)")
    p.add_argument("--target", default=None, help="target class name or index (default: untargeted)")
    p.add_argument("--population", type=int, default=400, help="DE population per image (default 400)")
    p.add_argument("--iterations", type=int, default=100, help="DE generations at most (default 100)")
    p.add_argument("--F", type=float, default=0.5, help="DE mutation scale (default 0.5)")
    p.add_argument("--strategy", choices=["rand1", "best1"], default="rand1", help="DE mutation (default: rand1)")
    p.add_argument(
        "--threshold", type=float, default=None, help="stop once p(true) < T (or p(target) > T); default: on success"
    )
    p.add_argument("--batch-size", type=int, default=None, help="images per forward pass (default: automatic)")
    p.add_argument(
        "--precision", choices=["fp32", "bf16"], default="fp32", help="bf16: faster scoring, successes checked in fp32"
    )
    p.add_argument("--figure-n", type=int, default=12, help="images in figure.png (successes first; default 12)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--out", default="advex-onepixel", help="output folder (default advex-onepixel)")
    p.set_defaults(func=cmd_onepixel)

    p = sub.add_parser("patch", help="train and apply a universal adversarial patch (Brown et al. 2017)")
    psub = p.add_subparsers(dest="patch_command", metavar="train|apply")
    t = psub.add_parser("train", help="train a patch that makes any scene the target class")
    src = t.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", nargs="+", metavar="PATH", help="training photos (ImageNet default model)")
    src.add_argument("--dataset", choices=["mnist", "cifar10"], help="train on the train split, test on the test split")
    t.add_argument("--target", required=True, help="target class name or index, e.g. ostrich")
    t.add_argument(
        "--model", default=None, help="zoo name or FILE.py[:NAME] (default: efficientnet-lite0, or DATASET-small)"
    )
    t.add_argument(
        "--ensemble", nargs="+", metavar="MODEL", default=None, help="more models to train against (transfer)"
    )
    t.add_argument(
        "--size", type=_fraction, default=0.1, help="fraction of the image area the patch covers (default 0.1)"
    )
    t.add_argument("--shape", choices=["circle", "square"], default="circle", help="patch mask (default: circle)")
    t.add_argument("--steps", type=int, default=500, help="Adam steps (default 500)")
    t.add_argument(
        "--batch-size", type=int, default=None, help="patched samples per step (default 16 photos, 128 dataset)"
    )
    t.add_argument("--lr", type=float, default=0.02, help="Adam step size on pixels in [0, 1] (default 0.02)")
    t.add_argument("--rotation", type=float, default=22.5, help="largest rotation in degrees (default 22.5)")
    t.add_argument("--scale", type=_range, default=(0.8, 1.2), help="patch scale range LO,HI (default 0.8,1.2)")
    t.add_argument(
        "--no-printability",
        dest="printability",
        action="store_false",
        help="no brightness/contrast/blur/noise changes in training",
    )
    t.add_argument(
        "--augment",
        dest="augment",
        action="store_true",
        default=None,
        help="random crops, flips, colour changes of the images (default: on for --images)",
    )
    t.add_argument("--no-augment", dest="augment", action="store_false")
    t.add_argument("--n", type=int, default=None, help="use the first N training images (default all)")
    t.add_argument("--eval-images", nargs="+", metavar="PATH", default=None, help="held-out photos to test on")
    t.add_argument("--eval-n", type=int, default=1000, help="held-out test images with --dataset (default 1000)")
    t.add_argument("--placements", type=int, default=10, help="random placements per test image (default 10)")
    t.add_argument("--sheet-n", type=int, default=11, help="scenes in sheet.png (default 11)")
    t.add_argument("--print-px", type=int, default=600, help="patch.png size in pixels, about (default 600)")
    t.add_argument("--data-dir", default=None)
    t.add_argument("--device", default="auto")
    t.add_argument("--seed", type=_seed, default=0)
    t.add_argument("--out", default="advex-patch", help="output folder (default advex-patch)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_patch_train)
    a = psub.add_parser("apply", help="stick a patch into images and report targeted success")
    a.add_argument("--patch", required=True, help="patch PNG (from `advex patch train`, or any square image)")
    src = a.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", nargs="+", metavar="PATH", help="photos (ImageNet default model)")
    src.add_argument("--dataset", choices=["mnist", "cifar10"], help="test split images")
    a.add_argument("--model", default=None, help="default: the model the patch was trained on")
    a.add_argument("--target", default=None, help="default: the target recorded in the patch file")
    a.add_argument("--size", type=_fraction, default=None, help="fraction of the image area (default: as trained)")
    a.add_argument("--n", type=int, default=1000, help="test images with --dataset (default 1000)")
    a.add_argument("--placements", type=int, default=1, help="random placements per image (default 1)")
    a.add_argument("--position", type=_position, default=None, help="centre ROW,COL as fractions, e.g. 0.5,0.5")
    a.add_argument("--rotation", type=float, default=22.5, help="largest random rotation, degrees (default 22.5)")
    a.add_argument("--scale", type=_range, default=(1.0, 1.0), help="scale or range LO,HI (default 1)")
    a.add_argument("--sheet-n", type=int, default=11, help="scenes in sheet.png (default 11)")
    a.add_argument("--save-n", type=int, default=20, help="patched PNGs written with --dataset (default 20)")
    a.add_argument("--data-dir", default=None)
    a.add_argument("--device", default="auto")
    a.add_argument("--seed", type=_seed, default=0)
    a.add_argument("--out", default="advex-patch-apply", help="output folder (default advex-patch-apply)")
    a.set_defaults(func=cmd_patch_apply)
    p.set_defaults(func=None, _help=p.print_help)

    p = sub.add_parser("certify", help="prove robustness: IBP, CROWN, alpha-CROWN bounds, beside a PGD attack")
    p.add_argument("--model", required=True, help="zoo name, FILE.py[:NAME], or a checkpoint")
    p.add_argument("--dataset", required=True, choices=["mnist", "cifar10"])
    p.add_argument("--eps", required=True, help="radius, or a comma-separated grid, e.g. 0.1 or 1/255,2/255")
    p.add_argument("--method", default="crown", help="ibp, crown, alpha-crown, or several comma-separated")
    p.add_argument("--norm", choices=["linf", "l2"], default="linf")
    p.add_argument("--slope", choices=["crown", "wong-kolter"], default="crown", help="ReLU lower slope (CROWN)")
    p.add_argument("--alpha-steps", type=int, default=20, help="alpha-CROWN optimisation steps (default 20)")
    p.add_argument("--n", type=int, default=100, help="first N test images (default 100)")
    p.add_argument("--attack-steps", type=int, default=50, help="PGD steps of the empirical check (default 50)")
    p.add_argument("--no-attack", action="store_true", help="skip the PGD attack (and its soundness check)")
    p.add_argument("--batch-size", type=int, default=None, help="images bounded at once (default 256)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--out", default="advex-certify", help="output folder (default advex-certify)")
    p.set_defaults(func=cmd_certify)

    p = sub.add_parser("models", help="list the model zoo")
    p.set_defaults(func=cmd_models)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    if not getattr(args, "func", None):
        getattr(args, "_help", parser.print_help)()
        return 2
    try:
        if hasattr(args, "seed"):
            import torch

            torch.manual_seed(args.seed)
        return args.func(args)
    except AdvexError as e:
        print(f"advex: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("advex: interrupted; outputs already written are complete, nothing half-written", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
