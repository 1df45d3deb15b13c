"""The HTML report (issue 16): every command's run folder gets a self-contained report.html,
``advex report DIR`` rebuilds it, and a real browser (headless Chromium, over the DevTools
protocol: tests/browser.py) loads every image of it and finds the headline table."""

import base64
import io
import json
import re
import shutil
from contextlib import redirect_stdout
from html.parser import HTMLParser

import pytest
import torch
from browser import Browser, find_browser
from helpers import SHARED
from PIL import Image

from advex.cli import main
from advex.data import sample_photos, save_png

HAVE_DATA = (SHARED / "mnist").is_dir()

# A small real run of each command (its --out is added), and the figures it draws.
RUNS = {
    "evaluate": ["evaluate", "--model", "mnist-small", "--dataset", "mnist", "--eps", "0,0.1", "--n", "20",
                 "--steps", "5", "--queries", "50", "--n-targets", "2"],
    "certify": ["certify", "--model", "mnist-small-ibp-0.1", "--dataset", "mnist", "--eps", "0.05,0.1", "--n", "20",
                "--attack-steps", "5"],
    "smoothing": ["certify", "--model", "mnist-small", "--dataset", "mnist", "--method", "smoothing", "--sigma", "0.25",
                  "--n", "6", "--n-samples", "200", "--eps", "0.25,0.5", "--attack-steps", "2", "--attack-samples", "2",
                  "--attack-n", "50"],
    "onepixel": ["onepixel", "--dataset", "mnist", "--n", "4", "--population", "40", "--iterations", "3"],
    "attack": ["attack", "--images", "{photos}", "--model", "cifar10-small", "--target", "airplane", "--c", "1",
               "--search-steps", "1", "--max-iter", "20", "--quiet"],
    "patch-train": ["patch", "train", "--dataset", "mnist", "--target", "3", "--steps", "3", "--n", "50",
                    "--eval-n", "20", "--placements", "2", "--print-px", "120", "--quiet"],
    "patch-apply": ["patch", "apply", "--patch", "{patch}", "--dataset", "mnist", "--n", "20", "--save-n", "2"],
    "train": ["train", "--dataset", "mnist", "--train-n", "256", "--batch-size", "64", "--epochs", "2",
              "--eval-n", "16", "--eval-steps", "1", "--quiet"],
}  # fmt: skip
SUMMARY = {"evaluate": "evaluation.json", "certify": "certify.json", "smoothing": "certify.json",
           "onepixel": "onepixel.json",
           "attack": "summary.json", "patch-train": "patch.json", "patch-apply": "apply.json",
           "train": "card.json"}  # fmt: skip
FIGURES = {
    "evaluate": ["accuracy_vs_eps.png"],
    "certify": ["certified.png"],
    "smoothing": ["certified.png"],
    "onepixel": ["figure.png"],
    "attack": ["figure.png"],
    "patch-train": ["sheet.png", "curve.png", "patch.png"],
    "patch-apply": ["sheet.png"],
    "train": ["curves.png"],
}


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """``run_folder(kind)``: the --out folder of a small real run of that command, run once
    through ``advex.cli.main`` (what it printed is kept beside it, in KIND-stdout.txt)."""
    done = {}

    def get(kind: str):
        if kind not in done:
            if kind != "attack" and not HAVE_DATA:
                pytest.skip("../shared/datasets not present")
            out = tmp_path_factory.mktemp(kind)
            photos = out.parent / "cat.png"
            if kind == "attack":
                x = sample_photos(["chelsea"])[0].pixels
                save_png(torch.nn.functional.interpolate(x[None], size=(32, 32), mode="area")[0], photos)
            patch = get("patch-train") / "patch.png" if kind == "patch-apply" else ""
            argv = [a.format(photos=photos, patch=patch) for a in RUNS[kind]] + ["--out", str(out)]
            printed = io.StringIO()
            with redirect_stdout(printed):
                assert main(argv) == 0, argv
            (out.parent / f"{kind}-stdout.txt").write_text(printed.getvalue())
            done[kind] = out
        return done[kind]

    return get


