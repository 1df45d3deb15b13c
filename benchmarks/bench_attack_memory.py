"""Peak memory of the Szegedy attack on one photo at full resolution, against its size: the
measurement behind ``Szegedy.memory_bytes`` and ``advex attack --max-memory``.

    python benchmarks/bench_attack_memory.py [--sizes 1000x1000,2000x2000,3000x2000]

Each size and solver runs in a fresh process (the ImageNet default model, a random photo,
3 solver iterations, one search step: the memory is the state per pixel, not the budget);
the peak resident set size minus the one after loading the model is the attack's, compared
with ``Szegedy.memory_bytes``. Writes benchmarks/results/attack_memory.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import json, resource, sys, torch
torch.set_num_threads(1)
from advex.attacks import Szegedy
from advex.models import load
h, w, method = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
model = load("efficientnet-lite0")
x = torch.rand(3, h, w, generator=torch.Generator().manual_seed(0))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
attack = Szegedy(method=method, max_iter=3, search_steps=1, progress=False)
attack(model, [x], target="ostrich")
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"h": h, "w": w, "method": method, "base": base, "peak": peak,
                  "estimate": attack.memory_bytes(1, h, w)}))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000x1000,2000x2000,3000x2000", help="HxW,HxW,...")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "attack_memory.json"))
    args = ap.parse_args()
    rows = []
    for size in args.sizes.split(","):
        h, w = size.split("x")
        for method in ("lbfgs", "adam"):
            res = subprocess.run([sys.executable, "-c", CHILD, h, w, method], capture_output=True, text=True)
            if res.returncode:
                print(res.stderr, file=sys.stderr)
                return 1
            r = json.loads(res.stdout.strip().splitlines()[-1])
            r["attack_bytes"] = r["peak"] - r["base"]
            r["bytes_per_pixel"] = round((r["peak"] - r["base"]) / (int(h) * int(w)))
            rows.append(r)
            print(f"{h}x{w} {method:5s}: attack {r['attack_bytes'] / 1e9:5.2f} GB ({r['bytes_per_pixel']} B/pixel), "
                  f"peak {r['peak'] / 1e9:5.2f} GB; memory_bytes estimates {r['estimate'] / 1e9:5.2f} GB")  # fmt: skip
    from advex.report import machine

    Path(args.out).write_text(json.dumps({"machine": machine(), "command": " ".join(sys.argv), "rows": rows}, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
