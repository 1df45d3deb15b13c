"""The adversarial patch: placement geometry, training on real models, patch files, CLI, bad input."""

import json
import math

import pytest
import torch
from helpers import needs_data

from advex.attacks import Patch, Placements, Printability, apply_patch, evaluate_patch
from advex.attacks.patch import patch_mask, random_views, render, transform_patch
from advex.cli import main
from advex.data import load_patch, save_patch
from advex.errors import AdvexError


# ---------------------------------------------------------------------------- geometry
def test_square_patch_lands_exactly_where_asked():
    x = torch.zeros(1, 3, 32, 32)
    xp, pl = apply_patch(x, torch.ones(3, 8, 8), size=64 / 1024, position=(0.25, 0.75), rotation=0)
    on = (xp[0, 0] > 0.5).nonzero()
    assert on.min(0).values.tolist() == [4, 20] and on.max(0).values.tolist() == [11, 27]
    assert float(xp.sum()) == pytest.approx(3 * 64, abs=1e-3)
    assert pl.side.tolist() == [8.0]


def test_rotation_is_counter_clockwise_on_screen():
    p = torch.zeros(3, 8, 8)
    p[0, :4, :4] = 1  # red top-left quadrant
    pl = Placements(torch.tensor([[16.0, 16.0]]), torch.tensor([8.0]), torch.tensor([90.0]))
    xp, _ = apply_patch(torch.zeros(1, 3, 32, 32), p, placements=pl)
    red = (xp[0, 0] > 0.5).nonzero()  # a quarter turn counter-clockwise: top-left -> bottom-left
    assert red.min(0).values.tolist() == [16, 12] and red.max(0).values.tolist() == [19, 15]


@pytest.mark.parametrize("shape, size", [("circle", 0.1), ("square", 0.05), ("circle", 0.25)])
def test_patch_covers_the_requested_area_and_stays_inside(shape, size):
    p = torch.ones(3, 20, 20)
    xp, pl = apply_patch(torch.zeros(200, 3, 40, 48), p, size=size, mask=shape, rotation=45, seed=3)
    area = xp[:, 0].sum((1, 2)) / (40 * 48)
    assert float(area.mean()) == pytest.approx(size, rel=0.03)  # nothing cut off at the border
    grow = 1.0 if shape == "circle" else (pl.angle.abs() * math.pi / 180).cos() + (pl.angle.abs() * math.pi / 180).sin()
    half = pl.side * grow / 2
    assert (pl.centre[:, 0] - half >= -1e-4).all() and (pl.centre[:, 0] + half <= 40 + 1e-4).all()
    assert (pl.centre[:, 1] - half >= -1e-4).all() and (pl.centre[:, 1] + half <= 48 + 1e-4).all()
    assert pl.angle.abs().max() <= 45 and pl.angle.abs().max() > 30


def test_circle_mask_area():
    assert float(patch_mask("circle", 64).mean()) == pytest.approx(math.pi / 4, abs=2e-3)
    assert float(patch_mask("square", 5).mean()) == 1.0


def test_placement_is_seeded_and_differentiable():
    x = torch.rand(4, 3, 32, 32)
    p = torch.rand(3, 10, 10, requires_grad=True)
    a, pa = apply_patch(x, p, size=0.1, mask="circle", seed=7)
    b, pb = apply_patch(x, p.detach(), size=0.1, mask="circle", seed=7)
    c, _ = apply_patch(x, p.detach(), size=0.1, mask="circle", seed=8)
    assert torch.equal(a.detach(), b) and not torch.equal(b, c)
    a.sum().backward()
    corner = patch_mask("circle", 10)[0] < 0.01  # outside the circle: no influence on the image
    assert p.grad.abs().sum() > 0 and float(p.grad[:, corner].abs().sum()) == 0


