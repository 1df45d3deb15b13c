"""Long runs: journals and --resume (after Ctrl-C and after a kill), torchrun with two
processes, the progress bar. The promise under test: an interrupted and resumed run, and a
run split over processes, write the same results as one uninterrupted process, to the bit."""

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import needs_data

from advex.errors import AdvexError
from advex.evaluation import Journal
from advex.report import ProgressBar

# what may differ between two runs of the same command: when and where it ran, how long it took
RUN_KEYS = {"command", "written", "machine", "run", "advex_version", "torch", "python", "device"}

EVALUATE = [
    "evaluate", "--model", "mnist-small", "--dataset", "mnist", "--eps", "0.05,0.1", "--indices", "0:40",
    "--batch-size", "8", "--steps", "10", "--queries", "100", "--attacks", "apgd-ce,square", "--seed", "5",
]  # fmt: skip
CERTIFY = [
    "certify", "--model", "mnist-small-ibp-0.1", "--dataset", "mnist", "--eps", "0.05,0.1", "--method",
    "ibp,crown", "--indices", "0:200", "--batch-size", "25", "--attack-steps", "10",
]  # fmt: skip
SMOOTHING = [
    "certify", "--model", "mnist-small", "--dataset", "mnist", "--method", "smoothing", "--sigma", "0.25",
    "--indices", "0:12", "--batch-size", "3", "--n-samples", "400", "--eps", "0.25,0.5", "--attack-steps", "3",
    "--attack-samples", "2", "--attack-n", "100",
]  # fmt: skip


def _results(out: Path, name: str) -> dict:
    summary = json.loads((out / name).read_text())
    return {k: v for k, v in summary.items() if k not in RUN_KEYS}


def _advex(*args, **kw):
    return subprocess.run([sys.executable, "-m", "advex", *args], capture_output=True, text=True, timeout=600, **kw)


def _spans(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "journal").glob("[0-9]*-[0-9]*.json"))


