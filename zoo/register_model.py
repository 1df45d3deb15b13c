"""Put a model trained by `advex train` into the zoo, with its evaluation on the full test set.

    python zoo/register_model.py RUN_DIR NAME [--attack-steps 40 --step-size 0.01]

Copies RUN_DIR/model.safetensors to src/advex/models/weights/NAME.safetensors, evaluates
clean accuracy and, for an adversarially trained model, robust accuracy under L-inf PGD
with a random start on the whole test set (for a certified one, certified accuracy under
IBP, CROWN and alpha-CROWN; for a noise-trained one, accuracy under its noise and, with
--smoothing DIR, the randomized-smoothing certificates of an `advex certify` run), and
records file, SHA-256 and the card (the exact training command, machine, time, and these
accuracies) in
src/advex/models/weights/manifest.json, which `advex.models.load(NAME)` reads.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import time
from pathlib import Path

import torch

from advex.data.datasets import load_dataset
from advex.evaluation import clean_accuracy, robust_accuracy
from advex.models import load_weights, make_classifier, read_state_dict

WEIGHTS = Path(__file__).resolve().parents[1] / "src" / "advex" / "models" / "weights"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("name")
    ap.add_argument("--attack-steps", type=int, default=None)
    ap.add_argument("--step-size", type=float, default=None)
    ap.add_argument("--eps", type=float, default=None, help="evaluation eps (default: the training eps)")
    ap.add_argument("--note", default=None, help="a sentence for the card (other evaluations, caveats)")
    ap.add_argument("--smoothing", default=None,
                    help="for a noise-trained model: the folder of its `advex certify --method smoothing` run, "
                         "whose certified accuracies and settings go on the card")  # fmt: skip
    args = ap.parse_args()
    run = Path(args.run)
    card = json.loads((run / "card.json").read_text())
    cfg = json.loads((run / "config.json").read_text())
    model = make_classifier(card["dataset"], card["arch"], name=args.name)
    load_weights(model.net, read_state_dict(run / "model.safetensors"), str(run), card["arch"])
    model.eval()
    test = load_dataset(card["dataset"], "test")
    t0 = time.perf_counter()
    card["clean_acc"] = clean_accuracy(model, test)
    eps = args.eps if args.eps is not None else card["eps"]
    if eps > 0:
        steps = args.attack_steps or (40 if card["dataset"] == "mnist" else 20)
        step = args.step_size or (0.01 if card["dataset"] == "mnist" else 2 / 255)
        card["robust_acc"] = robust_accuracy(model, test, eps, steps, step, seed=0)
        card["robust_eval"] = f"PGD-{steps}, step {step:g}, random start, eps {eps:g}, full test set ({len(test)})"
        card["eps"] = eps
    if card["defence"] in ("ibp", "crown-ibp", "convex") and eps > 0:
        from advex.certify import certify

        # each method is at least as tight as the one before it (CROWN keeps IBP's bound where
        # tighter, alpha-CROWN starts from CROWN's), so each runs only on the samples the one
        # before left uncertified: the same counts, a fraction of the time
        x, y = test.floats()
        card["certified"] = {}
        done = torch.zeros(len(y), dtype=torch.bool)
        with torch.no_grad():  # a misclassified image is never certified: bound only the others
            pred = torch.cat([model(x[i : i + 1000]).argmax(1).cpu() for i in range(0, len(y), 1000)])
        wrong = pred != y
        for method in ("ibp", "crown", "alpha-crown"):
            t1 = time.perf_counter()
            todo = (~done & ~wrong).nonzero().flatten()
            if len(todo):
                res = certify(model, x[todo], y[todo], eps=eps, method=method, attack=False, batch_size=500)
                done[todo] = res.certified.cpu()
            card["certified"][method] = {
                "certified_acc": float(done.float().mean()),
                "time_s": round(time.perf_counter() - t1, 1),
                "images_bounded": len(todo),
            }
        card["certified_eval"] = (
            f"L-inf eps {eps:g} clipped to [0, 1], full test set ({len(test)}); each method bounds only the "
            "correctly classified images the method before left uncertified (each is at least as tight, so the "
            "counts are the same)"
        )
    if card.get("sigma") is not None:
        from advex.evaluation import count_noisy

        card["noise_acc"] = count_noisy(model, test, card["sigma"], seed=0) / len(test)
        card["noise_eval"] = f"one draw of Gaussian noise, sigma {card['sigma']:g}, full test set ({len(test)})"
    if args.smoothing:
        got = json.loads((Path(args.smoothing) / "certify.json").read_text())
        card["smoothing"] = {
            "sigma": got["sigma"], "n0": got["n0"], "n": got["n"], "alpha": got["alpha"], "images": got["dataset"],
            "certified": {f"{r['eps']:g}": r["certified_accuracy"] for r in got["results"]},
            "attacked": {f"{r['eps']:g}": r["attacked_accuracy"] for r in got["results"]},
            "attack": got["results"][0]["attack"], "abstained": got["abstained"],
            "smoothed_accuracy": got["results"][0]["clean_accuracy"], "command": got["command"],
        }  # fmt: skip
    card["eval_time_s"] = round(time.perf_counter() - t0, 1)
    card["train_config"] = cfg
    if args.note:
        card["note"] = args.note
    WEIGHTS.mkdir(parents=True, exist_ok=True)
    dest = WEIGHTS / f"{args.name}.safetensors"
    shutil.copyfile(run / "model.safetensors", dest)
    digest = hashlib.sha256(dest.read_bytes()).hexdigest()
    manifest_path = WEIGHTS / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    manifest[args.name] = {"file": dest.name, "sha256": digest, "card": card}
    manifest_path.write_text(json.dumps(dict(sorted(manifest.items())), indent=2) + "\n")
    print(json.dumps(manifest[args.name], indent=2))


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
