"""VNNLIB properties (the format of the verification competition, VNN-COMP), read into input
boxes and the unsafe output region of each.

A file declares the inputs ``X_0 .. X_{n-1}`` and outputs ``Y_0 .. Y_{k-1}`` as ``Real``
constants and asserts constraints on them. Asserts on inputs alone give a box (one lower and
one upper bound per input); the other asserts describe where the network would be *unsafe*:
their conjunction, each one an atom ``(<= a b)`` / ``(>= a b)`` or an ``or`` of atoms and
``and``s of atoms, is read as a disjunction of conjunctions (disjunctive normal form). A
conjunction may bound inputs too (VNN-COMP files that list several input boxes, each with its
own output constraints, as ``(or (and <box> <outputs>) ...)``): it then applies inside its
own box, intersected with the file's. The property holds when no point of a box reaches any
of the conjunctions that apply there. Terms are variables, numbers and linear sums (``+``,
``-``, ``*`` by a number); an input constraint must bound one input by a number.

Each output atom is kept as ``coef . Y + const <= 0`` (coef (k,), a float). Every error names
the line and what is wrong.
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from advex.errors import AdvexError

_TOKEN = re.compile(r"\(|\)|[^\s()]+")
_VAR = re.compile(r"^([XY])_(\d+)$")


class VnnlibError(AdvexError):
    """A VNNLIB file that does not parse, or says something this reader does not support."""


Conjunction = list[tuple[torch.Tensor, float]]  # atoms (coef (k,), const): coef . Y + const <= 0
_MAX_CONJUNCTIONS = 100_000


@dataclass
class Region:
    """An input box ``lower``/``upper`` (n,) and the unsafe region there: a list of
    conjunctions, each a list of (coef (k,), const) meaning coef . Y + const <= 0 (an empty
    conjunction: every output is unsafe)."""

    lower: torch.Tensor
    upper: torch.Tensor
    unsafe: list[Conjunction]


@dataclass
class Property:
    """A property: its regions (most files have one: one box and the unsafe outputs there)
    and the number of outputs it speaks of. It holds when it holds in every region."""

    regions: list[Region]
    outputs: int

    def _one(self) -> Region:
        if len(self.regions) != 1:
            raise AdvexError(f"this property has {len(self.regions)} input boxes; read them from .regions")
        return self.regions[0]

    @property
    def lower(self) -> torch.Tensor:
        return self._one().lower

    @property
    def upper(self) -> torch.Tensor:
        return self._one().upper

    @property
    def unsafe(self) -> list[Conjunction]:
        return self._one().unsafe

    @property
    def inputs(self) -> int:
        return int(self.regions[0].lower.numel())


def _parse(text: str, where: str) -> list[tuple[object, int]]:
    """The top-level s-expressions with the line each starts on."""
    stack: list[list] = []
    out, line_of = [], 1
    for line_no, line in enumerate(text.splitlines(), 1):
        line = line.split(";", 1)[0]
        for tok in _TOKEN.findall(line):
            if tok == "(":
                if not stack:
                    line_of = line_no
                stack.append([])
            elif tok == ")":
                if not stack:
                    raise VnnlibError(f"{where} line {line_no}: a ')' closes nothing")
                done = stack.pop()
                if stack:
                    stack[-1].append(done)
                else:
                    out.append((done, line_of))
            elif stack:
                stack[-1].append(tok)
            else:
                raise VnnlibError(f"{where} line {line_no}: {tok!r} stands outside any (...)")
    if stack:
        raise VnnlibError(f"{where} line {line_of}: a '(' is never closed")
    return out


def read_vnnlib(source: str | Path, inputs: int | None = None, outputs: int | None = None) -> Property:
    """Read a VNNLIB file (a path, gzipped if it ends in .gz, or the text itself when it holds a '(') into a
    :class:`Property`; ``inputs`` / ``outputs``: the network's sizes, checked against the file."""
    if isinstance(source, Path) or "(" not in str(source):
        path = Path(source)
        if not path.is_file():
            raise VnnlibError(f"VNNLIB file {path} does not exist")
        raw = path.read_bytes()
        if path.suffix == ".gz":  # VNN-COMP's benchmark sets ship them gzipped
            try:
                raw = gzip.decompress(raw)
            except (OSError, EOFError) as e:
                raise VnnlibError(f"{path.name} is not a readable gzip file: {e}") from None
        try:
            text, where = raw.decode(), path.name
        except UnicodeDecodeError:
            raise VnnlibError(f"{path.name} is not a text file") from None
    else:
        text, where = str(source), "the property"
    declared: dict[str, set[int]] = {"X": set(), "Y": set()}
    box: dict[int, list[float | None]] = {}
    output_asserts: list[tuple[object, int]] = []  # every assert but the plain input bounds
    for expr, line in _parse(text, where):
        if not expr or not isinstance(expr[0], str):
            raise VnnlibError(f"{where} line {line}: an empty or unnamed expression")
        head = expr[0]
        if head == "declare-const":
            if len(expr) != 3 or expr[2] != "Real" or not isinstance(expr[1], str) or not _VAR.match(expr[1]):
                raise VnnlibError(f"{where} line {line}: expected (declare-const X_i Real) or (declare-const Y_i Real)")
            kind, i = _VAR.match(expr[1]).groups()
            declared[kind].add(int(i))
        elif head == "assert":
            if len(expr) != 2:
                raise VnnlibError(f"{where} line {line}: (assert ...) takes one constraint")
            vars_ = _variables(expr[1])
            if vars_ and all(v.startswith("X") for v in vars_) and expr[1] and expr[1][0] in ("<=", ">="):
                _input_bound(expr[1], box, where, line)
            else:
                output_asserts.append((expr[1], line))
        else:
            raise VnnlibError(f"{where} line {line}: unknown command {head!r}; expected declare-const or assert")
    n, k = _count(declared["X"], "X", where), _count(declared["Y"], "Y", where)
    if inputs is not None and n != inputs:
        raise VnnlibError(f"{where} declares {n} inputs, the network takes {inputs}")
    if outputs is not None and k != outputs:
        raise VnnlibError(f"{where} declares {k} outputs, the network gives {outputs}")
    extra = sorted(i for i in box if i >= n)
    if extra:
        raise VnnlibError(f"{where}: X_{extra[0]} is bounded but not declared")
    dnf: list[list] = [[]]  # conjunctions of atoms ("X", i, bound, is_upper) and ("Y", coef, const)
    for expr, line in output_asserts:
        terms = _dnf(expr, n, k, where, line)
        if len(dnf) * len(terms) > _MAX_CONJUNCTIONS:
            raise VnnlibError(f"{where} line {line}: the unsafe region has over {_MAX_CONJUNCTIONS:,} conjunctions")
        dnf = [a + b for a in dnf for b in terms]
    if not any(atom[0] == "Y" for conj in dnf for atom in conj):
        raise VnnlibError(f"{where}: no constraint on the outputs, so nothing to verify")
    regions: dict[tuple, Region] = {}
    for conj in dnf:
        own = {i: list(v) for i, v in box.items()}
        for atom in conj:
            if atom[0] == "X":
                _tighten(own, atom[1], atom[2], atom[3])
        lower, upper = _box(own, n, where)
        if bool((lower > upper).any()):
            if len(dnf) == 1:
                i = int((lower > upper).nonzero()[0])
                raise VnnlibError(
                    f"{where}: input X_{i} has lower bound {lower[i]:g} above its upper bound {upper[i]:g}"
                )
            continue  # this conjunction's box is empty: it never applies
        key = (tuple(lower.tolist()), tuple(upper.tolist()))
        region = regions.setdefault(key, Region(lower, upper, []))
        region.unsafe.append([(a[1], a[2]) for a in conj if a[0] == "Y"])
    if not regions:
        raise VnnlibError(f"{where}: every input box of the property is empty")
    return Property(list(regions.values()), k)


