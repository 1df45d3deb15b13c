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


def subset(args):
    """The images ``add_subset``'s options chose, and a phrase naming them."""
    from advex.data import load_dataset, parse_indices

    if args.indices is not None and args.n is not None:
        raise AdvexError("give --n (the first N images) or --indices, not both")
    data = load_dataset(args.dataset, args.split, args.data_dir)
    if args.indices is not None:
        idx = parse_indices(args.indices, len(data))
        return data.select(idx), f"{len(idx)} {args.dataset} {args.split} images (--indices {args.indices})"
    n = args.n or args._n_default
    data = data.subset(n)
    return data, f"the first {len(data)} {args.dataset} {args.split} images"
