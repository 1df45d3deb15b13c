"""Architectures that advex trains, built from plain layers so certifiers can read them.

- ``small`` / ``large``: the convolutional networks of Wong, Schmidt, Metzen & Kolter
  (2018), "Scaling provable adversarial defenses", for MNIST (1x28x28) and CIFAR-10
  (3x32x32): ``nn.Sequential`` of Conv2d, ReLU, Flatten, Linear.
- ``cnn7``: the 7-layer CNN with batch norm that certified training papers compare on.
- ``resnet``: a CIFAR ResNet (pre-activation blocks as in He et al. 2016, the network of
  Rice, Wong & Kolter 2020 scaled by ``width``); each block is a :class:`Residual` whose
  body is an ``nn.Sequential`` and whose shortcut is identity or a 1x1 convolution.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from advex.errors import AdvexError


class Residual(nn.Module):
    """``body(x) + shortcut(x)``: the one non-sequential construct the zoo uses."""

    def __init__(self, body: nn.Sequential, shortcut: nn.Module | None = None) -> None:
        super().__init__()
        self.body = body
        self.shortcut = shortcut if shortcut is not None else nn.Identity()

    def forward(self, x):
        return self.body(x) + self.shortcut(x)


def _geometry(channels: int, size: int) -> int:
    return size // 4  # two stride-2 convolutions


def small(channels: int = 1, size: int = 28, num_classes: int = 10) -> nn.Sequential:
    s = _geometry(channels, size)
    return nn.Sequential(
        nn.Conv2d(channels, 16, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * s * s, 100),
        nn.ReLU(),
        nn.Linear(100, num_classes),
    )


def large(channels: int = 1, size: int = 28, num_classes: int = 10) -> nn.Sequential:
    s = _geometry(channels, size)
    return nn.Sequential(
        nn.Conv2d(channels, 32, 3, stride=1, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 32, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=1, padding=1),
        nn.ReLU(),
        nn.Conv2d(64, 64, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(64 * s * s, 512),
        nn.ReLU(),
        nn.Linear(512, 512),
        nn.ReLU(),
        nn.Linear(512, num_classes),
    )


def cnn7(channels: int = 3, size: int = 32, num_classes: int = 10, width: int = 64, linear: int = 512) -> nn.Sequential:
    """The 7-layer CNN with batch norm of certified training (Gowal et al. 2019's "large" family
    as used by Shi et al. 2021, SABR, TAPS, MTL-IBP): five 3x3 convolutions (the third
    strided), a 512-unit hidden layer, each followed by BatchNorm and ReLU."""
    w2 = 2 * width
    s = (size + 1) // 2
    layers: list[nn.Module] = []
    for cin, cout, stride in ((channels, width, 1), (width, width, 1), (width, w2, 2), (w2, w2, 1), (w2, w2, 1)):
        layers += [nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]
    layers += [
        nn.Flatten(),
        nn.Linear(w2 * s * s, linear),
        nn.BatchNorm1d(linear),
        nn.ReLU(),
        nn.Linear(linear, num_classes),
    ]
    return nn.Sequential(*layers)


def _block(cin: int, cout: int, stride: int) -> Residual:
    body = nn.Sequential(
        nn.BatchNorm2d(cin),
        nn.ReLU(),
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
        nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False),
    )
    shortcut = None
    if stride != 1 or cin != cout:
        shortcut = nn.Conv2d(cin, cout, 1, stride=stride, bias=False)
    return Residual(body, shortcut)


def resnet(
    channels: int = 3, size: int = 32, num_classes: int = 10, width: int = 64, blocks: tuple[int, ...] = (2, 2, 2, 2)
) -> nn.Sequential:
    """Pre-activation ResNet; width 64 and blocks (2, 2, 2, 2) is PreAct ResNet-18."""
    layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1, bias=False)]
    cin = width
    for stage, n in enumerate(blocks):
        cout = width * 2**stage
        for i in range(n):
            layers.append(_block(cin, cout, 2 if (i == 0 and stage > 0) else 1))
            cin = cout
    layers += [nn.BatchNorm2d(cin), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)]
    return nn.Sequential(*layers)


ARCHS: dict[str, Callable[..., nn.Module]] = {"small": small, "large": large, "resnet": resnet, "cnn7": cnn7}


def ibp_init(net: nn.Module) -> nn.Module:
    """Shi et al. (2021)'s IBP initialisation: every Conv2d/Linear weight but the last drawn
    from N(0, 2 pi / fan_in^2), so that interval bounds keep their width through the layers
    at initialisation instead of growing with depth (the default initialisation makes them
    explode, and IBP training of deeper networks such as ``large`` then collapses to a
    constant). Biases keep their default initialisation. In place; returns ``net``."""
    layers = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        for m in layers[:-1]:
            fan_in = m.weight[0].numel()
            m.weight.normal_(0.0, math.sqrt(2 * math.pi) / fan_in)
    return net


def build(arch: str, channels: int, size: int, num_classes: int = 10) -> nn.Module:
    if arch not in ARCHS:
        raise AdvexError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHS)}")
    return ARCHS[arch](channels=channels, size=size, num_classes=num_classes)


def make_classifier(dataset: str, arch: str, name: str | None = None):
    """The network of ``arch`` for ``dataset`` (mnist or cifar10), wrapped as a :class:`Classifier`
    with the dataset's class names and normalisation (CIFAR-10 per-channel mean/std; the MNIST
    networks of Wong et al. and Madry et al. take raw pixels)."""
    from advex.data import CIFAR10_CLASSES, MNIST_CLASSES, STATS
    from advex.models.classifier import Classifier

    if dataset not in ("mnist", "cifar10"):
        raise AdvexError(f"unknown dataset {dataset!r}; use mnist or cifar10")
    c, h = (1, 28) if dataset == "mnist" else (3, 32)
    mean, std = STATS[dataset] if dataset == "cifar10" else (None, None)
    classes = MNIST_CLASSES if dataset == "mnist" else CIFAR10_CLASSES
    return Classifier(
        build(arch, c, h, 10),
        mean=mean,
        std=std,
        classes=classes,
        input_size=(h, h),
        channels=c,
        name=name or f"{dataset}-{arch}",
    )
