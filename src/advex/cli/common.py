"""What several commands do the same way: load the model a user named, read photos at the
network's input size, take the first images of a dataset split."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from advex.cli.options import note
from advex.errors import AdvexError

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


def load_model(spec: str, device: str | None, arch: str | None = None):
    """``--model``: a zoo name, ``FILE.py[:NAME]``, or a checkpoint file of ``--arch``
    (default: the ImageNet default model's architecture)."""
    from advex.models import DEFAULT_MODEL, load, names

    if spec not in names() and Path(spec).suffix in CHECKPOINT_SUFFIXES:
        return load(arch or DEFAULT_MODEL, weights=spec, device=device)
    if arch is not None:
        raise AdvexError("--arch names the architecture of a checkpoint given to --model; drop it for zoo names")
    return load(spec, device=device)


def load_zoo_model(name: str, device: str | None, source: str):
    """A model named by a file advex reads (``source``): a zoo name only, never code."""
    from advex.models import load

    try:
        return load(name, device=device, allow_code=False)
    except AdvexError as e:
        raise AdvexError(f"{source} records its model as {name!r}: {e}; give --model") from None


def photos(paths: Sequence[str], **kw):
    """The photos at ``paths`` (files or folders), their notes (grayscale, alpha) on stderr;
    ``kw`` goes to :func:`advex.data.load_images` (``max_megapixels``)."""
    from advex.data import load_images

    images = load_images(paths, **kw)
    for im in images:
        for n in im.notes:
            note(f"note: {n}")
    return images


def photos_at_input(model, paths: Sequence[str]) -> tuple[torch.Tensor, list[str]]:
    """Photos cropped/resized to the model's input size (8-bit), and their names."""
    from advex.data import pack, quantize

    images = photos(paths)
    canvas, sizes = pack([im.pixels for im in images])
    if model.input_size is None and len({tuple(s) for s in sizes.tolist()}) > 1:
        raise AdvexError(f"{model.name} has no input size to resize to: give photos of one size")
    x = quantize(model.fit_input(canvas, sizes if model.input_size is not None else None))
    return x, [im.name for im in images]


def dataset(name: str, split: str, data_dir: str | None, n: int | None = None):
    """The ``split`` of dataset ``name`` (the first ``n`` images if given), as an ArrayDataset."""
    from advex.data import load_dataset

    data = load_dataset(name, split, data_dir)
    return data.subset(n)


def processes(args):
    """This process's place in a torchrun run (rank 0 of 1 without torchrun); under torchrun
    on CUDA, ``args.device`` becomes this process's GPU."""
    from advex.evaluation import setup
    from advex.models import resolve_device

    procs, device = setup(resolve_device(args.device))
    args.device = str(device)
    return procs


def batch_size(args, device) -> int:
    """``--batch-size``, or the command's default for the device (``add_batch_size``)."""
    cpu, gpu = args._batch_default
    return args.batch_size or (gpu if torch.device(device).type == "cuda" else cpu)


def images(args, model):
    """The images ``add_images``'s options chose: an ``ArrayDataset`` (``--dataset`` or, where
    the command takes them, ``--images`` photos at the network input, labelled by the model's
    own predictions) or ``ImageFiles`` (``--data``, labels read as ``model``'s classes), a
    phrase naming them, and what identifies them in a journal."""
    source, phrase, ident, _ = named_images(args, model)
    return source, phrase, ident


def named_images(args, model):
    """:func:`images`, and each chosen image's name: ``test[i]`` (its index in the split), its
    path under ``--data``, or the photo's name."""
    from advex.data import load_dataset, open_images, parse_indices

    if args.indices is not None and args.n is not None:
        raise AdvexError("give --n (the first N images) or --indices, not both")
    if getattr(args, "images", None) is not None:
        if args.split is not None or args.n is not None or args.indices is not None:
            raise AdvexError("--split, --n and --indices choose among --dataset or --data images; --images takes "
                             "every photo given")  # fmt: skip
        photos, names, digest = photo_set(model, args.images)
        h, w = photos.images.shape[-2:]
        phrase = f"{len(names)} photos at the network input ({h}x{w}), labelled by {model.name}'s own predictions"
        return photos, phrase, {"images": phrase, "pixels": digest}, names
    if args.data is not None:
        if args.split is not None:
            raise AdvexError("--split chooses a split of --dataset; --data is one set of images (use --indices)")
        source = open_images(args.data, model.classes, model.synonyms)
        name = f"{args.data}"
        base = Path(args.data) if Path(args.data).is_dir() else Path(args.data).parent
        names = [_relative(f, base) for f in source.paths]
    else:
        args.split = args.split or "test"
        source = load_dataset(args.dataset, args.split, args.data_dir)
        name = f"{args.dataset} {args.split}"
        names = [f"{args.split}[{i}]" for i in range(len(source))]
    if args.indices is not None:
        idx = parse_indices(args.indices, len(source), _of(args))
        source, phrase = source.select(idx), f"{len(idx)} {name} images (--indices {args.indices})"
        names = [names[i] for i in idx.tolist()]
    else:
        source = source.subset(args.n or args._n_default) if args.data is None else _first(source, args)
        phrase = f"the first {len(source)} {name} images"
        names = names[: len(source)]
    ident = {"images": phrase}
    if args.data is not None:
        ident["files"] = source.fingerprint()
    return source, phrase, ident, names


def _relative(path, base: Path) -> str:
    """``path`` relative to ``base`` (by prefix: os.path.relpath is slow on 50,000 files)."""
    import os

    p, b = str(path), str(base).rstrip(os.sep) + os.sep
    return p[len(b) :].replace(os.sep, "/") if p.startswith(b) else Path(os.path.relpath(p, base)).as_posix()


def _of(args) -> str:
    """What ``--indices`` counts in, for its errors."""
    return "the split" if args.data is None else f"--data {args.data}"


def _first(files, args):
    n = args.n or args._n_default
    return files if n >= len(files) else files.select(torch.arange(n))


IGNORED = {"out", "resume", "quiet", "device", "argv", "run", "data_dir", "workers"}


def journal(args, model, ident: dict, procs=None, ignored: tuple[str, ...] = ()):
    """The run's journal in ``--out``: what makes two runs the same is the command, the model
    (its name and weights), the images and every option below except where outputs go and
    how they are shown (and the command's own ``ignored`` options, which change no result).
    Checked by every process, started by rank 0; call :func:`probe` first, so that a model or
    data that cannot run leaves nothing behind."""
    from advex.evaluation import Journal, Processes

    procs = procs or Processes()
    skip = IGNORED | set(ignored)
    options_ = {k: v for k, v in vars(args).items() if k not in skip and not k.startswith("_")}
    settings = {"command": args.command, "model": model.name, "weights": weights_digest(model), **ident, **options_}
    j = Journal.open(args.out, settings, resume=args.resume)
    procs.barrier()  # every process has read the old journal before the main one replaces it
    if procs.main:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        j.start()
    procs.barrier()
    return j


def run(args, model, source, work, journal, procs):
    """``work(batch, bar)`` over the chosen images in ``--batch-size`` batches at the model's
    input, journalled, this process's share of them (:func:`advex.evaluation.run_batches`);
    every batch's result on rank 0, ``None`` on the other processes."""
    from advex.data import as_model_input
    from advex.evaluation import run_batches

    return run_batches(
        source, work, batch_size=batch_size(args, model.device), prepare=as_model_input(model),
        journal=journal, procs=procs, progress=not args.quiet,
    )  # fmt: skip


def weights_digest(model) -> str:
    """A short SHA-256 of the model's parameters and buffers: the same name with other weights differs."""
    import hashlib

    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def probe(model, source) -> torch.Tensor:
    """The model takes the first image and gives logits, and every label is one of its classes;
    the first image (1, C, H, W) at the model's input."""
    from advex.models import check_labels, check_logits

    x, _ = first_images(source, 1, model)
    with torch.no_grad():
        k = check_logits(model(x.to(model.device)), len(x)).shape[1]
    check_labels(source.labels, len(source), k)
    return x


def first_images(source, n: int, model):
    """The first ``n`` readable images of ``source`` at the model's input (for checks such as
    the evaluation's sanity checks), as floats and labels; unreadable files are passed over,
    and a source with none readable is refused, naming the first file and why."""
    from advex.data import as_model_input, stream

    xs, ys, skipped, got, start = [], [], [], 0, 0
    while got < n and start < len(source):
        stop = min(start + n - got, len(source))
        batch = next(stream(source, [(start, stop)], as_model_input(model), workers=2))
        skipped += batch.skipped
        if len(batch):
            xs.append(batch.x)
            ys.append(batch.y)
            got += len(batch)
        start = stop
    if not xs:
        f, why = skipped[0]
        raise AdvexError(f"none of the {len(source)} image files could be read (the first, {f}: {why})")
    return torch.cat(xs), torch.cat(ys)


def warn_skipped(skipped) -> None:
    """Say which files a run could not read (they are left out of every number)."""
    if skipped:
        shown = "; ".join(f"{f} ({why})" for f, why in list(skipped)[:5])
        more = f" and {len(skipped) - 5} more (listed in the JSON)" if len(skipped) > 5 else ""
        note(f"WARNING: {len(skipped)} unreadable image file(s) skipped, left out of every number: {shown}{more}")


def candidates(args, model):
    """The images a command chooses among before it runs (``onepixel`` attacks the first
    ``--n`` its model gets right): the ``--dataset`` split or the ``--data`` files (labels read
    as ``model``'s classes), narrowed by ``--indices``; a phrase naming them; and each one's
    name: ``test[i]`` (its index in the split) or its path under ``--data``."""
    from advex.data import load_dataset, parse_indices

    if args.indices is not None and args.n is not None:
        raise AdvexError("give --n (the first N images) or --indices, not both")
    if args.data is not None:
        if args.split is not None:
            raise AdvexError("--split chooses a split of --dataset; --data is one set of images (use --indices)")
        pool, names = open_files(args.data, model)
        phrase = f"{args.data}"
    else:
        args.split = args.split or "test"
        pool = load_dataset(args.dataset, args.split, args.data_dir)
        names = [f"{args.split}[{i}]" for i in range(len(pool))]
        phrase = f"{args.dataset} {args.split}"
    if args.indices is not None:
        idx = parse_indices(args.indices, len(pool), _of(args))
        pool, names = pool.select(idx), [names[i] for i in idx.tolist()]
        phrase = f"{len(idx)} {phrase} images (--indices {args.indices})"
    return pool, phrase, names


def open_files(path: str, model):
    """The labelled files at ``path`` (a class folder or a CSV; labels read as ``model``'s
    classes), and each one's name: its path under the folder (or beside the CSV)."""
    from advex.data import open_images

    files = open_images(path, model.classes, model.synonyms)
    base = Path(path) if Path(path).is_dir() else Path(path).parent
    return files, [_relative(f, base) for f in files.paths]


def pixels_digest(x: torch.Tensor) -> str:
    """A short SHA-256 of images in [0, 1] as 8-bit pixels: what identifies photos in a journal."""
    import hashlib

    from advex.data import to_uint8

    return hashlib.sha256(to_uint8(x).cpu().numpy().tobytes()).hexdigest()[:16]


def photo_set(model, paths: Sequence[str]):
    """Photos at the network input as an in-memory dataset whose labels are the model's own
    predictions (what an attack moves away from when no label is given), their names, and a
    digest of their pixels for a journal."""
    from advex.data import ArrayDataset, to_uint8
    from advex.models import check_logits

    x, names = photos_at_input(model, paths)
    with torch.no_grad():
        labels = check_logits(model(x.to(model.device)), len(x)).argmax(1).cpu()
    photos = ArrayDataset("photos", "input", to_uint8(x), labels, list(model.classes or []))
    return photos, names, pixels_digest(x)


def in_memory(source, model, batch_size: int = 256):
    """Every readable image of ``source`` at the model's input, held in memory as 8-bit
    pixels (N, C, H, W) with their positions in ``source``; unreadable files are named on
    stderr. For the commands that sample images at random (patch training) or keep them all
    (patch apply): give them no more images than fit in memory."""
    from advex.data import as_model_input, stream, to_uint8

    xs, index, skipped = [], [], []
    spans = [(a, min(a + batch_size, len(source))) for a in range(0, len(source), batch_size)]
    for b in stream(source, spans, as_model_input(model)):
        skipped += b.skipped
        if len(b.y):
            xs.append(to_uint8(b.x))
            index.append(b.index)
    warn_skipped(skipped)
    if not xs:
        raise AdvexError(f"none of the {len(source)} images could be read")
    return torch.cat(xs), torch.cat(index)
