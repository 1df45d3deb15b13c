"""Labelled image files (``--data PATH``) and the streaming reader that decodes them in the
background, so a folder of any size runs in bounded memory.

Two steps, kept apart so that listing is instant and decoding is where the time goes:

- :func:`open_images` lists a class-folder tree (``root/<class>/**/<image>``, ImageNet's
  ``train/`` and ``val/`` layout included) or a CSV of ``path,label`` lines, resolves every
  class folder or label to the model's class index, and stats nothing it does not need:
  no image is decoded. It returns an :class:`ImageFiles` (paths and labels, in a
  deterministic order).
- :func:`stream` yields one :class:`Batch` per requested span of positions, in order.
  Files are decoded by a pool of threads (PIL releases the GIL while decoding; threads
  work inside torchrun's processes and need no fork), at most ``prefetch`` spans ahead of
  the consumer, so memory holds a few batches whatever the number of files: the one the
  consumer holds, ``prefetch`` ahead, and (while the next is assembled) its images twice.
  A file that cannot be decoded is skipped and listed in ``Batch.skipped`` with its reason
  (the caller decides how to warn); an error of ``prepare`` stops the stream. An
  in-memory :class:`~advex.data.ArrayDataset` (MNIST, CIFAR-10) streams the same way,
  sliced, without threads.

:func:`as_model_input` is the usual ``prepare``: an image as the model takes it (its
channels, its input size), quantised to 8 bits so that the image resized in a worker is
the image an attack starts from and saves.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch

from advex.data.classes import resolve_class
from advex.data.datasets import ArrayDataset
from advex.data.images import IMAGE_SUFFIXES, load_image, quantize
from advex.errors import AdvexError

Prepare = Callable[[torch.Tensor], torch.Tensor]
CHUNK = 32  # files per task given to a worker: small enough to stop quickly, large enough to be cheap
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as PIL's convert("L")


# ------------------------------------------------------------------------ listing
@dataclass
class ImageFiles:
    """Labelled image files: ``paths[i]`` has class index ``labels[i]`` (of the model's
    ``classes``, or of the sorted class-folder names when the model has none)."""

    root: Path  # the folder or CSV file given
    paths: list[Path]
    labels: torch.Tensor  # (N,) int64
    classes: list[str] | None
    description: str  # "image folder data/val (50000 images, 1000 classes)", for messages and reports

    def __len__(self) -> int:
        return len(self.paths)

    def _base(self) -> Path:
        return self.root if self.root.is_dir() else self.root.parent

    def fingerprint(self) -> str:
        """SHA-256 (hex) over (relative path, label, size, mtime_ns) of every entry, in order:
        a run journal records it, and any added, removed, changed or relabelled file changes it."""
        h = hashlib.sha256()
        base = os.path.join(self._base(), "")  # "root/": paths under it are hashed relative to it
        for p, label in zip(self.paths, self.labels.tolist()):
            try:
                st = os.stat(p)
                size, mtime = st.st_size, st.st_mtime_ns
            except OSError:  # gone since it was listed
                size, mtime = -1, -1
            name = str(p).removeprefix(base)
            h.update(f"{name}\t{label}\t{size}\t{mtime}\n".encode("utf-8", "surrogateescape"))
        return h.hexdigest()

    def select(self, idx: torch.Tensor) -> ImageFiles:
        """The entries at ``idx`` (a 1-D tensor of positions), in that order (``--indices``)."""
        idx = torch.as_tensor(idx, dtype=torch.long).flatten()
        if idx.numel() and not (0 <= int(idx.min()) and int(idx.max()) < len(self)):
            bad = int(idx[(idx < 0) | (idx >= len(self))][0])
            raise AdvexError(f"index {bad} is out of range for the {len(self)} images of {self.root}")
        paths = [self.paths[i] for i in idx.tolist()]
        desc = f"{_kind(self.root)} {self.root} ({len(paths)} of its {len(self)} images)"
        return ImageFiles(self.root, paths, self.labels[idx], self.classes, desc)


def _kind(root: Path) -> str:
    return "image folder" if root.is_dir() else "CSV"


def _describe(root: Path, labels: list[int]) -> str:
    return f"{_kind(root)} {root} ({len(labels)} images, {len(set(labels))} classes)"


def open_images(
    path: str | os.PathLike,
    classes: Sequence[str] | None = None,
    synonyms: Sequence[Sequence[str]] | None = None,
) -> ImageFiles:
    """List the labelled images at ``path``: a folder with one sub-folder per class, or a
    ``.csv`` file of ``path,label`` lines (an optional ``path,label`` header; paths relative
    to the CSV's folder, or absolute).

    Class folders and labels are read as the model's ``classes`` (names, ``synonyms``,
    digit strings as indices, ImageNet WordNet ids such as ``n01440764``). Without
    ``classes``, sorted folder names are the indices 0..K-1 (as torchvision's ImageFolder)
    and CSV labels must be indices. Within a class folder, images (by suffix, see
    ``IMAGE_SUFFIXES``) are found at any depth; hidden files and folders and other files
    are ignored; entries are ordered by (class folder, relative path). Nothing is decoded.
    """
    root = Path(path)
    if not root.exists():
        raise AdvexError(f"--data {root} not found; give a folder with one sub-folder per class, or a .csv file")
    if root.is_dir():
        return _open_folder(root, classes, synonyms)
    if root.suffix.lower() == ".csv":
        return _open_csv(root, classes, synonyms)
    raise AdvexError(f"--data {root} is a file but not a .csv; give a folder with one sub-folder per class, or a CSV")


def _is_image(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def _images_under(folder: Path) -> list[Path]:
    """Image files under ``folder``, at any depth, sorted by their relative path."""

    def refuse(e: OSError):
        raise AdvexError(f"cannot list {e.filename} ({e.strerror}); check the folder's permissions")

    found: list[tuple[list[str], str]] = []
    cut = len(str(folder)) + 1
    for dirpath, dirnames, filenames in os.walk(folder, onerror=refuse):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for f in filenames:
            if _is_image(f):
                full = os.path.join(dirpath, f)
                found.append((full[cut:].split(os.sep), full))
    found.sort()
    return [Path(full) for _, full in found]


def _open_folder(root: Path, classes, synonyms) -> ImageFiles:
    subs = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not subs:
        loose = sum(1 for e in os.scandir(root) if e.is_file() and _is_image(e.name))
        found = f"; it holds {loose} images directly, put them in class folders" if loose else ""
        raise AdvexError(f"image folder {root} has no class sub-folders; expected {root}/<class>/<image>.png{found}")
    if classes is None:
        index = {name: k for k, name in enumerate(subs)}
    else:
        index = {}
        for name in subs:  # every class folder checked before any is listed
            try:
                index[name] = resolve_class(name, classes, synonyms)
            except AdvexError as e:
                raise AdvexError(f"image folder {root}, class folder {name!r}: {e}") from None
    paths: list[Path] = []
    labels: list[int] = []
    for name in subs:
        files = _images_under(root / name)
        paths += files
        labels += [index[name]] * len(files)
    if not paths:
        raise AdvexError(
            f"image folder {root} holds no images in its {len(subs)} class sub-folders "
            f"(looked for {', '.join(IMAGE_SUFFIXES)})"
        )
    out_classes = list(classes) if classes is not None else subs
    return ImageFiles(root, paths, torch.tensor(labels, dtype=torch.int64), out_classes, _describe(root, labels))


def _open_csv(root: Path, classes, synonyms) -> ImageFiles:
    try:
        text = root.read_text(encoding="utf-8-sig")  # -sig: a spreadsheet's byte-order mark
    except (OSError, UnicodeDecodeError) as e:
        raise AdvexError(f"cannot read {root} as UTF-8 text ({type(e).__name__})") from None
    base = root.parent
    paths: list[Path] = []
    labels: list[int] = []
    resolved: dict[str, int] = {}  # each distinct label resolved once
    reader = csv.reader(io.StringIO(text))
    first = True
    for row in _rows(reader, root):
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        where = f"{root} line {line}"
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise AdvexError(f"{where}: expected path,label, got {','.join(row)!r}")
        name, label = row[0].strip(), row[1].strip()
        if first and (name.lower(), label.lower()) == ("path", "label"):
            first = False
            continue
        p = Path(name)
        p = p if p.is_absolute() else base / p
        if not p.is_file():
            header = "; a header line must read path,label" if first else ""
            problem = "is not a file" if p.exists() else "not found"
            raise AdvexError(f"{where}: image file {p} {problem}{header}")
        first = False
        if label not in resolved:
            try:
                k = resolve_class(label, classes, synonyms)
            except AdvexError as e:
                raise AdvexError(f"{where}: {e}") from None
            if k < 0:
                raise AdvexError(f"{where}: class index {k} is negative; give an index from 0")
            resolved[label] = k
        paths.append(p)
        labels.append(resolved[label])
    if not paths:
        raise AdvexError(f"{root} lists no images; expected lines of path,label")
    out_classes = list(classes) if classes is not None else None
    return ImageFiles(root, paths, torch.tensor(labels, dtype=torch.int64), out_classes, _describe(root, labels))


def _rows(reader, root: Path) -> Iterator[list[str]]:
    """The CSV's rows, a malformed one (a NUL byte, ...) as one line naming where."""
    while True:
        try:
            yield next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise AdvexError(f"{root} line {reader.line_num}: not CSV ({e})") from None


# ------------------------------------------------------------------------ streaming
@dataclass
class Batch:
    """The images of source positions [start, stop), as the model takes them.

    ``x`` has a row per decoded file (fewer than ``stop - start`` when files were skipped;
    none, shape (0, 0, 0, 0) before any size is known, when all were); ``index`` gives the
    source position of each row."""

    start: int
    stop: int
    x: torch.Tensor  # (n, C, H, W) float32 in [0, 1]
    y: torch.Tensor  # (n,) int64 class indices
    index: torch.Tensor  # (n,) int64 source positions of the rows
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason) of undecodable files

    def __len__(self) -> int:
        return int(self.y.numel())


