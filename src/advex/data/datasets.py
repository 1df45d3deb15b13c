"""Datasets held whole in memory as uint8 tensors: MNIST, CIFAR-10 and (small) image folders;
a folder too large for memory is streamed instead (``advex.data.sources``).

Readers take the standard files (MNIST's four idx files, gzipped or not; CIFAR-10's
binary batches, gzipped or not; a folder with one sub-folder per class), check the MD5 of
the uncompressed bytes against the official files, and say which file is missing or
corrupt. Folders are searched in this order: ``data_dir`` (``--data-dir``), then
``$ADVEX_DATA``, then ``../shared/datasets`` beside the working directory or the
checkout, then ``~/.cache/advex/datasets`` (where ``download=True`` writes). Nothing is
downloaded unless asked.

CIFAR-10's python version is a pickle; advex never unpickles files, so it reads the
binary version only.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from advex.data.images import atomic_write_bytes, to_uint8
from advex.errors import AdvexError

MNIST_MD5 = {  # of the uncompressed idx files
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/{}.gz"
CIFAR10_MD5 = {  # of the uncompressed binary batches
    "data_batch_1.bin": "5dd7e06a14cb22eb9f671a540d1b7c25",
    "data_batch_2.bin": "5ea93a67294ea407fff1d09f752e9692",
    "data_batch_3.bin": "942cd6a4bcdd0dd3c604fbe906cb4421",
    "data_batch_4.bin": "ae636b3ba5c66a11e91e8cb52e771fcb",
    "data_batch_5.bin": "53f37980c15c3d472c316c40844f3f0d",
    "test_batch.bin": "803d5f7f4d78ea53de84dbe85f74fb6d",
}
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR10_TAR_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
MNIST_CLASSES = [str(i) for i in range(10)]
DATASETS = ("mnist", "cifar10")
# per-channel statistics of the training sets, pixels in [0, 1]
STATS = {
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}


@dataclass
class ArrayDataset:
    """A whole split in memory: ``images`` (N, C, H, W) uint8, ``labels`` (N,) int64."""

    name: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    source: str = ""

    def __len__(self) -> int:
        return int(self.labels.numel())

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def to(self, device: torch.device | str) -> ArrayDataset:
        return ArrayDataset(
            self.name, self.split, self.images.to(device), self.labels.to(device), self.classes, self.source
        )

    def subset(self, n: int | None) -> ArrayDataset:
        if n is None or n >= len(self):
            return self
        return ArrayDataset(self.name, self.split, self.images[:n], self.labels[:n], self.classes, self.source)

    def select(self, idx: torch.Tensor) -> ArrayDataset:
        """The images at ``idx`` (a 1-D tensor of indices into this split), in that order."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        return ArrayDataset(self.name, self.split, self.images[idx], self.labels[idx], self.classes, self.source)

    def floats(self, idx: torch.Tensor | slice | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Images in [0, 1] (float32) and labels, for ``idx`` or all."""
        if idx is None:
            idx = slice(None)
        return self.images[idx].float().div_(255.0), self.labels[idx]


def parse_indices(spec: str, length: int, what: str = "the split") -> torch.Tensor:
    """Indices into ``what`` (a split, or a ``--data`` folder) of ``length`` images: ``A:B`` (A
    included, B not, as in Python), or the path of a text file of whole numbers separated by
    commas, spaces or new lines."""
    accepted = f"give A:B with 0 <= A < B <= {length}, or a file of indices"
    if ":" in spec and not Path(spec).is_file():
        a, _, b = spec.partition(":")
        try:
            lo, hi = int(a) if a.strip() else 0, int(b) if b.strip() else length
        except ValueError:
            raise AdvexError(f"--indices {spec!r} is not A:B with whole numbers; {accepted}") from None
        if not 0 <= lo < hi <= length:
            raise AdvexError(f"--indices {spec!r} is out of range for the {length} images of {what}; {accepted}")
        return torch.arange(lo, hi)
    path = Path(spec)
    if not path.is_file():
        raise AdvexError(f"--indices {spec!r} is neither A:B nor a file; {accepted}")
    try:
        values = [int(v) for v in path.read_text().replace(",", " ").split()]
    except (OSError, UnicodeDecodeError, ValueError):
        raise AdvexError(f"--indices file {path} must hold whole numbers separated by commas or spaces") from None
    if not values:
        raise AdvexError(f"--indices file {path} holds no indices")
    bad = [v for v in values if not 0 <= v < length]
    if bad:
        raise AdvexError(f"--indices file {path}: index {bad[0]} is out of range for the {length} images of {what}")
    return torch.tensor(values, dtype=torch.long)


def candidate_roots(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Where datasets are looked for, in order."""
    roots: list[Path] = []
    if data_dir is not None:
        roots.append(Path(data_dir).expanduser())
    if os.environ.get("ADVEX_DATA"):
        roots.append(Path(os.environ["ADVEX_DATA"]).expanduser())
    roots.append(Path.cwd().parent / "shared" / "datasets")
    for checkout in (Path(__file__).resolve().parents[3], _installed_from()):
        if checkout is not None:
            roots.append(checkout.parent / "shared" / "datasets")
    roots.append(default_cache())
    out: list[Path] = []
    for r in roots:
        if r not in out:
            out.append(r)
    return out


def _installed_from() -> Path | None:
    """The folder advex was installed from, where pip recorded one (``pip install PATH`` writes
    it to the distribution's direct_url.json), so that ``../shared/datasets`` beside the
    checkout is found after a non-editable install too."""
    import json
    from importlib import metadata
    from urllib.parse import unquote, urlparse

    try:
        record = json.loads(metadata.distribution("advex").read_text("direct_url.json") or "{}")
    except (metadata.PackageNotFoundError, OSError, ValueError):
        return None
    url = urlparse(record.get("url", "")) if isinstance(record, dict) else None
    return Path(unquote(url.path)) if url is not None and url.scheme == "file" else None


def default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "advex" / "datasets"


def _read_verified(folder: Path, stem: str, md5: str) -> bytes | None:
    """The uncompressed bytes of ``stem`` or ``stem.gz`` in ``folder``; None if absent."""
    for path, opener in ((folder / stem, open), (folder / f"{stem}.gz", gzip.open)):
        if path.is_file():
            try:
                with opener(path, "rb") as f:
                    data = f.read()
            except (OSError, EOFError, gzip.BadGzipFile) as e:
                raise AdvexError(
                    f"dataset file {path} is corrupt ({type(e).__name__}); delete it and fetch it again"
                ) from None
            digest = hashlib.md5(data).hexdigest()
            if digest != md5:
                raise AdvexError(
                    f"dataset file {path} is corrupt: MD5 of its content is {digest}, the official file's is {md5}"
                )
            return data
    return None


def _find(
    name: str, subdirs: tuple[str, ...], files: dict[str, str], data_dir, others: tuple[str, ...] = ()
) -> tuple[Path, dict[str, bytes]]:
    """The first folder holding ``files`` (name -> MD5), read and verified. ``others`` are the
    dataset's other files (the other split): a folder holding only those is named in the error."""
    looked, partial = [], []
    for root in candidate_roots(data_dir):
        for sub in subdirs:
            folder = root / sub if sub else root
            looked.append(str(folder))
            if not folder.is_dir():
                continue
            present = [s for s in files if (folder / s).is_file() or (folder / f"{s}.gz").is_file()]
            if not present:
                if any((folder / s).is_file() or (folder / f"{s}.gz").is_file() for s in others):
                    partial.append(str(folder))
                continue
            missing = [s for s in files if s not in present]
            if missing:
                raise AdvexError(f"{name} in {folder} is incomplete: missing {', '.join(missing)} (or .gz)")
            return folder, {s: _read_verified(folder, s, md5) for s, md5 in files.items()}
    if partial:
        raise AdvexError(
            f"{name} in {partial[0]} is incomplete: it holds the other split but not {', '.join(files)} (or .gz); "
            f"add them there, give --data-dir, set $ADVEX_DATA, or pass --download"
        )
    raise AdvexError(
        f"{name} not found (looked in {', '.join(looked[:4])}, ...); "
        f"give --data-dir, set $ADVEX_DATA, or pass --download"
    )


def _idx(data: bytes, magic: int, path: str) -> np.ndarray:
    if int.from_bytes(data[:4], "big") != magic:
        raise AdvexError(f"{path} is not an idx file with magic {magic}")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_mnist(split: str = "train", data_dir=None, download: bool = False) -> ArrayDataset:
    prefix = "train" if split == "train" else "t10k"
    files = {
        f"{prefix}-images-idx3-ubyte": MNIST_MD5[f"{prefix}-images-idx3-ubyte"],
        f"{prefix}-labels-idx1-ubyte": MNIST_MD5[f"{prefix}-labels-idx1-ubyte"],
    }
    if download:
        _download_mnist(data_dir)
    others = tuple(s for s in MNIST_MD5 if s not in files)
    folder, data = _find("MNIST", ("mnist", "MNIST/raw", ""), files, data_dir, others)
    images = _idx(data[f"{prefix}-images-idx3-ubyte"], 2051, "images")
    labels = _idx(data[f"{prefix}-labels-idx1-ubyte"], 2049, "labels")
    return ArrayDataset(
        "mnist",
        split,
        torch.from_numpy(images.copy()).unsqueeze(1),
        torch.from_numpy(labels.astype(np.int64)),
        MNIST_CLASSES,
        str(folder),
    )


def load_cifar10(split: str = "train", data_dir=None, download: bool = False) -> ArrayDataset:
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] if split == "train" else ["test_batch.bin"]
    files = {n: CIFAR10_MD5[n] for n in names}
    if download:
        _download_cifar10(data_dir)
    others = tuple(s for s in CIFAR10_MD5 if s not in files)
    folder, data = _find(
        "CIFAR-10", ("cifar10", "cifar-10-batches-bin", "cifar10/cifar-10-batches-bin", ""), files, data_dir, others
    )
    rec = np.concatenate([np.frombuffer(data[n], dtype=np.uint8).reshape(-1, 3073) for n in names])
    images = torch.from_numpy(rec[:, 1:].reshape(-1, 3, 32, 32).copy())
    labels = torch.from_numpy(rec[:, 0].astype(np.int64))
    return ArrayDataset("cifar10", split, images, labels, CIFAR10_CLASSES, str(folder))