def test_printability_and_views_stay_in_range_and_vary():
    g = torch.Generator().manual_seed(0)
    p = torch.rand(3, 12, 12)
    t = transform_patch(p, 8, Printability(brightness=0.2, contrast=(0.7, 1.3), blur=1.5, noise=0.05), g)
    assert t.shape == (8, 3, 12, 12) and t.min() >= 0 and t.max() <= 1
    assert (t[0] - t[1]).abs().mean() > 0.01
    same = transform_patch(p, 2, Printability.none(), g)
    assert torch.allclose(same, p.expand(2, -1, -1, -1))
    v = random_views(torch.rand(3, 3, 16, 16), 10, g)
    assert v.shape == (10, 3, 16, 16) and v.min() >= 0 and v.max() <= 1


def test_render_matches_a_full_canvas_when_the_patch_is_the_image():
    p = torch.rand(1, 4, 16, 16)
    pl = Placements(torch.tensor([[8.0, 8.0]]), torch.tensor([16.0]), torch.tensor([0.0]))
    premultiplied = torch.cat([p[:, :3] * p[:, 3:], p[:, 3:]], 1)
    assert torch.allclose(render(p, pl, 16, 16), premultiplied, atol=1e-5)


def test_border_pixels_are_blended_not_darkened():
    # a white patch at a sub-pixel position on black: the image's total brightness is the patch area
    pl = Placements(torch.tensor([[20.3, 24.7]]), torch.tensor([9.8]), torch.tensor([0.0]))
    xp, _ = apply_patch(torch.zeros(1, 3, 40, 48), torch.ones(3, 10, 10), placements=pl)
    assert float(xp[0, 0].sum()) == pytest.approx(9.8**2, rel=1e-3)
    # and a patch the colour of the image leaves it unchanged, edges included
    grey = torch.full((1, 3, 40, 48), 0.4)
    same, _ = apply_patch(grey, torch.full((3, 10, 10), 0.4), placements=pl, mask="circle")
    assert torch.allclose(same, grey, atol=1e-6)


# ---------------------------------------------------------------------------- training
@needs_data
def test_trained_patch_turns_held_out_images_into_the_target():
    from advex.data.datasets import load_dataset
    from advex.models import load

    model = load("cifar10-small")
    data = load_dataset("cifar10", "test")
    train, test = data.images[:2000], data.images[2000:2400]
    res = Patch(size=0.1, steps=150, batch_size=64, lr=0.05, seed=0)(model, train, "airplane")
    assert res.patch.shape == (3, 14, 14) and res.target == 0 and res.target_name == "airplane"
    assert torch.equal(res.patch, (res.patch * 255).round() / 255)  # 8-bit, as a PNG stores it
    ev = evaluate_patch(model, res.patch, test, "airplane", size=0.1, mask=res.mask, placements=3)
    noise = torch.rand(3, 14, 14, generator=torch.Generator().manual_seed(1))
    ev0 = evaluate_patch(model, noise, test, "airplane", size=0.1, mask=res.mask, placements=3)
    assert ev.success_rate > 0.3 and ev.success_rate > ev0.success_rate + 0.2
    assert ev.hits.shape == (400, 3) and int(ev.eligible.sum()) < 400  # some already airplanes: left out
    assert res.curve["success"][-1] > res.curve["success"][0]
    # the same seed gives the same patch; the evaluation does not depend on its batch size
    again = Patch(size=0.1, steps=150, batch_size=64, lr=0.05, seed=0)(model, train, "airplane")
    assert torch.equal(res.patch, again.patch)
    ev2 = evaluate_patch(model, res.patch, test, 0, size=0.1, mask=res.mask, placements=3, batch_size=37)
    assert torch.equal(ev.label_patched, ev2.label_patched)


@needs_data
def test_ensemble_of_models(mnist200):
    from advex.models import load

    x, _ = mnist200
    models = [load("mnist-small"), load("mnist-small-pgd")]
    res = Patch(size=0.15, steps=40, batch_size=32, lr=0.05, seed=0)(models, x, "3")
    assert res.settings["models"] == ["mnist-small", "mnist-small-pgd"] and res.patch.shape[0] == 1
    for m in models:
        ev = evaluate_patch(m, res.patch, x[:100], "3", size=0.15, mask=res.mask, placements=2)
        assert ev.success_rate > 0.1


