"""The report a person reads: ``report.html`` in a run folder, built from what the run left
there (its summary JSON and its PNG figures) and nothing else.

One self-contained file: the figures are inlined as base64 ``data:`` URIs and the style
sheet sits in the page; there is no JavaScript and no external asset, so it opens offline,
attached to an e-mail, years later. A run is recognised by the JSON its command writes
(``KINDS``). A key this module does not know (a newer advex, another command's additions)
is shown in a "details" table, never dropped; ``warnings`` and ``skipped`` lists, from any
command, are boxes a reader cannot miss.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from advex.data import atomic_write_bytes
from advex.errors import AdvexError

REPORT = "report.html"
HEADLINE = "headline"  # the id of the headline table (the first run's, where a folder holds two)
MAX_ROWS = 100  # per-image tables stop here; the JSON has them all
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class Summary(dict):
    """A run's JSON that remembers which keys the report has shown, so that whatever is
    left goes to the details table."""

    def __init__(self, data: dict[str, Any], file: str):
        super().__init__(data)
        self.file = file
        self.shown: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        self.shown.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.shown.add(key)
        return super().get(key, default)


# ---------------------------------------------------------------------------- formatting
def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def with_conf(label: Any, confidence: float | None) -> str:
    return f"{label} ({pct(confidence)})" if confidence is not None else str(label)


def cell(value: Any, limit: int = 300) -> str:
    """Any JSON value as short text: numbers to 4 significant digits, lists and dicts inline."""
    if value is None:
        text = "–"
    elif isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, float):
        text = f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"
    elif isinstance(value, dict):
        text = "; ".join(f"{k}: {cell(v, limit)}" for k, v in value.items())
    elif isinstance(value, list):
        text = ", ".join(cell(v, limit) for v in value)
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def table(
    header: Sequence[str], rows: Iterable[Sequence[Any]], *, id: str | None = None, cls: str = "", caption: str = ""
) -> str:
    """An HTML table (no header row if ``header`` is empty); every cell goes through
    :func:`cell` and is escaped."""
    attrs = (f' id="{esc(id)}"' if id else "") + (f' class="{esc(cls)}"' if cls else "")
    cap = f"<caption>{esc(caption)}</caption>\n" if caption else ""
    head = "<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr></thead>\n" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{esc(cell(v))}</td>" for v in row) + "</tr>\n" for row in rows)
    return f"<table{attrs}>\n{cap}{head}<tbody>\n{body}</tbody></table>"


def facts(rows: Iterable[tuple[str, Any]], **kw) -> str:
    """A two-column table (what | value), leaving out what is missing."""
    return table([], [(k, v) for k, v in rows if v is not None], cls="facts", **kw)


def as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def warning(title: str, items: list) -> str:
    """A box a reader cannot miss: the title, then the items (the first MAX_ROWS)."""
    shown = [f"<li>{esc(cell(item, 1000))}</li>" for item in items[:MAX_ROWS]]
    if len(items) > MAX_ROWS:
        shown.append(f"<li>… and {len(items) - MAX_ROWS} more</li>")
    return f'<div class="warning" role="alert"><strong>{esc(title)}</strong>\n<ul>{"".join(shown)}</ul></div>'


def per_image(s: Summary, rows: list, header: Sequence[str], row: Callable[[dict], Sequence[Any]]) -> str:
    """The first MAX_ROWS per-image rows of ``s[key]`` as a table."""
    more = f" (the first {MAX_ROWS}; all {len(rows)} are in {s.file})" if len(rows) > MAX_ROWS else ""
    return f"<h3>Per image{esc(more)}</h3>\n" + table(header, (row(r) for r in rows[:MAX_ROWS]))


def eps_text(e: float, norm: str | None) -> str:
    return f"{e:.4g}" + (f" ({255 * e:.3g}/255)" if norm == "linf" and 0 < e < 1 else "")


# ---------------------------------------------------------------------------- one section per kind of run
def evaluate_body(s: Summary) -> list[str]:
    attacks, norm = list(s["per_attack"]), s.get("norm")
    rows = [
        [eps_text(e, norm), *(pct(s["per_attack"][a][i]) for a in attacks), pct(s["ensemble"][i])]
        for i, e in enumerate(s["eps"])
    ]
    caption = (
        f"Clean accuracy {pct(s['clean_acc'])} on {s.get('n')} images; robust accuracy ({norm}) under each attack, "
        "and the worst case over the ensemble (robust only if every attack fails)"
    )
    return [table(["eps", *attacks, "worst case (ensemble)"], rows, id=HEADLINE, caption=caption)]


def certify_body(s: Summary) -> list[str]:
    if s.get("method") == "smoothing":
        return smoothing_body(s)
    rows = [
        [eps_text(r.get("eps"), s.get("norm")), r.get("method"), pct(r.get("clean_accuracy")),
         pct(r.get("certified_accuracy")), pct(r.get("attacked_accuracy")), r.get("attack"), r.get("bound_time_s"),
         r.get("images_per_s")]
        for r in s["results"]
    ]  # fmt: skip
    caption = (
        "Certified accuracy is a lower bound on the robust accuracy (proved for every input in the ball), "
        "the attacked accuracy an upper bound (what the attack could not break)"
    )
    header = ["eps", "method", "clean", "certified", "attacked", "attack", "bounding time (s)", "images/s"]
    return [table(header, rows, id=HEADLINE, caption=caption)]


def smoothing_body(s: Summary) -> list[str]:
    """A randomized-smoothing certification: certified and attacked accuracy per L2 radius,
    the settings, and per image the certified class (or abstain), radius and counts."""
    rows = [[f"{r.get('eps'):g}", pct(r.get("certified_accuracy")), pct(r.get("attacked_accuracy")), r.get("attack")]
            for r in s["results"]]  # fmt: skip
    caption = (
        f"Randomized smoothing (Cohen et al. 2019), sigma {s.get('sigma')}: certified accuracy at each L2 radius "
        f"holds with probability 1 - alpha per image; the attacked accuracy is the smoothed classifier's under attack"
    )
    headline = table(["L2 radius", "certified", "under attack", "attack"], rows, id=HEADLINE, caption=caption)
    first = s["results"][0] if s["results"] else {}
    settings = facts(
        [("sigma", s.get("sigma")), ("n0 (selection draws)", s.get("n0")), ("n (estimation draws)", s.get("n")),
         ("alpha", s.get("alpha")), ("smoothed accuracy (abstain counts as wrong)", pct(first.get("clean_accuracy"))),
         ("abstained", s.get("abstained")), ("forward passes", s.get("forward_passes"))],
    )  # fmt: skip

    def row(r: dict) -> list[Any]:
        pred = "abstain" if r.get("abstain") else r.get("prediction")
        return [r.get("image"), r.get("label"), pred, r.get("radius"), r.get("p_lower"), r.get("count"),
                r.get("robust_under_attack")]  # fmt: skip

    header = ["image", "label", "certified class", "L2 radius", "pA lower bound", "count", "right under attack"]
    return [headline, settings, per_image(s, s.get("per_image") or [], header, row)]


def onepixel_body(s: Summary) -> list[str]:
    headline = facts(
        [("success rate", f"{pct(s['success_rate'])} ({s.get('successes')}/{s.get('attacked')} images)"),
         ("mean queries", s.get("mean_queries")), ("mean queries on successes", s.get("mean_queries_successful")),
         ("attack time (s)", s.get("attack_time_s")), ("time per image (s)", s.get("time_per_image_s"))],
        id=HEADLINE,
    )  # fmt: skip

    def row(r: dict) -> list[Any]:
        pixels = "; ".join(f"({p['row']},{p['col']}) {p['old']}→{p['new']}" for p in r.get("pixels", []))
        return [
            r.get("image"), with_conf(r.get("label_name"), r.get("confidence")),
            with_conf(r.get("label_adv_name"), r.get("confidence_adv")), pixels or "–", r.get("queries"),
            r.get("success"),
        ]  # fmt: skip

    header = ["image", "original", "adversarial", "pixels (row,col) old→new", "queries", "success"]
    return [headline, per_image(s, s["results"], header, row)]


def attack_body(s: Summary) -> list[str]:
    headline = facts(
        [("success rate", pct(s["success_rate"])), ("success measured on", s.get("success_measured_on")),
         ("median rms distortion", s.get("median_rms")), ("attack time (s)", s.get("attack_time_s"))],
        id=HEADLINE,
    )  # fmt: skip

    def row(r: dict) -> list[Any]:
        return [
            r.get("image"), with_conf(r.get("original"), r.get("original_confidence")),
            with_conf(r.get("adversarial"), r.get("adversarial_confidence")),
            with_conf(r.get("target"), r.get("target_confidence")) if r.get("target") else "– (untargeted)",
            r.get("l2"), r.get("linf_255"), r.get("rms"), r.get("success"),
        ]  # fmt: skip

    header = ["image", "original", "adversarial", "target", "L2", "L-inf (/255)", "rms", "success"]
    return [headline, per_image(s, s["images"], header, row)]


def patch_rows(s: Summary) -> str:
    def row(r: dict) -> list[Any]:
        first = (r.get("patched") or [{}])[0]
        return [
            r.get("image"), with_conf(r.get("label"), r.get("confidence")), r.get("eligible"),
            with_conf(first.get("label"), first.get("confidence")), f"{r.get('hits')}/{r.get('placements')}",
        ]  # fmt: skip

    header = ["image", "without the patch", "counted (not already the target)", "with the patch", "target hits"]
    return per_image(s, s["evaluation"]["per_image"], header, row)


def patch_headline(s: Summary, more: list[tuple[str, Any]]) -> str:
    ev = s["evaluation"]
    return facts(
        [("target", s.get("target_name")), ("targeted success rate", pct(ev.get("success_rate"))),
         *more, ("images counted", f"{ev.get('eligible_images')} of {ev.get('images')} (not already the target)"),
         ("placements per image", ev.get("placements_per_image")),
         ("mean target probability", pct(ev.get("mean_target_prob")))],
        id=HEADLINE,
    )  # fmt: skip


def patch_train_body(s: Summary) -> list[str]:
    held_out = s.get("held_out")
    more = [("on training images", pct(s.get("training_set_success_rate"))) if held_out else ("held out", False),
            ("training time (s)", s.get("train_time_s")), ("training samples", s.get("samples"))]  # fmt: skip
    return [patch_headline(s, more), patch_rows(s)]


def patch_apply_body(s: Summary) -> list[str]:
    size = f"{s.get('size')} of the image area"
    more = [("patch", s.get("patch")), ("size", size), ("placement", s.get("placement"))]
    return [patch_headline(s, more), patch_rows(s)]


def train_body(s: Summary) -> list[str]:
    epochs, settings = s["metrics"], s["settings"]
    last = epochs[-1] if epochs else {}
    robust, robust_eval = s.get("robust_acc", last.get("robust_acc")), s.get("robust_eval", last.get("robust_label"))
    certified, method = s.get("certified_acc", last.get("certified_acc")), s.get("certified_method")
    headline = facts(
        [("architecture", s.get("arch", settings.get("arch"))), ("defence", s.get("defence", settings.get("defence"))),
         ("eps", s.get("eps", settings.get("eps"))),
         ("epochs", f"{len(epochs)} of {s.get('epochs', settings.get('epochs'))}"),
         ("clean test accuracy", pct(s.get("clean_acc", last.get("test_acc")))),
         ("robust accuracy", f"{pct(robust)} ({robust_eval})" if robust is not None else None),
         ("certified accuracy", f"{pct(certified)} ({method})" if certified is not None else None),
         ("processes", s.get("processes"))],
        id=HEADLINE,
    )  # fmt: skip
    header = ["epoch", "step", "lr", "eps", "train loss", "train acc", "test acc", "robust acc", "certified acc",
              "epoch time (s)", "images/s"]  # fmt: skip
    rows = [
        [m.get("epoch"), m.get("step"), m.get("lr"), m.get("eps"), m.get("train_loss"), pct(m.get("train_acc")),
         pct(m.get("test_acc")), pct(m.get("robust_acc")), pct(m.get("certified_acc")), m.get("epoch_time_s"),
         m.get("images_per_s")]
        for m in epochs
    ]  # fmt: skip
    return [headline, "<h3>Per epoch</h3>", table(header, rows), "<h3>Settings (config.json)</h3>",
            facts(settings.items())]  # fmt: skip


def load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AdvexError(f"{path} is not readable JSON ({type(e).__name__}: {e})") from None


def load_summary(path: Path) -> dict[str, Any]:
    data = load_json(path)
    if not isinstance(data, dict):
        raise AdvexError(f"{path} does not hold an advex summary (a JSON object)")
    return data


def load_train(folder: Path) -> dict[str, Any]:
    """A training run's files as one summary: card.json (at the end), config.json as the
    settings and metrics.json (one record per epoch)."""
    card = load_summary(folder / "card.json") if (folder / "card.json").is_file() else {}
    settings = load_summary(folder / "config.json") if (folder / "config.json").is_file() else {}
    metrics = load_json(folder / "metrics.json")
    if not isinstance(metrics, list) or not all(isinstance(m, dict) for m in metrics):
        raise AdvexError(f"{folder / 'metrics.json'} does not hold a list of per-epoch records")
    unfinished = [] if card else ["this run has not finished (no card.json yet): the numbers are from its last epoch"]
    return {"command": settings.pop("command", None), **card, "settings": settings, "metrics": metrics,
            "warnings": unfinished}  # fmt: skip


class Figure(NamedTuple):
    file: str  # a PNG in the run folder
    caption: str  # what it shows
    width: int | None = None  # at most this many CSS pixels wide (else the page's width)


@dataclass(frozen=True)
class Kind:
    """A kind of run: the file its command writes, the figures it draws, its own section."""

    command: str
    file: str
    figures: tuple[Figure, ...]
    body: Callable[[Summary], list[str]]
    load: Callable[[Path], dict[str, Any]] | None = None  # default: the JSON object in ``file``

    def read(self, folder: Path) -> Summary:
        return Summary(self.load(folder) if self.load else load_summary(folder / self.file), self.file)


KINDS = (
    Kind("evaluate", "evaluation.json", (Figure("accuracy_vs_eps.png", "robust accuracy against eps, per attack"),),
         evaluate_body),
    Kind("certify", "certify.json", (Figure("certified.png", "certified and attacked accuracy against eps"),),
         certify_body),
    Kind("onepixel", "onepixel.json",
         (Figure("figure.png", "original | adversarial, the changed pixels circled, with labels and confidences"),),
         onepixel_body),
    Kind("attack", "summary.json",
         (Figure("figure.png", "original | perturbation, magnified | adversarial, with labels and confidences"),),
         attack_body),
    Kind("patch train", "patch.json",
         (Figure("sheet.png", "the patch, and scenes with it: predictions before -> after"),
          Figure("curve.png", "training: loss and success against step", 640),
          Figure("patch.png", "the printable patch", 240)),
         patch_train_body),
    Kind("patch apply", "apply.json", (Figure("sheet.png", "the patch in scenes: predictions before -> after"),),
         patch_apply_body),
    Kind("train", "metrics.json", (Figure("curves.png", "loss and accuracies per epoch"),), train_body, load_train),
)  # fmt: skip

# "What ran": (label, key), shown where the summary has them
FACTS = (
    ("command", "command"), ("model", "model"), ("attack", "attack"), ("dataset", "dataset"), ("data", "data"),
    ("images", "images"), ("trained on", "training_images"), ("evaluated on", "evaluation_images"),
    ("advex", "advex_version"), ("torch", "torch"), ("python", "python"), ("machine", "machine"),
    ("device", "device"), ("written", "written"),
)  # fmt: skip
WALL_TIME = ("wall_s", "attack_time_s", "train_time_s")


def what_ran(s: Summary) -> str:
    rows = []
    for label, key in FACTS:
        value = dict.get(s, key)
        if isinstance(value, list) and value and isinstance(value[0], dict):
            continue  # per-image rows: the kind's own table shows them
        rows.append((label, s.get(key)))
    wall = next((k for k in WALL_TIME if dict.get(s, k) is not None), None)
    if wall is not None:
        rows.append(("wall time", f"{s[wall]} s"))
    return facts(rows)


def figure(folder: Path, fig: Figure) -> str:
    """The PNG inlined as a data: URI, with its caption as alt text."""
    data = (folder / fig.file).read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        return warning(f"{fig.file} is not a PNG file", ["left out of this report"])
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    style = f' style="max-width: {fig.width}px"' if fig.width else ""
    return (
        f'<figure><img src="{uri}" alt="{esc(f"{fig.file}: {fig.caption}")}"{style}>'
        f"<figcaption>{esc(fig.file)}: {esc(fig.caption)}</figcaption></figure>"
    )


def command_name(kind: Kind, s: Summary) -> str:
    """``demo`` or ``attack`` (one kind of run), ``patch train``, ...: from the command line that ran."""
    words = str(dict.get(s, "command") or "").split()
    if len(words) > 1 and words[0] == "advex":
        return " ".join(words[1:3] if words[1] == "patch" else words[1:2])
    return kind.command


def section(folder: Path, kind: Kind, s: Summary, inlined: set[str], number: int, runs: int) -> str:
    """What ran, warnings, the headline numbers, the figures, per-image rows, then details:
    run ``number`` of the ``runs`` in the folder (``inlined``: the PNGs shown already)."""
    parts = ["<h3>What ran</h3>", what_ran(s)]
    if runs > 1:
        parts.insert(0, f"<h2>advex {esc(command_name(kind, s))} <small>({esc(s.file)})</small></h2>")
    if s.get("warnings"):
        parts.append(warning("Warnings: read these before the numbers", as_list(s["warnings"])))
    if s.get("skipped"):
        skipped = as_list(s["skipped"])
        parts.append(warning(f"{len(skipped)} unreadable file(s) were skipped", skipped))
    shown = set(s.shown)
    try:
        headline, *rest = kind.body(s)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:  # a summary of another shape
        s.shown = shown  # none of it reached the page: every key goes to the details table
        problem = f"{type(e).__name__}: {e}; every key it holds is in the details table below"
        headline, rest = warning(f"This advex cannot lay out the results in {s.file}", [problem]), []
    if number > 1:  # a folder with two runs (patch train, then apply): ids are unique in a page
        headline = headline.replace(f'id="{HEADLINE}"', f'id="{HEADLINE}-{number}"', 1)
    parts += ["<h3>Results</h3>", headline]
    for fig in kind.figures:
        if (folder / fig.file).is_file() and fig.file not in inlined:
            inlined.add(fig.file)
            parts.append(figure(folder, fig))
    parts += rest
    details = [(k, v) for k, v in s.items() if k not in s.shown]
    if details:
        parts += ["<h3>Details</h3>", table(["key", "value"], details, cls="facts")]
    return f"<section>\n{chr(10).join(parts)}\n</section>"


STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222; line-height: 1.45;
       max-width: 1200px; margin: 1.5em auto; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: .2em; }
h2 { font-size: 1.3em; border-bottom: 2px solid #ccc; padding-bottom: .2em; margin-top: 1.6em; }
h2 small { font-weight: normal; color: #777; }
h3 { font-size: 1.05em; margin: 1.2em 0 .4em; }
table { border-collapse: collapse; margin: .4em 0 1em; font-size: .92em; }
th, td { border: 1px solid #d0d0d0; padding: .25em .6em; text-align: left; vertical-align: top; }
thead th { background: #f0f0f0; }
table.facts td:first-child { color: #555; white-space: nowrap; }
#headline { font-size: 1.05em; border: 2px solid #888; }
#headline td { font-variant-numeric: tabular-nums; }
.warning { background: #fff3cd; border: 1px solid #e0a800; border-left: 6px solid #e0a800;
           padding: .6em 1em; margin: 1em 0; }
.warning ul { margin: .3em 0 0; }
figure { margin: 1em 0; }
img { max-width: 100%; height: auto; border: 1px solid #e4e4e4; }
figcaption { color: #555; font-size: .9em; }
caption { caption-side: top; text-align: left; color: #444; padding-bottom: .3em; }
footer { color: #777; font-size: .85em; margin-top: 2em; }
"""


