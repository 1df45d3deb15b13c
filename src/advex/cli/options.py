"""The options the commands share, declared once and checked in one place.

Each command's ``add_parser`` calls ``add_model``, ``add_eps``, ``add_run_options`` ...;
:func:`check` runs for every command after parsing, before any work: it parses the eps
lists (one message for every command), and checks that ``--out`` can be written.
Values with their own syntax (``LO,HI`` ranges, ``ROW,COL`` positions, fractions such as
8/255) have their parsers here too. Any bad value is one line and exit status 2.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from advex.errors import AdvexError

DATASETS = ("mnist", "cifar10")


class Parser(argparse.ArgumentParser):
    """argparse, with every error on one line (``advex COMMAND: error: ...``) and exit status 2."""

    def parse_known_args(self, args=None, namespace=None):
        for a in args or ():
            if a.startswith("--") and a.endswith("=--"):  # argparse would drop the value '--' silently
                self.error(f"argument {a[:-3]}: expected a value, got '--'")
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ---------------------------------------------------------------------------- value parsers
def fraction(value: str) -> float:
    """A finite number, or a fraction such as 8/255."""
    try:
        if "/" in value:
            num, den = value.split("/", 1)
            v = float(num) / float(den)
        else:
            v = float(value)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a number or a fraction like 8/255, got {value!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {value!r}")
    return v


def integer(minimum: int = 1, maximum: int | None = None):
    """A whole number in [minimum, maximum], as an argparse ``type``."""
    accepted = f"a whole number >= {minimum}" if maximum is None else f"a whole number in [{minimum}, {maximum}]"

    def parse(value: str) -> int:
        try:
            v = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {accepted}, got {value!r}") from None
        if v < minimum or (maximum is not None and v > maximum):
            raise argparse.ArgumentTypeError(f"expected {accepted}, got {value!r}")
        return v

    return parse


def number(low: float | None = None, high: float | None = None, *, above: bool = False):
    """A finite number (or a fraction such as 8/255) >= ``low`` (> ``low`` with ``above``) and
    <= ``high``, as an argparse ``type``."""
    parts = [f"> {low:g}" if above else f">= {low:g}"] if low is not None else []
    parts += [f"<= {high:g}"] if high is not None else []
    accepted = "a finite number" + (" " + " and ".join(parts) if parts else "")

    def parse(value: str) -> float:
        try:
            v = fraction(value)
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(f"expected {accepted}, got {value!r}") from None
        too_low = low is not None and (v <= low if above else v < low)
        if too_low or (high is not None and v > high):
            raise argparse.ArgumentTypeError(f"expected {accepted}, got {value!r}")
        return v

    return parse


def value_range(value: str) -> tuple[float, float]:
    """``LO,HI`` or one number (LO = HI)."""
    try:
        parts = [float(v) for v in value.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or LO,HI, got {value!r}") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected a number or LO,HI, got {value!r}")
    return parts[0], parts[1]


def position(value: str) -> tuple[float, float]:
    """``ROW,COL`` fractions of the image."""
    try:
        r, c = (float(v) for v in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--position takes ROW,COL fractions of the image, e.g. 0.5,0.5; got {value!r}"
        ) from None
    return r, c


positive = number(0, above=True)
seed = integer(0, 2**32 - 1)


# ---------------------------------------------------------------------------- eps
@dataclass(frozen=True)
class EpsOption:
    """How a command takes ``--eps``: one value or a comma-separated list, 0 allowed or not."""

    many: bool = False
    zero_ok: bool = False


def parse_eps(text: str, spec: EpsOption, norm: str) -> list[float]:
    """The radii in ``--eps`` (``0.1``, ``8/255`` or, where a list is taken, ``0.1,8/255``):
    finite, > 0 (or >= 0 where 0 is allowed), and at most 1 in the L-inf norm, whose unit is
    the [0, 1] pixel range. The one parser of eps: a bad value is the same line in every
    command."""
    items = [v.strip() for v in text.split(",")] if spec.many else [text.strip()]
    unit = "a radius for pixels in [0, 1], such as 0.1 or 8/255"
    out = []
    for item in items:
        try:
            num, _, den = item.partition("/")
            v = float(num) / float(den) if den else float(num)
        except (ValueError, ZeroDivisionError):
            if "," in item or (not spec.many and "," in text):
                raise AdvexError(f"--eps {text!r}: this command takes one radius; give {unit}") from None
            raise AdvexError(f"--eps {text!r}: {item!r} is not a number; give {unit}") from None
        if not math.isfinite(v):
            raise AdvexError(f"--eps {text!r}: {item!r} is not a finite number; give {unit}")
        if v < 0:
            raise AdvexError(f"--eps {text!r}: {item} is negative; give {unit}")
        if v == 0 and not spec.zero_ok:
            raise AdvexError(f"--eps {text!r}: a radius of 0 leaves nothing to attack or prove here; give {unit}")
        if norm == "linf" and v > 1:
            raise AdvexError(
                f"--eps {text!r}: {item} is larger than the whole [0, 1] pixel range of an L-inf radius "
                f"(did you mean {item}/255?)"
            )
        out.append(v)
    return out


# ---------------------------------------------------------------------------- declaring options
def add_command(sub, name: str, help: str, doc: str | None) -> argparse.ArgumentParser:
    """A command's parser: ``help`` in the list of commands, the module's docstring (its
    double backquotes dropped) as the description of ``advex NAME --help``."""
    return sub.add_parser(name, help=help, description=(doc or help).replace("``", ""))


def add_model(
    p: argparse.ArgumentParser, default: str | None = None, help: str | None = None, required: bool = False
) -> None:
    p.add_argument(
        "--model",
        default=default,
        required=required,
        help=help
        or "zoo name (see `advex models`), FILE.py[:NAME] (an nn.Module or a function returning one), "
        "or a checkpoint (.safetensors / weights-only .pt)",
    )


def add_eps(p: argparse.ArgumentParser, *, many: bool, zero_ok: bool, help: str, **kw) -> None:
    """``--eps`` as text; :func:`check` parses it for the command's norm (``args.norm``, default linf)."""
    p.add_argument("--eps", help=help, **kw)
    p.set_defaults(_eps=EpsOption(many, zero_ok))