def test_bad_input(tiny_model, tiny_images):
    with pytest.raises(AdvexError, match=r"fraction of the image area in \(0, 1\)"):
        Patch(size=1.5)
    with pytest.raises(AdvexError, match=r"\(0, 1\)"):
        Patch(size=0)
    with pytest.raises(AdvexError, match="larger than the image"):
        Patch(size=0.9, shape="circle", steps=1)(tiny_model, tiny_images, "one")
    with pytest.raises(AdvexError, match="ostrich"):
        Patch(steps=1)(tiny_model, tiny_images, "ostrich")
    with pytest.raises(AdvexError, match="out of range"):
        Patch(steps=1)(tiny_model, tiny_images, 7)
    with pytest.raises(AdvexError, match="shape must be one of circle, square"):
        Patch(shape="star")
    with pytest.raises(AdvexError, match="steps"):
        Patch(steps=0)
    with pytest.raises(AdvexError, match=r"pixels in \[0, 1\]"):
        Patch(steps=1)(tiny_model, tiny_images * 255, "one")
    with pytest.raises(AdvexError, match="larger than the image"):
        apply_patch(tiny_images, torch.rand(3, 4, 4), size=0.9, mask="circle")
    with pytest.raises(AdvexError, match="patch has 1 channels but the images have 3"):
        apply_patch(tiny_images, torch.rand(1, 4, 4))
    with pytest.raises(AdvexError, match="square"):
        apply_patch(tiny_images, torch.rand(3, 4, 5))
    with pytest.raises(AdvexError, match="position"):
        apply_patch(tiny_images, torch.rand(3, 4, 4), position=(1.5, 0.5))


# ---------------------------------------------------------------------------- patch files
def test_patch_file_round_trip_is_exact(tmp_path):
    p = (torch.rand(3, 13, 13) * 255).round() / 255
    m = patch_mask("circle", 13)
    k = save_patch(tmp_path / "p.png", p, m, pixels=600, meta={"target_name": "ostrich", "size": 0.1})
    assert k == 47
    lp = load_patch(tmp_path / "p.png")
    assert torch.equal(lp.patch, p)
    assert (lp.mask - m).abs().max() < 0.05
    assert lp.meta["target_name"] == "ostrich" and lp.meta["size"] == 0.1 and lp.meta["resolution"] == 13


def test_any_square_image_is_a_patch_and_bad_files_are_refused(tmp_path):
    from advex.data import save_png

    save_png(torch.rand(3, 20, 20), tmp_path / "sq.png")
    lp = load_patch(tmp_path / "sq.png")
    assert lp.patch.shape == (3, 20, 20) and float(lp.mask.min()) == 1.0 and lp.meta == {}
    save_png(torch.rand(3, 20, 30), tmp_path / "wide.png")
    with pytest.raises(AdvexError, match="must be square"):
        load_patch(tmp_path / "wide.png")
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(AdvexError, match="cannot read patch"):
        load_patch(tmp_path / "junk.png")
    with pytest.raises(AdvexError, match="not found"):
        load_patch(tmp_path / "missing.png")
    save_patch(tmp_path / "clear.png", torch.rand(3, 4, 4), torch.zeros(1, 4, 4), pixels=16)
    with pytest.raises(AdvexError, match="fully transparent"):
        load_patch(tmp_path / "clear.png")


