"""Bad input for every command: the table that tests/test_front_door.py walks (each case one
line on stderr, exit status 2, nothing written) and benchmarks/bad_inputs.py prints for any
checkout (the before/after table of the front-door issue).

A case is a command line with ``{tmp}`` standing for a folder that :func:`prepare` fills
(photos, a 16000x16000 PNG, a pickled checkpoint, a patch whose metadata names a .py file, a
saved training run, ...), and a regular expression the one error line must match. Commands
that take ``--out`` get ``--out {tmp}/out`` unless the case gives its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]
    expect: str  # a regular expression the one stderr line must match
    data: bool = False  # needs MNIST (../shared/datasets)


# A valid command line per command; each case adds one bad option (or replaces a value).
BASE = {
    "demo": ("demo", "--quiet"),
    "attack": ("attack", "--images", "{tmp}/cat.png", "--target", "ostrich", "--quiet"),
    "onepixel": ("onepixel", "--dataset", "mnist", "--n", "5", "--iterations", "1"),
    "onepixel-photos": ("onepixel", "--images", "{tmp}/cat.png", "--iterations", "1"),
    "patch-train": ("patch", "train", "--dataset", "mnist", "--target", "3", "--steps", "1", "--quiet"),
    "patch-apply": ("patch", "apply", "--patch", "{tmp}/patch.png", "--dataset", "mnist", "--n", "5"),
    "evaluate": ("evaluate", "--model", "mnist-small", "--dataset", "mnist", "--eps", "0.1", "--n", "5"),
    "certify": ("certify", "--model", "mnist-small", "--dataset", "mnist", "--eps", "0.1", "--n", "5"),
    "train": ("train", "--dataset", "mnist", "--max-steps", "1", "--quiet"),
}
DATA = {"onepixel", "patch-train", "patch-apply", "evaluate", "certify", "train"}
TAKES_OUT = set(BASE)


def _case(id: str, base: str, extra: tuple[str, ...], expect: str, data: bool | None = None) -> Case:
    argv = BASE[base] + extra
    if base in TAKES_OUT and "--out" not in extra:
        argv += ("--out", "{tmp}/out")
    return Case(f"{base}:{id}", argv, expect, base in DATA if data is None else data)


# ------------------------------------------------------------------ options every command shares
INT = r"expected a whole number"
FINITE = r"expected a finite number"
SHARED = [
    ("device-tpu", ("--device", "tpu"), r"device 'tpu'"),
    ("seed-abc", ("--seed", "abc"), rf"argument --seed: {INT}"),
    ("seed-negative", ("--seed", "-1"), rf"argument --seed: {INT}"),
    ("out-is-a-file", ("--out", "{tmp}/taken"), r"--out .*taken is an existing file"),
    ("out-under-a-file", ("--out", "{tmp}/taken/sub"), r"taken is a file, so no folder can be made there"),
]
MODEL = [
    ("model-unknown", ("--model", "nosuch"), r"unknown model 'nosuch'"),
    ("model-pickled", ("--model", "{tmp}/pickled.pt"), r"pickled Python objects besides tensors \(such as print\)"),
    ("model-garbage", ("--model", "{tmp}/garbage.pt"), r"is not a file torch.save wrote"),
    ("model-py-missing", ("--model", "{tmp}/missing.py"), r"missing.py"),
]
DATA_DIR = [("data-dir-missing", ("--data-dir", "{tmp}/nowhere"), r"--data-dir .*nowhere is not a folder")]
EPS = [
    ("eps-abc", ("--eps", "abc"), r"--eps 'abc': 'abc' is not a number"),
    ("eps-nan", ("--eps", "nan"), r"'nan' is not a finite number"),
    ("eps-negative", ("--eps", "-0.1"), r"-0.1 is negative"),
    ("eps-8", ("--eps", "8"), r"8 is larger than the whole \[0, 1\] pixel range .*did you mean 8/255"),
]
EPS_LINF = {"demo": ("--norm", "linf"), "attack": ("--norm", "linf")}

CASES: list[Case] = []
for _base in BASE:
    for _id, _extra, _expect in SHARED:
        if _base != "onepixel-photos":
            CASES.append(_case(_id, _base, _extra, _expect))
    if _base not in ("patch-apply", "onepixel-photos"):
        for _id, _extra, _expect in MODEL:
            if _base != "train":
                CASES.append(_case(_id, _base, _extra, _expect))
    if _base in DATA:
        for _id, _extra, _expect in DATA_DIR:
            CASES.append(_case(_id, _base, _extra, _expect))
    if _base in ("demo", "attack", "evaluate", "certify", "train"):
        for _id, _extra, _expect in EPS:
            extra = EPS_LINF.get(_base, ()) + _extra
            if _base in ("evaluate", "certify"):  # replace the base's valid --eps
                argv = list(BASE[_base])
                argv[argv.index("--eps") + 1] = _extra[1]
                CASES.append(Case(f"{_base}:{_id}", (*argv, "--out", "{tmp}/out"), _expect, True))
            else:
                CASES.append(_case(_id, _base, extra, _expect))

# ------------------------------------------------------------------ each command's own options
OWN = {
    "demo": [
        ("c-zero", ("--c", "0"), rf"argument --c: {FINITE} > 0"),
        ("max-iter-zero", ("--max-iter", "0"), rf"argument --max-iter: {INT} >= 1"),
        ("search-steps-zero", ("--search-steps", "0"), rf"argument --search-steps: {INT} >= 1"),
        ("lr-nan", ("--lr", "nan"), rf"argument --lr: {FINITE} > 0"),
        ("confidence-negative", ("--confidence", "-1"), rf"argument --confidence: {FINITE} >= 0"),
        ("eps-with-l2", ("--eps", "0.1"), r"--eps fixes the L-inf radius: add --norm linf"),
        ("max-memory-tiny", ("--max-memory", "0.1"), r"needs about .* GB of memory, above --max-memory 0.1 GB"),
        ("batch-size-zero", ("--batch-size", "0"), rf"argument --batch-size: {INT} >= 1"),
    ],
    "attack": [
        ("image-missing", ("--images", "{tmp}/missing.png"), r"image file not found"),
        ("image-not-an-image", ("--images", "{tmp}/text.png"), r"cannot read .*text.png as an image"),
        ("folder-without-images", ("--images", "{tmp}/empty"), r"holds no images"),
        ("png-16000x16000", ("--images", "{tmp}/huge.png"), r"has more than 179 megapixels"),
        ("photo-6000x4000", ("--images", "{tmp}/big.png"), r"6000x4000, 24.0 megapixels\) needs about 13.* GB"),
        ("target-unknown", ("--target", "ostrch"), r"unknown class name 'ostrch'; close matches: 'ostrich'"),
        ("target-index-out-of-range", ("--target", "1000"), r"1000.* out of range"),
        ("target-and-untargeted", ("--untargeted",), r"not both"),
        ("arch-with-zoo-model", ("--arch", "efficientnet-lite0"), r"--arch names the architecture of a checkpoint"),
        ("checkpoint-of-another-arch", ("--model", "{tmp}/other.safetensors"), r"does not match architecture"),
        ("batch-size-zero", ("--batch-size", "0"), rf"argument --batch-size: {INT} >= 1"),
        ("data-and-images", ("--data", "{tmp}/empty"), r"argument --data: not allowed with argument --images"),
    ],
    "onepixel": [
        ("n-negative", ("--n", "-9990"), rf"argument --n: {INT} >= 1, got '-9990'"),
        ("n-zero", ("--n", "0"), rf"argument --n: {INT} >= 1"),
        ("pixels-zero", ("--pixels", "0"), rf"argument --pixels: {INT} >= 1"),
        ("pixels-785", ("--pixels", "785"), r"more than the 28x28 image has \(784\)"),
        ("population-2", ("--population", "2"), rf"argument --population: {INT} >= 4"),
        ("F-zero", ("--F", "0"), rf"argument --F: {FINITE} > 0 and <= 2"),
        ("threshold-2", ("--threshold", "2"), rf"argument --threshold: {FINITE} >= 0 and <= 1"),
        ("batch-size-zero", ("--batch-size", "0"), rf"argument --batch-size: {INT} >= 1"),
        ("figure-n-zero", ("--figure-n", "0"), rf"argument --figure-n: {INT} >= 1"),
        ("target-10-of-10", ("--target", "10"), r"10.* out of range"),
        ("dataset-unknown", ("--dataset", "imagenet"), r"argument --dataset: invalid choice: 'imagenet'"),
        ("indices-and-n", ("--indices", "0:5"), r"give --n .* or --indices, not both"),
        ("resume-nothing", ("--resume",), r"--resume: .*out/journal holds no journal to continue"),
        ("unfinished-run", ("--out", "{tmp}/unfinished"), r"unfinished/journal holds an unfinished run"),
        ("resume-another-run", ("--resume", "--out", "{tmp}/unfinished"), r'run \(.*"evaluate", now "onepixel"'),
    ],
    "onepixel-photos": [
        ("image-missing", ("--images", "{tmp}/missing.png"), r"image file not found"),
        ("png-16000x16000", ("--images", "{tmp}/huge.png"), r"has more than 179 megapixels"),
        ("photo-100mp", ("--images", "{tmp}/p100mp.png"), r"10000x10000 \(100.0 megapixels\), more than the 90"),
        ("n-with-images", ("--n", "3"), r"--split, --n and --indices choose among --dataset or --data images"),
        ("target-is-the-prediction", ("--target", "tiger cat"), r"already classifies photo cat as the target"),
    ],
    "patch-train": [
        ("steps-zero", ("--steps", "0"), rf"argument --steps: {INT} >= 1"),
        ("lr-negative", ("--lr", "-1"), rf"argument --lr: {FINITE} > 0"),
        ("rotation-400", ("--rotation", "400"), rf"argument --rotation: {FINITE} >= 0 and <= 180"),
        ("scale-abc", ("--scale", "abc"), r"argument --scale: expected a number or LO,HI"),
        ("size-zero", ("--size", "0"), r"size"),
        ("size-2", ("--size", "2"), r"\(0, 1\)"),
        ("size-0.9-circle", ("--size", "0.9"), r"larger than"),
        ("eval-images-with-dataset", ("--eval-images", "x.png"), r"--eval-images and --eval-data go with --images"),
        ("eval-data-with-dataset", ("--eval-data", "{tmp}/empty"), r"--eval-images and --eval-data go with --images"),
        ("checkpoint-every-zero", ("--checkpoint-every", "0"), rf"argument --checkpoint-every: {INT} >= 1"),
        ("resume-nothing", ("--resume",), r"--resume: .*out/journal holds no journal to continue"),
        ("unfinished-run", ("--out", "{tmp}/unfinished"), r"holds an unfinished run \(0 batches done\)"),
        ("resume-another-run", ("--resume", "--out", "{tmp}/unfinished"), r'another run \(.*"evaluate", now "patch"'),
        ("n-zero", ("--n", "0"), rf"argument --n: {INT} >= 1"),
        ("eval-n-zero", ("--eval-n", "0"), rf"argument --eval-n: {INT} >= 1"),
        ("placements-zero", ("--placements", "0"), rf"argument --placements: {INT} >= 1"),
        ("sheet-n-zero", ("--sheet-n", "0"), rf"argument --sheet-n: {INT} >= 1"),
        ("print-px-5", ("--print-px", "5"), rf"argument --print-px: {INT} >= 16"),
        ("batch-size-zero", ("--batch-size", "0"), rf"argument --batch-size: {INT} >= 1"),
        ("target-unknown", ("--target", "ostrich"), r"ostrich"),
    ],
    "patch-apply": [
        ("patch-missing", ("--patch", "{tmp}/missing.png"), r"patch file not found"),
        ("patch-not-an-image", ("--patch", "{tmp}/text.png"), r"cannot read .*text.png"),
        ("patch-metadata-names-code", ("--patch", "{tmp}/evil_patch.png"), r"not a zoo model.*--model"),
        ("n-zero", ("--n", "0"), rf"argument --n: {INT} >= 1"),
        ("placements-zero", ("--placements", "0"), rf"argument --placements: {INT} >= 1"),
        ("save-n-negative", ("--save-n", "-1"), rf"argument --save-n: {INT} >= 0"),
        ("position-abc", ("--position", "abc"), r"argument --position: --position takes ROW,COL"),
        ("rotation-negative", ("--rotation", "-1"), rf"argument --rotation: {FINITE} >= 0"),
        ("batch-size-zero", ("--batch-size", "0"), rf"argument --batch-size: {INT} >= 1"),
    ],
    "evaluate": [
        ("n-negative", ("--n", "-9990"), rf"argument --n: {INT} >= 1, got '-9990'"),
        ("steps-zero", ("--steps", "0"), rf"argument --steps: {INT} >= 1"),
        ("queries-zero", ("--queries", "0"), rf"argument --queries: {INT} >= 1"),
        ("n-targets-zero", ("--n-targets", "0"), rf"argument --n-targets: {INT} >= 1"),
        ("attack-unknown", ("--attacks", "apgd-ce,magic"), r"unknown attack 'magic'"),
        ("norm-l3", ("--norm", "l3"), r"argument --norm: invalid choice: 'l3'"),
    ],
    "certify": [
        ("eps-1.5-linf", ("--eps", "1.5"), r"1.5 is larger than the whole \[0, 1\] pixel range"),
        ("method-unknown", ("--method", "magic"), r"unknown method 'magic'"),
        ("ibp-with-l2", ("--norm", "l2", "--method", "ibp"), r"IBP bounds only L-inf balls"),
        ("alpha-steps-zero", ("--alpha-steps", "0"), rf"argument --alpha-steps: {INT} >= 1"),
        ("n-zero", ("--n", "0"), rf"argument --n: {INT} >= 1"),
        ("batch-size-zero", ("--batch-size", "0"), rf"argument --batch-size: {INT} >= 1"),
        ("attack-steps-zero", ("--attack-steps", "0"), rf"argument --attack-steps: {INT} >= 1"),
        ("slope-unknown", ("--slope", "magic"), r"argument --slope: invalid choice"),
        (
            "custom-forward",
            ("--model", "{tmp}/custom.py:build"),
            r"the network itself \(Net\) is a module with its own",
        ),
        ("bab-timeout-zero", ("--method", "bab", "--timeout", "0"), rf"argument --timeout: {FINITE} > 0"),
        ("bab-l2", ("--method", "bab", "--norm", "l2"), r"--method bab verifies L-inf balls"),
        ("smoothing-without-sigma", ("--method", "smoothing"), r"--method smoothing needs --sigma"),
        ("smoothing-sigma-zero", ("--method", "smoothing", "--sigma", "0"), rf"argument --sigma: {FINITE} > 0"),
        ("smoothing-n0-zero", ("--method", "smoothing", "--sigma", "0.25", "--n0", "0"), rf"argument --n0: {INT} >= 1"),
        (
            "smoothing-n-below-n0",
            ("--method", "smoothing", "--sigma", "0.25", "--n0", "100", "--n-samples", "50"),
            r"--n-samples 50 is below --n0 100",
        ),
        (
            "smoothing-alpha-1",
            ("--method", "smoothing", "--sigma", "0.25", "--alpha", "1"),
            r"--alpha must be in \(0, 1\)",
        ),
        (
            "smoothing-alpha-0",
            ("--method", "smoothing", "--sigma", "0.25", "--alpha", "0"),
            rf"argument --alpha: {FINITE} > 0",
        ),
        (
            "smoothing-linf",
            ("--method", "smoothing", "--sigma", "0.25", "--norm", "linf"),
            r"smoothing with Gaussian noise certifies L2 balls, not L-inf ones.*e\*sqrt\(d\)",
        ),
        ("smoothing-with-ibp", ("--method", "ibp,smoothing", "--sigma", "0.25"), r"run --method smoothing on its own"),
        ("sigma-without-smoothing", ("--sigma", "0.25"), r"--sigma go with --method smoothing"),
    ],
    "train": [
        ("train-n-zero", ("--train-n", "0"), rf"argument --train-n: {INT} >= 1"),
        ("lr-nan", ("--lr", "nan"), rf"argument --lr: {FINITE} > 0"),
        ("lr-zero", ("--lr", "0"), rf"argument --lr: {FINITE} > 0"),
        ("epochs-zero", ("--epochs", "0"), rf"argument --epochs: {INT} >= 1"),
        ("batch-size-zero", ("--batch-size", "0"), rf"argument --batch-size: {INT} >= 1"),
        ("max-steps-zero", ("--max-steps", "0"), rf"argument --max-steps: {INT} >= 1"),
        ("eval-n-zero", ("--eval-n", "0"), rf"argument --eval-n: {INT} >= 1"),
        ("eps-ramp-2", ("--eps-ramp", "2"), rf"argument --eps-ramp: {FINITE} >= 0 and <= 1"),
        ("kappa-end-negative", ("--kappa-end", "-1"), rf"argument --kappa-end: {FINITE} >= 0 and <= 1"),
        ("weight-decay-negative", ("--weight-decay", "-1"), rf"argument --weight-decay: {FINITE} >= 0"),
        ("trades-beta-nan", ("--trades-beta", "nan"), rf"argument --trades-beta: {FINITE} >= 0"),
        ("step-size-zero", ("--step-size", "0"), rf"argument --step-size: {FINITE} > 0"),
        ("defence-unknown", ("--defence", "magic"), r"unknown defence 'magic'"),
        ("arch-unknown", ("--arch", "tiny"), r"unknown architecture 'tiny'"),
        ("defence-without-eps", ("--defence", "pgd"), r"--defence pgd needs --eps > 0"),
        ("gaussian-without-sigma", ("--defence", "gaussian"), r"--defence gaussian needs --sigma > 0"),
        ("smoothadv-without-sigma", ("--defence", "smoothadv", "--eps", "0.5"), r"--defence smoothadv needs --sigma"),
        ("gaussian-with-eps", ("--defence", "gaussian", "--sigma", "0.25", "--eps", "0.1"), r"takes no --eps"),
        ("sigma-with-pgd", ("--defence", "pgd", "--eps", "0.3", "--sigma", "0.25"), r"--sigma goes with --defence"),
        (
            "noise-samples-with-pgd",
            ("--defence", "pgd", "--eps", "0.3", "--noise-samples", "4"),
            r"--noise-samples goes with --defence smoothadv",
        ),
        (
            "smoothadv-eps-200",
            ("--defence", "smoothadv", "--sigma", "0.25", "--eps", "200"),
            r"eps for smoothadv is an L2 radius in \[0, 100\]",
        ),
        ("resume-nothing", ("--resume",), r"nothing to resume"),
        ("run-exists", ("--out", "{tmp}/run"), r"already holds a training run; pass --resume"),
        (
            "resume-other-settings",
            ("--resume", "--defence", "pgd", "--eps", "0.3", "--out", "{tmp}/run"),
            r"cannot resume the run in .*run with other settings \(defence 'none' there, 'pgd' here; "
            r"eps 0.0 there, 0.3 here\)",
        ),
    ],
}
for _base, _cases in OWN.items():
    for _id, _extra, _expect in _cases:
        CASES.append(_case(_id, _base, _extra, _expect))
CASES.append(Case("models:unknown-option", ("models", "--bogus"), r"unrecognized arguments: --bogus"))
_EV = ("evaluate", "--model", "mnist-small", "--dataset", "mnist", "--eps", "0.1", "--out", "{tmp}/out")
_CE = ("certify", "--model", "mnist-small", "--dataset", "mnist", "--eps", "0.1", "--out", "{tmp}/out")
CASES += [
    Case("evaluate:indices-out-of-range", (*_EV, "--indices", "9990:10010"),
         r"--indices '9990:10010' is out of range for the 10000 images of the split", True),
    Case("evaluate:indices-not-a-range", (*_EV, "--indices", "abc"), r"--indices 'abc' is neither A:B nor a", True),
    Case("evaluate:split-unknown", (*_EV, "--split", "val"), r"argument --split: invalid choice: 'val'", True),
    Case("certify:eps-missing", ("certify", "--model", "mnist-small", "--dataset", "mnist", "--out", "{tmp}/out"),
         r"--eps is required for --method ibp, crown and alpha-crown", True),
    Case("certify:smoothing-images-with-n", ("certify", "--model", "efficientnet-lite0", "--images", "{tmp}/cat.png",
                                             "--method", "smoothing", "--sigma", "0.25", "--n", "3",
                                             "--out", "{tmp}/out"), r"--images takes every photo given"),
    Case("certify:indices-and-n", (*_CE, "--n", "5", "--indices", "0:5"), r"give --n .* or --indices, not both", True),
    Case("certify:indices-file-not-numbers", (*_CE, "--indices", "{tmp}/indices_bad.txt"),
         r"indices_bad.txt must hold whole numbers", True),
    Case("certify:indices-file-out-of-range", (*_CE, "--indices", "{tmp}/indices_out.txt"),
         r"indices_out.txt: index 10000 is out of range for the 10000 images", True),
    Case("onepixel:data-with-split", ("onepixel", "--data", "{tmp}/empty", "--split", "train", "--out", "{tmp}/out"),
         r"--split chooses a split of --dataset; --data is one set of images"),
    Case("onepixel:indices-out-of-range", (*BASE["onepixel"][:3], "--indices", "9990:10010", "--out", "{tmp}/out"),
         r"--indices '9990:10010' is out of range for the 10000 images of the split", True),
]  # fmt: skip
# --data: folders and CSVs of the user's own images (made by prepare, 28x28 grayscale PNGs)
_EVD = ("evaluate", "--model", "mnist-small", "--eps", "0.1", "--out", "{tmp}/out")
_CED = ("certify", "--model", "mnist-small", "--eps", "0.1", "--out", "{tmp}/out")
_DATA_CASES = [
    ("data-missing", ("--data", "{tmp}/nowhere"), r"--data .*nowhere not found; give a folder with one sub-folder"),
    ("data-empty-folder", ("--data", "{tmp}/empty"), r"empty has no class sub-folders; expected .*/<class>/<image>"),
    ("data-no-images", ("--data", "{tmp}/digits-noimages"), r"holds no images in its 1 class sub-folders"),
    ("data-unknown-class-folder", ("--data", "{tmp}/digits-unknown"),
     r"class folder 'seven': unknown class name 'seven'; the model's classes are '0', '1'"),
    ("data-all-unreadable", ("--data", "{tmp}/digits-corrupt"),
     r"none of the 2 image files could be read \(the first, .*a.png: cannot read"),
    ("data-csv-missing-file", ("--data", "{tmp}/missing-file.csv"),
     r"missing-file.csv line 2: image file .* not found"),
    ("data-csv-bad-label", ("--data", "{tmp}/bad-label.csv"), r"bad-label.csv line 2: unknown class name 'eleven'"),
    ("data-not-a-csv", ("--data", "{tmp}/cat.png"), r"cat.png is a file but not a .csv"),
    ("data-with-split", ("--data", "{tmp}/digits", "--split", "train"), r"--split chooses a split of --dataset"),
    ("data-indices-out-of-range", ("--data", "{tmp}/digits", "--indices", "4:99"),
     r"--indices '4:99' is out of range for the 6 images of --data .*digits"),
    ("data-and-dataset", ("--data", "{tmp}/digits", "--dataset", "mnist"), r"not allowed with argument"),
    # a journal already in --out is left as it was when the data is refused
    ("data-bad-on-resume", ("--data", "{tmp}/bad-label.csv", "--resume", "--out", "{tmp}/unfinished"),
     r"bad-label.csv line 2: unknown class name 'eleven'"),
]  # fmt: skip
for _base, _argv in (("evaluate", _EVD), ("certify", _CED)):
    CASES += [Case(f"{_base}:{_id}", _argv + _extra, _expect) for _id, _extra, _expect in _DATA_CASES]
_VE = ("verify", "--onnx", "{tmp}/net.onnx", "--vnnlib", "{tmp}/prop.vnnlib", "--timeout", "5")
_VI = ("verify", "--instances")
CASES += [
    Case("verify:device-tpu", (*_VE, "--device", "tpu"), r"device 'tpu'"),
    Case("verify:seed-abc", (*_VE, "--seed", "abc"), rf"argument --seed: {INT}"),
    Case("verify:timeout-zero", (*_VE[:-1], "0"), rf"argument --timeout: {FINITE} > 0"),
    Case("verify:onnx-missing", ("verify", "--onnx", "{tmp}/nowhere.onnx", *_VE[3:]),
         r"--onnx .*nowhere.onnx: no such"),
    Case("verify:onnx-not-onnx", ("verify", "--onnx", "{tmp}/text.png", *_VE[3:]), r"text.png is not an ONNX model"),
    Case("verify:onnx-operator", ("verify", "--onnx", "{tmp}/softmax.onnx", *_VE[3:]),
         r"softmax.onnx: node 'probs' \(Softmax\): operator Softmax is not supported; supported: Gemm, MatMul"),
    Case("verify:vnnlib-parse", (*_VE[:3], "--vnnlib", "{tmp}/broken.vnnlib"), r"broken.vnnlib line 3: "),
    Case("verify:vnnlib-box-size", (*_VE[:3], "--vnnlib", "{tmp}/prop5.vnnlib"),
         r"prop5.vnnlib declares 5 inputs, the network takes 4"),
    Case("verify:out-is-a-folder", (*_VE, "--out", "{tmp}/empty"), r"--out .*empty is a folder; give the result file"),
    Case("verify:neither", ("verify", "--timeout", "5"), r"give --onnx NET.onnx and --vnnlib PROP.vnnlib, or"),
    Case("verify:skip-unsupported-one", (*_VE, "--skip-unsupported"), r"--skip-unsupported goes with --instances"),
    Case("verify:instances-and-onnx", (*_VI, "{tmp}/instances.csv", "--onnx", "{tmp}/net.onnx"), r"not both"),
    Case("verify:instances-fields", (*_VI, "{tmp}/instances_fields.csv"),
         r"instances_fields.csv line 2: expected onnx,vnnlib,timeout, got 2 fields"),
    Case("verify:instances-timeout", (*_VI, "{tmp}/instances_timeout.csv"),
         r"instances_timeout.csv line 1: the timeout must be > 0 seconds, got 0"),
    Case("verify:instances-missing-net", (*_VI, "{tmp}/instances_missing.csv"),
         r"instances_missing.csv line 1: the network gone.onnx does not exist"),
    Case("verify:instances-out-is-a-file", (*_VI, "{tmp}/instances.csv", "--out", "{tmp}/taken"),
         r"--out .*taken is an existing file"),
    Case("models:export-not-onnx", ("models", "--export", "mnist-small", "{tmp}/out.txt"),
         r"--export writes an .onnx file, got"),
    Case("models:export-unknown", ("models", "--export", "nosuch", "{tmp}/out.onnx"), r"unknown model 'nosuch'"),
    Case("models:export-not-traceable", ("models", "--export", "efficientnet-lite0", "{tmp}/e.onnx"),
         r"efficientnet-lite0 cannot be exported to ONNX: the network itself \(EfficientNet\) is a module"),
    Case("models:export-no-folder", ("models", "--export", "mnist-small", "{tmp}/nowhere/m.onnx"),
         r"cannot write .*m.onnx: no directory"),
]  # fmt: skip
CASES += [
    Case("report:no-run", ("report", "{tmp}/empty"), r"empty holds no advex run \(none of evaluation.json, "),
    Case("report:missing", ("report", "{tmp}/nowhere"), r"nowhere does not exist"),
    Case("report:a-file", ("report", "{tmp}/taken"), r"taken is not a folder"),
    Case("report:summary-not-json", ("report", "{tmp}/broken-run"), r"evaluation.json is not readable JSON"),
]

_ids = [c.id for c in CASES]
assert len(_ids) == len(set(_ids)), sorted(i for i in _ids if _ids.count(i) > 1)


def argv(case: Case, tmp: Path) -> list[str]:
    return [a.replace("{tmp}", str(tmp)) for a in case.argv]


# ------------------------------------------------------------------ the files the cases name
def prepare(tmp: Path, data: bool) -> None:
    """Fill ``tmp`` with what the cases name; with ``data``, a saved MNIST training run too."""
    import numpy as np
    import torch
    from PIL import Image
    from safetensors.torch import save_file

    from advex.data import sample_photos, save_patch, save_png

    tmp.mkdir(parents=True, exist_ok=True)
    x = sample_photos(["chelsea"])[0].pixels
    save_png(torch.nn.functional.interpolate(x[None], size=(150, 225), mode="bilinear", antialias=True)[0],
             tmp / "cat.png")  # fmt: skip
    (tmp / "text.png").write_text("hello")
    (tmp / "taken").write_text("a file, not a folder")
    (tmp / "empty").mkdir(exist_ok=True)
    (tmp / "broken-run").mkdir(exist_ok=True)
    (tmp / "broken-run" / "evaluation.json").write_text('{"eps": [0.1], "clean_acc": ')  # cut off mid-write
    for folder, n in (("digits/3", 3), ("digits/7", 3), ("digits-unknown/seven", 1)):
        (tmp / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            save_png(torch.full((1, 28, 28), i / 4), tmp / folder / f"{i}.png")
    (tmp / "digits-noimages" / "3").mkdir(parents=True, exist_ok=True)
    (tmp / "digits-noimages" / "3" / "notes.txt").write_text("not an image")
    (tmp / "digits-corrupt" / "3").mkdir(parents=True, exist_ok=True)
    (tmp / "digits-corrupt" / "3" / "a.png").write_text("not a png")
    (tmp / "digits-corrupt" / "3" / "b.png").write_bytes((tmp / "digits" / "3" / "0.png").read_bytes()[:40])  # cut
    (tmp / "bad-label.csv").write_text("path,label\ndigits/3/0.png,eleven\n")
    (tmp / "missing-file.csv").write_text("path,label\ndigits/3/nothere.png,3\n")
    (tmp / "indices_bad.txt").write_text("1, 2, x\n")
    (tmp / "indices_out.txt").write_text("3 10000\n")
    (tmp / "unfinished" / "journal").mkdir(parents=True, exist_ok=True)  # a run stopped part-way, of another command
    (tmp / "unfinished" / "journal" / "run.json").write_text('{"settings": {"command": "evaluate"}, "complete": false}')
    Image.new("L", (16000, 16000), 128).save(tmp / "huge.png")  # 256 megapixels, a 0.3 MB file
    Image.new("RGB", (6000, 4000), (120, 130, 140)).save(tmp / "big.png")
    Image.new("RGB", (10000, 10000), (120, 130, 140)).save(tmp / "p100mp.png")
    save_file({"w": torch.zeros(2, 2)}, str(tmp / "other.safetensors"))
    torch.save({"w": _Evil()}, tmp / "pickled.pt")
    (tmp / "garbage.pt").write_bytes(np.arange(256, dtype=np.uint8).tobytes())
    marker = tmp / "code-ran"
    (tmp / "evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\nfrom torch import nn\nmodel = nn.Flatten()\n"
    )
    (tmp / "custom.py").write_text(
        "from torch import nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc = nn.Linear(784, 10)\n"
        "    def forward(self, x):\n"
        "        return self.fc(x.flatten(1))\n"
        "def build():\n"
        "    return Net()\n"
    )
    patch, mask = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0)), torch.ones(1, 8, 8)
    save_patch(tmp / "patch.png", patch, mask, pixels=8, meta={"target_name": "3", "size": 0.1, "model": "mnist-small"})
    save_patch(tmp / "evil_patch.png", patch, mask, pixels=8,
               meta={"target_name": "3", "size": 0.1, "model": str(tmp / "evil.py")})  # fmt: skip
    _verify_files(tmp)
    if data:
        from advex.defences import TrainConfig, train

        cfg = TrainConfig(train_n=256, batch_size=64, epochs=1, max_steps=1, eval_n=16, eval_steps=1)
        train(cfg, tmp / "run", progress=False, verbose=False)


class _Evil:
    """Unpickling this would run print(...): a checkpoint that must never be unpickled."""

    def __reduce__(self):
        return (print, ("unpickled!",))


def _verify_files(tmp: Path) -> None:
    """A small ONNX network (4 inputs, 3 outputs) with a property, one with a Softmax, and bad
    VNNLIB files and instance lists."""
    import onnx
    import torch
    from onnx import TensorProto, helper

    from advex.certify.export import export_onnx

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).eval()
    export_onnx(net, tmp / "net.onnx", (4,))
    decl = "".join(f"(declare-const X_{i} Real)\n" for i in range(4)) + "".join(
        f"(declare-const Y_{j} Real)\n" for j in range(3)
    )
    box = "".join(f"(assert (>= X_{i} 0.0))\n(assert (<= X_{i} 0.1))\n" for i in range(4))
    (tmp / "prop.vnnlib").write_text(decl + box + "(assert (>= Y_1 Y_0))\n")
    (tmp / "prop5.vnnlib").write_text(
        "(declare-const X_4 Real)\n"
        + decl
        + box
        + "(assert (>= X_4 0.0))\n(assert (<= X_4 0.1))\n(assert (>= Y_1 Y_0))\n"
    )
    (tmp / "broken.vnnlib").write_text("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= X_0))\n")
    g = helper.make_graph(
        [helper.make_node("Softmax", ["x"], ["p"], name="probs")],
        "softmax",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["batch", 4])],
    )
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(tmp / "softmax.onnx"))
    (tmp / "instances.csv").write_text("net.onnx,prop.vnnlib,5\n")
    (tmp / "instances_fields.csv").write_text("net.onnx,prop.vnnlib,5\nnet.onnx,prop.vnnlib\n")
    (tmp / "instances_timeout.csv").write_text("net.onnx,prop.vnnlib,0\n")
    (tmp / "instances_missing.csv").write_text("gone.onnx,prop.vnnlib,5\n")
