"""The attack on the real ImageNet default: photos become "ostrich"."""

from advex.attacks import Szegedy
from advex.data import quantize, sample_photos


def test_chelsea_and_coffee_become_ostrich_invisibly(imagenet_model):
    ims = sample_photos(["chelsea", "coffee"])
    atk = Szegedy(method="lbfgs", c_init=1e5, search_steps=2, max_iter=15)
    res = atk(imagenet_model, [im.pixels for im in ims], target="ostrich")
    assert res.success.all(), res.rows(imagenet_model.classes)
    for im, xa in zip(ims, res.x_adv):
        assert xa.shape == im.pixels.shape  # the photo keeps its own resolution
        assert int(imagenet_model.predict(quantize(xa)[None])[0]) == 9
    assert (res.rms < 0.0065).all()  # the paper's AlexNet distortion, sqrt(mean(r^2))
    assert (res.linf * 255 <= 24).all()