def add_norm(p: argparse.ArgumentParser, default: str = "linf", help: str | None = None) -> None:
    """``--norm``: the ball eps measures (read by :func:`check` for the eps range). A command
    whose default depends on its other options passes ``default=None`` and sets
    ``_norm_default(args) -> norm`` with ``set_defaults``."""
    p.add_argument(
        "--norm", choices=["linf", "l2"], default=default, help=help or f"perturbation norm (default {default})"
    )


def add_dataset(p: argparse.ArgumentParser, required: bool = True, help: str | None = None) -> None:
    p.add_argument("--dataset", required=required, choices=DATASETS, help=help)


def add_images(p: argparse.ArgumentParser, n: int, *, photos: str | None = None, n_help: str | None = None) -> None:
    """Which images a long run reads: ``--dataset`` (with ``--split``) or ``--data`` (a class
    folder or a CSV), and of them the first ``--n`` (``n_help`` says what they are where it
    means more) or ``--indices``; with ``photos`` (its help), ``--images`` as a third choice."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", choices=DATASETS, help="a standard dataset (with --split)")
    src.add_argument(
        "--data",
        metavar="PATH",
        help="your images: a folder with one sub-folder per class (class names or WordNet ids), or a CSV of path,label",
    )
    if photos is not None:
        src.add_argument("--images", nargs="+", metavar="PATH", help=photos)
    p.add_argument("--split", choices=["test", "train"], default=None, help="split of --dataset (default test)")
    p.add_argument("--n", type=integer(1), default=None, help=f"{n_help or 'the first N images'} (default {n})")
    p.add_argument("--indices", default=None, help="A:B (a range, B excluded) or a file of indices, instead of --n")
    p.set_defaults(_n_default=n)


def add_batch_size(p: argparse.ArgumentParser, cpu: int, gpu: int, what: str = "images per batch") -> None:
    """``--batch-size``, its default chosen for the device (:func:`advex.cli.common.batch_size`);
    batches are also the unit of the journal and of the work dealt to torchrun processes."""
    p.add_argument("--batch-size", type=integer(1), default=None, help=f"{what} (default {cpu} on CPU, {gpu} on a GPU)")
    p.set_defaults(_batch_default=(cpu, gpu))


def add_resume(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--resume", action="store_true", help="continue the run journalled in --out (same command and settings)"
    )


def add_run_options(
    p: argparse.ArgumentParser, *, out: str | None, data: bool = False, quiet: bool = True, required_out: bool = False
) -> None:
    """What every command that runs takes: --device, --seed, --out, and where it applies
    --data-dir and --quiet."""
    if data:
        p.add_argument("--data-dir", default=None, help="dataset folder (else $ADVEX_DATA, ../shared/datasets, cache)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, mps or auto (default)")
    p.add_argument("--seed", type=seed, default=0, help="random seed (default 0)")
    if required_out:
        p.add_argument("--out", required=True, help="output folder")
    else:
        p.add_argument("--out", default=out, help=f"output folder (default {out})")
    if quiet:
        p.add_argument("--quiet", action="store_true", help="no progress bar")


# ---------------------------------------------------------------------------- after parsing
def check(args: argparse.Namespace) -> None:
    """The checks every command shares, before any work: eps, and a writable --out."""
    if getattr(args, "norm", "") is None:  # a command whose default norm depends on other options (certify)
        args.norm = args._norm_default(args)
    spec = getattr(args, "_eps", None)
    if spec is not None and isinstance(args.eps, str):
        values = parse_eps(args.eps, spec, getattr(args, "norm", "linf"))
        args.eps = values if spec.many else values[0]
    data_dir = getattr(args, "data_dir", None)
    if data_dir is not None and not Path(data_dir).is_dir() and not getattr(args, "download", False):
        raise AdvexError(f"--data-dir {data_dir} is not a folder; give the folder that holds mnist/ or cifar10/")
    if getattr(args, "out", None) is not None:
        from advex.data import check_writable

        check_writable(args.out, "--out")


def note(message: str) -> None:
    """An informational line on stderr."""
    print(message, file=sys.stderr)
