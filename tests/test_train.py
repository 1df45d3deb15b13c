import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from advex.data import augment_crop_flip
from advex.defences import TrainConfig, losses, train
from advex.errors import AdvexError
from advex.models import make_classifier

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
pytestmark = pytest.mark.skipif(not (SHARED / "mnist").is_dir(), reason="../shared/datasets not present")
SMOKE = dict(dataset="mnist", arch="small", epochs=1, train_n=2560, batch_size=64, lr=3e-3, eval_n=200, eval_steps=5)


@pytest.mark.parametrize(
    "dataset,arch",
    [
        ("mnist", "small"),
        ("mnist", "large"),
        ("cifar10", "small"),
        ("cifar10", "large"),
        ("cifar10", "resnet"),
        ("mnist", "cnn7"),
        ("cifar10", "cnn7"),
    ],  # fmt: skip
)
def test_architectures_build(dataset, arch):
    m = make_classifier(dataset, arch)
    c, s = (1, 28) if dataset == "mnist" else (3, 32)
    assert m(torch.rand(2, c, s, s)).shape == (2, 10)


def test_augmentation_is_a_shifted_or_flipped_copy():
    x = torch.rand(64, 3, 8, 8)
    g = torch.Generator().manual_seed(0)
    y = augment_crop_flip(x, g, pad=2)
    ok = 0
    for i in range(64):
        cands = []
        xp = torch.nn.functional.pad(x[i], (2, 2, 2, 2))
        for dy in range(5):
            for dx in range(5):
                crop = xp[:, dy : dy + 8, dx : dx + 8]
                cands += [crop, crop.flip(-1)]
        ok += any(torch.equal(y[i], c) for c in cands)
    assert ok == 64
    assert not torch.equal(y, x)


def test_standard_training_learns_and_writes_everything(tmp_path):
    run = train(TrainConfig(**SMOKE), tmp_path, progress=False, verbose=False, command="test")
    assert run.card["clean_acc"] > 0.8
    for f in (
        "model.safetensors",
        "config.json",
        "metrics.json",
        "curves.png",
        "state.json",
        "state.safetensors",
        "card.json",
    ):
        assert (tmp_path / f).is_file(), f
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*"))
    from advex.models.zoo import read_state_dict

    assert set(read_state_dict(tmp_path / "model.safetensors")) == set(run.model.net.state_dict())


@pytest.mark.parametrize("defence", ["pgd", "trades", "fast"])
def test_adversarial_defences_run_and_record_robust_accuracy(tmp_path, defence):
    cfg = TrainConfig(**{**SMOKE, "train_n": 640}, defence=defence, eps=0.3, attack_steps=3)
    run = train(cfg, tmp_path, progress=False, verbose=False)
    h = run.history[-1]
    from advex.data.datasets import load_dataset
    from advex.evaluation import clean_accuracy

    clean_same_images = clean_accuracy(run.model, load_dataset("mnist", "test").subset(200))
    assert 0 <= h["robust_acc"] <= clean_same_images
    assert torch.isfinite(torch.tensor(h["train_loss"]))


def test_accuracy_counts_of_the_processes_add_up_to_the_whole():
    """advex.evaluation counts each process's round-robin share of the batches, without a
    process group; the shares are disjoint and cover the data, so the counts add up (the
    training loop's all-reduce) to the single-process count."""
    from advex.data import ArrayDataset
    from advex.evaluation import batch_starts, clean_accuracy, count_correct, count_robust, robust_accuracy

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    images = torch.randint(0, 256, (23, 1, 4, 4), dtype=torch.uint8)
    data = ArrayDataset("toy", "test", images, torch.randint(0, 3, (23,)), ["a", "b", "c"])
    assert sorted(i for r in range(3) for i in batch_starts(23, 5, r, 3)) == [0, 5, 10, 15, 20]
    whole = count_correct(net, data, batch_size=5)
    assert sum(count_correct(net, data, batch_size=5, rank=r, world=3) for r in range(3)) == whole > 0
    assert clean_accuracy(net, data) == whole / 23
    robust = count_robust(net, data, 0.3, steps=5, batch_size=5)
    assert robust < whole and robust_accuracy(net, data, 0.3, 5, batch_size=5) == robust / 23
    assert count_robust(net, data, 0.0, steps=5) == whole


def test_interrupt_leaves_a_checkpoint_that_resumes(tmp_path, monkeypatch):
    cfg = TrainConfig(**{**SMOKE, "train_n": 1280, "batch_size": 128, "epochs": 3})
    calls = {"n": 0}
    real = losses.LOSSES["none"]

    def flaky(*a):
        calls["n"] += 1
        if calls["n"] == 15:  # in the second epoch (10 steps per epoch)
            raise KeyboardInterrupt
        return real(*a)

    monkeypatch.setitem(losses.LOSSES, "none", flaky)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path, progress=False, verbose=False)
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["epoch"] == 1 and state["step"] == 10
    monkeypatch.setitem(losses.LOSSES, "none", real)
    run = train(TrainConfig(), tmp_path, resume=True, progress=False, verbose=False)
    assert [h["epoch"] for h in run.history] == [1, 2, 3]
    assert json.loads((tmp_path / "state.json").read_text())["step"] == 30


