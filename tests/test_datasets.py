import gzip
import shutil
from pathlib import Path

import pytest
import torch

from advex.data import datasets as D
from advex.errors import AdvexError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
needs_shared = pytest.mark.skipif(not (SHARED / "mnist").is_dir(), reason="../shared/datasets not present")


@needs_shared
def test_mnist_is_complete_and_verified():
    tr, te = D.load_dataset("mnist", "train"), D.load_dataset("mnist", "test")
    assert tr.images.shape == (60000, 1, 28, 28) and tr.images.dtype == torch.uint8
    assert te.images.shape == (10000, 1, 28, 28)
    assert torch.bincount(te.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert tr.labels[:5].tolist() == [5, 0, 4, 1, 9]


@needs_shared
def test_cifar10_test_batch():
    te = D.load_dataset("cifar10", "test")
    assert te.images.shape == (10000, 3, 32, 32)
    assert te.labels[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    assert torch.bincount(te.labels).tolist() == [1000] * 10
    assert te.classes[3] == "cat"


def _copy_mnist(dest: Path) -> Path:
    d = dest / "mnist"
    d.mkdir(parents=True)
    for f in (SHARED / "mnist").glob("t10k-*.gz"):
        shutil.copy(f, d / f.name)
    return d


@needs_shared
def test_data_dir_and_env_take_precedence(tmp_path, monkeypatch):
    _copy_mnist(tmp_path / "a")
    assert D.load_dataset("mnist", "test", data_dir=tmp_path / "a").source == str(tmp_path / "a" / "mnist")
    _copy_mnist(tmp_path / "b")
    monkeypatch.setenv("ADVEX_DATA", str(tmp_path / "b"))
    assert D.load_dataset("mnist", "test").source == str(tmp_path / "b" / "mnist")


@needs_shared
def test_corrupt_file_is_named(tmp_path):
    d = _copy_mnist(tmp_path)
    raw = bytearray(gzip.decompress((d / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    raw[100] ^= 1
    (d / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(AdvexError, match=r"t10k-labels-idx1-ubyte.gz is corrupt: MD5"):
        D.load_dataset("mnist", "test", data_dir=tmp_path)
    (d / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(AdvexError, match="is corrupt"):
        D.load_dataset("mnist", "test", data_dir=tmp_path)


@needs_shared
def test_missing_file_is_named(tmp_path):
    d = _copy_mnist(tmp_path)
    (d / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(AdvexError, match="incomplete: missing t10k-images-idx3-ubyte"):
        D.load_dataset("mnist", "test", data_dir=tmp_path)


def test_not_found_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setattr(D, "candidate_roots", lambda data_dir=None: [tmp_path])
    with pytest.raises(AdvexError, match=r"CIFAR-10 not found \(looked in .*--download"):
        D.load_dataset("cifar10", "train")
    with pytest.raises(AdvexError, match="unknown dataset"):
        D.load_dataset("imagenet")


@needs_shared
def test_download_checks_and_writes(tmp_path, monkeypatch):
    src = _copy_mnist(tmp_path / "mirror")
    for f in (SHARED / "mnist").glob("train-*.gz"):
        shutil.copy(f, src / f.name)
    monkeypatch.setattr(D, "MNIST_URL", f"file://{src}/{{}}.gz")
    monkeypatch.setattr(D, "candidate_roots", lambda data_dir=None: [Path(data_dir)])
    ds = D.load_dataset("mnist", "test", data_dir=tmp_path / "dl", download=True)
    assert len(ds) == 10000 and (tmp_path / "dl" / "mnist" / "train-images-idx3-ubyte.gz").exists()
    (src / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"wrong"))
    with pytest.raises(AdvexError, match="does not match the official MD5; nothing written"):
        D.load_dataset("mnist", "test", data_dir=tmp_path / "dl2", download=True)
    assert not (tmp_path / "dl2" / "mnist" / "t10k-labels-idx1-ubyte.gz").exists()


def test_image_folder(tmp_path):
    from advex.data.images import save_png

    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        for i in range(2):
            save_png(torch.rand(3, 8, 8), tmp_path / c / f"{i}.png")
    ds = D.load_image_folder(tmp_path)
    assert ds.classes == ["cat", "dog"] and ds.labels.tolist() == [0, 0, 1, 1]
    assert ds.images.shape == (4, 3, 8, 8)
    with pytest.raises(AdvexError, match="no class sub-folders"):
        D.load_image_folder(tmp_path / "cat")
