"""The one-pixel attack and patch training as long runs: stopped by Ctrl-C (SIGINT) or a kill
(SIGKILL) part-way, then resumed with --resume, they write what an uninterrupted run writes
(every number except timings, the figures, the patch PNG to the byte); a journal of another
run is refused naming the difference; onepixel under torchrun writes what one process writes.
Also --data on onepixel, attack and patch, where the data-sources layer is present."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import needs_data

from advex.cli import main

# what may differ between two runs of the same command: when and where it ran, how long it took
RUN_KEYS = {"command", "written", "machine", "run", "advex_version", "torch", "python", "device"}

ONEPIXEL = [
    "onepixel", "--dataset", "cifar10", "--n", "10", "--batch-size", "2", "--population", "20", "--iterations", "10",
    "--seed", "3", "--quiet",
]  # fmt: skip
PATCH = [
    "patch", "train", "--dataset", "mnist", "--target", "3", "--size", "0.15", "--steps", "12", "--n", "300",
    "--eval-n", "20", "--placements", "1", "--batch-size", "8", "--checkpoint-every", "3", "--sheet-n", "4",
    "--print-px", "64", "--quiet",
]  # fmt: skip


def _results(out: Path, name: str) -> dict:
    """A summary without what may differ between runs (provenance, the run key, timings, paths)."""
    summary = json.loads((out / name).read_text())
    kept = {k: v for k, v in summary.items() if k not in RUN_KEYS | {"train_time_s", "patch_png"}}
    if isinstance(kept.get("evaluation"), dict):
        kept["evaluation"] = {k: v for k, v in kept["evaluation"].items() if k != "time_s"}
    return kept


def _run(args: list[str], out: Path, capsys) -> tuple[int, list[str]]:
    rc = main([*args, "--out", str(out)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return rc, err


def _interrupt(args: list[str], out: Path, sig: int, ready) -> int:
    """Start ``advex ARGS --out OUT`` in a process of its own and send it ``sig`` as soon as
    ``ready(out)`` (its journal holds a finished batch, or a saved state); its exit status."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "advex", *args, "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if ready(out):
            proc.send_signal(sig)
            break
        time.sleep(0.02)
    proc.wait(timeout=300)
    return proc.returncode


def _batches_done(out: Path) -> bool:
    return any((out / "journal").glob("[0-9]*-[0-9]*.json"))


def _state_saved(out: Path) -> bool:
    return (out / "journal" / "state.safetensors").is_file()


def _unfinished(out: Path) -> bool:
    return not json.loads((out / "journal" / "run.json").read_text())["complete"]


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