def load_image_folder(path: str | os.PathLike, size: tuple[int, int] | None = None) -> ArrayDataset:
    """A folder with one sub-folder per class (sorted names = class indices), read whole into
    memory by the streaming reader (:func:`advex.data.open_images`, :func:`advex.data.stream`);
    images are resized to ``size`` (H, W) if given. A file that cannot be read is an error here."""
    from advex.data.sources import open_images, stream  # sources builds on this module: import late

    def fit(x: torch.Tensor) -> torch.Tensor:
        if size is not None and tuple(x.shape[-2:]) != tuple(size):
            x = torch.nn.functional.interpolate(x[None], size=size, mode="bilinear", antialias=True)[0]
        return x

    files = open_images(path)
    spans = [(a, min(a + 512, len(files))) for a in range(0, len(files), 512)]
    chunks = []
    for batch in stream(files, spans, fit):
        if batch.skipped:  # whole in memory means whole: no silent gaps
            more = f" (and {len(batch.skipped) - 1} more files)" if len(batch.skipped) > 1 else ""
            raise AdvexError(batch.skipped[0][1] + more)
        chunks.append(to_uint8(batch.x))
    root = Path(path)
    return ArrayDataset(root.name, "all", torch.cat(chunks), files.labels, files.classes, str(root))