def build_report(folder: str | Path) -> Path:
    """Write ``folder/report.html`` (atomically) from the run's JSON and PNGs; return its path.

    Raises AdvexError if ``folder`` holds no advex run or its summary is unreadable."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AdvexError(f"{folder} is not a folder" if folder.exists() else f"{folder} does not exist")
    runs = [(kind, kind.read(folder)) for kind in KINDS if (folder / kind.file).is_file()]
    if not runs:
        names = ", ".join(k.file for k in KINDS)
        raise AdvexError(f"{folder} holds no advex run (none of {names})")
    inlined: set[str] = set()
    sections = [section(folder, kind, s, inlined, i, len(runs)) for i, (kind, s) in enumerate(runs, 1)]
    others = sorted(p.name for p in folder.glob("*.png") if p.name not in inlined)
    kind, first = runs[0]
    title = f"advex {command_name(kind, first)}" + (f": {first['model']}" if dict.get(first, "model") else "")
    footer = f"Built by advex report from the files in {folder.name}/."
    if others:
        footer += f" The folder also holds {len(others)} more PNG(s): " + cell(others, 600) + "."
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{esc(title)}</h1>\n"
        + "\n".join(sections)
        + f"\n<footer>{esc(footer)}</footer>\n</body>\n</html>\n"
    )
    path = folder / REPORT
    atomic_write_bytes(path, page.encode("utf-8"))
    return path
