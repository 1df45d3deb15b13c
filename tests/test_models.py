import pytest
import torch
import torch.nn.functional as F
from torch import nn

import advex.models as M
from advex.data import pack, sample_photos
from advex.errors import AdvexError
from advex.models.resize import apply_resize, crop_box, resize_matrices

CATS = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def test_zoo_lists_default():
    assert "efficientnet-lite0" in M.names()
    assert M.DEFAULT_MODEL == "efficientnet-lite0"


def test_default_model_sees_what_a_person_sees(imagenet_model):
    m = imagenet_model
    assert isinstance(m, M.Classifier) and not m.training
    assert m.num_classes == 1000 and m.class_index("ostrich") == 9
    ims = sample_photos(["chelsea", "coffee", "camera"])
    x, sizes = pack([im.pixels for im in ims])
    label, conf, _ = m.predict(x, sizes)
    assert int(label[0]) in CATS
    assert int(label[1]) in {967, 968, 504}  # espresso, cup, coffee mug
    assert int(label[2]) in {872, 759, 732}  # tripod, reflex camera, Polaroid camera
    assert all(p.requires_grad is False for p in m.parameters())


def test_mixed_size_batch_equals_one_by_one(imagenet_model):
    ims = [im.pixels for im in sample_photos(["chelsea", "astronaut"])]
    x, sizes = pack(ims)
    with torch.no_grad():
        batched = imagenet_model(x, sizes)
        single = torch.cat([imagenet_model(im[None]) for im in ims])
    assert torch.allclose(batched, single, atol=1e-4)


def test_resize_matrices_match_interpolate_on_the_crop():
    img = torch.rand(1, 3, 37, 53)
    top, left, ch, cw = crop_box(37, 53, 16, 16, 0.875)
    want = F.interpolate(
        img[..., top : top + ch, left : left + cw], size=(16, 16), mode="bilinear", antialias=True, align_corners=False
    )
    a_h, a_w = resize_matrices([(37, 53)], (37, 53), (16, 16), 0.875)
    got = apply_resize(img, a_h.float(), a_w.float())
    assert torch.allclose(got, want, atol=1e-5)


def test_resize_is_differentiable_to_every_pixel_of_the_crop(imagenet_model):
    x = torch.rand(1, 3, 300, 451, requires_grad=True)
    imagenet_model(x)[0, 9].backward()
    g = x.grad.abs().sum(1)[0]
    top, left, ch, cw = crop_box(300, 451, 224, 224, 224 / 256)
    assert (g[top : top + ch, left : left + cw] > 0).float().mean() > 0.99
    assert g[:, :left].sum() == 0  # outside the centre crop the model never looks


def test_classifier_wraps_user_module_with_normalisation():
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    clf = M.Classifier(net, mean=[0.5, 0.5, 0.5], std=0.25, classes=["a", "b", "c"])
    x = torch.rand(2, 3, 2, 2)
    assert torch.allclose(clf(x), net((x - 0.5) / 0.25))
    assert clf.class_index("B") == 1
    with pytest.raises(AdvexError, match=r"takes images of shape \(N, 3, H, W\)"):
        clf(torch.rand(2, 1, 2, 2))
    with pytest.raises(AdvexError, match="mean/std need 1 or 3 values"):
        M.Classifier(net, mean=[0.1, 0.2], channels=3)
    with pytest.raises(AdvexError, match="different channel counts"):
        M.Classifier(net, mean=[0.1, 0.2], std=[0.1, 0.2, 0.3])
    with pytest.raises(AdvexError, match="wraps an nn.Module"):
        M.Classifier("not a net")


def test_classifier_infers_the_channel_count_from_the_network():
    """A one-channel MNIST network wrapped without channels= takes (N, 1, 28, 28) inputs."""
    mnist = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))
    clf = M.Classifier(mnist, mean=0.1307, std=0.3081)
    assert clf.channels == 1 and clf(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(AdvexError, match=r"takes images of shape \(N, 1, H, W\)"):
        clf(torch.rand(2, 3, 28, 28))
    assert M.as_classifier(mnist).channels == 1
    assert M.Classifier(nn.Sequential(nn.Flatten(), nn.Linear(12, 3)), mean=[0.5] * 3).channels == 3
    assert M.Classifier(nn.Sequential(nn.Flatten(), nn.Linear(12, 3))).channels is None  # any


def test_checkpoint_of_another_architecture_is_a_clear_error(tmp_path):
    from safetensors.torch import save_file

    save_file(nn.Linear(4, 2).state_dict(), str(tmp_path / "other.safetensors"))
    with pytest.raises(AdvexError, match="does not match architecture efficientnet-lite0: .*missing"):
        M.load("efficientnet-lite0", weights=tmp_path / "other.safetensors")


def test_user_checkpoint_of_the_right_architecture_loads(tmp_path, imagenet_model):
    from safetensors.torch import save_file

    sd = {k: v.clone() for k, v in imagenet_model.net.state_dict().items()}
    sd["_fc.bias"][9] += 100.0  # everything becomes an ostrich
    save_file(sd, str(tmp_path / "ostrich.safetensors"))
    m = M.load("efficientnet-lite0", weights=tmp_path / "ostrich.safetensors")
    assert int(m.predict(torch.rand(1, 3, 64, 64))[0]) == 9


def test_pickled_objects_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"w": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(AdvexError, match="cannot read checkpoint"):
        M.read_state_dict(tmp_path / "evil.pt")


def test_tampered_weights_fail_the_checksum(monkeypatch, tmp_path):
    from advex.models import zoo

    bad = tmp_path / "w.pth"
    bad.write_bytes(b"not the weights")
    entry = zoo.ZOO["efficientnet-lite0"]
    monkeypatch.setitem(
        zoo.ZOO,
        "efficientnet-lite0",
        zoo.ZooEntry(entry.name, entry.description, entry.make, lambda: bad, entry.sha256),
    )
    with pytest.raises(AdvexError, match="SHA-256"):
        M.load("efficientnet-lite0")


def test_unknown_model_and_devices():
    with pytest.raises(AdvexError, match="unknown model 'efficientnet-lite'.*did you mean efficientnet-lite0"):
        M.load("efficientnet-lite")
    with pytest.raises(AdvexError, match="unknown device"):
        M.resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(AdvexError, match="no CUDA GPU"):
            M.resolve_device("cuda")


def test_user_python_model_file(tmp_path):
    (tmp_path / "net.py").write_text(
        "import torch.nn as nn\ndef build():\n    return nn.Sequential(nn.Flatten(), nn.Linear(3*4*4, 5))\n"
    )
    m = M.load(f"{tmp_path / 'net.py'}:build")
    assert m(torch.rand(2, 3, 4, 4)).shape == (2, 5)
    with pytest.raises(AdvexError, match="defines no 'model'"):
        M.load(str(tmp_path / "net.py"))
