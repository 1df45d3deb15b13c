"""``advex demo``: the five sample photos become "ostrich" (Szegedy et al. 2013), offline."""

from __future__ import annotations

import argparse
import time

from advex.cli import attack, common, options

NAME = "demo"
HELP = 'turn the sample photos into "ostrich" (Szegedy et al. 2013)'
TARGET = "ostrich"


def add_parser(sub) -> argparse.ArgumentParser:
    p = options.add_command(sub, NAME, HELP, __doc__)
    attack.add_attack_options(p, "advex-demo")
    return p


def run(args) -> int:
    from advex.data import sample_photos

    t0 = time.perf_counter()
    szegedy = attack.make_attack(args)
    photos = sample_photos()
    model = common.load_model(args.model, args.device)
    sizes = [(im.name, im.pixels.shape[2], im.pixels.shape[1]) for im in photos]
    for part in attack.batches(len(photos), common.batch_size(args, model.device)):
        attack.check_memory(szegedy, [sizes[i] for i in part], args.max_memory)
    title = f'{model.name}: every photo plus an imperceptible r is an "{TARGET}"'
    rc = attack.attack_photos(args, model, szegedy, photos, TARGET, title=title, save_originals=True)
    print(f"demo wall time {time.perf_counter() - t0:.1f} s")
    return rc
