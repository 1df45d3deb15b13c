"""Reading and writing images as float tensors in [0, 1], shape (3, H, W).

Conventions: colour images only; a grayscale image is replicated to 3 channels and an
RGBA image is composited onto white (both announced through ``notes``). Writing is
atomic (a temporary file renamed into place) so an interrupted run never leaves a
half-written PNG.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from advex.errors import AdvexError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
SAMPLE_PHOTOS = ("chelsea", "coffee", "camera", "rocket", "astronaut")
ACCEPTED = "PNG, JPEG, BMP, WebP, TIFF"
MAX_MEGAPIXELS = (
    90.0  # images above this are refused unless the caller raises the limit (a 90 MP photo is 1 GB as floats)
)


@dataclass
class LoadedImage:
    """An image as a (3, H, W) float tensor in [0, 1], with where it came from."""

    name: str
    pixels: torch.Tensor
    source: str
    notes: list[str] = field(default_factory=list)


def _to_tensor(arr: np.ndarray, name: str, notes: list[str]) -> torch.Tensor:
    if arr.dtype != np.uint8:
        if arr.dtype == np.bool_:
            arr = arr.astype(np.uint8) * 255
        elif np.issubdtype(arr.dtype, np.floating):
            arr = np.clip(np.round(arr * 255.0), 0, 255).astype(np.uint8)
        else:  # 16-bit integers: keep the top 8 bits
            scale = 257.0 if arr.max(initial=0) > 255 else 1.0
            arr = np.clip(np.round(arr / scale), 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        notes.append(f"{name}: grayscale image converted to RGB (channel replicated)")
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        notes.append(f"{name}: RGBA image composited onto white and alpha dropped")
        rgb = arr[:, :, :3].astype(np.float32)
        a = arr[:, :, 3:4].astype(np.float32) / 255.0
        arr = np.round(rgb * a + 255.0 * (1.0 - a)).astype(np.uint8)
    elif arr.ndim == 3 and arr.shape[2] == 2:  # grayscale + alpha
        notes.append(f"{name}: grayscale+alpha image converted to RGB on white")
        g = arr[:, :, 0].astype(np.float32)
        a = arr[:, :, 1].astype(np.float32) / 255.0
        arr = np.repeat(np.round(g * a + 255.0 * (1 - a)).astype(np.uint8)[:, :, None], 3, 2)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise AdvexError(f"{name}: unsupported image shape {arr.shape}; expected HxW, HxWx3 or HxWx4")
    return torch.from_numpy(np.array(arr, dtype=np.uint8, copy=True)).permute(2, 0, 1).float().div_(255.0)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of an image file, read from its header without decoding it."""
    with _open(Path(path)) as im:
        return im.size