def stream(
    source: ImageFiles | ArrayDataset,
    spans: Iterable[tuple[int, int]],
    prepare: Prepare,
    *,
    workers: int = 2,
    prefetch: int = 2,
) -> Iterator[Batch]:
    """One :class:`Batch` per ``(start, stop)`` span of source positions, in the order given.

    Each file is read with :func:`~advex.data.load_image` and turned into the model's input
    by ``prepare(pixels (3, H, W)) -> (C, H, W)`` in a worker thread; ``workers`` threads
    (each computing single-threaded) decode at most ``prefetch`` spans ahead of the one
    being consumed. Undecodable files are
    skipped (``Batch.skipped``); an :class:`AdvexError` of ``prepare`` stops the stream. Closing
    the generator early (``break``, Ctrl-C) cancels the pending work and joins the threads.

    An :class:`~advex.data.ArrayDataset` is sliced instead (pixels / 255); a ``prepare`` with
    ``batched = True`` (as :func:`as_model_input`'s) is applied to the whole slice at once.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise AdvexError(f"workers must be a whole number >= 1, got {workers!r}")
    if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 0:
        raise AdvexError(f"prefetch must be a whole number >= 0, got {prefetch!r}")
    if isinstance(source, ArrayDataset):
        return _stream_arrays(source, spans, prepare)
    if isinstance(source, ImageFiles):
        return _stream_files(source, spans, prepare, workers, prefetch)
    raise AdvexError(f"stream reads ImageFiles or an ArrayDataset, got {type(source).__name__}")


def _span(span, n: int, what) -> tuple[int, int]:
    try:
        start, stop = (int(v) for v in span)
    except (TypeError, ValueError):
        raise AdvexError(f"a span is a pair (start, stop) of positions, got {span!r}") from None
    if not 0 <= start <= stop <= n:
        raise AdvexError(f"span ({start}, {stop}) is outside the {n} images of {what}")
    return start, stop


def _stream_arrays(data: ArrayDataset, spans, prepare: Prepare) -> Iterator[Batch]:
    for span in spans:
        start, stop = _span(span, len(data), f"{data.name} {data.split}")
        x, y = data.floats(slice(start, stop))
        if getattr(prepare, "batched", False):
            x = prepare(x)
        elif len(x):
            x = torch.stack([prepare(im) for im in x])
        yield Batch(start, stop, x, y, torch.arange(start, stop), [])


Decoded = list[tuple[int, torch.Tensor | None, str | None]]  # (position, image or None, reason skipped)


def _decode(paths: Sequence[Path], start: int, prepare: Prepare) -> Decoded:
    """Runs in a worker: read each file, skip the unreadable, prepare the rest."""
    out: Decoded = []
    for i, p in enumerate(paths, start):
        try:
            pixels = load_image(p).pixels
        except AdvexError as e:
            out.append((i, None, str(e)))
            continue
        except Exception as e:  # a decoder's own failure on one file (struct.error, ...): that file's fault
            out.append((i, None, f"cannot read {p} as an image ({type(e).__name__}: {e})"))
            continue
        out.append((i, prepare(pixels), None))  # prepare's errors are the run's: they propagate
    return out


def _one_thread_each() -> None:
    """Each worker computes single-threaded: the workers are the parallelism. A torch thread
    team per worker would oversubscribe the cores (on a busy 2-core machine OpenMP's
    spin-waits made per-image work 40 times slower)."""
    torch.set_num_threads(1)
    torch.get_num_threads()  # settles this thread's count before the consumer restores the default


def _stream_files(files: ImageFiles, spans, prepare: Prepare, workers: int, prefetch: int) -> Iterator[Batch]:
    threads = torch.get_num_threads()  # torch.set_num_threads in a worker also changes the default for new threads
    pool = ThreadPoolExecutor(workers, thread_name_prefix="advex-data", initializer=_one_thread_each)
    todo = iter(spans)
    queued: deque[tuple[int, int, list[Future]]] = deque()  # spans submitted, oldest first
    one_size = _OneSize(files, prepare)

    def submit() -> None:
        span = next(todo, None)
        if span is None:
            return
        start, stop = _span(span, len(files), files.root)
        step = max(1, min(CHUNK, math.ceil((stop - start) / workers)))
        chunks = [
            pool.submit(_decode, files.paths[a : min(a + step, stop)], a, prepare) for a in range(start, stop, step)
        ]
        queued.append((start, stop, chunks))

    try:
        for _ in range(prefetch + 1):
            submit()
        while queued:
            # no local keeps the batch or its futures: once the consumer drops it, it is freed
            yield _batch(files, *queued.popleft(), one_size)
            submit()  # only now: the consumer is done with the batch it held
    finally:
        for _, _, chunks in queued:
            for f in chunks:
                f.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(threads)


def _batch(files: ImageFiles, start: int, stop: int, chunks: list[Future], one_size: _OneSize) -> Batch:
    """The span's batch from its workers' results (waiting for them)."""
    decoded = [row for f in chunks for row in f.result()]
    kept = [(i, im) for i, im, _ in decoded if im is not None]
    skipped = [(str(files.paths[i]), reason) for i, im, reason in decoded if im is None]
    for i, im in kept:
        one_size.check(im.shape, files.paths[i])
    if not kept:
        index = torch.zeros(0, dtype=torch.int64)
        return Batch(start, stop, torch.zeros((0, *(one_size.shape or (0, 0, 0)))), files.labels[index], index, skipped)
    index = torch.tensor([i for i, _ in kept], dtype=torch.int64)
    return Batch(start, stop, torch.stack([im for _, im in kept]), files.labels[index], index, skipped)


class _OneSize:
    """The images of a stream must share one shape (the model's input size, or else their own)."""

    def __init__(self, files: ImageFiles, prepare: Prepare) -> None:
        self.files, self.prepare = files, prepare
        self.shape: tuple[int, ...] | None = None
        self.first = ""

    def check(self, shape: torch.Size, path: Path) -> None:
        if self.shape is None:
            self.shape, self.first = tuple(shape), str(path)
        elif tuple(shape) != self.shape:
            a, b = self.shape, tuple(shape)
            same_channels = a[0] == b[0]

            def size(s: tuple) -> str:
                return "x".join(map(str, s[1:] if same_channels else s))

            who = getattr(self.prepare, "model_name", "the model")
            raise AdvexError(
                f"images in {self.files.root} have different sizes ({size(a)} in {self.first}, {size(b)} in {path}) "
                f"and {who} has no input size to resize them to; give images of one size"
            )


# ------------------------------------------------------------------------ the model's input
class ModelInput:
    """``prepare`` for a model: pixels (C, H, W) or a batch (N, C, H, W) -> the model's input.

    Channels first (3 -> 1: channel 0 when the three are equal, so a grayscale file round-trips
    bit-exactly, else ITU-R 601 luma; 1 -> 3: replicated), then the model's own crop and resize
    (``model.fit_input``) to its ``input_size`` if it has one, then 8-bit quantisation.
    Duck-typed on ``channels``, ``input_size`` and ``fit_input`` (data sits below models)."""

    batched = True  # stream may apply it to a whole in-memory slice

    def __init__(self, model) -> None:
        self.model_name = str(getattr(model, "name", type(model).__name__))
        self.channels = getattr(model, "channels", None)
        size = getattr(model, "input_size", None)
        self.input_size = tuple(size) if size is not None else None
        self.fit_input = getattr(model, "fit_input", None)
        if self.input_size is not None and self.fit_input is None:
            raise AdvexError(f"{self.model_name} has an input_size but no fit_input to resize images to it")
        # fit_input keeps a cache of resize matrices that is not safe to grow from several threads
        self._lock = threading.Lock()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        single = x.ndim == 3
        x = self._channels(x[None] if single else x)
        if self.input_size is not None and tuple(x.shape[-2:]) != self.input_size:
            with self._lock:
                x = self.fit_input(x)
        x = quantize(x)
        return x[0] if single else x

    def _channels(self, x: torch.Tensor) -> torch.Tensor:
        c, have = self.channels, x.shape[1]
        if c is None or have == c:
            return x
        if (c, have) == (1, 3):
            gray = ((x[:, 0] == x[:, 1]) & (x[:, 0] == x[:, 2])).flatten(1).all(1)
            r, g, b = LUMA
            luma = (r * x[:, 0] + g * x[:, 1] + b * x[:, 2])[:, None]
            return torch.where(gray[:, None, None, None], x[:, :1], luma)
        if (c, have) == (3, 1):
            return x.expand(-1, 3, -1, -1)
        raise AdvexError(f"{self.model_name} takes {c}-channel images; these have {have} channels")


def as_model_input(model) -> Prepare:
    """The ``prepare`` of :func:`stream` for ``model`` (see :class:`ModelInput`)."""
    return ModelInput(model)
