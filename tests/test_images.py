import numpy as np
import pytest
import torch
from PIL import Image

from advex.data.images import load_image, load_images, pack, quantize, sample_photos, save_png, unpack
from advex.errors import AdvexError


def test_png_round_trip_is_exact_after_quantisation(tmp_path):
    x = torch.rand(3, 17, 23)
    save_png(x, tmp_path / "a.png")
    back = load_image(tmp_path / "a.png").pixels
    assert torch.equal(back, quantize(x))


def test_a_one_channel_image_is_saved_as_grayscale_and_other_shapes_refused(tmp_path):
    x = torch.rand(1, 9, 7)
    save_png(x, tmp_path / "g.png")
    with Image.open(tmp_path / "g.png") as im:
        assert im.mode == "L" and im.size == (7, 9)
    assert torch.equal(load_image(tmp_path / "g.png").pixels, quantize(x).expand(3, -1, -1))
    for bad in (torch.rand(2, 4, 4), torch.rand(4, 4)):
        with pytest.raises(AdvexError, match=r"save_png takes a \(3, H, W\) or \(1, H, W\) image"):
            save_png(bad, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_grayscale_and_rgba_are_converted_with_a_note(tmp_path):
    Image.fromarray(np.full((5, 6), 100, np.uint8), "L").save(tmp_path / "g.png")
    rgba = np.zeros((5, 6, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[..., 3] = 0  # fully transparent red -> white
    rgba[0, 0, 3] = 255  # one opaque red pixel
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    g = load_image(tmp_path / "g.png")
    a = load_image(tmp_path / "a.png")
    assert g.pixels.shape == (3, 5, 6) and torch.allclose(g.pixels, torch.full((3, 5, 6), 100 / 255))
    assert "grayscale" in g.notes[0]
    assert "RGBA" in a.notes[0]
    assert torch.allclose(a.pixels[:, 0, 0], torch.tensor([1.0, 0, 0]))
    assert torch.allclose(a.pixels[:, 1, 1], torch.ones(3))


def test_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(AdvexError, match="not found"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "notes.png").write_text("this is not a picture")
    with pytest.raises(AdvexError, match="cannot read .*notes.png as an image"):
        load_image(tmp_path / "notes.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AdvexError, match="holds no images"):
        load_images([tmp_path / "empty"])
    with pytest.raises(AdvexError, match="no images given"):
        load_images([])


def test_folder_expansion_and_unique_names(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        save_png(torch.rand(3, 4, 4), tmp_path / sub / "cat.png")
    (tmp_path / "a" / "readme.txt").write_text("ignored")
    ims = load_images([tmp_path / "a", tmp_path / "b"])
    assert [im.name for im in ims] == ["cat", "cat_1"]


def test_pack_unpack_round_trip():
    ims = [torch.rand(3, 5, 7), torch.rand(3, 9, 4)]
    canvas, sizes = pack(ims)
    assert canvas.shape == (2, 3, 9, 7) and sizes.tolist() == [[5, 7], [9, 4]]
    assert canvas[0, :, 5:].abs().sum() == 0
    for a, b in zip(ims, unpack(canvas, sizes)):
        assert torch.equal(a, b)


def test_sample_photos_ship_with_scikit_image():
    ims = sample_photos(["chelsea", "camera"])
    assert ims[0].pixels.shape == (3, 300, 451)
    assert ims[1].pixels.shape == (3, 512, 512)  # grayscale, replicated
    with pytest.raises(AdvexError, match="unknown sample photo"):
        sample_photos(["nope"])


def test_written_files_get_the_usual_permissions(tmp_path):
    import os

    save_png(torch.rand(3, 4, 4), tmp_path / "a.png")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "a.png").stat().st_mode & 0o777 == 0o666 & ~mask
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]  # no temporary file left behind