@pytest.fixture(scope="module")
def onepixel_run(tmp_path_factory):
    """One uninterrupted onepixel run of five batches."""
    out = tmp_path_factory.mktemp("onepixel-whole")
    assert main([*ONEPIXEL, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def patch_run(tmp_path_factory):
    """One uninterrupted patch training run of twelve steps."""
    out = tmp_path_factory.mktemp("patch-whole")
    assert main([*PATCH, "--out", str(out)]) == 0
    return out


# ---------------------------------------------------------------------------- onepixel
@needs_data
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["sigint", "sigkill"])
def test_an_interrupted_onepixel_run_resumes_to_the_uninterrupted_result(onepixel_run, tmp_path, sig, capsys):
    out = tmp_path / "op"
    rc = _interrupt(ONEPIXEL, out, sig, _batches_done)
    assert rc == (130 if sig == signal.SIGINT else -signal.SIGKILL)
    assert _unfinished(out) and not (out / "onepixel.json").exists()
    rc, err = _run([*ONEPIXEL, "--resume"], out, capsys)
    assert rc == 0, err
    assert _results(out, "onepixel.json") == _results(onepixel_run, "onepixel.json")
    assert (out / "figure.png").read_bytes() == (onepixel_run / "figure.png").read_bytes()
    assert json.loads((out / "onepixel.json").read_text())["run"]["batches_from_journal"] >= 1
    assert not _unfinished(out)


@needs_data
def test_onepixel_results_are_those_of_the_library_on_each_batch(onepixel_run):
    """Each batch of the run is the library's attack on those images with the seed of the
    batch's position; successes and changed pixels are what the attack returned."""
    from advex.attacks import OnePixel
    from advex.data import load_dataset
    from advex.evaluation import batch_seed
    from advex.models import load

    s = json.loads((onepixel_run / "onepixel.json").read_text())
    rows = s["results"]
    assert s["attacked"] == 10 and s["batch_size"] == 2 and 0 < s["successes"] < 10
    model = load("cifar10-small", device="cpu")
    data = load_dataset("cifar10", "test")
    idx = torch.tensor([int(r["image"][5:-1]) for r in rows[2:4]])  # the second batch: "test[i]"
    x, y = data.floats(idx)
    r = OnePixel(population=20, iterations=10, seed=batch_seed(3, 2))(model, x, y).rows(model.classes)
    assert [{k: v for k, v in row.items() if k != "image"} for row in rows[2:4]] == r


@needs_data
def test_resume_refuses_a_onepixel_journal_of_another_run(onepixel_run, tmp_path, capsys):
    out = tmp_path / "op"
    shutil.copytree(onepixel_run, out)
    before = _tree(out)
    rc, err = _run([*ONEPIXEL[:-1], "--population", "30", "--resume"], out, capsys)
    assert rc == 2 and len(err) == 1, err
    assert "records another run (population: journal 20, now 30)" in err[0]
    assert _tree(out) == before


@needs_data
@pytest.mark.slow
def test_onepixel_under_torchrun_with_two_processes_writes_what_one_process_writes(tmp_path, capsys):
    """torchrun's own options swallow an abbreviated ``--n``: the images are chosen by --indices."""
    args = [*ONEPIXEL[:3], "--indices", "0:11", *ONEPIXEL[5:]]
    one, two = tmp_path / "one", tmp_path / "two"
    assert main([*args, "--out", str(one)]) == 0
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
           "-m", "advex", *args, "--out", str(two)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _results(two, "onepixel.json") == _results(one, "onepixel.json")
    assert (two / "figure.png").read_bytes() == (one / "figure.png").read_bytes()
    assert json.loads((two / "onepixel.json").read_text())["run"]["processes"] == 2


# ---------------------------------------------------------------------------- patch train
@needs_data
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["sigint", "sigkill"])
def test_interrupted_patch_training_resumes_to_the_same_patch(patch_run, tmp_path, sig, capsys):
    out = tmp_path / "patch"
    rc = _interrupt(PATCH, out, sig, _state_saved)
    assert rc == (130 if sig == signal.SIGINT else -signal.SIGKILL)
    assert _unfinished(out) and not (out / "patch.png").exists()
    rc, err = _run([*PATCH, "--resume"], out, capsys)
    assert rc == 0, err
    assert (out / "patch.png").read_bytes() == (patch_run / "patch.png").read_bytes()
    assert _results(out, "patch.json") == _results(patch_run, "patch.json")
    assert json.loads((out / "patch.json").read_text())["run"]["resumed_from_step"] >= 3


@needs_data
def test_resume_refuses_a_patch_journal_of_another_run(patch_run, tmp_path, capsys):
    out = tmp_path / "patch"
    shutil.copytree(patch_run, out)
    before = _tree(out)
    rc, err = _run([*PATCH[:5], "5", *PATCH[6:], "--resume"], out, capsys)
    assert rc == 2 and len(err) == 1, err
    assert 'records another run (target: journal "3", now "5")' in err[0]
    assert _tree(out) == before


@needs_data
def test_a_fresh_patch_run_over_an_unfinished_one_is_refused(patch_run, tmp_path, capsys):
    out = tmp_path / "patch"
    shutil.copytree(patch_run, out)
    run_json = out / "journal" / "run.json"
    run_json.write_text(run_json.read_text().replace('"complete": true', '"complete": false'))
    before = _tree(out)
    rc, err = _run(PATCH, out, capsys)
    assert rc == 2 and len(err) == 1 and "holds an unfinished run (its training state saved)" in err[0], err
    assert _tree(out) == before


def test_patch_state_round_trips_through_its_file(tmp_path, tiny_model):
    """Stopped after 3 of 7 steps and continued from the saved file: the same patch and curve,
    whatever the checkpoint interval."""
    from advex.attacks import Patch, PatchState

    x = torch.rand(10, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    attack = Patch(size=0.2, shape="square", steps=7, batch_size=4, log_every=2, seed=1)
    whole = attack(tiny_model, x, 2)
    saved = {}

    def keep(state):
        state.save(tmp_path / f"{state.step}")
        saved[state.step] = state

    attack(tiny_model, x, 2, checkpoint=keep, checkpoint_every=3)
    assert sorted(saved) == [3, 6, 7]
    again = attack(tiny_model, x, 2, state=PatchState.load(tmp_path / "3"))
    assert torch.equal(again.patch, whole.patch) and again.curve == whole.curve
    (tmp_path / "bad").write_bytes(b"not a state")
    from advex.errors import AdvexError

    with pytest.raises(AdvexError, match="is not a patch training state advex wrote"):
        PatchState.load(tmp_path / "bad")
    with pytest.raises(AdvexError, match=r"saved training state is of a \(3, 5, 5\) patch"):
        Patch(size=0.2, shape="square", steps=7, batch_size=4, resolution=4)(tiny_model, x, 2, state=saved[3])