def load_dataset(name: str, split: str = "train", data_dir=None, download: bool = False) -> ArrayDataset:
    """Load ``mnist`` or ``cifar10`` (split ``train`` or ``test``), or an image folder path."""
    if split not in ("train", "test"):
        raise AdvexError(f"unknown split {split!r}; use 'train' or 'test'")
    if name == "mnist":
        return load_mnist(split, data_dir, download)
    if name == "cifar10":
        return load_cifar10(split, data_dir, download)
    if Path(name).is_dir():
        return load_image_folder(name)
    raise AdvexError(f"unknown dataset {name!r}; use mnist, cifar10, or a folder with one sub-folder per class")


# ------------------------------------------------------------------------ downloads
def _fetch(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            return r.read()
    except OSError as e:
        raise AdvexError(f"download of {url} failed: {e}") from None


def _download_mnist(data_dir) -> None:
    dest = Path(data_dir or default_cache()) / "mnist"
    dest.mkdir(parents=True, exist_ok=True)
    for stem, md5 in MNIST_MD5.items():
        if _read_verified(dest, stem, md5) is not None:
            continue
        blob = _fetch(MNIST_URL.format(stem))
        if hashlib.md5(gzip.decompress(blob)).hexdigest() != md5:
            raise AdvexError(f"downloaded {stem} does not match the official MD5; nothing written")
        atomic_write_bytes(dest / f"{stem}.gz", blob)


def _download_cifar10(data_dir) -> None:
    dest = Path(data_dir or default_cache()) / "cifar10"
    dest.mkdir(parents=True, exist_ok=True)
    if all((dest / n).is_file() or (dest / f"{n}.gz").is_file() for n in CIFAR10_MD5):
        return
    blob = _fetch(CIFAR10_URL)
    if hashlib.md5(blob).hexdigest() != CIFAR10_TAR_MD5:
        raise AdvexError("downloaded cifar-10-binary.tar.gz does not match the official MD5; nothing written")
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        for member in tar.getmembers():
            base = Path(member.name).name
            if base in CIFAR10_MD5 and member.isfile():
                data = tar.extractfile(member).read()
                if hashlib.md5(data).hexdigest() != CIFAR10_MD5[base]:
                    raise AdvexError(f"{base} in the downloaded archive does not match the official MD5")
                atomic_write_bytes(dest / base, data)