def _box(bounds: dict[int, list[float | None]], n: int, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    lower, upper = torch.empty(n, dtype=torch.float64), torch.empty(n, dtype=torch.float64)
    for i in range(n):
        lo, hi = bounds.get(i, [None, None])
        if lo is None or hi is None:
            raise VnnlibError(f"{where}: input X_{i} needs a lower and an upper bound (its box)")
        lower[i], upper[i] = lo, hi
    return lower, upper


def _count(ids: set[int], kind: str, where: str) -> int:
    if not ids:
        raise VnnlibError(f"{where} declares no {kind}_i variables")
    n = max(ids) + 1
    if len(ids) != n:
        missing = min(set(range(n)) - ids)
        raise VnnlibError(f"{where} declares {kind}_{n - 1} but not {kind}_{missing}")
    return n


def _variables(expr) -> set[str]:
    if isinstance(expr, str):
        return {expr} if _VAR.match(expr) else set()
    return set().union(*(_variables(e) for e in expr)) if expr else set()


def _linear(expr, where: str, line: int) -> tuple[dict[str, float], float]:
    """A term as (variable -> coefficient, constant)."""
    if isinstance(expr, str):
        if _VAR.match(expr):
            return {expr: 1.0}, 0.0
        try:
            return {}, float(expr)
        except ValueError:
            raise VnnlibError(f"{where} line {line}: {expr!r} is neither a declared variable nor a number") from None
    if not expr:
        raise VnnlibError(f"{where} line {line}: an empty term ()")
    op, args = expr[0], [_linear(a, where, line) for a in expr[1:]]
    if op == "+" or (op == "-" and len(args) >= 2):
        coef, const = dict(args[0][0]), args[0][1]
        for c, k in args[1:]:
            s = 1.0 if op == "+" else -1.0
            for v, w in c.items():
                coef[v] = coef.get(v, 0.0) + s * w
            const += s * k
        return coef, const
    if op == "-" and len(args) == 1:
        return {v: -w for v, w in args[0][0].items()}, -args[0][1]
    if op == "*" and len(args) == 2:
        (ca, ka), (cb, kb) = args
        if ca and cb:
            raise VnnlibError(f"{where} line {line}: a product of two variables is not linear")
        if not ca:
            return {v: ka * w for v, w in cb.items()}, ka * kb
        return {v: kb * w for v, w in ca.items()}, ka * kb
    raise VnnlibError(f"{where} line {line}: unknown term {op!r}; expected +, -, * or an atom")


def _atom(expr, where: str, line: int) -> tuple[dict[str, float], float]:
    """(<= a b) or (>= a b) as (coef, const) with coef . v + const <= 0."""
    if not isinstance(expr, list) or len(expr) != 3 or expr[0] not in ("<=", ">="):
        raise VnnlibError(f"{where} line {line}: expected a constraint (<= a b) or (>= a b), got {_show(expr)}")
    (ca, ka), (cb, kb) = _linear(expr[1], where, line), _linear(expr[2], where, line)
    if expr[0] == ">=":
        (ca, ka), (cb, kb) = (cb, kb), (ca, ka)
    coef = dict(ca)
    for v, w in cb.items():
        coef[v] = coef.get(v, 0.0) - w
    return coef, ka - kb


def _bound_of(expr, where: str, line: int) -> tuple[int, float, bool]:
    """An input atom as (i, bound, is_upper): X_i <= bound or X_i >= bound."""
    coef, const = _atom(expr, where, line)
    coef = {v: w for v, w in coef.items() if w != 0}
    if len(coef) != 1 or not next(iter(coef)).startswith("X"):
        raise VnnlibError(f"{where} line {line}: an input constraint must bound one X_i by a number (a box)")
    ((v, w),) = coef.items()
    return int(_VAR.match(v).group(2)), -const / w, w > 0  # w X + const <= 0


def _tighten(box: dict, i: int, bound: float, upper: bool) -> None:
    lo_hi = box.setdefault(i, [None, None])
    if upper:
        lo_hi[1] = bound if lo_hi[1] is None else min(lo_hi[1], bound)
    else:
        lo_hi[0] = bound if lo_hi[0] is None else max(lo_hi[0], bound)


def _input_bound(expr, box: dict, where: str, line: int) -> None:
    _tighten(box, *_bound_of(expr, where, line))


def _dnf(expr, n: int, k: int, where: str, line: int) -> list[list[tuple]]:
    """A constraint as a list of conjunctions of atoms: ("Y", coef (k,), const) on the outputs,
    ("X", i, bound, is_upper) on one input."""
    if isinstance(expr, list) and expr and expr[0] == "or":
        return [c for e in expr[1:] for c in _dnf(e, n, k, where, line)]
    if isinstance(expr, list) and expr and expr[0] == "and":
        out: list[list] = [[]]
        for e in expr[1:]:
            out = [a + b for a in out for b in _dnf(e, n, k, where, line)]
            if len(out) > _MAX_CONJUNCTIONS:
                raise VnnlibError(f"{where} line {line}: over {_MAX_CONJUNCTIONS:,} conjunctions")
        return out
    vars_ = _variables(expr)
    if any(v.startswith("X") for v in vars_):
        if any(v.startswith("Y") for v in vars_):
            raise VnnlibError(f"{where} line {line}: a constraint mixing inputs and outputs is not supported")
        i, bound, upper = _bound_of(expr, where, line)
        if i >= n:
            raise VnnlibError(f"{where} line {line}: X_{i} is not declared")
        return [[("X", i, bound, upper)]]
    coef, const = _atom(expr, where, line)
    vec = torch.zeros(k, dtype=torch.float64)
    for v, w in coef.items():
        i = int(_VAR.match(v).group(2))
        if i >= k:
            raise VnnlibError(f"{where} line {line}: {v} is not declared")
        vec[i] += w
    return [[("Y", vec, const)]]


def _show(expr) -> str:
    if isinstance(expr, str):
        return expr
    return "(" + " ".join(_show(e) for e in expr) + ")"


def robustness_vnnlib(x: torch.Tensor, label: int, eps: float, outputs: int) -> str:
    """The VNNLIB text saying that every input within ``eps`` (L-inf) of ``x`` (pixels in
    [0, 1], any shape, flattened in C-order), clipped to [0, 1], is classified ``label``: unsafe
    where some other output is >= output ``label``. The box is written as fp32 computes it
    (``(x - eps).clamp(0, 1)``), to the last bit, so the ONNX and PyTorch paths bound the same
    box."""
    x = x.detach().float().cpu().flatten()
    if not 0 <= label < outputs:
        raise AdvexError(f"label {label} is not one of the {outputs} outputs")
    lo, hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    lines = [f"; L-inf ball of radius {eps!r} around an input of {x.numel()} values, label {label}"]
    lines += [f"(declare-const X_{i} Real)" for i in range(x.numel())]
    lines += [f"(declare-const Y_{j} Real)" for j in range(outputs)]
    for i, (a, b) in enumerate(zip(lo.tolist(), hi.tolist())):
        lines += [f"(assert (>= X_{i} {a!r}))", f"(assert (<= X_{i} {b!r}))"]
    others = " ".join(f"(and (>= Y_{j} Y_{label}))" for j in range(outputs) if j != label)
    lines.append(f"(assert (or {others}))")
    return "\n".join(lines) + "\n"
