"""The front door: every bad input is one line on stderr, exit status 2, nothing written and
no code run (the table in bad_inputs.py, walked for every command); the library's attacks
and evaluation refuse bad labels and model outputs with one AdvexError (property-based, with
hypothesis); and the smaller promises (data lookup, messages) hold."""

import json
import re

import pytest
import torch
from bad_inputs import CASES, argv, prepare
from helpers import SHARED, needs_data
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from advex.attacks import APGD, CW, FGSM, PGD, DeepFool, OnePixel, Square, Szegedy
from advex.cli import main
from advex.errors import AdvexError, AdvexWarning
from advex.evaluation import evaluate

HAVE_DATA = (SHARED / "mnist").is_dir()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad-inputs")
    prepare(tmp, data=HAVE_DATA)
    return tmp


def _tree(root):
    """Every path under ``root`` with its size and modification time."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def _run(args, capsys) -> tuple[int, list[str]]:
    try:
        rc = main(args)
    except SystemExit as e:  # argparse
        rc = e.code
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return rc, err


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_every_bad_input_is_one_line_exit_2_and_nothing_written(case, inputs, capsys):
    if case.data and not HAVE_DATA:
        pytest.skip("../shared/datasets not present")
    before = _tree(inputs)
    rc, err = _run(argv(case, inputs), capsys)
    assert rc == 2 and len(err) == 1, err
    assert re.match(r"advex( \w+)*: error: ", err[0]), err[0]
    assert re.search(case.expect, err[0]), err[0]
    assert _tree(inputs) == before  # nothing written, nothing changed, anywhere
    assert not (inputs / "code-ran").exists()


def test_the_table_covers_every_command():
    from advex.cli import COMMANDS

    covered = {c.argv[0] for c in CASES}
    assert covered == {m.NAME for m in COMMANDS}
    assert {c.argv[1] for c in CASES if c.argv[0] == "patch"} == {"train", "apply"}


# ------------------------------------------------------------------ the library: labels, outputs, pixels
ATTACKS = {
    "PGD": lambda: PGD(eps=0.1, steps=2),
    "FGSM": lambda: FGSM(eps=0.1),
    "APGD": lambda: APGD(eps=0.1, steps=2),
    "Square": lambda: Square(eps=0.1, queries=5),
    "DeepFool": lambda: DeepFool(steps=2),
    "CW": lambda: CW(steps=2),
    "OnePixel": lambda: OnePixel(population=8, iterations=1),
    "Szegedy": lambda: Szegedy(c=1.0, max_iter=2),
}


@pytest.mark.parametrize("name", list(ATTACKS))
@pytest.mark.parametrize("label", [4, -1, 1000])
def test_labels_out_of_range_are_refused_by_every_attack(name, label, tiny_model, tiny_images):
    """The tiny model has 4 classes: label 4 (or -1) used to give 'success' with a zero
    perturbation (PGD, APGD, OnePixel) or a raw RuntimeError (Square, DeepFool, C&W)."""
    y = torch.zeros(len(tiny_images), dtype=torch.long)
    y[2] = label
    with pytest.raises(AdvexError, match=rf"label {label} is out of range: the model has 4 classes \(0 to 3\)"):
        ATTACKS[name]()(tiny_model, tiny_images, y)


@pytest.mark.parametrize("label", [4, -1])
def test_evaluate_refuses_labels_out_of_range(label, tiny_model, tiny_images):
    y = torch.zeros(len(tiny_images), dtype=torch.long)
    y[0] = label
    with pytest.raises(AdvexError, match=f"label {label} is out of range"):
        evaluate(tiny_model, tiny_images, y, [0.1], attacks=["fgsm"])


class _Returns(nn.Module):
    def __init__(self, kind: str):
        super().__init__()
        self.kind, self.fc = kind, nn.Linear(3 * 8 * 8, 4)

    def forward(self, x):
        z = self.fc(x.flatten(1))
        return {"flat": z[:, 0], "tuple": (z, z), "3d": z[:, None], "rows": z[:1]}[self.kind]


@pytest.mark.parametrize("kind", ["flat", "tuple", "3d", "rows"])
@pytest.mark.parametrize("name", ["PGD", "Square", "DeepFool", "evaluate"])
def test_a_model_that_does_not_return_logits_is_one_clear_error(kind, name, tiny_images):
    model = _Returns(kind)
    with pytest.raises(AdvexError, match=r"the model must return a \(N, classes\) tensor of logits for N=6"):
        if name == "evaluate":
            evaluate(model, tiny_images, torch.zeros(6, dtype=torch.long), [0.1], attacks=["fgsm"])
        else:
            ATTACKS[name]()(model, tiny_images)


def test_pixels_just_outside_the_range_are_named_with_their_digits(tiny_model, tiny_images):
    x = tiny_images.clone()
    x[0, 0, 0, 0] = 1 + 1e-7
    with pytest.raises(AdvexError, match=r"got values in \[0.2\d*, 1.0000001\d*\] \(a rounding error\? x.clamp"):
        PGD(eps=0.1)(tiny_model, x)


@pytest.mark.parametrize("cls", [APGD, Square])
def test_apgd_and_square_warn_on_a_radius_in_255_units(cls):
    with pytest.warns(AdvexWarning, match="did you mean 8/255"):
        cls(eps=8)


# ------------------------------------------------------------------ property-based: random bad values
_BAD_NUMBERS = st.one_of(
    st.sampled_from(["nan", "inf", "-inf", "abc", "", "1/0", "--", "0x10", "1e400"]),
    st.floats(max_value=-1e-9, allow_nan=False).map(repr),
    st.text(alphabet="abcxyz!@#,; ", min_size=1, max_size=6),
)
_OPTIONS = [  # (command line, option, bad values)
    (["evaluate", "--model", "mnist-small", "--dataset", "mnist", "--eps", "0.1"], "--n", "count"),
    (["certify", "--model", "mnist-small", "--dataset", "mnist", "--eps", "0.1"], "--batch-size", "count"),
    (["train", "--dataset", "mnist"], "--lr", "number"),
    (["train", "--dataset", "mnist"], "--train-n", "count"),
    (["onepixel", "--dataset", "mnist"], "--threshold", "number"),
    (["patch", "train", "--dataset", "mnist", "--target", "3"], "--rotation", "number"),
    (["evaluate", "--model", "mnist-small", "--dataset", "mnist"], "--eps", "eps"),
    (["certify", "--model", "mnist-small", "--dataset", "mnist"], "--eps", "eps"),
    (["attack", "--images", "x.png", "--target", "ostrich"], "--seed", "count"),
]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    where=st.sampled_from(_OPTIONS),
    value=st.one_of(_BAD_NUMBERS, st.integers(max_value=0).map(str)),
)
def test_random_bad_values_of_shared_options_are_one_line_and_exit_2(tmp_path, capsys, where, value):
    base, option, kind = where
    if kind == "number" and value.lstrip("-").isdigit() and int(value) == 0 and option != "--lr":
        value = "-1"  # 0 is a valid rotation/threshold
    if kind == "eps" and value.lstrip("-").isdigit() and int(value) == 0:
        value = "-0.5"
    if option == "--seed" and value.lstrip("-").isdigit() and int(value) == 0:
        value = "-1"  # 0 is a valid seed
    out = tmp_path / "out"
    rc, err = _run([*base, f"{option}={value}", "--out", str(out)], capsys)
    assert rc == 2 and len(err) == 1, (value, err)
    assert "error:" in err[0] and (option in err[0] or "--eps" in err[0]), err[0]
    assert not out.exists()


_labels = st.one_of(
    st.integers(min_value=4, max_value=2**40),
    st.integers(max_value=-1, min_value=-(2**40)),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.sampled_from(["PGD", "FGSM", "APGD", "Square", "DeepFool", "CW"]),
    bad=_labels,
    where=st.integers(0, 5),
    dtype=st.sampled_from([torch.long, torch.int32, torch.float32, torch.bool]),
    count=st.sampled_from([6, 5, 7]),
)
def test_random_bad_labels_are_one_advex_error_never_a_silent_success(
    tiny_model, tiny_images, name, bad, where, dtype, count
):
    y = torch.zeros(count, dtype=torch.long)
    y[min(where, count - 1)] = bad
    if dtype == torch.int32:
        y = y.clamp(-(2**31), 2**31 - 1).to(dtype)
    elif dtype != torch.long:
        y = y.to(dtype)
    if dtype == torch.bool and count == 6:
        # bools are refused as labels whatever their values
        with pytest.raises(AdvexError, match="labels y must be class indices"):
            ATTACKS[name]()(tiny_model, tiny_images, y)
        return
    with pytest.raises(AdvexError, match=r"labels|label .* out of range|labels y must be class indices"):
        ATTACKS[name]()(tiny_model, tiny_images, y)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    value=st.one_of(
        st.floats(width=32, allow_nan=True, allow_infinity=True).filter(lambda v: not 0 <= v <= 1),
        st.sampled_from([float("nan"), 1 + 1e-7, -1e-7, 255.0]),
    ),
    where=st.integers(0, 6 * 3 * 8 * 8 - 1),
)
def test_random_bad_pixels_are_one_advex_error(tiny_model, tiny_images, value, where):
    x = tiny_images.clone()
    x.view(-1)[where] = value
    with pytest.raises(AdvexError, match=r"pixels must be in \[0, 1\]|contains NaN|finite"):
        PGD(eps=0.1, steps=1)(tiny_model, x)


# ------------------------------------------------------------------ smaller promises
@needs_data
def test_certify_takes_l2_radii_above_one(tmp_path, capsys):
    out = tmp_path / "c"
    rc = main(["certify", "--model", "mnist-small", "--dataset", "mnist", "--norm", "l2", "--eps", "1.5",
               "--n", "5", "--no-attack", "--out", str(out)])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    assert json.loads((out / "certify.json").read_text())["results"][0]["eps"] == 1.5


@needs_data
def test_resume_continues_with_more_steps_and_refuses_other_settings(tmp_path):
    from advex.defences import TrainConfig, train

    cfg = TrainConfig(train_n=256, batch_size=64, epochs=3, max_steps=1, eval_n=16, eval_steps=1)
    train(cfg, tmp_path, progress=False, verbose=False)  # stops after 1 step of the first epoch's 4
    run = train(TrainConfig(max_steps=6), tmp_path, resume=True, progress=False, verbose=False)
    assert [h["step"] for h in run.history] == [1, 5, 6]  # max_steps extends a resumed run
    with pytest.raises(AdvexError, match=r"other settings \(arch 'small' there, 'large' here; lr 0.001 there"):
        train(TrainConfig(arch="large", lr=0.5), tmp_path, resume=True, progress=False)


def test_a_missing_split_names_the_files(tmp_path, monkeypatch):
    import shutil

    from advex.data import datasets

    if not (SHARED / "mnist").is_dir():
        pytest.skip("../shared/datasets not present")
    (tmp_path / "mnist").mkdir()
    for f in (SHARED / "mnist").glob("t10k-*"):
        shutil.copy(f, tmp_path / "mnist" / f.name)
    monkeypatch.setattr(datasets, "candidate_roots", lambda data_dir=None: [tmp_path])
    with pytest.raises(AdvexError, match=r"MNIST in .*mnist is incomplete: it holds the other split but not "
                       r"train-images-idx3-ubyte, train-labels-idx1-ubyte"):  # fmt: skip
        datasets.load_dataset("mnist", "train")


def test_shared_datasets_are_found_beside_the_folder_pip_installed_from(tmp_path, monkeypatch):
    """A non-editable `pip install PATH` records PATH in direct_url.json: ../shared/datasets
    beside it is looked in, whatever the working directory."""
    from importlib import metadata

    from advex.data import datasets

    class Dist:
        def read_text(self, name):
            return json.dumps({"url": (tmp_path / "my checkout").as_uri(), "dir_info": {}})

    monkeypatch.setattr(metadata, "distribution", lambda name: Dist())
    assert tmp_path / "shared" / "datasets" in datasets.candidate_roots()


def test_models_lists_radii_as_people_write_them(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "at eps 2/255" in out and "at eps 8/255" in out and "at eps 0.1," in out and "0.00784" not in out


@needs_data
def test_certify_on_chosen_indices_of_a_split_matches_the_library(tmp_path, capsys):
    from advex.certify import certify
    from advex.data import load_dataset
    from advex.models import load

    (tmp_path / "idx.txt").write_text("7 3\n11")
    out = tmp_path / "c"
    idx = str(tmp_path / "idx.txt")
    rc = main(["certify", "--model", "mnist-small-ibp-0.1", "--dataset", "mnist", "--split", "train", "--eps",
               "0.1", "--method", "ibp", "--indices", idx, "--no-attack", "--out", str(out)])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    summary = json.loads((out / "certify.json").read_text())
    assert summary["dataset"].startswith("3 mnist train images (--indices")
    rows = summary["results"][0]["per_sample"]
    x, y = load_dataset("mnist", "train").select(torch.tensor([7, 3, 11])).floats()
    res = certify(load("mnist-small-ibp-0.1"), x, y, eps=0.1, method="ibp", attack=False)
    assert [r["certified"] for r in rows] == res.certified.tolist()
    rc = main(["evaluate", "--model", "mnist-small", "--dataset", "mnist", "--eps", "0.1", "--indices", "20:24",
               "--attacks", "fgsm", "--out", str(tmp_path / "e")])  # fmt: skip
    assert rc == 0 and json.loads((tmp_path / "e" / "evaluation.json").read_text())["n"] == 4
