import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from advex.cli import main
from advex.data import sample_photos, save_png

FAST = ["--search-steps", "2", "--max-iter", "10", "--quiet"]


def _small_chelsea(path):
    x = sample_photos(["chelsea"])[0].pixels
    x = torch.nn.functional.interpolate(x[None], size=(150, 225), mode="bilinear", antialias=True)[0]
    save_png(x, path)
    return path


def _err(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    return [line for line in err if line.startswith("advex: error:")]


def test_models_lists_the_zoo(capsys):
    assert main(["models"]) == 0
    assert "efficientnet-lite0" in capsys.readouterr().out


def test_module_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "advex", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("advex ")


def test_attack_own_photos_writes_pngs_figure_and_json(tmp_path, capsys):
    img_dir = tmp_path / "photos"
    img_dir.mkdir()
    _small_chelsea(img_dir / "cat.png")
    gray = np.asarray(Image.open(img_dir / "cat.png").convert("L"))
    Image.fromarray(gray).save(img_dir / "graycat.jpg", quality=95)
    out = tmp_path / "out"
    rc = main(["attack", "--images", str(img_dir), "--target", "Ostrich", "--out", str(out), "--c", "1e5", *FAST])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "grayscale image converted to RGB" in captured.err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["success_measured_on"] == "8-bit PNGs re-read from disk"
    assert [r["image"] for r in summary["images"]] == ["cat", "graycat"]
    for r in summary["images"]:
        assert r["success"] and r["adversarial"] == "ostrich" and r["target"] == "ostrich"
        assert Image.open(r["adversarial_png"]).size == (225, 150)
    assert (out / "cat_adv.png").exists() and (out / "figure.png").stat().st_size > 10_000
    assert "ostrich" in captured.out and "success 2/2" in captured.out


def test_demo_runs_end_to_end_with_a_small_budget(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(["demo", "--out", str(out), "--c", "1e5", "--max-iter", "12", "--quiet"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    names = [r["image"] for r in summary["images"]]
    assert names == ["chelsea", "coffee", "camera", "rocket", "astronaut"]
    for n in names:
        assert (out / f"{n}_adv.png").exists() and (out / f"{n}_orig.png").exists()
    assert summary["success_rate"] >= 0.8  # a 12-iteration budget; the full demo gets 5/5 (benchmarks)
    assert "L2" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--images", "{tmp}/missing.png", "--target", "ostrich"], "image file not found"),
        (["--images", "{tmp}/text.png", "--target", "ostrich"], "cannot read .*text.png as an image"),
        (["--images", "{tmp}/empty", "--target", "ostrich"], "holds no images"),
        (["--images", "{tmp}/cat.png", "--target", "ostrch"], "unknown class name 'ostrch'; close matches: 'ostrich'"),
        (["--images", "{tmp}/cat.png", "--target", "tiger cat"], "already classified as the target 'tiger cat'"),
        (["--images", "{tmp}/cat.png"], "give --target CLASS"),
        (["--images", "{tmp}/cat.png", "--target", "ostrich", "--untargeted"], "not both"),
        (["--images", "{tmp}/cat.png", "--target", "ostrich", "--model", "resnet"], "unknown model 'resnet'"),
        (
            ["--images", "{tmp}/cat.png", "--target", "ostrich", "--model", "{tmp}/other.safetensors"],
            "does not match architecture efficientnet-lite0",
        ),
        (["--images", "{tmp}/cat.png", "--target", "ostrich", "--norm", "linf", "--c", "3"], "fix eps instead"),
    ],
)
def test_bad_input_is_one_clear_line_and_writes_nothing(tmp_path, capsys, extra, message):
    from safetensors.torch import save_file

    _small_chelsea(tmp_path / "cat.png")
    (tmp_path / "text.png").write_text("hello")
    (tmp_path / "empty").mkdir()
    save_file({"w": torch.zeros(2, 2)}, str(tmp_path / "other.safetensors"))
    out = tmp_path / "out"
    args = ["attack", *[a.replace("{tmp}", str(tmp_path)) for a in extra], "--out", str(out), *FAST]
    rc = main(args)
    errors = _err(capsys)
    assert rc == 2
    assert len(errors) == 1
    import re

    assert re.search(message, errors[0]), errors[0]
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu(tmp_path, capsys):
    _small_chelsea(tmp_path / "cat.png")
    rc = main(
        [
            "attack",
            "--images",
            str(tmp_path / "cat.png"),
            "--target",
            "ostrich",
            "--device",
            "cuda",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert rc == 2 and "no CUDA GPU" in _err(capsys)[0]
    assert not (tmp_path / "out").exists()


def test_argparse_rejects_bad_numbers(capsys):
    with pytest.raises(SystemExit) as e:
        main(["attack", "--images", "x.png", "--target", "ostrich", "--c", "-1"])
    assert e.value.code == 2
    assert "expected a number > 0" in capsys.readouterr().err
