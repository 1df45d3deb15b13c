"""benchmarks/bench_gpu.py at its tiny sizes on the CPU: every section runs, none fails, and
the numbers it writes are in range -- so the GPU-day command is known to work before a GPU.
The sections that read MNIST / CIFAR-10 are skipped where ../shared/datasets is absent."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"
needs_data = pytest.mark.skipif(
    not ((SHARED / "mnist").is_dir() and (SHARED / "cifar10").is_dir()), reason="../shared/datasets not present"
)
IMAGE_SECTIONS = ["pgd", "onepixel", "patch"]  # the sample photos only: no dataset needed
DATA_SECTIONS = ["bounds", "smoothing"]  # MNIST / CIFAR-10 from ../shared/datasets


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "benchmarks" / "bench_gpu.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def errors(obj, path="") -> list[str]:
    """Every ``error`` anywhere in the results, with where it is."""
    if isinstance(obj, dict):
        found = [f"{path}: {obj['error']}"] if "error" in obj else []
        for k, v in obj.items():
            found += errors(v, f"{path}/{k}")
        return found
    return []


def timed_rows(obj, path=""):
    """Every (path, row) with a ``time_s``: the timed calls."""
    if isinstance(obj, dict):
        if "time_s" in obj:
            yield path, obj
        for k, v in obj.items():
            yield from timed_rows(v, f"{path}/{k}")


def tiny_run(tmp_path, sections: list[str]) -> dict:
    """Run ``sections`` at tiny sizes on the CPU; check what every section shares; the JSON."""
    bench = load_bench()
    out = tmp_path / "gpu.json"
    returned = bench.main(["--tiny", "--device", "cpu", "--only", ",".join(sections), "--out", str(out)])
    data = json.loads(out.read_text())
    assert data["total_s"] == returned["total_s"]
    assert data["tiny"] is True and data["device"] == "cpu"
    assert "--tiny" in data["command"] and data["machine"]["torch"] and data["machine"]["cpu_count"] >= 1
    assert set(sections) <= set(data)
    assert errors({k: data[k] for k in sections}) == []

    rows = list(timed_rows({k: data[k] for k in sections}))
    assert {p.split("/")[1] for p, _ in rows} == set(sections)
    for path, row in rows:
        assert row["time_s"] > 0 and math.isfinite(row["time_s"]), path
        assert row["images_per_s"] > 0, path
        for k, v in row.items():
            if k.startswith(
                ("success_rate", "advex_success_rate", "certified", "clean_acc", "abstain", "smoothed", "final_success")
            ):
                assert 0 <= v <= 1, (path, k, v)
    return data


def test_every_section_is_run_by_one_of_the_tests():
    assert sorted(IMAGE_SECTIONS + DATA_SECTIONS) == sorted(load_bench().SECTIONS)


def test_tiny_run_on_cpu_of_the_photo_sections(tmp_path):
    data = tiny_run(tmp_path, IMAGE_SECTIONS)
    pgd = data["pgd"]
    assert pgd["batch"] == 4 and pgd["steps"] == 2 and pgd["image_size"] == [64, 64]
    for run in ("advex_fp32", "advex_fast"):
        assert pgd[run]["max_linf_255"] <= 4 + 1e-3  # inside the ball
    assert pgd["fast_path_options_used"]  # bf16 (or precision="bf16") at least
    assert "compile" not in pgd["fast_path_options_used"]  # auto: never on a CPU
    assert "time_s" in pgd["torchattacks"] or pgd["torchattacks"] == {"skipped": "torchattacks not installed"}

    one = data["onepixel"]
    for run in ("fp32", "bf16"):
        assert 0 < one[run]["mean_queries"] <= one["budget_queries_per_photo"]
    assert data["patch"]["batch2"]["patched_images"] == 4


@needs_data
def test_tiny_run_on_cpu_of_the_dataset_sections(tmp_path):
    data = tiny_run(tmp_path, DATA_SECTIONS)
    for name in ("mnist-small-ibp-0.1", "cifar10-small-ibp-8"):
        assert data["bounds"][name]["images"] == 8 and {"ibp", "crown"} <= set(data["bounds"][name])
    sm = data["smoothing"]["default_batch"]
    assert sm["forward_passes"] == 2 * (100 + 10) and sm["noise_samples_per_s"] > 0