def test_bad_training_input(tmp_path):
    with pytest.raises(AdvexError, match="unknown architecture 'tiny'"):
        TrainConfig(arch="tiny").resolved()
    with pytest.raises(AdvexError, match="unknown defence 'magic'"):
        TrainConfig(defence="magic").resolved()
    with pytest.raises(AdvexError, match=r"eps must be in \[0, 1\]"):
        TrainConfig(defence="pgd", eps=8).resolved()
    with pytest.raises(AdvexError, match="needs --eps > 0"):
        TrainConfig(defence="pgd").resolved()
    assert TrainConfig(defence="convex", eps=0.1).resolved().kappa_end == 0.0
    with pytest.raises(AdvexError, match="weight_decay >= 0"):
        TrainConfig(weight_decay=-1.0).resolved()
    assert TrainConfig(defence="ibp", eps=0.1).resolved().init == "ibp"
    assert TrainConfig(defence="pgd", eps=0.1).resolved().init == "default"
    with pytest.raises(AdvexError, match="unknown init 'xavier'; use default or ibp"):
        TrainConfig(defence="ibp", eps=0.1, init="xavier").resolved()
    with pytest.raises(AdvexError, match="kappa_end must be in"):
        TrainConfig(defence="ibp", eps=0.1, kappa_end=2.0).resolved()
    train(TrainConfig(**{**SMOKE, "max_steps": 1}), tmp_path / "done", progress=False, verbose=False)
    with pytest.raises(AdvexError, match="already holds a training run; pass --resume"):
        train(TrainConfig(**SMOKE), tmp_path / "done", progress=False)
    with pytest.raises(AdvexError, match="nothing to resume"):
        train(TrainConfig(), tmp_path / "empty", resume=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(AdvexError, match="is a file, so no folder can be made there"):
        train(TrainConfig(**SMOKE), tmp_path / "file" / "out", progress=False)


def test_resume_with_weights_of_another_architecture(tmp_path):
    from safetensors.torch import save_file

    train(TrainConfig(**{**SMOKE, "max_steps": 2}), tmp_path, progress=False, verbose=False)
    save_file(make_classifier("mnist", "large").net.state_dict(), str(tmp_path / "model.safetensors"))
    with pytest.raises(AdvexError, match="does not match architecture small"):
        train(TrainConfig(), tmp_path, resume=True, progress=False)


def test_cli_train_and_errors(tmp_path, capsys):
    from advex.cli import main

    rc = main(
        ["train", "--dataset", "mnist", "--epochs", "1", "--train-n", "640", "--out", str(tmp_path / "o"), "--quiet"]
    )
    assert rc == 0 and "clean test accuracy" in capsys.readouterr().out
    assert json.loads((tmp_path / "o" / "card.json").read_text())["command"].startswith("advex train --dataset mnist")
    assert main(["train", "--dataset", "mnist", "--arch", "vgg", "--out", str(tmp_path / "x")]) == 2
    assert "unknown architecture 'vgg'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_torchrun_two_processes_end_with_identical_weights(tmp_path):
    from safetensors.torch import load_file

    worker = Path(__file__).with_name("ddp_worker.py")
    import socket

    with socket.socket() as sock:  # a free port, so parallel or repeated runs do not collide
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={port}",
        str(worker),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    a, b = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    torch.manual_seed(0)  # train() seeds with cfg.seed = 0 before building the network
    init = make_classifier("mnist", "small").net.state_dict()
    assert any(not torch.equal(a[k], init[k]) for k in a)
    assert json.loads((tmp_path / "card.json").read_text())["processes"] == 2


@pytest.mark.parametrize("defence", ["ibp", "crown-ibp"])
def test_certified_training_certifies(tmp_path, defence):
    """A few thousand steps' worth of IBP / CROWN-IBP training already certifies a good share of
    test images at eps 0.1 (the standard-trained zoo model certifies none), and the numbers are ordered."""
    cfg = TrainConfig(**{**SMOKE, "train_n": 12800, "batch_size": 128, "lr": 1e-3}, defence=defence, eps=0.1)
    run = train(cfg, tmp_path, progress=False, verbose=False)
    h = run.history[-1]
    assert h["certified_acc"] is not None and h["certified_acc"] <= h["robust_acc"] + 1e-9
    assert h["certified_acc"] > 0.05 and run.card["certified_acc"] == h["certified_acc"]
    assert run.card["certified_method"] == "ibp"
    from advex.certify import certify
    from advex.data.datasets import load_dataset

    x, y = load_dataset("mnist", "test").subset(100).floats()
    assert certify(run.model, x, y, eps=0.1, method="crown", attack_steps=10).certified_accuracy > 0.05


def test_convex_training_certifies(tmp_path):
    """The Wong-Kolter robust loss: twenty steps already make a third of the test images
    certifiable at eps 0.05 by its own dual bound, while IBP, which it does not train for, certifies fewer."""
    cfg = TrainConfig(**{**SMOKE, "train_n": 1280, "eval_n": 100}, defence="convex", eps=0.05)
    run = train(cfg, tmp_path, progress=False, verbose=False)
    assert run.card["certified_method"] == "crown" and run.card["certified_acc"] > 0.3
    from advex.certify import certify
    from advex.data.datasets import load_dataset

    x, y = load_dataset("mnist", "test").subset(100).floats()
    dual = certify(run.model, x, y, eps=0.05, method="crown", slope="wong-kolter", attack_steps=10)
    ibp = certify(run.model, x, y, eps=0.05, method="ibp", attack=False)
    assert dual.certified_accuracy > 0.3 and dual.certified_accuracy > ibp.certified_accuracy


def test_batchnorm_network_trains_with_ibp():
    """A CNN7 (BatchNorm after every layer, narrowed here) under the IBP loss at a fixed eps:
    the bounds use the batch statistics, the robust loss falls, and the running statistics are updated."""
    from advex.data.datasets import load_dataset
    from advex.defences.losses import ibp
    from advex.models.archs import cnn7, ibp_init

    torch.manual_seed(0)
    net = ibp_init(cnn7(1, 28, 10, width=8, linear=32)).train()
    x, y = load_dataset("mnist", "train").subset(64).floats()
    cfg = TrainConfig(defence="ibp", eps=0.05, kappa_end=0.0).resolved()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss, _ = ibp(net, net, x, y, 0.05, cfg, None)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # at initialisation BatchNorm rescales the widths as well as the values (which undoes the
    # IBP initialisation's scale), so the first bounds are loose, hence the eps ramp in training
    assert all(torch.isfinite(torch.tensor(v)) for v in losses) and losses[-1] < 0.01 * losses[0]
    assert not torch.allclose(net[1].running_mean, torch.zeros_like(net[1].running_mean))


def test_ibp_init_keeps_interval_bounds_from_exploding():
    """Shi et al.'s initialisation: on the 7-layer ``large`` network the default initialisation
    widens an input interval ~10^4-fold by the logits (IBP training then collapses to a constant
    prediction); the IBP initialisation keeps the growth to a few-fold, and the outputs stay finite."""
    from advex.certify import bounds
    from advex.data.datasets import load_dataset
    from advex.models.archs import ibp_init

    x, _ = load_dataset("mnist", "test").subset(20).floats()
    growth = {}
    for init in ("default", "ibp"):
        torch.manual_seed(0)
        clf = make_classifier("mnist", "large").eval()
        if init == "ibp":
            ibp_init(clf.net)
        b = bounds(clf, x, eps=1e-3, method="ibp")
        growth[init] = float((b.upper - b.lower).mean()) / 2e-3
    assert growth["default"] > 1000 and growth["ibp"] < 20


@pytest.mark.parametrize("defence,channels_last", [("pgd", True), ("ibp", False)])
def test_training_passes_run_channels_last_where_it_pays(tmp_path, monkeypatch, defence, channels_last):
    """A CIFAR-10 network of 3+ convolutions trains on channels-last batches (1.1-1.3x a step on
    this CPU), except under the certified losses, whose bound rules keep their own layout."""
    import advex.defences.loop as loop
    from advex.data import load_dataset

    test_split = load_dataset("cifar10", "test")  # the training split is not in ../shared
    monkeypatch.setattr(loop, "load_dataset", lambda name, split, data_dir=None: test_split)
    monkeypatch.setattr(loop, "_fetch_data", lambda cfg, procs, download: None)
    monkeypatch.setattr(loop, "_evaluate", lambda run: loop._Scores(0.0, None, None))
    seen = []

    def record(module, args):
        if module.training:  # the training step's passes, not evaluation
            seen.append(args[0].is_contiguous(memory_format=torch.channels_last) and not args[0].is_contiguous())

    monkeypatch.setattr(torch.nn.Conv2d, "forward", _recording(torch.nn.Conv2d.forward, record))
    cfg = TrainConfig(
        dataset="cifar10", arch="large", defence=defence, eps=2 / 255, epochs=1, train_n=64, batch_size=32,
        attack_steps=2, eval_n=8,
    )  # fmt: skip
    train(cfg, tmp_path, progress=False, verbose=False)
    assert seen and all(s == channels_last for s in seen), seen[:4]


def _recording(forward, record):
    def wrapped(self, x):
        if self.in_channels == 3:  # the first convolution: the batch as the network reads it
            record(self, (x,))
        return forward(self, x)

    return wrapped