class Page(HTMLParser):
    """What a test needs from a page: every tag with its attributes, the text of the
    headline table's rows, and the text inside each warning box."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.headline_rows: list[list[str]] = []
        self.warnings: list[str] = []
        self._in_headline = self._warning_depth = 0
        self._divs = 0
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "table" and attrs.get("id") == "headline":
            self._in_headline = True
        if self._in_headline and tag == "tr":
            self.headline_rows.append([])
        if tag == "div":
            self._divs += 1
            if "warning" in attrs.get("class", "").split() and not self._warning_depth:
                self._warning_depth = self._divs
                self.warnings.append("")

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_headline = False
        if tag == "div":
            if self._divs == self._warning_depth:
                self._warning_depth = 0
            self._divs -= 1

    def handle_data(self, data):
        if self._in_headline and self.headline_rows and data.strip():
            self.headline_rows[-1].append(data.strip())
        if self._warning_depth:
            self.warnings[-1] += data


def _report(folder) -> tuple[str, Page]:
    text = (folder / "report.html").read_text(encoding="utf-8")
    return text, Page(text)


def _png_bytes(src: str) -> bytes:
    assert src.startswith("data:image/png;base64,"), src[:80]
    data = base64.b64decode(src.split(",", 1)[1], validate=True)
    Image.open(io.BytesIO(data)).verify()  # raises unless a whole, valid PNG
    return data


KINDS = list(RUNS)


@pytest.mark.parametrize("kind", KINDS)
def test_every_run_writes_a_self_contained_report(kind, run_folder):
    out = run_folder(kind)
    assert f"wrote {out}/report.html" in (out.parent / f"{kind}-stdout.txt").read_text()
    text, page = _report(out)
    # nothing outside the file: no script, no link or frame, no style sheet or font fetched
    names = {tag for tag, _ in page.tags}
    assert not names & {"script", "link", "iframe", "object", "embed", "base"}, names
    assert not re.search(r"https?://|@import|url\(", text, re.IGNORECASE)
    for tag, attrs in page.tags:
        assert not attrs.get("href"), (tag, attrs)
        assert not any(a.startswith("on") for a in attrs), (tag, attrs)  # no inline event handlers
    # every figure the run drew is inlined, byte for byte, each with alt text
    images = [attrs for tag, attrs in page.tags if tag == "img"]
    assert all(attrs.get("alt") for attrs in images)
    assert sorted(_png_bytes(attrs["src"]) for attrs in images) == sorted((out / f).read_bytes() for f in FIGURES[kind])
    # the headline table, with numbers in it, and the command that ran
    assert [attrs.get("id") for tag, attrs in page.tags if tag == "table"].count("headline") == 1
    assert len(page.headline_rows) >= 2 and re.search(r"\d", " ".join(map(" ".join, page.headline_rows)))
    summary = json.loads((out / SUMMARY[kind]).read_text())
    assert summary["machine"] in text and f"--out {out}" in text


def test_the_headline_numbers_are_those_of_the_json(run_folder):
    ev = json.loads((run_folder("evaluate") / "evaluation.json").read_text())
    _, page = _report(run_folder("evaluate"))
    header, *rows = page.headline_rows
    assert header == ["eps", *ev["per_attack"], "worst case (ensemble)"]
    assert [row[-1] for row in rows] == [f"{100 * a:.1f}%" for a in ev["ensemble"]]
    ce = json.loads((run_folder("certify") / "certify.json").read_text())
    _, page = _report(run_folder("certify"))
    certified = [row[3] for row in page.headline_rows[1:]]
    assert certified == [f"{100 * r['certified_accuracy']:.1f}%" for r in ce["results"]]


def test_warnings_skipped_files_and_unknown_keys_are_shown(run_folder, tmp_path, capsys):
    folder = tmp_path / "run"
    shutil.copytree(run_folder("evaluate"), folder)
    summary = json.loads((folder / "evaluation.json").read_text())
    summary |= {
        "warnings": ["gradient masking: <b>FGSM beats PGD</b>", "accuracy does not fall as eps grows"],
        "skipped": ["photos/broken.png", "photos/notes.txt"],
        "processes": 2,
        "resumed": True,
        "data": {"folder": "/data/val", "images": 20},
        "brand_new_key": "<script>alert(1)</script>",
    }
    (folder / "evaluation.json").write_text(json.dumps(summary))
    assert main(["report", str(folder)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {folder}/report.html"
    text, page = _report(folder)
    warnings, skipped = page.warnings
    assert "gradient masking: <b>FGSM beats PGD</b>" in warnings and "accuracy does not fall" in warnings
    assert "2 unreadable file(s) were skipped" in skipped
    assert "photos/broken.png" in skipped and "photos/notes.txt" in skipped
    for shown in ("processes", "resumed", "folder: /data/val; images: 20", "brand_new_key"):
        assert shown in text
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text  # escaped, never run
    # without them, no warning box at all
    _, plain = _report(run_folder("evaluate"))
    assert plain.warnings == []


def test_a_summary_of_another_shape_is_still_reported_key_by_key(run_folder, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(run_folder("evaluate"), folder)
    summary = json.loads((folder / "evaluation.json").read_text())
    summary["per_attack"] = "computed elsewhere"  # not the {attack: [accuracy per eps]} this advex reads
    (folder / "evaluation.json").write_text(json.dumps(summary))
    assert main(["report", str(folder)]) == 0
    text, page = _report(folder)
    assert "This advex cannot lay out the results in evaluation.json" in page.warnings[0]
    for key in ("per_attack", "computed elsewhere", "ensemble", "clean_acc"):  # nothing dropped
        assert key in text
    assert 'src="data:image/png;base64,' in text  # the figure is still there


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d.mkdir(), r"holds no advex run \(none of evaluation.json, certify.json"),
        (lambda d: None, r"does not exist"),
        (lambda d: d.write_text("a file"), r"is not a folder"),
        (lambda d: d.mkdir() or (d / "certify.json").write_text("[1, 2"), r"certify.json is not readable JSON"),
        (lambda d: d.mkdir() or (d / "summary.json").write_text("[1, 2]"), r"does not hold an advex summary"),
    ],
    ids=["empty", "missing", "a-file", "cut-off-json", "not-an-object"],
)
def test_report_refuses_what_is_no_run_in_one_line(make, message, tmp_path, capsys):
    target = tmp_path / "dir"
    make(target)
    assert main(["report", str(target)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("advex: error: ") and re.search(message, err[0]), err
    assert not (tmp_path / "dir" / "report.html").exists()


def test_rebuilding_gives_the_same_page_and_leaves_no_temporary_file(run_folder, tmp_path, capsys):
    folder = tmp_path / run_folder("patch-train").name  # (the page names its folder)
    shutil.copytree(run_folder("patch-train"), folder)
    first = (folder / "report.html").read_bytes()
    (folder / "report.html").unlink()
    assert main(["report", str(folder)]) == 0
    assert (folder / "report.html").read_bytes() == first
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]


FAST_EVAL = ["evaluate", "--model", "mnist-small", "--dataset", "mnist", "--eps", "0.1", "--n", "5",
             "--attacks", "fgsm", "--steps", "2"]  # fmt: skip


@pytest.mark.skipif(not HAVE_DATA, reason="../shared/datasets not present")
def test_a_report_that_fails_never_loses_the_run(monkeypatch, tmp_path, capsys):
    def broken(folder):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("advex.report.build_report", broken)
    assert main([*FAST_EVAL, "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert f"advex: warning: no report.html in {tmp_path}: disk on fire" in err
    assert (tmp_path / "evaluation.json").exists() and not (tmp_path / "report.html").exists()


@pytest.mark.skipif(not HAVE_DATA, reason="../shared/datasets not present")
@pytest.mark.parametrize("rank, written", [("1", False), ("0", True)])
def test_under_torchrun_only_rank_0_writes_the_report(rank, written, monkeypatch, tmp_path):
    monkeypatch.setenv("RANK", rank)
    assert main([*FAST_EVAL, "--out", str(tmp_path)]) == 0
    assert (tmp_path / "report.html").exists() == written


# ------------------------------------------------------------------ in a real browser
LOADED = "Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)"
HEADLINE_ROWS = "(t => t && t.tagName === 'TABLE' ? t.rows.length : -1)(document.getElementById('headline'))"


@pytest.fixture(scope="module")
def browser():
    binary = find_browser()
    if binary is None:
        pytest.skip("no Chromium on PATH (chromium, chromium-browser or google-chrome): .ci/run installs it")
    with Browser(binary, width=1000, height=800) as b:
        yield b


@pytest.mark.parametrize("kind", KINDS)
def test_the_report_opens_in_a_real_browser(kind, run_folder, browser):
    out = run_folder(kind)
    tab = browser.open(out / "report.html")
    assert browser.evaluate(tab, LOADED) == [True] * len(FIGURES[kind])
    assert browser.evaluate(tab, HEADLINE_ROWS) >= 2
    shot = Image.open(io.BytesIO(browser.screenshot(tab)))
    assert shot.size == (1000, 800)
    assert len(shot.convert("RGB").getcolors(1 << 20)) > 50  # it drew the page, not a blank window


def test_the_browser_check_sees_a_broken_image(browser, tmp_path):
    png = io.BytesIO()
    Image.new("RGB", (4, 4), "red").save(png, format="PNG")
    good = base64.b64encode(png.getvalue()).decode()
    (tmp_path / "page.html").write_text(
        f'<table id="headline"><tr><td>1</td></tr></table><img src="data:image/png;base64,{good}" alt="ok">'
        '<img src="data:image/png;base64,iVBORw0KGgo=" alt="cut off">'
    )
    tab = browser.open(tmp_path / "page.html")
    assert browser.evaluate(tab, LOADED) == [True, False]
    assert browser.evaluate(tab, HEADLINE_ROWS) == 1