@contextmanager
def _open(p: Path):
    """PIL's lazy open, with every way it fails as one clear line."""
    if not p.exists():
        raise AdvexError(f"image file not found: {p}")
    if p.is_dir():
        raise AdvexError(f"{p} is a folder; give image files, or the folder itself to --images")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # advex's own limit applies
            im = Image.open(p)
    except Image.DecompressionBombError:
        raise AdvexError(
            f"{p} has more than {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels, more than the image reader "
            "decodes (a decompression bomb?); downscale it"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise AdvexError(f"cannot read {p} as an image ({type(e).__name__}); accepted: {ACCEPTED}") from None
    with im:
        yield im


def load_image(path: str | os.PathLike, max_megapixels: float | None = MAX_MEGAPIXELS) -> LoadedImage:
    """Read a PNG/JPEG (or any format PIL reads) as a (3, H, W) tensor in [0, 1]. An image of
    more than ``max_megapixels`` (None: no limit of advex's own) is refused before decoding."""
    p = Path(path)
    with _open(p) as im:
        w, h = im.size
        if max_megapixels is not None and w * h > max_megapixels * 1e6:
            raise AdvexError(
                f"{p} is {w}x{h} ({w * h / 1e6:.1f} megapixels), more than the {max_megapixels:g} megapixels "
                "advex reads by default; downscale it"
            )
        try:
            im.load()
            mode = im.mode
            if mode in ("P", "PA"):
                im = im.convert("RGBA")
            elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                im = im.convert("RGB")
            arr = np.asarray(im)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise AdvexError(f"cannot read {p} as an image ({type(e).__name__}); accepted: {ACCEPTED}") from None
    if mode.startswith("I") or mode == "F":  # 16/32-bit grayscale -> floats in [0, 1]
        arr = arr.astype(np.float64)
        arr = arr / (65535.0 if arr.max(initial=0) > 255 else 255.0)
    notes: list[str] = []
    if mode in ("P", "PA"):
        notes.append(f"{p.name}: palette image converted to RGB")
    return LoadedImage(p.stem, _to_tensor(arr, p.name, notes), str(p), notes)


def find_images(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Expand files and folders (one level, image suffixes only) into a sorted list of files."""
    if not paths:
        raise AdvexError("no images given; pass image files or a folder of PNG/JPEG images")
    files: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise AdvexError(f"folder {p} holds no images (looked for {', '.join(IMAGE_SUFFIXES)})")
            files.extend(found)
        elif p.exists():
            files.append(p)
        else:
            raise AdvexError(f"image file not found: {p}")
    return files


def load_images(paths: Sequence[str | os.PathLike], max_megapixels: float | None = MAX_MEGAPIXELS) -> list[LoadedImage]:
    """Read every image named by ``paths`` (files or folders); names are made unique."""
    images = [load_image(f, max_megapixels) for f in find_images(paths)]
    seen: dict[str, int] = {}
    for im in images:
        k = seen.get(im.name, 0)
        seen[im.name] = k + 1
        if k:
            im.name = f"{im.name}_{k}"
    return images


def sample_photos(names: Iterable[str] = SAMPLE_PHOTOS) -> list[LoadedImage]:
    """The sample photos that ship with scikit-image (no network needed)."""
    try:
        from skimage import data as skdata
    except ImportError:  # pragma: no cover - skimage is a dependency
        raise AdvexError("scikit-image is needed for the sample photos: pip install scikit-image") from None
    out = []
    for n in names:
        fn = getattr(skdata, n, None)
        if fn is None or not callable(fn):
            raise AdvexError(f"unknown sample photo {n!r}; available: {', '.join(SAMPLE_PHOTOS)}")
        notes: list[str] = []
        try:
            arr = fn()
        except Exception as e:  # e.g. a file scikit-image fetches from the network
            raise AdvexError(f"sample photo {n!r} is not available offline ({type(e).__name__})") from None
        if isinstance(arr, tuple):  # stereo pairs: the left image
            arr = arr[0]
        out.append(LoadedImage(n, _to_tensor(np.asarray(arr), n, notes), f"skimage.data.{n}", notes))
    return out


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Quantise pixels in [0, 1] to 8 bits exactly as a PNG stores them."""
    return x.detach().clamp(0, 1).mul(255.0).round().to(torch.uint8)


def quantize(x: torch.Tensor) -> torch.Tensor:
    """The float image that reading back its 8-bit PNG gives (round to 1/255 steps)."""
    return to_uint8(x).to(x.dtype if x.is_floating_point() else torch.float32).div_(255.0)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write a file via a temporary sibling and ``os.replace``: never half-written."""
    p = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual mode
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_writable(folder: str | os.PathLike, option: str = "output folder") -> None:
    """Raise unless ``folder`` is a folder that exists or can be made, where files can be
    written: checked before the work, so a long computation is never lost to a bad path.
    Nothing is created (a temporary probe file in the nearest existing folder is removed)."""
    out = Path(folder)
    if out.exists() and not out.is_dir():
        raise AdvexError(f"{option} {out} is an existing file; give a folder (it is created if missing)")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise AdvexError(f"{option} {out}: {parent} is a file, so no folder can be made there; give another folder")
    try:
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as e:
        reason = e.strerror or e
        raise AdvexError(f"{option} {out}: cannot write in {parent} ({reason}); give a writable folder") from None


def save_png(x: torch.Tensor, path: str | os.PathLike) -> None:
    """Save a (3, H, W) image in [0, 1] as an 8-bit RGB PNG, or a (1, H, W) one as grayscale,
    atomically."""
    import io

    if x.ndim != 3 or x.shape[0] not in (1, 3):
        raise AdvexError(f"save_png takes a (3, H, W) or (1, H, W) image, got shape {tuple(x.shape)}")
    arr = to_uint8(x.cpu()).permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(arr[..., 0] if x.shape[0] == 1 else arr, "L" if x.shape[0] == 1 else "RGB").save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def pack(images: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack images of different sizes into one zero-padded canvas (N, C, Hmax, Wmax).

    Returns the canvas and ``sizes`` (N, 2) = (H, W) of each image: the form
    :meth:`advex.models.Classifier.forward` takes for a batch of mixed sizes.
    """
    if not images:
        raise AdvexError("no images to pack")
    c = images[0].shape[0]
    if any(im.ndim != 3 or im.shape[0] != c for im in images):
        raise AdvexError("all images must be (C, H, W) with the same number of channels")
    h = max(im.shape[1] for im in images)
    w = max(im.shape[2] for im in images)
    canvas = images[0].new_zeros(len(images), c, h, w)
    for i, im in enumerate(images):
        canvas[i, :, : im.shape[1], : im.shape[2]] = im
    sizes = torch.tensor([[im.shape[1], im.shape[2]] for im in images], dtype=torch.long)
    return canvas, sizes


def unpack(canvas: torch.Tensor, sizes: torch.Tensor) -> list[torch.Tensor]:
    """Inverse of :func:`pack`: crop each image back to its own size."""
    return [canvas[i, :, :h, :w] for i, (h, w) in enumerate(sizes.tolist())]