# ---------------------------------------------------------------------------- CLI
@needs_data
def test_cli_train_then_apply(tmp_path, capsys):
    out = tmp_path / "train"
    rc = main(["patch", "train", "--dataset", "mnist", "--target", "3", "--size", "0.15", "--steps", "40",
               "--n", "2000", "--eval-n", "200", "--placements", "2", "--lr", "0.05", "--quiet",
               "--out", str(out)])  # fmt: skip
    assert rc == 0
    s = json.loads((out / "patch.json").read_text())
    assert s["held_out"] and s["evaluation"]["images"] == 200 and s["target_name"] == "3"
    assert s["evaluation"]["placements_per_image"] == 2 and len(s["curve"]["step"]) == 4
    for f in ("patch.png", "sheet.png", "curve.png"):
        assert (out / f).stat().st_size > 1000
    lp = load_patch(out / "patch.png")
    assert lp.meta["target_name"] == "3" and lp.meta["size"] == 0.15
    assert "targeted success" in capsys.readouterr().out
    app = tmp_path / "apply"
    rc = main(["patch", "apply", "--patch", str(out / "patch.png"), "--dataset", "mnist", "--n", "200",
               "--placements", "2", "--out", str(app)])  # fmt: skip
    assert rc == 0
    a = json.loads((app / "apply.json").read_text())
    # same model, images, placements and seed as the evaluation in training: the same result from the PNG
    assert a["evaluation"]["success_rate"] == pytest.approx(s["evaluation"]["success_rate"])
    assert a["size"] == 0.15 and a["target_name"] == "3" and len(a["patched_pngs"]) == 20
    fixed = tmp_path / "fixed"
    assert main(["patch", "apply", "--patch", str(out / "patch.png"), "--dataset", "mnist", "--n", "5",
                 "--position", "0.5,0.5", "--rotation", "0", "--out", str(fixed)]) == 0  # fmt: skip
    rows = json.loads((fixed / "apply.json").read_text())["evaluation"]["per_image"]
    assert all(r["patched"][0]["row"] == 14 and r["patched"][0]["col"] == 14 for r in rows)


@needs_data
def test_patch_metadata_never_chooses_code_to_run(tmp_path, capsys):
    """A patch PNG shared with a user names a .py file as its model: `patch apply` without
    --model must refuse it (only zoo names come from metadata) and run none of its code."""
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.py"
    evil.write_text(f"open({str(marker)!r}, 'w').write('ran')\nfrom torch import nn\nmodel = nn.Flatten()\n")
    png = tmp_path / "patch.png"
    save_patch(png, torch.rand(3, 8, 8), torch.ones(1, 8, 8), pixels=8,
               meta={"target_name": "3", "size": 0.1, "model": str(evil)})  # fmt: skip
    out = tmp_path / "out"
    rc = main(["patch", "apply", "--patch", str(png), "--dataset", "mnist", "--n", "5", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "not a zoo model" in err[0] and "--model" in err[0]
    assert not marker.exists() and not out.exists()
    # the user typing the same file on the command line is their choice: it runs
    rc = main(["patch", "apply", "--patch", str(png), "--dataset", "mnist", "--n", "5", "--model", str(evil),
               "--out", str(out)])  # fmt: skip
    assert marker.exists()


def test_cli_photos(tmp_path, imagenet_model):
    from skimage import data

    from advex.data import load_image, save_png

    save_png(torch.from_numpy(data.chelsea()).permute(2, 0, 1).float() / 255, tmp_path / "cat.png")
    save_png(torch.from_numpy(data.coffee()).permute(2, 0, 1).float() / 255, tmp_path / "cup.png")
    out = tmp_path / "t"
    rc = main(["patch", "train", "--images", str(tmp_path / "cat.png"), "--target", "ostrich", "--steps", "2",
               "--batch-size", "2", "--placements", "1", "--eval-images", str(tmp_path / "cup.png"), "--quiet",
               "--print-px", "100", "--out", str(out)])  # fmt: skip
    assert rc == 0
    s = json.loads((out / "patch.json").read_text())
    assert s["settings"]["augment"] is True and s["target_name"] == "ostrich" and s["held_out"]
    app = tmp_path / "a"
    rc = main(["patch", "apply", "--patch", str(out / "patch.png"), "--images", str(tmp_path / "cup.png"),
               "--out", str(app)])  # fmt: skip
    assert rc == 0
    img = load_image(app / "cup_patched.png").pixels
    assert img.shape == (3, 224, 224)
