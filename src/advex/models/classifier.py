"""`Classifier`: any network, seen by advex as pixels in [0, 1] -> logits.

Normalisation and resizing live inside the wrapper, so every attack works in pixel
space and an epsilon means the same thing for every model.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from advex.data import resolve_class
from advex.errors import AdvexError
from advex.models.resize import apply_resize, resize_matrices

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class Classifier(nn.Module):
    """Wrap a network that maps normalised images to logits.

    Args:
        net: the user's ``nn.Module`` (its input is ``(x - mean) / std``).
        mean, std: per-channel normalisation the network was trained with (pixels in
            [0, 1]); ``None`` means none.
        classes: class names, index i is class i; enables names wherever indices go.
        input_size: (H, W) the network needs. Inputs of another size are centre-cropped
            (``crop_fraction`` of the short side) and resized with an antialiased
            bilinear filter, differentiably. ``None`` passes inputs through unchanged.
        crop_fraction: 1.0 resizes the whole image (largest centred box of the input
            aspect ratio); 0.875 is the usual ImageNet "resize to 256, crop 224".
        synonyms: extra names per class (e.g. WordNet synonyms) accepted by lookups.
        channels: input channels expected (3 for RGB, 1 for grayscale). ``None`` infers
            them: the ``in_channels`` of the network's first ``Conv2d``, else the number of
            per-channel mean/std values; a network with neither takes any channel count.
        name: a label for reports.

    :meth:`fast` gives a twin that runs the network in reduced precision, channels_last
    and/or compiled; attacks use it for their passes and this fp32 classifier (the twin's
    ``reference``) for the clean and final predictions.
    """

    _fast: tuple[str, bool, bool] | None = None  # (precision, channels_last, compile) of a fast twin
    _reference: Classifier | None = None
    _compiled: nn.Module | None = None

    def __init__(
        self,
        net: nn.Module,
        *,
        mean: Sequence[float] | float | None = None,
        std: Sequence[float] | float | None = None,
        classes: Sequence[str] | None = None,
        input_size: tuple[int, int] | int | None = None,
        crop_fraction: float = 1.0,
        synonyms: Sequence[Sequence[str]] | None = None,
        channels: int | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(net, nn.Module):
            raise AdvexError(f"Classifier wraps an nn.Module, got {type(net).__name__}")
        if isinstance(input_size, int):
            input_size = (input_size, input_size)
        if not 0 < crop_fraction <= 1:
            raise AdvexError(f"crop_fraction must be in (0, 1], got {crop_fraction}")
        self.net = net
        self.classes = list(classes) if classes is not None else None
        self.synonyms = [list(s) for s in synonyms] if synonyms is not None else None
        self.input_size = tuple(input_size) if input_size is not None else None
        self.crop_fraction = float(crop_fraction)
        self.channels = channels if channels is not None else _infer_channels(net, mean, std)
        self.name = name or type(net).__name__
        self._resize_cache: dict = {}  # (sizes, canvas H, W, device, dtype) -> resize matrices
        self.register_buffer("mean", self._stat(mean, 0.0), persistent=False)
        self.register_buffer("std", self._stat(std, 1.0), persistent=False)
        if (self.std <= 0).any():
            raise AdvexError("std must be positive")

    def _stat(self, v, default: float) -> torch.Tensor:
        if v is None:
            v = default
        t = torch.as_tensor(v, dtype=torch.float32).flatten()
        if self.channels is None:  # any channel count: only a single shared value makes sense
            if t.numel() != 1:
                raise AdvexError("per-channel mean/std need channels=; give channels=3 (or 1)")
            return t.view(1, 1, 1, 1)
        if t.numel() == 1:
            t = t.expand(self.channels).clone()
        if t.numel() != self.channels:
            raise AdvexError(f"mean/std need 1 or {self.channels} values, got {t.numel()}")
        return t.view(1, -1, 1, 1)

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        for t in self.parameters():
            return t.device
        return self.mean.device

    @property
    def num_classes(self) -> int | None:
        return len(self.classes) if self.classes is not None else None

    def class_index(self, label: int | str) -> int:
        """Index of a class given by index or name (case-insensitive, synonyms too)."""
        return resolve_class(label, self.classes, self.synonyms)

    def class_name(self, index: int) -> str:
        return self.classes[index] if self.classes is not None else str(index)

    # ------------------------------------------------------------------ forward
    def resizes(self, h: int, w: int) -> bool:
        """Whether an (h, w) input is cropped/resized before the network (else only normalised)."""
        return self.input_size is not None and (h, w) != self.input_size

    def prefers_channels_last(self, x: torch.Tensor) -> bool:
        """Whether this network's passes over the images ``x`` run faster on a channels-last
        copy: on a CPU, for (N, C, H, W) images of 3 or more channels that the network takes as
        they are (no resize), through 3 or more convolutions. Measured on a 2-core CPU
        (docs/benchmarks.md, issue 19): a forward+backward 1.15-1.3x faster for
        EfficientNet-Lite0 and the CIFAR-10 cnn7, resnet and large networks, and a forward
        0.77x on the two-convolution ``small``. Unmeasured on GPUs: there the fast twin's
        ``channels_last`` (:meth:`fast`) is the switch. Layout only: the same values up to float
        rounding (the convolutions may sum in another order)."""
        if x.device.type != "cpu" or x.ndim != 4 or x.shape[1] < 3 or self.resizes(*x.shape[-2:]):
            return False
        if self.reference.__dict__.get("_channels_last_fails"):
            return False
        return sum(isinstance(m, nn.Conv2d) for m in self.net.modules()) >= 3

    def fast_layout(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as a channels-last copy where :meth:`prefers_channels_last`, else ``x`` itself:
        what an attack feeds the network on. A network that turns out not to take channels-last
        input (a ``.view()`` of its activations raises) is run on a contiguous copy instead, and
        is not given channels-last images again."""
        return x.contiguous(memory_format=torch.channels_last) if self.prefers_channels_last(x) else x

    def _run(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``net(x)``; where a channels-last ``x`` makes it raise, once more on a contiguous copy,
        remembered (see :meth:`fast_layout`)."""
        if x.ndim != 4 or x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last):
            return net(x)
        if self.reference.__dict__.get("_channels_last_fails"):
            return net(x.contiguous())
        try:
            return net(x)
        except RuntimeError:
            out = net(x.contiguous())  # raises again if the layout was not the cause
            self.reference.__dict__["_channels_last_fails"] = True
            return out

    def fit_input(self, x: torch.Tensor, sizes: torch.Tensor | None = None) -> torch.Tensor:
        """Crop and resize pixels to the network's input size, if it has one (no normalisation)."""
        if x.ndim != 4 or (self.channels is not None and x.shape[1] != self.channels):
            c = self.channels if self.channels is not None else "C"
            raise AdvexError(f"{self.name} takes images of shape (N, {c}, H, W) in [0, 1], got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if sizes is None and not self.resizes(h, w):
            return x
        if self.input_size is None:
            raise AdvexError(f"{self.name} has no input_size, so it cannot take a batch of mixed-size images")
        if sizes is None:
            sz = [(h, w)]
        else:
            sz = [tuple(s) for s in sizes.tolist()]
            if len(sz) != x.shape[0]:
                raise AdvexError(f"sizes has {len(sz)} rows for a batch of {x.shape[0]} images")
        key = (tuple(sz), h, w, x.device, x.dtype)
        mats = self._resize_cache.get(key)
        if mats is None:
            a_h, a_w = resize_matrices(sz, (h, w), self.input_size, self.crop_fraction)
            mats = (a_h.to(x.device, x.dtype), a_w.to(x.device, x.dtype))
            while len(self._resize_cache) >= 64:  # oldest first; threads of a data stream may race here
                try:
                    self._resize_cache.pop(next(iter(self._resize_cache)), None)
                except (StopIteration, RuntimeError):  # emptied or resized by another thread meanwhile
                    break
            self._resize_cache[key] = mats
        return apply_resize(x, *mats)

    def normalise(self, x: torch.Tensor, channel_dim: int = 1) -> torch.Tensor:
        """``(x - mean) / std`` per channel, the channels along ``channel_dim`` (1 for
        (N, C, H, W) images, -1 for (..., C) colours); no resizing."""
        shape = [1] * x.ndim
        shape[channel_dim] = -1
        mean, std = self.mean.to(x.dtype).view(shape), self.std.to(x.dtype).view(shape)
        return (x - mean) / std

    def preprocess(self, x: torch.Tensor, sizes: torch.Tensor | None = None) -> torch.Tensor:
        """Crop/resize to the network's input size (if it has one) and normalise."""
        x = self.fit_input(x, sizes)
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def forward(self, x: torch.Tensor, sizes: torch.Tensor | None = None) -> torch.Tensor:
        """Logits for images ``x`` in [0, 1], shape (N, C, H, W).

        ``sizes`` (N, 2) gives each image's true (H, W) when ``x`` is a zero-padded
        canvas of mixed-size images (see :func:`advex.data.images.pack`).
        """
        x = self.preprocess(x, sizes)
        if self._fast is None:
            return self._run(self.net, x)
        precision, channels_last, _ = self._fast
        if channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        dtype = PRECISIONS[precision]
        with torch.autocast(x.device.type, dtype or torch.float32, enabled=dtype is not None):
            return self._run(self.net if self._compiled is None else self._compiled, x).float()

    # ------------------------------------------------------------------ the fast path
    def fast(self, *, precision: str = "bf16", channels_last: bool = False, compile: bool = False) -> Classifier:
        """A twin of this classifier, sharing its network and weights, that runs the network
        under ``precision`` autocast (``"bf16"``, ``"fp16"`` or ``"fp32"``), on channels_last
        inputs and weights, and/or through ``torch.compile``. Its logits are fp32 tensors.

        Opt-in and for GPUs first: on most CPUs bf16 is slower (docs/benchmarks.md, issue 19).
        Every attack takes the twin; its clean and final predictions, and so its success, come
        from this fp32 classifier (``twin.reference``), never from the reduced-precision passes.
        ``channels_last`` converts the shared weights' memory layout (values unchanged).
        """
        if precision not in PRECISIONS:
            raise AdvexError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
        base = self.reference
        twin = copy.copy(base)  # shares the network, buffers and registries; only plain attributes differ
        if channels_last:
            base.net.to(memory_format=torch.channels_last)
        object.__setattr__(twin, "_fast", (precision, bool(channels_last), bool(compile)))
        object.__setattr__(twin, "_reference", base)
        object.__setattr__(twin, "_compiled", torch.compile(base.net) if compile else None)
        return twin

    @property
    def reference(self) -> Classifier:
        """The fp32 classifier this one is a fast twin of (itself if it is not one)."""
        return self._reference if self._reference is not None else self

    @torch.no_grad()
    def predict(self, x: torch.Tensor, sizes: torch.Tensor | None = None, batch_size: int = 64):
        """(labels, confidences, probabilities) under ``torch.no_grad``, in chunks."""
        probs = []
        for i in range(0, x.shape[0], batch_size):
            s = sizes[i : i + batch_size] if sizes is not None else None
            probs.append(self(x[i : i + batch_size], s).float().softmax(-1))
        p = torch.cat(probs)
        conf, label = p.max(-1)
        return label, conf, p

    def extra_repr(self) -> str:
        fast = "" if self._fast is None else ", fast(precision={!r}, channels_last={}, compile={})".format(*self._fast)
        return f"name={self.name!r}, input_size={self.input_size}, classes={self.num_classes}{fast}"


def _infer_channels(net: nn.Module, mean, std) -> int | None:
    """Input channels of ``net``: its first Conv2d's, else the length of per-channel stats."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            return int(m.in_channels)
    counts = {torch.as_tensor(v).numel() for v in (mean, std) if v is not None} - {1}
    if len(counts) > 1:
        raise AdvexError(f"mean and std give different channel counts: {sorted(counts)}")
    return counts.pop() if counts else None


def as_classifier(model: nn.Module) -> Classifier:
    """Accept a `Classifier` or any ``nn.Module`` mapping [0, 1] pixels to logits."""
    if isinstance(model, Classifier):
        return model
    if isinstance(model, nn.Module):
        return Classifier(model)  # a plain module: no normalisation, channels from its first conv
    raise AdvexError(f"model must be an nn.Module (or advex Classifier), got {type(model).__name__}")


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no parameter gradients for the duration; the caller's state is restored."""
    modes = [(m, m.training) for m in model.modules()]  # each module's own flag, restored one by one
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, f in flags:
            p.requires_grad_(f)
        for m, t in modes:
            m.training = t


def check_pixels(x: torch.Tensor) -> None:
    """Inputs must be a finite (N, C, H, W) batch in [0, 1]."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise AdvexError(f"x must be a (N, C, H, W) tensor of pixels in [0, 1], got {shape}")
    if x.numel() == 0:
        raise AdvexError("x is empty")
    if torch.isnan(x).any():
        raise AdvexError("x contains NaN; inputs must be finite pixels in [0, 1]")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        if hi > 1.5:
            hint = " (8-bit images? divide by 255)"
        elif lo > -1e-3 and hi < 1 + 1e-3:
            hint = " (a rounding error? x.clamp(0, 1) fixes it)"
        else:
            hint = ""
        raise AdvexError(f"pixels must be in [0, 1], got values in [{_pixel(lo)}, {_pixel(hi)}]{hint}")


def _pixel(v: float) -> str:
    """A pixel value shown with enough digits to see why it is out of [0, 1] (1.0000001, not 1)."""
    short = f"{v:.3g}"
    return short if (float(short) < 0 or float(short) > 1) == (v < 0 or v > 1) else f"{v:.9g}"


def check_logits(z, n: int) -> torch.Tensor:
    """The model's output for ``n`` images must be a (n, classes) tensor of logits."""
    if not isinstance(z, torch.Tensor) or z.ndim != 2 or z.shape[0] != n:
        got = f"shape {tuple(z.shape)}" if isinstance(z, torch.Tensor) else f"a {type(z).__name__}"
        raise AdvexError(f"the model must return a (N, classes) tensor of logits for N={n} images, got {got}")
    return z


def check_labels(y, n: int, classes: int, device=None) -> torch.Tensor:
    """Labels ``y`` for ``n`` images as a (n,) long tensor of class indices in [0, classes)."""
    yt = torch.as_tensor(y, device=device).flatten()
    if yt.numel() != n:
        raise AdvexError(f"got {yt.numel()} labels y for {n} images")
    if yt.is_floating_point() or yt.is_complex() or yt.dtype == torch.bool:
        raise AdvexError(f"labels y must be class indices (integers), got {yt.dtype}")
    yt = yt.long()
    bad = (yt < 0) | (yt >= classes)
    if bad.any():
        raise AdvexError(
            f"label {int(yt[bad][0])} is out of range: the model has {classes} classes (0 to {classes - 1})"
        )
    return yt
