"""The MNIST / CIFAR-10 models advex trained itself score as their cards say."""

from pathlib import Path

import pytest

from advex.data.datasets import load_dataset
from advex.evaluation import clean_accuracy, count_noisy, robust_accuracy
from advex.models import load
from advex.models.zoo import ZOO

TRAINED = [n for n, e in ZOO.items() if e.card is not None]
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def test_issue_zoo_names_are_shipped():
    assert {"mnist-small", "mnist-small-pgd", "cifar10-small", "cifar10-small-pgd"} <= set(TRAINED)


@pytest.mark.skipif(not (SHARED / "mnist").is_dir(), reason="../shared/datasets not present")
@pytest.mark.parametrize("name", TRAINED)
def test_trained_model_matches_its_card(name):
    model = load(name, device="cpu")
    card = ZOO[name].card
    test = load_dataset(card["dataset"], "test")
    first = test.subset(1000)
    assert clean_accuracy(model, first) >= card["clean_acc"] - 0.03
    if card.get("sigma"):  # noise-trained for randomized smoothing: its card gives accuracy under that noise
        assert count_noisy(model, first, card["sigma"]) / len(first) >= card["noise_acc"] - 0.03
        return
    eps = card["eps"] if card["eps"] > 0 else (0.3 if card["dataset"] == "mnist" else 8 / 255)
    rob = robust_accuracy(model, test.subset(200), eps, steps=10)
    if card["defence"] == "none":
        assert rob < 0.2  # a standard model breaks under the attack the robust one resists
    else:
        assert rob >= card["robust_acc"] - 0.08  # PGD-10 on 200 images vs the card's full-test PGD
