"""``advex models``: the model zoo, one line per model; ``--export NAME out.onnx`` writes one
(a zoo name, a weights file or a module spec, as ``--model`` takes) to ONNX as the certifiers
read it, for other verifiers or ``advex verify``."""

from __future__ import annotations

import argparse

from advex.cli import options

NAME = "models"
HELP = "list the model zoo, or export a model to ONNX"


def add_parser(sub) -> argparse.ArgumentParser:
    p = options.add_command(sub, NAME, HELP, __doc__)
    p.add_argument(
        "--export", nargs=2, metavar=("MODEL", "OUT.onnx"),
        help="write MODEL (its normalisation included; pixels in [0, 1] in, logits out) to an ONNX file",
    )  # fmt: skip
    return p


def run(args) -> int:
    from advex.models import describe

    if args.export:
        return export(*args.export)
    for name, text in describe().items():
        print(f"{name:20s} {text}")
    return 0


def export(model_name: str, out: str) -> int:
    from advex.certify import UnsupportedLayer, export_onnx
    from advex.errors import AdvexError
    from advex.models import load

    if not out.endswith(".onnx"):
        raise AdvexError(f"--export writes an .onnx file, got {out!r}")
    model = load(model_name, device="cpu").eval()
    if model.input_size is None or model.channels is None:
        raise AdvexError(f"{model_name} names no input size and channels, so its ONNX input shape is unknown")
    try:
        path = export_onnx(model, out, (model.channels, *model.input_size))
    except UnsupportedLayer as e:  # the export writes what the certifiers read
        raise AdvexError(f"{model_name} cannot be exported to ONNX: {e}") from None
    print(f"wrote {path}: {model.name}, input (batch, {model.channels}, {model.input_size[0]}, {model.input_size[1]})"
          " pixels in [0, 1], output logits")  # fmt: skip
    return 0
