"""Training objectives: standard, PGD adversarial training, TRADES, fast FGSM, the certified
ones: IBP (Gowal et al. 2019), CROWN-IBP (Zhang et al. 2020) and the convex robust loss of
Wong & Kolter (2018), and those of randomized smoothing: Gaussian noise augmentation (Cohen
et al. 2019) and SmoothAdv (Salman et al. 2019).

Each takes ``(model, attacker, x, y, eps, cfg, gen)`` and returns ``(loss, logits)``, the
logits being those the training accuracy is measured on. ``model`` is what gradients flow
through (a DistributedDataParallel wrapper under torchrun); ``attacker`` is the same
network unwrapped, used for the inner maximisation so that attack passes never trigger
gradient synchronisation. Pixels are in [0, 1]; the model includes its normalisation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from advex.attacks import pgd_loop

DEFENCES = ("none", "pgd", "trades", "fast", "ibp", "crown-ibp", "convex", "gaussian", "smoothadv")
CERTIFIED = ("ibp", "crown-ibp", "convex")
SMOOTHING = (
    "gaussian",
    "smoothadv",
)  # for randomized smoothing: trained under noise, certified by advex.certify.Smooth


def _ce(y):
    """The loss PGD maximises: cross-entropy of the true labels of the images in the batch."""
    return lambda z, rows: F.cross_entropy(z, y[rows], reduction="sum")


def standard(model, attacker, x, y, eps, cfg, gen):
    z = model(x)
    return F.cross_entropy(z, y), z


def pgd(model, attacker, x, y, eps, cfg, gen):
    """Madry et al. (2018): minimise the loss at the PGD maximiser in the eps-ball."""
    if eps <= 0:
        return standard(model, attacker, x, y, eps, cfg, gen)
    step = cfg.step_size * eps / cfg.eps
    xa = pgd_loop(attacker, x, _ce(y), eps=eps, steps=cfg.attack_steps, step_size=step, generator=gen).x_adv
    z = model(xa)
    return F.cross_entropy(z, y), z


def trades(model, attacker, x, y, eps, cfg, gen):
    """Zhang et al. (2019): CE(f(x), y) + beta * KL(f(x) || f(x')), x' maximising the KL
    from a small Gaussian start (their Algorithm 1)."""
    if eps <= 0:
        return standard(model, attacker, x, y, eps, cfg, gen)
    with torch.no_grad():
        p_clean = F.softmax(attacker(x), dim=1)

    def kl(z, rows):
        return F.kl_div(F.log_softmax(z, dim=1), p_clean[rows], reduction="sum")

    noise = 0.001 * torch.randn(x.shape, generator=gen, device=gen.device).to(x)
    x0 = (x + noise).clamp(0, 1)
    step = cfg.step_size * eps / cfg.eps
    xa = pgd_loop(attacker, x0, kl, eps=eps, steps=cfg.attack_steps, step_size=step, random_start=False).x_adv
    xa = torch.min(torch.max(xa, x - eps), x + eps).clamp(0, 1)
    z = model(torch.cat([x, xa]))  # one pass through the (possibly distributed) model
    z_clean, z_adv = z[: len(x)], z[len(x) :]
    loss = F.cross_entropy(z_clean, y) + cfg.trades_beta * F.kl_div(
        F.log_softmax(z_adv, dim=1), F.softmax(z_clean, dim=1), reduction="batchmean"
    )
    return loss, z_adv


def fast(model, attacker, x, y, eps, cfg, gen):
    """Wong, Rice & Kolter (2020): one FGSM step of ``fast_alpha * eps`` from a uniform start."""
    if eps <= 0:
        return standard(model, attacker, x, y, eps, cfg, gen)
    xa = pgd_loop(attacker, x, _ce(y), eps=eps, steps=1, step_size=cfg.fast_alpha * eps, generator=gen).x_adv
    z = model(xa)
    return F.cross_entropy(z, y), z


def _worst_case_loss(attacker, x, y, eps, beta, method, stats):
    """Cross-entropy of the worst-case logits: -(lower bound of z_y - z_j) for each j, 0 at y."""
    from advex.certify import worst_case_logits

    return F.cross_entropy(worst_case_logits(attacker, x, y, eps=eps, method=method, beta=beta, batch_stats=stats), y)


def _certified(model, attacker, x, y, eps, cfg, beta_start, method="ibp"):
    from advex.certify import batchnorm_stats

    if model is not attacker:
        from advex.errors import AdvexError

        raise AdvexError("certified training (ibp, crown-ibp, convex) runs in one process; start it without torchrun")
    # BatchNorm in training mode bounds the ball with the statistics of the clean batch
    with batchnorm_stats(model) as stats:
        z = model(x)
    natural = F.cross_entropy(z, y)
    if eps <= 0:
        return natural, z
    progress = min(1.0, eps / cfg.eps)  # 0 -> 1 over the eps ramp
    kappa = 1.0 - (1.0 - cfg.kappa_end) * progress
    beta = beta_start * (1.0 - progress)
    return kappa * natural + (1 - kappa) * _worst_case_loss(attacker, x, y, eps, beta, method, stats), z


def ibp(model, attacker, x, y, eps, cfg, gen):
    """Gowal et al. (2019): kappa * CE(z, y) + (1 - kappa) * CE(worst-case IBP logits, y),
    kappa from 1 to ``kappa_end`` (0.5) as eps ramps up."""
    return _certified(model, attacker, x, y, eps, cfg, 0.0)


def crown_ibp(model, attacker, x, y, eps, cfg, gen):
    """Zhang et al. (2020): the worst-case logits from beta * CROWN-IBP + (1 - beta) * IBP,
    beta from 1 to 0 as eps ramps up."""
    return _certified(model, attacker, x, y, eps, cfg, 1.0, "crown-ibp")


def convex(model, attacker, x, y, eps, cfg, gen):
    """Wong & Kolter (2018), "Provable defenses via the convex outer adversarial polytope": the
    cross-entropy of the worst-case logits from their dual bound (every layer's bounds by
    back-substitution with their ReLU slope), kappa from 1 to ``kappa_end`` (0) as eps ramps
    up. Costs about one back-substitution per unstable neuron: for small networks."""
    return _certified(model, attacker, x, y, eps, cfg, 0.0, "convex")


def gaussian(model, attacker, x, y, eps, cfg, gen):
    """Cohen et al. (2019): the cross-entropy of the network on x + delta, delta ~ N(0, sigma^2 I)
    (pixels in [0, 1], not clipped): the base classifier that smoothing at sigma certifies best."""
    noise = torch.randn(x.shape, generator=gen, device=gen.device).to(x)
    z = model(x + cfg.sigma * noise)
    return F.cross_entropy(z, y), z


def smoothadv(model, attacker, x, y, eps, cfg, gen):
    """Salman et al. (2019), SmoothAdv: ``noise_samples`` (m) noise draws per image, fixed for
    the attack; x' maximises the cross-entropy of the soft smoothed classifier (the mean
    softmax over the m noisy copies) in the L2 ball of radius eps, by ``attack_steps`` PGD steps
    from x (their Algorithm 1 with fixed noise, as their code); then the cross-entropy of the
    network on the m noisy copies of x'. The logits returned are the m copies' mean."""
    from advex.attacks import SoftSmooth

    m = cfg.noise_samples
    noise = cfg.sigma * torch.randn((len(x), m, *x.shape[1:]), generator=gen, device=gen.device).to(x)
    xa = x
    if eps > 0:
        soft = SoftSmooth(attacker, cfg.sigma, m, noise=noise)
        step = cfg.step_size * eps / cfg.eps
        xa = pgd_loop(soft, x, _ce(y), eps=eps, steps=cfg.attack_steps, step_size=step, norm="l2",
                      random_start=False).x_adv  # fmt: skip
    z = model((xa[:, None] + noise).flatten(0, 1))
    loss = F.cross_entropy(z, y.repeat_interleave(m))
    return loss, z.view(len(x), m, -1).mean(1)


LOSSES = {
    "none": standard,
    "pgd": pgd,
    "trades": trades,
    "fast": fast,
    "ibp": ibp,
    "crown-ibp": crown_ibp,
    "convex": convex,
    "gaussian": gaussian,
    "smoothadv": smoothadv,
}
