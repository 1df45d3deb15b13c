"""``advex train``: standard, adversarial and certified training on MNIST or CIFAR-10, on one
process or under ``torchrun`` on many; every epoch checkpointed, ``--resume`` continues."""

from __future__ import annotations

import argparse

from advex.cli import options

NAME = "train"
HELP = "train a model on MNIST or CIFAR-10, optionally adversarially or certifiably"


def add_parser(sub) -> argparse.ArgumentParser:
    p = options.add_command(sub, NAME, HELP, __doc__)
    options.add_dataset(p)
    p.add_argument(
        "--arch", default="small", help="small, large (Wong et al. 2018), cnn7 (certified-training CNN) or resnet"
    )
    p.add_argument(
        "--defence",
        default="none",
        help="none, pgd (Madry et al.), trades (Zhang et al.), fast (Wong et al.), "
        "ibp (Gowal et al.), crown-ibp (Zhang et al. 2020), convex (Wong & Kolter 2018); for randomized "
        "smoothing: gaussian (noise augmentation, Cohen et al. 2019), smoothadv (Salman et al. 2019)",
    )
    options.add_eps(
        p, many=False, zero_ok=True, default="0",
        help="L-inf radius, pixels in [0, 1] (e.g. 0.3, or 8/255); for smoothadv the L2 radius (e.g. 0.5)",
    )  # fmt: skip
    p.set_defaults(norm=None, _norm_default=lambda a: "l2" if a.defence == "smoothadv" else "linf")
    p.add_argument(
        "--sigma", type=options.positive, default=None, help="gaussian, smoothadv: the noise's standard deviation"
    )
    p.add_argument(
        "--noise-samples", type=options.integer(1), default=1, help="smoothadv: noise draws per image (default 1)"
    )
    p.add_argument("--epochs", type=options.integer(1), default=None, help="default: 10 (MNIST), 30 (CIFAR-10)")
    p.add_argument("--batch-size", type=options.integer(1), default=None, help="global batch size (default 128)")
    p.add_argument("--lr", type=options.positive, default=None, help="peak learning rate (cosine schedule)")
    p.add_argument("--optimizer", choices=["sgd", "adam"], default=None, help="default: adam (MNIST), sgd (CIFAR)")
    p.add_argument("--weight-decay", type=options.number(0), default=None, help="default: 0 (MNIST), 5e-4 (CIFAR)")
    p.add_argument(
        "--attack-steps", type=options.integer(1), default=None, help="PGD/TRADES steps (default 20 MNIST, 7 CIFAR)"
    )
    p.add_argument("--step-size", type=options.positive, default=None, help="attack step (default 2.5 * eps / steps)")
    p.add_argument(
        "--eps-ramp", type=options.number(0, 1), default=None, help="fraction of training to ramp eps from 0"
    )
    p.add_argument("--trades-beta", type=options.number(0), default=6.0, help="TRADES trade-off (default 6)")
    p.add_argument(
        "--kappa-end",
        type=options.number(0, 1),
        default=None,
        help="certified training: final natural-loss weight (ibp 0.5, else 0)",
    )
    p.add_argument(
        "--init",
        choices=["default", "ibp"],
        default=None,
        help="weight initialisation: ibp (Shi et al. 2021; default for certified training) or default (PyTorch's)",
    )
    p.add_argument("--eval-n", type=options.integer(1), default=1000, help="test images for per-epoch robust accuracy")
    p.add_argument(
        "--eval-steps", type=options.integer(1), default=20, help="PGD steps of the per-epoch robust accuracy"
    )
    p.add_argument("--train-n", type=options.integer(1), default=None, help="use only the first N training images")
    p.add_argument("--max-steps", type=options.integer(1), default=None, help="stop after N optimiser steps")
    p.add_argument("--download", action="store_true", help="download the dataset if missing (checked)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last epoch")
    options.add_run_options(p, out=None, data=True, required_out=True)
    return p


def run(args) -> int:
    import torch.distributed as dist

    from advex.defences import TrainConfig, train

    cfg = TrainConfig(
        dataset=args.dataset, arch=args.arch, defence=args.defence, eps=args.eps, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer, weight_decay=args.weight_decay,
        attack_steps=args.attack_steps, step_size=args.step_size, eps_ramp=args.eps_ramp,
        trades_beta=args.trades_beta, kappa_end=args.kappa_end, init=args.init, sigma=args.sigma,
        noise_samples=args.noise_samples, eval_n=args.eval_n,
        eval_steps=args.eval_steps, train_n=args.train_n, max_steps=args.max_steps, seed=args.seed,
        data_dir=args.data_dir,
    )  # fmt: skip
    if not args.resume:
        cfg.resolved()  # bad options fail before anything is read or written
    run_ = train(
        cfg, args.out, resume=args.resume, device=args.device, progress=not args.quiet,
        command=" ".join(["advex", *args.argv]), download=args.download,
    )  # fmt: skip
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    card = run_.card
    if card and run_.rank == 0:
        rob = ""
        if card["robust_acc"] is not None:
            rob = f", robust {100 * card['robust_acc']:.2f}% ({card['robust_eval']})"
        if card.get("noise_acc") is not None:
            rob += f", {100 * card['noise_acc']:.2f}% under noise sigma {card['sigma']:g}"
        print(f"clean test accuracy {100 * card['clean_acc']:.2f}%{rob}; {card['train_time_s']} s; wrote {args.out}/")
    return 0
