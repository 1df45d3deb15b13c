import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import needs_data
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
        (["--images", "{tmp}/cat.png", "--target", "ostrich", "--norm", "linf", "--c", "3"], "fix --eps instead"),
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
    assert "expected a finite number > 0" in capsys.readouterr().err


# ---------------------------------------------------------------------------- shared options, every command
EPS_COMMANDS = {
    "attack": ["attack", "--images", "{tmp}/cat.png", "--target", "ostrich", "--norm", "linf"],
    "demo": ["demo", "--norm", "linf"],
    "train": ["train", "--dataset", "mnist"],
    "evaluate": ["evaluate", "--model", "mnist-small", "--dataset", "mnist"],
    "certify": ["certify", "--model", "mnist-small", "--dataset", "mnist"],
}
BAD_EPS = {
    "-0.1": "-0.1 is negative",
    "abc": "'abc' is not a number",
    "nan": "'nan' is not a finite number",
    "8": "8 is larger than the whole [0, 1] pixel range of an L-inf radius (did you mean 8/255?)",
}


@needs_data
@pytest.mark.parametrize("value", list(BAD_EPS))
def test_a_bad_eps_is_the_same_line_in_every_command(tmp_path, capsys, value):
    """Parsed in one place: every command that takes --eps answers a bad value with the same
    one line on stderr and exit status 2, before any work, and writes nothing."""
    _small_chelsea(tmp_path / "cat.png")
    lines = {}
    for name, argv in EPS_COMMANDS.items():
        out = tmp_path / f"out-{name}"
        rc = main([a.replace("{tmp}", str(tmp_path)) for a in argv] + ["--eps", value, "--out", str(out)])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1, (name, err)
        assert BAD_EPS[value] in err[0], (name, err[0])
        assert not out.exists(), name
        lines[name] = err[0]
    assert len(set(lines.values())) == 1, lines


def test_argparse_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["evaluate", "--model", "mnist-small", "--eps", "0.1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith("advex evaluate")
    assert "one of the arguments --dataset --data is required" in err[0]


def test_out_that_is_a_file_is_refused_before_any_work(tmp_path, capsys):
    f = tmp_path / "taken"
    f.write_text("not a folder")
    rc = main(["certify", "--model", "mnist-small", "--dataset", "mnist", "--eps", "0.1", "--out", str(f)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "is an existing file" in err[0]
    assert f.read_text() == "not a folder"


@needs_data
def test_a_plain_one_channel_module_from_a_python_file_is_evaluated_on_mnist(tmp_path, capsys):
    """`--model FILE.py:NAME` returning a plain nn.Module with one input channel: the channel
    count is read from the network, so MNIST's (N, 1, 28, 28) images are accepted."""
    net = tmp_path / "mynet.py"
    net.write_text(
        "import torch\nfrom torch import nn\n"
        "def build():\n"
        "    torch.manual_seed(0)\n"
        "    return nn.Sequential(nn.Conv2d(1, 4, 5, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 12 * 12, 10))\n"
    )
    out = tmp_path / "ev"
    rc = main(["evaluate", "--model", f"{net}:build", "--dataset", "mnist", "--eps", "0.1", "--n", "20",
               "--attacks", "fgsm", "--out", str(out)])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    summary = json.loads((out / "evaluation.json").read_text())
    assert summary["model"] == "mynet" and summary["n"] == 20
    for key in ("advex_version", "command", "machine", "torch", "python", "device", "written"):
        assert key in summary  # the provenance header every summary has


def test_import_advex_exposes_every_subpackage():
    code = (
        "import advex\n"
        "assert callable(advex.certify.certify) and callable(advex.attacks.PGD)\n"
        "assert callable(advex.defences.train) and callable(advex.evaluation.evaluate)\n"
        "assert callable(advex.models.load) and callable(advex.data.load_images) and callable(advex.report.table)\n"
        "assert {'attacks', 'certify', 'data', 'defences', 'evaluation', 'models', 'report'} <= set(dir(advex))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
