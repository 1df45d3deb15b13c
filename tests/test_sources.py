"""advex.data.sources: labelled image folders and CSVs (``--data``), streamed by background workers."""

import contextlib
import threading
import time

import numpy as np
import pytest
import torch
from helpers import needs_data
from PIL import Image
from torch import nn

import advex.data as D
from advex.errors import AdvexError
from advex.models import Classifier

CIFAR = D.CIFAR10_CLASSES


def png(path, h=8, w=8, seed=0, mode="RGB"):
    """A random image file; the format follows the suffix (PNG, JPEG)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = (h, w) if mode in ("L", "P") else (h, w, len(mode))
    im = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), "L" if mode == "P" else mode)
    (im.convert("P") if mode == "P" else im).save(path)
    return path


def folder(root, spec):
    """``spec``: class folder -> number of images (or a list of relative file names)."""
    for c, files in spec.items():
        names = [f"{i}.png" for i in range(files)] if isinstance(files, int) else files
        (root / c).mkdir(parents=True, exist_ok=True)
        for k, name in enumerate(names):
            png(root / c / name, seed=k + 100 * len(c))
    return root


class Fake:
    """What as_model_input reads of a model: channels, input_size, fit_input."""

    def __init__(self, channels=3, input_size=None, name="fake"):
        self.channels, self.input_size, self.name = channels, input_size, name

    def fit_input(self, x):
        return nn.functional.interpolate(x, size=self.input_size, mode="bilinear", antialias=True)


def no_worker_threads():
    """No worker is left running, and torch's thread count (each worker sets its own to 1) is
    the default again for threads started later."""
    seen = []
    later = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    later.start()
    later.join()
    running = [t for t in threading.enumerate() if t.name.startswith("advex-data")]
    return not running and seen == [torch.get_num_threads()]


def everything(source, prepare, batch=4, **kw):
    """All batches of ``source`` in spans of ``batch``."""
    spans = [(a, min(a + batch, len(source))) for a in range(0, len(source), batch)]
    return list(D.stream(source, spans, prepare, **kw))


# ------------------------------------------------------------------------ listing
def test_class_folders_by_name_and_synonym(tmp_path):
    folder(tmp_path, {"cat": 2, "Dog": 1, "kitty_plane": 1})
    files = D.open_images(tmp_path, CIFAR, [[c] for c in CIFAR[:-1]] + [["truck", "kitty plane"]])
    assert files.labels.tolist() == [5, 3, 3, 9] and files.classes == CIFAR
    assert [p.parent.name for p in files.paths] == ["Dog", "cat", "cat", "kitty_plane"]  # sorted folder names
    assert "image folder" in files.description and "4 images" in files.description


def test_imagenet_layout_with_wordnet_ids(tmp_path):
    folder(tmp_path, {"n01518878": ["a/x.JPEG", "b.JPEG"], "tench": 1, "n01443537": ["c.jpg"]})
    files = D.open_images(tmp_path, D.imagenet_classes(), D.imagenet_synonyms())
    assert files.labels.tolist() == [1, 9, 9, 0]  # n01443537 goldfish; n01518878 ostrich; tench
    assert [p.name for p in files.paths] == ["c.jpg", "x.JPEG", "b.JPEG", "0.png"]


def test_without_class_names_sorted_folders_are_the_indices(tmp_path):
    folder(tmp_path, {"b": 1, "a": 2, "c": 0})
    files = D.open_images(tmp_path)
    assert files.classes == ["a", "b", "c"] and files.labels.tolist() == [0, 0, 1]


def test_order_is_deterministic_and_only_images_count(tmp_path):
    folder(tmp_path, {"x": ["z.png", "sub/b.png", "a.JPG", "sub/deep/a.webp"], "w": ["m.bmp"]})
    (tmp_path / "x" / "README.txt").write_text("notes")
    (tmp_path / "x" / ".DS_Store").write_bytes(b"\0\0")
    png(tmp_path / "x" / "._z.png")  # a macOS resource fork, hidden
    png(tmp_path / "x" / ".ipynb_checkpoints" / "q.png")
    png(tmp_path / ".hidden_class" / "q.png")
    png(tmp_path / "loose.png")  # beside the class folders: not in a class
    files = D.open_images(tmp_path)
    rel = [p.relative_to(tmp_path).as_posix() for p in files.paths]
    assert rel == ["w/m.bmp", "x/a.JPG", "x/sub/b.png", "x/sub/deep/a.webp", "x/z.png"]
    assert files.classes == ["w", "x"] and files.labels.tolist() == [0, 1, 1, 1, 1]


def test_csv_relative_absolute_header_and_quotes(tmp_path):
    png(tmp_path / "imgs" / "a.png")
    png(tmp_path / "imgs" / "b, with comma.png")
    other = png(tmp_path / "elsewhere" / "c.png")
    (tmp_path / "imgs" / "list.csv").write_text(f'path,label\na.png,cat\n\n"b, with comma.png", 5\n{other},Truck\n')
    files = D.open_images(tmp_path / "imgs" / "list.csv", CIFAR)
    assert files.paths == [tmp_path / "imgs" / "a.png", tmp_path / "imgs" / "b, with comma.png", other]
    assert files.labels.tolist() == [3, 5, 9] and files.description.startswith("CSV")
    (tmp_path / "plain.csv").write_text("imgs/a.png,7\nimgs/a.png,0\n")  # no header; indices without class names
    files = D.open_images(tmp_path / "plain.csv")
    assert files.labels.tolist() == [7, 0] and files.classes is None


def test_select_keeps_the_given_order(tmp_path):
    files = D.open_images(folder(tmp_path, {"cat": 3, "dog": 2}), CIFAR)
    sub = files.select(torch.tensor([4, 0, 2]))
    assert sub.paths == [files.paths[4], files.paths[0], files.paths[2]] and sub.labels.tolist() == [5, 3, 3]
    assert "3 of its 5 images" in sub.description and len(sub) == 3
    with pytest.raises(AdvexError, match="index 5 is out of range for the 5 images"):
        files.select(torch.tensor([0, 5]))


def test_fingerprint_follows_files_and_labels(tmp_path):
    folder(tmp_path, {"cat": 2, "dog": 1})
    first = D.open_images(tmp_path, CIFAR).fingerprint()
    assert D.open_images(tmp_path, CIFAR).fingerprint() == first and len(first) == 64
    png(tmp_path / "dog" / "new.png")
    added = D.open_images(tmp_path, CIFAR).fingerprint()
    assert added != first
    (tmp_path / "dog" / "new.png").rename(tmp_path / "cat" / "new.png")  # same file, another label
    assert D.open_images(tmp_path, CIFAR).fingerprint() not in (first, added)
    (tmp_path / "l.csv").write_text("cat/0.png,cat\n")
    a = D.open_images(tmp_path / "l.csv", CIFAR).fingerprint()
    (tmp_path / "l.csv").write_text("cat/0.png,dog\n")
    assert D.open_images(tmp_path / "l.csv", CIFAR).fingerprint() != a


# ------------------------------------------------------------------------ bad input: one line each
def _raises(match, *args):
    with pytest.raises(AdvexError, match=match) as e:
        D.open_images(*args)
    assert "\n" not in str(e.value)


def test_bad_folders(tmp_path):
    _raises(r"--data .*nothing not found", tmp_path / "nothing")
    (tmp_path / "notes.txt").write_text("x")
    _raises(r"notes.txt is a file but not a .csv", tmp_path / "notes.txt")
    png(tmp_path / "flat" / "a.png")
    _raises(r"flat has no class sub-folders.*holds 1 images directly", tmp_path / "flat")
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    (tmp_path / "empty" / "dog").mkdir()
    (tmp_path / "empty" / "dog" / "README.txt").write_text("x")
    _raises(r"empty holds no images in its 2 class sub-folders", tmp_path / "empty")
    folder(tmp_path / "typo", {"cat": 1, "dgo": 1})
    _raises(r"typo, class folder 'dgo': unknown class name 'dgo'; close matches: 'dog'", tmp_path / "typo", CIFAR)
    folder(tmp_path / "wn", {"n01518878": 1})
    _raises(r"class folder 'n01518878'.*WordNet id, but the model's classes are not", tmp_path / "wn", CIFAR)
    folder(tmp_path / "one_empty", {"cat": 1, "dog": 0})  # an empty class folder beside others is fine
    assert len(D.open_images(tmp_path / "one_empty", CIFAR)) == 1


def test_bad_csvs(tmp_path):
    png(tmp_path / "a.png")
    cases = {
        "fields.csv": ("a.png,cat\na.png,cat,x\n", r"fields.csv line 2: expected path,label, got 'a.png,cat,x'"),
        "nolabel.csv": ("a.png,\n", r"nolabel.csv line 1: expected path,label"),
        "missing.csv": ("a.png,cat\n\nb.png,dog\n", r"missing.csv line 3: image file .*b.png not found"),
        "header.csv": ("file,class\na.png,cat\n", r"header.csv line 1: image file .*file not found; a header line"),
        "label.csv": ("path,label\na.png,cat\na.png,dgo\n", r"label.csv line 3: unknown class name 'dgo'; .*'dog'"),
        "range.csv": ("a.png,10\n", r"range.csv line 1: class index 10 is out of range"),
        "empty.csv": ("path,label\n\n", r"empty.csv lists no images"),
        "huge.csv": ('a.png,cat\n"' + "x" * 200_000 + '",cat\n', r"huge.csv line 2: not CSV \(field larger than"),
        "folder.csv": (".,cat\n", r"folder.csv line 1: image file .* is not a file"),
    }
    for name, (text, match) in cases.items():
        (tmp_path / name).write_text(text)
        _raises(match, tmp_path / name, CIFAR)
    (tmp_path / "names.csv").write_text("a.png,cat\n")
    _raises(r"names.csv line 1: class name 'cat' given, but the model has no class names", tmp_path / "names.csv")
    (tmp_path / "neg.csv").write_text("a.png,-1\n")
    _raises(r"neg.csv line 1: class index -1 is negative", tmp_path / "neg.csv")
    (tmp_path / "latin1.csv").write_bytes("a.png,caf\xe9\n".encode("latin-1"))
    _raises(r"cannot read .*latin1.csv as UTF-8", tmp_path / "latin1.csv", CIFAR)


# ------------------------------------------------------------------------ streaming
@needs_data
def test_cifar10_png_folder_streams_exactly_the_dataset(tmp_path):
    data = D.load_dataset("cifar10", "test").subset(200)
    for i, (im, y) in enumerate(zip(data.images, data.labels.tolist())):
        (tmp_path / CIFAR[y]).mkdir(exist_ok=True)
        Image.fromarray(im.permute(1, 2, 0).numpy(), "RGB").save(tmp_path / CIFAR[y] / f"{i:05d}.png")
    files = D.open_images(tmp_path, CIFAR)
    order = torch.tensor([int(p.stem) for p in files.paths])
    for size in (None, (32, 32)):
        model = Classifier(nn.Flatten(), classes=CIFAR, input_size=size, channels=3)
        batches = everything(files, D.as_model_input(model), batch=64)
        x = torch.cat([b.x for b in batches])
        assert torch.equal(x, data.floats(order)[0]) and torch.equal(torch.cat([b.y for b in batches]), files.labels)
        assert torch.equal(files.labels, data.labels[order])
        assert torch.equal(torch.cat([b.index for b in batches]), torch.arange(200))
        # the in-memory dataset through the same prepare: the same pixels
        assert torch.equal(torch.cat([b.x for b in everything(data, D.as_model_input(model), 64)]), data.floats()[0])


@needs_data
def test_mnist_grayscale_png_folder_streams_exactly_the_dataset(tmp_path):
    data = D.load_dataset("mnist", "test").subset(200)
    for i, (im, y) in enumerate(zip(data.images, data.labels.tolist())):
        png_path = tmp_path / str(y) / f"{i:05d}.png"
        png_path.parent.mkdir(exist_ok=True)
        Image.fromarray(im[0].numpy(), "L").save(png_path)
    files = D.open_images(tmp_path, D.MNIST_CLASSES)
    order = torch.tensor([int(p.stem) for p in files.paths])
    model = Classifier(nn.Flatten(), classes=D.MNIST_CLASSES, channels=1)
    batches = everything(files, D.as_model_input(model), batch=50)
    assert all(b.x.shape[1:] == (1, 28, 28) for b in batches)
    assert torch.equal(torch.cat([b.x for b in batches]), data.floats(order)[0])
    assert torch.equal(torch.cat([b.y for b in batches]), data.labels[order])


def test_model_input_channels_resize_and_quantisation(tmp_path):
    gray = torch.rand(1, 1, 6, 5).expand(1, 3, 6, 5)
    colour = torch.rand(1, 3, 6, 5)
    one = D.as_model_input(Fake(channels=1))
    assert torch.equal(one(gray), D.quantize(gray[:, :1]))  # equal channels: channel 0, exactly
    luma = 0.299 * colour[:, 0] + 0.587 * colour[:, 1] + 0.114 * colour[:, 2]
    assert torch.equal(one(colour[0]), D.quantize(luma))  # (C, H, W) in, (C, H, W) out
    assert torch.equal(D.as_model_input(Fake(channels=3))(gray[:, :1]), D.quantize(gray))  # 1 -> 3
    model = Classifier(nn.Flatten(), input_size=(4, 4), channels=3)
    assert torch.equal(D.as_model_input(model)(colour[0]), D.quantize(model.fit_input(colour))[0])
    with pytest.raises(AdvexError, match="fake takes 2-channel images; these have 3 channels"):
        D.as_model_input(Fake(channels=2))(colour)


def test_mixed_modes_and_sizes_resized_to_the_model(tmp_path):
    for k, mode in enumerate(["L", "RGB", "RGBA", "P", "LA"]):
        png(tmp_path / "cat" / f"{k}.png", h=10 + k, w=12, seed=k, mode=mode)
    png(tmp_path / "cat" / "j.jpg", h=20, w=9)
    (tmp_path / "dog").mkdir()
    Image.fromarray(np.full((7, 7), 40000, np.uint16)).save(tmp_path / "dog" / "deep.png")  # 16-bit grayscale
    files = D.open_images(tmp_path, CIFAR)
    (batch,) = everything(files, D.as_model_input(Fake(input_size=(8, 8))), batch=10)
    assert batch.x.shape == (7, 3, 8, 8) and not batch.skipped
    assert torch.equal(batch.x, D.quantize(batch.x))  # 8-bit, as an attack saves it
    assert torch.allclose(batch.x[-1], torch.full((3, 8, 8), round(40000 / 65535 * 255) / 255))


def test_mixed_sizes_without_an_input_size_is_one_clear_error(tmp_path):
    png(tmp_path / "cat" / "a.png", 8, 8)
    png(tmp_path / "cat" / "b.png", 6, 9)
    files = D.open_images(tmp_path, CIFAR)
    with pytest.raises(AdvexError, match=r"have different sizes \(8x8 in .*a.png, 6x9 in .*b.png\) and fake has no"):
        everything(files, D.as_model_input(Fake()), batch=1)
    assert no_worker_threads()


def test_undecodable_files_are_skipped_with_reasons(tmp_path):
    folder(tmp_path, {"cat": ["a.png", "c.png"], "dog": ["e.png"]})
    good = (tmp_path / "cat" / "a.png").read_bytes()
    (tmp_path / "cat" / "b_truncated.png").write_bytes(good[: len(good) // 2])
    png(tmp_path / "cat" / "full.jpg", 64, 64)
    jpeg = (tmp_path / "cat" / "full.jpg").read_bytes()
    (tmp_path / "cat" / "d_truncated.jpg").write_bytes(jpeg[: len(jpeg) * 2 // 3])
    (tmp_path / "cat" / "full.jpg").unlink()
    (tmp_path / "dog" / "notes.png").write_text("not a picture")
    (tmp_path / "dog" / "random.jpg").write_bytes(np.random.default_rng(0).bytes(500))
    files = D.open_images(tmp_path, CIFAR)
    batches = everything(files, D.as_model_input(Fake()), batch=4)
    skipped = dict(s for b in batches for s in b.skipped)
    bad = ("cat/b_truncated.png", "cat/d_truncated.jpg", "dog/notes.png", "dog/random.jpg")
    assert sorted(skipped) == [str(tmp_path / name) for name in bad]
    assert all("cannot read" in reason for reason in skipped.values())
    kept = [files.paths[i].name for b in batches for i in b.index.tolist()]
    assert kept == ["a.png", "c.png", "e.png"] and [len(b) for b in batches] == [2, 1]
    assert torch.cat([b.y for b in batches]).tolist() == [3, 3, 5]
    assert batches[0].x.shape == (2, 3, 8, 8)


def test_a_span_of_only_bad_files_is_an_empty_batch(tmp_path):
    folder(tmp_path, {"cat": 1})
    (tmp_path / "cat" / "z.png").write_text("no")
    batches = list(D.stream(D.open_images(tmp_path, CIFAR), [(1, 2), (0, 2)], D.as_model_input(Fake())))
    assert len(batches[0]) == 0 and batches[0].x.shape == (0, 0, 0, 0) and len(batches[0].skipped) == 1
    assert batches[1].x.shape == (1, 3, 8, 8) and batches[1].index.tolist() == [0]


@pytest.mark.parametrize("prefetch", [0, 2])
def test_workers_decode_at_most_prefetch_spans_ahead(tmp_path, prefetch):
    folder(tmp_path, {"cat": 40})
    files = D.open_images(tmp_path, CIFAR)
    decoded, lock = [0], threading.Lock()

    def counting(x):
        with lock:
            decoded[0] += 1
        return x

    spans = [(a, a + 4) for a in range(0, 40, 4)]
    with contextlib.closing(D.stream(files, spans, counting, workers=2, prefetch=prefetch)) as s:
        next(s)
        time.sleep(0.3)  # let the workers run as far ahead as they may
        assert 4 <= decoded[0] <= (prefetch + 1) * 4
        next(s)
        time.sleep(0.3)
        assert decoded[0] <= (prefetch + 2) * 4
    assert no_worker_threads()


def test_closing_early_or_interrupting_stops_the_workers(tmp_path):
    folder(tmp_path, {"cat": 30})
    files = D.open_images(tmp_path, CIFAR)

    def slow(x):
        time.sleep(0.01)
        return x

    spans = [(a, a + 3) for a in range(0, 30, 3)]
    for _ in D.stream(files, spans, slow, prefetch=3):
        break
    assert no_worker_threads()  # the generator was closed when the loop let go of it
    with pytest.raises(KeyboardInterrupt), contextlib.closing(D.stream(files, spans, slow)) as s:
        for _ in s:
            raise KeyboardInterrupt
    assert no_worker_threads()

    def interrupted(x):  # Ctrl-C while the consumer waits on a worker
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        list(D.stream(files, spans, interrupted))
    assert no_worker_threads()


def test_prepare_errors_stop_the_stream(tmp_path):
    folder(tmp_path, {"cat": 6})

    def refuse(x):
        raise AdvexError("model m cannot take 8x8 images")

    with pytest.raises(AdvexError, match="cannot take 8x8"):
        everything(D.open_images(tmp_path, CIFAR), refuse, batch=2)
    assert no_worker_threads()


def test_spans_are_checked_and_arrays_stream_too(tmp_path):
    files = D.open_images(folder(tmp_path, {"cat": 3}), CIFAR)
    with pytest.raises(AdvexError, match=r"span \(2, 4\) is outside the 3 images"):
        list(D.stream(files, [(0, 2), (2, 4)], D.as_model_input(Fake())))
    with pytest.raises(AdvexError, match="workers must be"):
        D.stream(files, [(0, 1)], D.as_model_input(Fake()), workers=0)
    pixels = torch.arange(24, dtype=torch.uint8).view(2, 3, 2, 2)
    data = D.ArrayDataset("toy", "test", pixels, torch.tensor([1, 0]), CIFAR)
    seen = []

    def per_image(x):  # a prepare without batched=True is applied image by image
        seen.append(tuple(x.shape))
        return x

    (b,) = D.stream(data, [(0, 2)], per_image)
    assert seen == [(3, 2, 2)] * 2 and torch.equal(b.x, data.floats()[0]) and b.y.tolist() == [1, 0] and not b.skipped
    (b,) = D.stream(data, [(1, 2)], D.as_model_input(Fake(channels=1)))
    assert b.x.shape == (1, 1, 2, 2) and b.index.tolist() == [1]


def test_load_image_folder_reads_through_the_stream(tmp_path):
    from advex.data.datasets import load_image_folder

    folder(tmp_path, {"cat": 2, "dog": 1})
    png(tmp_path / "dog" / "big.png", 12, 10)
    ds = load_image_folder(tmp_path, size=(8, 8))
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (4, 3, 8, 8) and ds.labels.tolist() == [0, 0, 1, 1]
    (tmp_path / "dog" / "bad.png").write_text("no")
    with pytest.raises(AdvexError, match="cannot read .*bad.png as an image"):
        load_image_folder(tmp_path, size=(8, 8))
