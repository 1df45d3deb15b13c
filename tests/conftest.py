import pytest
import torch
from torch import nn

from advex.models import Classifier


@pytest.fixture(scope="session")
def imagenet_model():
    from advex.models import load

    return load("efficientnet-lite0", device="cpu")


class TinyNet(nn.Module):
    """A small conv net on 3x8x8 images with 4 classes: fast, smooth enough, not linear."""

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 8 * 8, 4)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)

    def forward(self, x):
        return self.fc(torch.tanh(self.conv(x)).flatten(1))


@pytest.fixture
def tiny_model():
    return Classifier(TinyNet(), classes=["zero", "one", "two", "three"], name="tiny")


@pytest.fixture
def tiny_images():
    g = torch.Generator().manual_seed(1)
    return 0.2 + 0.6 * torch.rand(6, 3, 8, 8, generator=g)


@pytest.fixture(scope="session")
def mnist200():
    """The first 200 MNIST test images and labels, as floats in [0, 1]."""
    from advex.data.datasets import load_dataset

    return load_dataset("mnist", "test").subset(200).floats()
