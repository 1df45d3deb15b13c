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
    """The images ``add_images``'s options chose: an ``ArrayDataset`` (``--dataset``) or
    ``ImageFiles`` (``--data``, labels read as ``model``'s classes), a phrase naming them,
    and what identifies them in a journal."""
    from advex.data import load_dataset, open_images, parse_indices

    if args.indices is not None and args.n is not None:
        raise AdvexError("give --n (the first N images) or --indices, not both")
    if args.data is not None:
        if args.split is not None:
            raise AdvexError("--split chooses a split of --dataset; --data is one set of images (use --indices)")
        source = open_images(args.data, model.classes, model.synonyms)
        name = f"{args.data}"
    else:
        args.split = args.split or "test"
        source = load_dataset(args.dataset, args.split, args.data_dir)
        name = f"{args.dataset} {args.split}"
    if args.indices is not None:
        idx = parse_indices(args.indices, len(source))
        source, phrase = source.select(idx), f"{len(idx)} {name} images (--indices {args.indices})"
    else:
        source = source.subset(args.n or args._n_default) if args.data is None else _first(source, args)
        phrase = f"the first {len(source)} {name} images"
    ident = {"images": phrase}
    if args.data is not None:
        ident["files"] = source.fingerprint()
    return source, phrase, ident


def _first(files, args):
    n = args.n or args._n_default
    return files if n >= len(files) else files.select(torch.arange(n))


IGNORED = {"out", "resume", "quiet", "device", "argv", "run", "data_dir", "workers"}


def journal(args, model, ident: dict, procs):
    """The run's journal in ``--out``: what makes two runs the same is the command, the model
    (its name and weights), the images and every option below except where outputs go and
    how they are shown. Checked by every process, started by rank 0; call :func:`probe` first,
    so that a model or data that cannot run leaves nothing behind."""
    from advex.evaluation import Journal

    options_ = {k: v for k, v in vars(args).items() if k not in IGNORED and not k.startswith("_")}
    settings = {"command": args.command, "model": model.name, "weights": weights_digest(model), **ident, **options_}
    j = Journal.open(args.out, settings, resume=args.resume)
    if procs.main:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        j.start()
    procs.barrier()
    return j


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
    the evaluation's sanity checks), as floats and labels."""
    from advex.data import as_model_input, stream

    batch = next(stream(source, [(0, min(n, len(source)))], as_model_input(model), workers=2))
    return batch.x, batch.y


def warn_skipped(skipped) -> None:
    """Say which files a run could not read (they are left out of every number)."""
    if skipped:
        shown = "; ".join(f"{f} ({why})" for f, why in list(skipped)[:5])
        more = f" and {len(skipped) - 5} more (listed in the JSON)" if len(skipped) > 5 else ""
        note(f"WARNING: {len(skipped)} unreadable image file(s) skipped, left out of every number: {shown}{more}")
