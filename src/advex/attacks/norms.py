"""The three hooks each norm gives the gradient attacks (the factoring of Foolbox 3):
a random start inside the ball, the steepest-ascent direction for a gradient, and the
projection back onto the ball. All act on whole batches, per image."""

from __future__ import annotations

import torch


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


def per_image(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-image (N,) tensor shaped to broadcast against a batch ``like`` (N, ...)."""
    return v.reshape(-1, *([1] * (like.ndim - 1)))


class Linf:
    name = "linf"

    @staticmethod
    def random(shape, eps, gen, device, dtype):
        u = torch.rand(shape, generator=gen, device=gen.device if gen is not None else device)
        return (2 * u.to(device, dtype) - 1) * per_image(eps, u)

    @staticmethod
    def direction(g):
        return g.sign()

    @staticmethod
    def project(d, eps):
        e = per_image(eps, d)
        return torch.maximum(torch.minimum(d, e), -e)

    @staticmethod
    def norm(d):
        return _flat(d).abs().amax(1)


class L2:
    name = "l2"

    @staticmethod
    def random(shape, eps, gen, device, dtype):
        """Uniform in the L2 ball: a Gaussian direction and radius eps * u^(1/n)."""
        z = torch.randn(shape, generator=gen, device=gen.device if gen is not None else device).to(device, dtype)
        n = z[0].numel()
        u = torch.rand(shape[0], generator=gen, device=gen.device if gen is not None else device).to(device, dtype)
        r = eps * u.pow(1.0 / n)
        return z / per_image(_flat(z).norm(dim=1).clamp_min(1e-12), z) * per_image(r, z)

    @staticmethod
    def direction(g):
        return g / per_image(_flat(g).norm(dim=1).clamp_min(1e-12), g)

    @staticmethod
    def project(d, eps):
        n = _flat(d).norm(dim=1)
        return d * per_image((eps / n.clamp_min(1e-12)).clamp(max=1.0), d)

    @staticmethod
    def norm(d):
        return _flat(d).norm(dim=1)


class L1:
    """L1: the steepest direction is sparse; like Tramer & Boneh's SLIDE we move the
    ``sparsity`` fraction of coordinates with the largest gradient, by their sign, and
    project with the sort-based Euclidean projection onto the L1 ball (Duchi et al. 2008)."""

    name = "l1"
    sparsity = 0.01

    @staticmethod
    def random(shape, eps, gen, device, dtype):
        """Uniform in the L1 ball: Laplace direction, radius eps * u^(1/n)."""
        dev = gen.device if gen is not None else device
        e = -torch.log(torch.rand(shape, generator=gen, device=dev).clamp_min(1e-12))
        s = torch.rand(shape, generator=gen, device=dev) < 0.5
        z = torch.where(s, e, -e).to(device, dtype)
        n = z[0].numel()
        u = torch.rand(shape[0], generator=gen, device=dev).to(device, dtype)
        return z / per_image(_flat(z).abs().sum(1).clamp_min(1e-12), z) * per_image(eps * u.pow(1.0 / n), z)

    @classmethod
    def direction(cls, g):
        flat = _flat(g)
        k = max(1, int(cls.sparsity * flat.shape[1]))
        thresh = flat.abs().topk(k, dim=1).values[:, -1:]
        d = torch.where(flat.abs() >= thresh, flat.sign(), torch.zeros_like(flat))
        d = d / d.abs().sum(1, keepdim=True).clamp_min(1)
        return d.reshape(g.shape)

    @staticmethod
    def project(d, eps):
        flat = _flat(d)
        eps = eps.reshape(-1, 1).to(flat)
        inside = flat.abs().sum(1, keepdim=True) <= eps
        mu = flat.abs().sort(dim=1, descending=True).values
        cums = mu.cumsum(1)
        ks = torch.arange(1, flat.shape[1] + 1, device=flat.device, dtype=flat.dtype)
        cond = mu - (cums - eps) / ks > 0
        rho = cond.to(flat.dtype).mul(ks).argmax(1, keepdim=True)  # last index where cond holds
        theta = (cums.gather(1, rho) - eps) / (rho + 1).to(flat.dtype)
        proj = flat.sign() * (flat.abs() - theta).clamp_min(0)
        return torch.where(inside, flat, proj).reshape(d.shape)

    @staticmethod
    def norm(d):
        return _flat(d).abs().sum(1)


NORMS = {"linf": Linf, "l2": L2, "l1": L1}
