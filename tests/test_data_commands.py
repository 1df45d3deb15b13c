"""--data on onepixel, attack and patch: the same images as a folder or CSV of PNGs give the
same results as --dataset (onepixel's rows, the patch PNG to the byte, the patch evaluation),
and attack judges success against the folder's labels."""

import json
from pathlib import Path

import pytest
import torch
from helpers import needs_data

from advex.cli import main


def _files_layer() -> bool:
    """Whether advex.data reads image folders (the stub before the data-sources branch does not)."""
    from advex.data import open_images

    try:
        open_images("/nonexistent-advex-folder")
    except NotImplementedError:
        return False
    except Exception:
        return True
    return True


pytestmark = [needs_data, pytest.mark.skipif(not _files_layer(), reason="advex.data.open_images is a stub here")]


def _export(tmp: Path, name: str, split: str, n: int) -> Path:
    """The first ``n`` images of a split as PNGs in class folders, listed in the split's order by
    a CSV (a folder lists them by class, which would change the positions and so the seeds)."""
    from advex.data import load_dataset, save_png

    d = load_dataset(name, split)
    root = tmp / f"{name}-{split}"
    lines = ["path,label"]
    for i in range(n):
        cls = d.classes[int(d.labels[i])]
        f = root / cls / f"{i:05d}.png"
        f.parent.mkdir(parents=True, exist_ok=True)
        save_png((d.images[i].float() / 255).expand(3, -1, -1), f)
        lines.append(f"{cls}/{i:05d}.png,{cls}")
    (root / "list.csv").write_text("\n".join(lines) + "\n")
    return root / "list.csv"


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _unnamed(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "image"} for r in rows]


def test_onepixel_on_a_csv_equals_onepixel_on_the_dataset(tmp_path):
    csv = _export(tmp_path, "cifar10", "test", 8)
    common = ["--n", "6", "--batch-size", "3", "--population", "10", "--iterations", "5", "--quiet"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["onepixel", "--data", str(csv), "--model", "cifar10-small", *common, "--out", str(a)]) == 0
    assert main(["onepixel", "--dataset", "cifar10", *common, "--out", str(b)]) == 0
    a, b = _json(a / "onepixel.json"), _json(b / "onepixel.json")
    assert _unnamed(a["results"]) == _unnamed(b["results"]) and len(a["results"]) == 6
    assert a["results"][0]["image"] == "ship/00001.png" and b["results"][0]["image"] == "test[1]"  # 0: wrong


def test_patch_on_csvs_equals_patch_on_the_dataset(tmp_path):
    train, test = _export(tmp_path, "mnist", "train", 40), _export(tmp_path, "mnist", "test", 20)
    common = ["--target", "3", "--size", "0.15", "--steps", "4", "--n", "40", "--eval-n", "20", "--placements", "1",
              "--batch-size", "8", "--sheet-n", "2", "--print-px", "32", "--quiet"]  # fmt: skip
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["patch", "train", "--data", str(train), "--eval-data", str(test), "--model", "mnist-small", *common,
                 "--out", str(a)]) == 0  # fmt: skip
    assert main(["patch", "train", "--dataset", "mnist", *common, "--out", str(b)]) == 0
    assert (a / "patch.png").read_bytes() == (b / "patch.png").read_bytes()
    ea, eb = _json(a / "patch.json")["evaluation"], _json(b / "patch.json")["evaluation"]
    assert _unnamed(ea["per_image"]) == _unnamed(eb["per_image"]) and ea["images"] == 20
    c = tmp_path / "c"
    assert main(["patch", "apply", "--patch", str(b / "patch.png"), "--data", str(test), "--n", "20",
                 "--batch-size", "7", "--out", str(c)]) == 0  # fmt: skip
    ec = _json(c / "apply.json")["evaluation"]
    assert ec["success_rate"] == eb["success_rate"] and _unnamed(ec["per_image"]) == _unnamed(eb["per_image"])
    assert (c / "7_00000_patched.png").exists()


def test_attack_judges_success_against_the_folder_labels(tmp_path, imagenet_model):
    """The demo model calls chelsea a tiger cat and the coffee photo an espresso: labelled tabby
    and cup, both are already misclassified, so the untargeted attack succeeds at no cost."""
    from skimage import data

    from advex.data import save_png

    for arr, cls in [(data.chelsea(), "tabby"), (data.coffee(), "cup")]:
        x = torch.from_numpy(arr).permute(2, 0, 1).float() / 255
        f = tmp_path / "photos" / cls / "photo.png"
        f.parent.mkdir(parents=True)
        save_png(torch.nn.functional.interpolate(x[None], scale_factor=0.5, mode="bilinear", antialias=True)[0], f)
    out = tmp_path / "out"
    assert main(["attack", "--data", str(tmp_path / "photos"), "--untargeted", "--c", "1e5", "--max-iter", "2",
                 "--search-steps", "1", "--batch-size", "1", "--quiet", "--out", str(out)]) == 0  # fmt: skip
    rows = {r["image"]: r for r in _json(out / "summary.json")["images"]}
    assert set(rows) == {"cup_photo", "tabby_photo"}  # named by path: the same file name in two folders
    assert rows["tabby_photo"]["label"] == "tabby" and rows["tabby_photo"]["original"] == "tiger cat"
    assert all(r["success"] and r["c"] is None and r["l2"] == 0 for r in rows.values())
