"""``advex patch train|apply``: a universal adversarial patch (Brown et al. 2017) that makes any
scene the target class; trained by expectation over transformation, saved as a printable
PNG (the target, size and model in its metadata), and stuck into new images."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from advex.cli import common, options
from advex.errors import AdvexError

NAME = "patch"
DATA_HELP = "a folder with one sub-folder per class, or a CSV of path,label"
HELP = "train and apply a universal adversarial patch (Brown et al. 2017)"


def add_parser(sub) -> argparse.ArgumentParser:
    p = options.add_command(sub, NAME, HELP, __doc__)
    psub = p.add_subparsers(dest="patch_command", metavar="train|apply")
    _add_train(psub)
    _add_apply(psub)
    p.set_defaults(run=None, _help=p.print_help)
    return p


def _add_train(psub) -> None:
    t = psub.add_parser("train", help="train a patch that makes any scene the target class")
    src = t.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", nargs="+", metavar="PATH", help="training photos (ImageNet default model)")
    src.add_argument("--dataset", choices=options.DATASETS, help="train on the train split, test on the test split")
    src.add_argument("--data", metavar="PATH", help=f"training images: {DATA_HELP} (held in memory; see --n)")
    t.add_argument("--target", required=True, help="target class name or index, e.g. ostrich")
    options.add_model(
        t, help="zoo name, FILE.py[:NAME] or a checkpoint (default: DATASET-small, else efficientnet-lite0)"
    )
    t.add_argument("--ensemble", nargs="+", metavar="MODEL", default=None, help="more models to train against")
    t.add_argument("--size", type=options.fraction, default=0.1, help="fraction of the image area (default 0.1)")
    t.add_argument("--shape", choices=["circle", "square"], default="circle", help="patch mask (default: circle)")
    t.add_argument("--steps", type=options.integer(1), default=500, help="Adam steps (default 500)")
    t.add_argument(
        "--batch-size",
        type=options.integer(1),
        default=None,
        help="patched samples per step (default 16 photos, 128 data)",
    )
    t.add_argument(
        "--lr", type=options.positive, default=0.02, help="Adam step size on pixels in [0, 1] (default 0.02)"
    )
    t.add_argument(
        "--rotation", type=options.number(0, 180), default=22.5, help="largest rotation in degrees (default 22.5)"
    )
    t.add_argument("--scale", type=options.value_range, default=(0.8, 1.2), help="scale range LO,HI (default 0.8,1.2)")
    t.add_argument(
        "--no-printability", dest="printability", action="store_false",
        help="no brightness/contrast/blur/noise changes in training",
    )  # fmt: skip
    t.add_argument(
        "--augment", dest="augment", action="store_true", default=None,
        help="random crops, flips, colour changes of the images (default: on for --images)",
    )  # fmt: skip
    t.add_argument("--no-augment", dest="augment", action="store_false")
    t.add_argument("--n", type=options.integer(1), default=None, help="use the first N training images (default all)")
    held = t.add_mutually_exclusive_group()
    held.add_argument("--eval-images", nargs="+", metavar="PATH", default=None, help="held-out photos to test on")
    held.add_argument("--eval-data", metavar="PATH", default=None, help=f"held-out images to test on: {DATA_HELP}")
    t.add_argument(
        "--eval-n", type=options.integer(1), default=1000,
        help="held-out test images with --dataset or --eval-data (default 1000)",
    )  # fmt: skip
    t.add_argument(
        "--placements", type=options.integer(1), default=10, help="random placements per test image (default 10)"
    )
    t.add_argument("--sheet-n", type=options.integer(1), default=11, help="scenes in sheet.png (default 11)")
    t.add_argument(
        "--print-px", type=options.integer(16), default=600, help="patch.png size in pixels, about (default 600)"
    )
    t.add_argument(
        "--checkpoint-every", type=options.integer(1), default=50,
        help="save the training state in --out every this many steps, for --resume (default 50)",
    )  # fmt: skip
    options.add_resume(t)
    options.add_run_options(t, out="advex-patch", data=True)
    t.set_defaults(run=run_train)


def _add_apply(psub) -> None:
    a = psub.add_parser("apply", help="stick a patch into images and report targeted success")
    a.add_argument("--patch", required=True, help="patch PNG (from `advex patch train`, or any square image)")
    src = a.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", nargs="+", metavar="PATH", help="photos (ImageNet default model)")
    src.add_argument("--dataset", choices=options.DATASETS, help="test split images")
    src.add_argument("--data", metavar="PATH", help=f"your images: {DATA_HELP}")
    options.add_model(a, help="default: the zoo model the patch was trained on (a file's metadata never names code)")
    a.add_argument("--target", default=None, help="default: the target recorded in the patch file")
    a.add_argument(
        "--size", type=options.fraction, default=None, help="fraction of the image area (default: as trained)"
    )
    a.add_argument(
        "--n", type=options.integer(1), default=1000, help="the first N images of --dataset or --data (default 1000)"
    )
    a.add_argument("--placements", type=options.integer(1), default=1, help="random placements per image (default 1)")
    a.add_argument("--position", type=options.position, default=None, help="centre ROW,COL as fractions, e.g. 0.5,0.5")
    a.add_argument(
        "--rotation", type=options.number(0, 180), default=22.5, help="largest random rotation, degrees (default 22.5)"
    )
    a.add_argument("--scale", type=options.value_range, default=(1.0, 1.0), help="scale or range LO,HI (default 1)")
    a.add_argument("--sheet-n", type=options.integer(1), default=11, help="scenes in sheet.png (default 11)")
    a.add_argument(
        "--save-n", type=options.integer(0), default=20, help="patched PNGs written (default 20; every photo)"
    )
    options.add_batch_size(a, cpu=64, gpu=256, what="images patched and classified at once")
    options.add_run_options(a, out="advex-patch-apply", data=True, quiet=False)
    a.set_defaults(run=run_apply)


# ---------------------------------------------------------------------------- train
def run_train(args) -> int:
    from advex.attacks import Patch, PatchState, Printability, evaluate_patch, patch_mask
    from advex.data import load_patch, save_patch

    if args.dataset is not None and (args.eval_images is not None or args.eval_data is not None):
        raise AdvexError("--eval-images and --eval-data go with --images or --data; with --dataset the test split "
                         "is the held-out set")  # fmt: skip
    args.model = args.model or (f"{args.dataset}-small" if args.dataset else "efficientnet-lite0")
    model = common.load_model(args.model, args.device)
    ensemble = [model] + [common.load_model(m, args.device) for m in args.ensemble or []]
    target = model.class_index(args.target)
    photos = args.images is not None
    attack = Patch(
        size=args.size, shape=args.shape, steps=args.steps, batch_size=args.batch_size or (128 if args.dataset else 16),
        lr=args.lr, rotation=args.rotation, scale=args.scale,
        printability=Printability() if args.printability else Printability.none(),
        augment=photos if args.augment is None else args.augment, seed=args.seed,
        progress=not args.quiet and sys.stderr.isatty(),
    )  # fmt: skip
    train = _images(args, model, "train", args.n, args.images, args.data)
    x, names, source = train.x, train.names, train.phrase
    held_out = args.eval_images is not None or args.eval_data is not None or args.dataset is not None
    if held_out:
        test = _images(args, model, "test", args.eval_n, args.eval_images, args.eval_data)
        xe, enames, esource = test.x, test.names, test.phrase
    else:
        test, xe, enames, esource = None, x, names, source + " (the training images: not held out)"
    attack.side(*x.shape[-2:])  # a patch larger than the images: say so before anything is written
    journal = _journal(args, ensemble, train, test)
    state = PatchState.load(journal.state_file) if args.resume and journal.state_file.is_file() else None
    tname = model.class_name(target)
    result = attack(
        ensemble if len(ensemble) > 1 else model, x, target,
        state=state, checkpoint=lambda s: s.save(journal.state_file), checkpoint_every=args.checkpoint_every,
    )  # fmt: skip
    options.note(f"model {model.name} on {model.device}; {attack!r}; target {tname}; trained on {source}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res = result.patch.shape[-1]
    k = max(1, -(-args.print_px // res))
    sharp = patch_mask(args.shape, res * k, supersample=1) if args.shape == "circle" else None
    meta = {"target": target, "target_name": tname, "size": args.size, "shape": args.shape, "model": model.name}
    save_patch(out / "patch.png", result.patch, result.mask, pixels=args.print_px, sharp_mask=sharp, meta=meta)
    # every number reported is measured with the patch as the PNG gives it back
    patch, mask = _patch_channels(load_patch(out / "patch.png"), x.shape[1])
    ev_kw = dict(size=args.size, mask=mask, placements=args.placements, rotation=args.rotation, seed=args.seed)
    ev = evaluate_patch(model, patch, xe, target, **ev_kw)
    ev_train = evaluate_patch(model, patch, x[: max(len(enames), 16)], target, **ev_kw) if held_out else None
    where = "held-out" if held_out else "training"
    title = (
        f"{model.name}: a {100 * args.size:g}% patch -> {tname} ({where} images, random placements): "
        f"{100 * ev.success_rate:.0f}%"
    )
    _figures(out, ev, enames, model, patch, mask, args.sheet_n, title)
    _curve(out, result.curve, f"training: {tname}, {100 * args.size:g}% patch")
    _summary(
        out / "patch.json", args, model,
        ensemble=[m.name for m in ensemble], attack=repr(attack), target=target, target_name=tname,
        training_images=source, evaluation_images=esource, held_out=held_out, train_time_s=round(result.time_s, 2),
        samples=result.samples, settings=result.settings, curve=result.curve,
        evaluation=_evaluation_json(ev, enames, model),
        training_set_success_rate=ev_train.success_rate if ev_train is not None else ev.success_rate,
        patch_png=str(out / "patch.png"), patch_png_enlarged=k,
        run={"resumed_from_step": state.step if state is not None else 0, "checkpoint_every": args.checkpoint_every},
    )  # fmt: skip
    print(
        f"trained {args.steps} steps in {result.time_s:.1f} s; targeted success ({tname}) on {esource}, "
        f"{args.placements} random placements each: {100 * ev.success_rate:.1f}% "
        f"({int(ev.eligible.sum())} images not already {tname})"
    )
    if ev_train is not None:
        print(f"on training images: {100 * ev_train.success_rate:.1f}%")
    print(f"wrote {out}/patch.png ({res * k} px, {k}x the trained {res} px), sheet.png, curve.png, patch.json")
    journal.finish()
    return 0


def _journal(args, ensemble, train, test):
    """The journal of a training run in --out: the same command, models (names and weights),
    training and held-out images and options (all but --checkpoint-every), or --resume is
    refused naming what differs; its state file holds where training stands."""
    ident = {
        "training_images": train.ident,
        "held_out_images": test.ident if test is not None else None,
        "ensemble": [[m.name, common.weights_digest(m)] for m in ensemble[1:]],
    }
    return common.journal(args, ensemble[0], ident, ignored=("checkpoint_every",))


# ---------------------------------------------------------------------------- apply
def run_apply(args) -> int:
    from advex.attacks import evaluate_patch
    from advex.data import load_patch, save_png
    from advex.report import print_table

    lp = load_patch(args.patch)
    photos = args.images is not None
    if args.model is not None:
        model = common.load_model(args.model, args.device)
    elif lp.meta.get("model") is not None:  # a name read from the file: a zoo model only, never code
        model = common.load_zoo_model(str(lp.meta["model"]), args.device, args.patch)
    else:
        model = common.load_model("efficientnet-lite0" if photos else f"{args.dataset}-small", args.device)
    if args.target is None and lp.meta.get("target_name") is None:
        raise AdvexError(f"{args.patch} does not record its target class: give --target")
    target = model.class_index(args.target if args.target is not None else lp.meta["target_name"])
    size = args.size if args.size is not None else lp.meta.get("size", 0.1)
    images = _images(args, model, "test", args.n if not photos else None, args.images, args.data)
    x, names, source = images.x, images.names, images.phrase
    patch, mask = _patch_channels(lp, x.shape[1])
    ev = evaluate_patch(
        model, patch, x, target, size=size, mask=mask, placements=args.placements, rotation=args.rotation,
        scale=args.scale, position=args.position, seed=args.seed, batch_size=common.batch_size(args, model.device),
    )  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    saved = []
    for i, nm in enumerate(names[: len(names) if photos else args.save_n]):
        fn = out / f"{_file_stem(nm)}_patched.png"
        save_png(ev.example[i] if ev.example.shape[1] == 3 else ev.example[i].expand(3, -1, -1), fn)
        saved.append(str(fn))
    tname = model.class_name(target)
    title = (
        f"{model.name}: {Path(args.patch).name} ({100 * size:g}% of the image) -> {tname}: {100 * ev.success_rate:.0f}%"
    )
    _figures(out, ev, names, model, patch, mask, args.sheet_n, title)
    _summary(
        out / "apply.json", args, model,
        patch=str(args.patch), patch_meta=lp.meta, target=target, target_name=tname, size=size, images=source,
        placement="fixed position" if args.position is not None else "random (seeded)",
        evaluation=_evaluation_json(ev, names, model), patched_pngs=saved,
    )  # fmt: skip
    print_table(
        [
            {
                "image": nm,
                "orig": f"{model.class_name(int(ev.label[i]))} ({100 * float(ev.confidence[i]):.0f}%)",
                "new": f"{model.class_name(int(ev.label_patched[i, 0]))} "
                f"({100 * float(ev.confidence_patched[i, 0]):.0f}%)",
                "hits": f"{int(ev.hits[i].sum())}/{args.placements}",
            }
            for i, nm in enumerate(names[:20])
        ],
        [("image", "image"), ("orig", "without patch"), ("new", "with patch"), ("hits", "target hits")],
        more=len(names) - 20,
    )
    print(
        f"\ntargeted success ({tname}): {100 * ev.success_rate:.1f}% of {int(ev.eligible.sum())} images x "
        f"{args.placements} placements (images already predicted {tname} left out)"
    )
    print(f"wrote {out}/apply.json, {out}/sheet.png" + (f" and {len(saved)} patched PNGs" if saved else ""))
    return 0


# ---------------------------------------------------------------------------- shared by train and apply
@dataclass
class _Images:
    """Images held in memory for a patch: pixels, a name each, a phrase saying which, and what
    identifies them in a journal."""

    x: torch.Tensor
    names: list[str]
    phrase: str
    ident: dict


def _images(args, model, split: str, n: int | None, photos, data) -> _Images:
    """Photos at the network input, the first ``n`` files of a ``data`` folder or CSV at the
    model's input (uint8), or the first ``n`` images of the ``split`` of ``--dataset`` (uint8)."""
    if photos is not None:
        x, names = common.photos_at_input(model, photos)
        return _Images(x, names, f"{len(names)} photos at the network input {tuple(x.shape[-2:])}",
                       {"pixels": common.pixels_digest(x)})  # fmt: skip
    if data is not None:
        files, names = common.open_files(data, model)
        if n is not None and n < len(files):
            files = files.select(torch.arange(n))
        x, index = common.in_memory(files, model)
        return _Images(x, [names[i] for i in index.tolist()], f"{len(x)} images of {data}",
                       {"files": files.fingerprint()})  # fmt: skip
    d = common.dataset(args.dataset, split, args.data_dir, n)
    phrase = f"{len(d)} {args.dataset} {split} images"
    return _Images(d.images, [f"{split}[{i}]" for i in range(len(d))], phrase, {"images": phrase})


