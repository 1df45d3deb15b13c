"""Class names: the ImageNet-1k list that ships with advex (display names, WordNet synonyms
and WordNet ids), and name -> index lookup."""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources

from advex.errors import AdvexError

_WNID = re.compile(r"n\d{8}")  # a WordNet id, as ImageNet names its class folders (n01440764)


@lru_cache(maxsize=1)
def _imagenet() -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...], tuple[str, ...]]:
    """(display names, synonyms, WordNet ids) of the 1000 classes; each row of the JSON is
    [name, [synonyms], wnid]."""
    text = resources.files("advex.data").joinpath("imagenet_classes.json").read_text("utf-8")
    rows = json.loads(text)["classes"]
    return tuple(r[0] for r in rows), tuple(tuple(r[1]) for r in rows), tuple(r[2] for r in rows)


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet-1k display names, index i is class i ("ostrich" is 9)."""
    return list(_imagenet()[0])


def imagenet_synonyms() -> list[list[str]]:
    """WordNet synonyms of each ImageNet class (index i -> names that resolve to i)."""
    return [list(s) for s in _imagenet()[1]]


def imagenet_wnids() -> list[str]:
    """The WordNet ids of the 1000 ImageNet-1k classes ("n01440764" is class 0, tench): the
    names of the class folders of ImageNet's train/ and val/, whose sorted order is the
    class order."""
    return list(_imagenet()[2])


def _wnid_index(wnid: str, classes: Sequence[str]) -> int:
    """The class index of an ImageNet WordNet id, for a model whose classes are ImageNet-1k's."""
    names, _, wnids = _imagenet()
    if len(classes) != len(names) or tuple(classes) != names:
        raise AdvexError(
            f"class {wnid!r} is a WordNet id, but the model's classes are not the ImageNet-1k list; "
            "give a class name or index"
        )
    try:
        return wnids.index(wnid)
    except ValueError:
        raise AdvexError(f"WordNet id {wnid!r} is not one of the 1000 ImageNet-1k classes") from None


def resolve_class(
    label: int | str,
    classes: Sequence[str] | None,
    synonyms: Sequence[Sequence[str]] | None = None,
    num_classes: int | None = None,
) -> int:
    """Turn a class index or name into an index.

    Names match case-insensitively against the display names, then the synonyms; a
    name that matches nothing (or several classes) is an :class:`AdvexError` that lists
    close matches. Digit strings ("9") are indices. A WordNet id ("n01518878") names its
    class when ``classes`` is the ImageNet-1k list (:func:`imagenet_classes`).
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
    if _WNID.fullmatch(key):
        return _wnid_index(key, classes)
    pool = {c.lower(): c for c in classes}
    for syn in synonyms or []:
        for s in syn:
            pool.setdefault(s.lower(), s)
    keys = difflib.get_close_matches(key, list(pool), n=5, cutoff=0.6)
    keys += [k for k in pool if key in k and k not in keys]
    if keys:
        hint = "close matches: " + ", ".join(repr(pool[k]) for k in keys[:5])
    elif len(classes) <= 20:
        hint = "the model's classes are " + ", ".join(repr(c) for c in classes) + " (or their indices)"
    else:
        hint = f"no close match among the model's {len(classes)} class names (synonyms and indices also work)"
    raise AdvexError(f"unknown class name {label!r}; {hint}")