def _interrupt(args, out: Path, sig: int) -> int:
    """Start ``advex ARGS --out OUT``, send ``sig`` once its journal holds a finished batch; its exit code."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "advex", *args, "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (out / "journal").is_dir() and _spans(out):
            proc.send_signal(sig)
            break
        time.sleep(0.05)
    proc.wait(timeout=300)
    return proc.returncode


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    proc = _advex(*EVALUATE, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


@needs_data
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["sigint", "sigkill"])
def test_an_interrupted_evaluation_resumes_to_the_uninterrupted_result(evaluated, tmp_path, sig):
    code = _interrupt(EVALUATE, tmp_path, sig)
    assert code == (130 if sig == signal.SIGINT else -signal.SIGKILL), "the run finished before the signal"
    kept = _spans(tmp_path)
    assert 1 <= len(kept) < 5 and not (tmp_path / "evaluation.json").exists()
    assert not [p for p in (tmp_path / "journal").iterdir() if p.name.startswith(".")], "a half-written file"
    again = _advex(*EVALUATE, "--out", str(tmp_path))  # without --resume: refused, the journal kept
    assert again.returncode == 2 and "pass --resume" in again.stderr and _spans(tmp_path) == kept
    resumed = _advex(*EVALUATE, "--out", str(tmp_path), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert _results(tmp_path, "evaluation.json") == _results(evaluated, "evaluation.json")
    run = json.loads((tmp_path / "evaluation.json").read_text())["run"]
    assert run["batches_from_journal"] == len(kept)


@needs_data
def test_a_killed_certification_resumes_to_the_uninterrupted_result(tmp_path):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert _advex(*CERTIFY, "--out", str(whole)).returncode == 0
    assert _interrupt(CERTIFY, cut, signal.SIGKILL) == -signal.SIGKILL, "the run finished before the kill"
    assert 1 <= len(_spans(cut)) < 8
    resumed = _advex(*CERTIFY, "--out", str(cut), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert _results(cut, "certify.json") == _results(whole, "certify.json")


@needs_data
def test_a_killed_smoothing_certification_resumes_to_the_uninterrupted_result(tmp_path):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert _advex(*SMOOTHING, "--out", str(whole)).returncode == 0
    assert _interrupt(SMOOTHING, cut, signal.SIGKILL) == -signal.SIGKILL, "the run finished before the kill"
    assert 1 <= len(_spans(cut)) < 4
    resumed = _advex(*SMOOTHING, "--out", str(cut), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert _results(cut, "certify.json") == _results(whole, "certify.json")
    got = json.loads((whole / "certify.json").read_text())
    assert got["method"] == "smoothing" and got["norm"] == "l2" and len(got["per_image"]) == 12
    assert got["forward_passes"] == 12 * (100 + 400)
    row = got["per_image"][0]
    assert set(row) >= {"image", "prediction", "abstain", "radius", "p_lower", "count", "robust_under_attack"}
    assert row["image"] == "test[0]" and len(row["robust_under_attack"]) == 2
    assert (whole / "certified.png").is_file() and (whole / "report.html").is_file()


@needs_data
def test_resume_refuses_a_journal_of_another_run_naming_the_difference(evaluated, tmp_path):
    changed = [a if a != "0.05,0.1" else "0.05,0.2" for a in EVALUATE]
    proc = _advex(*changed, "--out", str(evaluated), "--resume")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1
    assert "eps: journal [0.05, 0.1], now [0.05, 0.2]" in lines[0]
    other = _advex(*[a if a != "evaluate" else "certify" for a in CERTIFY], "--out", str(evaluated), "--resume")
    assert other.returncode == 2 and 'command: journal "evaluate", now "certify"' in other.stderr
    assert len(_spans(evaluated)) == 5, "a refused resume must leave the journal as it was"


def test_journal_checks_settings_and_keeps_unfinished_runs(tmp_path):
    j = Journal.open(tmp_path, {"command": "evaluate", "eps": [0.1]}, resume=False)
    j.start()
    j.record((0, 10), {"correct": [True] * 10})
    with pytest.raises(AdvexError, match="holds an unfinished run \\(1 batches done\\); pass --resume"):
        Journal.open(tmp_path, {"command": "evaluate", "eps": [0.1]}, resume=False)
    with pytest.raises(AdvexError, match='model: journal null, now "mnist-small"'):
        Journal.open(tmp_path, {"command": "evaluate", "eps": [0.1], "model": "mnist-small"}, resume=True)
    again = Journal.open(tmp_path, {"command": "evaluate", "eps": (0.1,)}, resume=True)  # a tuple reads as a list
    assert again.done() == {"000000-000010": {"correct": [True] * 10}}
    again.finish()
    fresh = Journal.open(tmp_path, {"command": "evaluate", "eps": [0.2]}, resume=False)  # a finished run: start over
    fresh.start()
    assert fresh.done() == {}
    with pytest.raises(AdvexError, match="holds no journal to continue"):
        Journal.open(tmp_path / "elsewhere", {}, resume=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@needs_data
@pytest.mark.parametrize(
    "args",
    [EVALUATE[:11] + ["--steps", "10", "--queries", "100"], CERTIFY, SMOOTHING],
    ids=["evaluate", "certify", "smoothing"],
)
def test_torchrun_with_two_processes_writes_what_one_process_writes(tmp_path, args):
    one, two = tmp_path / "one", tmp_path / "two"
    assert _advex(*args, "--out", str(one)).returncode == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
           "-m", "advex", *args, "--out", str(two)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    name = "evaluation.json" if args[0] == "evaluate" else "certify.json"
    # every decision identical; bounds to float32 rounding (a process with one thread sums in
    # another order than one with two: on some CPUs the last digit of a bound differs)
    assert _same(_results(two, name), _results(one, name))
    assert json.loads((two / name).read_text())["run"]["processes"] == 2


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= 1e-5 * max(1.0, abs(a), abs(b))
    return a == b


def test_the_progress_bar_draws_on_a_terminal_only():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty, pipe = Tty(), io.StringIO()
    for stream in (tty, pipe):
        bar = ProgressBar(100, stream=stream)
        bar.status("apgd-ce eps 0.1")
        bar.advance(25)
        bar.close()
    assert pipe.getvalue() == ""
    assert "25/100 images" in tty.getvalue() and "ETA" in tty.getvalue() and "apgd-ce eps 0.1" in tty.getvalue()
    quiet = Tty()
    ProgressBar(10, stream=quiet, enabled=False).advance(5)
    assert quiet.getvalue() == ""


def test_the_eta_counts_only_this_processs_rate():
    bar = ProgressBar(100, done=50, enabled=False)  # 50 finished by an earlier (interrupted) run
    assert bar.eta() is None
    bar._t0 -= 10.0  # 10 s for the next 10 images
    bar.advance(10)
    assert bar.eta() == pytest.approx(40 * 1.0, rel=0.05)


@pytest.mark.parametrize("command", ["evaluate", "certify"])
def test_a_batch_of_only_unreadable_files_is_skipped_and_the_rest_counted(tmp_path, command):
    from advex.data import save_png

    for i in range(5):
        (tmp_path / "data" / "3").mkdir(parents=True, exist_ok=True)
        save_png(torch.full((1, 28, 28), i / 5), tmp_path / "data" / "3" / f"{i}.png")
    (tmp_path / "data" / "3" / "0-bad.png").write_text("not a png")  # sorted first: batch 0 is only this file
    summary = {"evaluate": "evaluation.json", "certify": "certify.json"}[command]
    extra = ["--attacks", "fgsm"] if command == "evaluate" else ["--no-attack"]
    proc = _advex(command, "--model", "mnist-small", "--data", str(tmp_path / "data"), "--eps", "0.1",
                  "--batch-size", "1", "--quiet", *extra, "--out", str(tmp_path / "out"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "1 unreadable image file(s) skipped" in proc.stderr
    got = json.loads((tmp_path / "out" / summary).read_text())
    assert [Path(f).name for f, _ in got["skipped"]] == ["0-bad.png"]
    n = got["n"] if command == "evaluate" else len(got["results"][0]["per_sample"])
    assert n == 5


def test_freed_memory_is_given_back_only_past_the_margin(monkeypatch):
    from advex.evaluation import runner

    trim = runner.HeapTrim(grow_mb=10)
    if trim.trim is None:
        pytest.skip("no glibc malloc_trim here")
    calls = []
    sizes = iter([100e6, 105e6, 111e6, 104e6, 112e6, 113e6, 50e6, 50e6])  # read before (and after) each trim
    monkeypatch.setattr(trim, "trim", lambda pad: calls.append(pad))
    monkeypatch.setattr(trim, "_rss", lambda: next(sizes))
    trim()  # the first batch sets the floor: 100 MB
    trim()  # 105: within 10 MB of it
    trim()  # 111: past it, trimmed, the floor now 104
    assert len(calls) == 1 and trim.floor == 104e6
    trim()  # 112: within 10 MB of 104
    assert len(calls) == 1
    trim()  # 113: 9 MB over 104... still within
    trim(force=True)  # the run's end: trimmed whatever the size
    assert len(calls) == 2 and trim.floor == 50e6