def _file_stem(name: str) -> str:
    """A file name for an image's name: ``test[3]`` -> ``test_3``, ``cat/001.png`` -> ``cat_001``."""
    return Path(name).with_suffix("").as_posix().replace("/", "_").replace("[", "_").replace("]", "")


def _patch_channels(lp, channels: int):
    """A PNG patch (RGB) for images of ``channels`` channels: grey (the mean) for 1."""
    if channels == 1:
        return lp.patch.mean(0, keepdim=True), lp.mask
    if channels != lp.patch.shape[0]:
        raise AdvexError(f"the patch has {lp.patch.shape[0]} channels but the images have {channels}")
    return lp.patch, lp.mask


def _figures(out: Path, ev, names, model, patch, mask, k: int, title: str) -> None:
    """sheet.png: scenes with the patch (images already predicted as the target prove
    nothing: the others, hits first) and their predictions before and after."""
    from advex.report import SceneItem, patch_sheet

    eligible = [i for i in range(len(names)) if bool(ev.eligible[i])] or list(range(len(names)))
    order = sorted(eligible, key=lambda i: (not bool(ev.hits[i, 0]), i))[:k]
    items = [
        SceneItem(names[i], ev.example[i], model.class_name(int(ev.label[i])), float(ev.confidence[i]),
                  model.class_name(int(ev.label_patched[i, 0])), float(ev.confidence_patched[i, 0]),
                  bool(ev.hits[i, 0]))
        for i in order
    ]  # fmt: skip
    patch_sheet(items, out / "sheet.png", patch=patch * mask + (1 - mask), title=title)


def _curve(out: Path, curve, title: str) -> None:
    from advex.report import patch_curve

    patch_curve(curve, out / "curve.png", title=title)


def _summary(path: Path, args, model, **results) -> None:
    from advex.report import write_summary

    write_summary(path, {"model": model.name, **results}, command=["advex", *args.argv], device=model.device)


def _evaluation_json(ev, names, model) -> dict:
    hits = ev.hits
    per = [
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
        }
        for i, nm in enumerate(names)
    ]
    return {
        "success_rate": ev.success_rate,
        "images": len(names),
        "eligible_images": int(ev.eligible.sum()),
        "placements_per_image": int(hits.shape[1]),
        "mean_target_prob": float(ev.target_prob[ev.eligible].mean()) if ev.eligible.any() else None,
        "time_s": round(ev.time_s, 2),
        "per_image": per,
    }
