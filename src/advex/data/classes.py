"""Class names: the ImageNet-1k list that ships with advex, and name -> index lookup."""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources

from advex.errors import AdvexError


@lru_cache(maxsize=1)
def _imagenet() -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]:
    text = resources.files("advex.data").joinpath("imagenet_classes.json").read_text("utf-8")
    rows = json.loads(text)["classes"]
    return tuple(r[0] for r in rows), tuple(tuple(r[1]) for r in rows)


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet-1k display names, index i is class i ("ostrich" is 9)."""
    return list(_imagenet()[0])


def imagenet_synonyms() -> list[list[str]]:
    """WordNet synonyms of each ImageNet class (index i -> names that resolve to i)."""
    return [list(s) for s in _imagenet()[1]]


def resolve_class(
    label: int | str,
    classes: Sequence[str] | None,
    synonyms: Sequence[Sequence[str]] | None = None,
    num_classes: int | None = None,
) -> int:
    """Turn a class index or name into an index.

    Names match case-insensitively against the display names, then the synonyms; a
    name that matches nothing (or several classes) is an :class:`AdvexError` that lists
    close matches. Digit strings ("9") are indices.
    """
    n = len(classes) if classes is not None else num_classes
    if isinstance(label, bool):
        raise AdvexError(f"class label {label!r} is a bool; give a class index or name")
    if isinstance(label, str) and label.strip().lstrip("-").isdigit():
        label = int(label.strip())
    if isinstance(label, int) or hasattr(label, "__index__"):
        idx = int(label)
        if n is not None and not 0 <= idx < n:
            raise AdvexError(f"class index {idx} is out of range: the model has {n} classes (0..{n - 1})")
        return idx
    if not isinstance(label, str):
        raise AdvexError(f"class label must be an int index or a str name, got {type(label).__name__}")
    if classes is None:
        raise AdvexError(f"class name {label!r} given, but the model has no class names; give an index")
    key = " ".join(label.lower().replace("_", " ").split())
    exact = [i for i, c in enumerate(classes) if c.lower() == key]
    if len(exact) == 1:
        return exact[0]
    hits = sorted({i for i, syn in enumerate(synonyms or []) if any(s.lower() == key for s in syn)})
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        options = ", ".join(f"{classes[i]!r} ({i})" for i in hits)
        raise AdvexError(f"class name {label!r} is ambiguous: it names {options}; use one of those")
    pool = {c.lower(): c for c in classes}
    for syn in synonyms or []:
        for s in syn:
            pool.setdefault(s.lower(), s)
    keys = difflib.get_close_matches(key, list(pool), n=5, cutoff=0.6)
    keys += [k for k in pool if key in k and k not in keys]
    hint = ", ".join(repr(pool[k]) for k in keys[:5]) or "none close"
    raise AdvexError(f"unknown class name {label!r}; close matches: {hint}")
