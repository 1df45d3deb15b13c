import pytest

from advex.data.classes import imagenet_classes, imagenet_synonyms, imagenet_wnids, resolve_class
from advex.errors import AdvexError


def _r(label):
    return resolve_class(label, imagenet_classes(), imagenet_synonyms())


def test_imagenet_list_is_complete_and_unique():
    names = imagenet_classes()
    assert len(names) == 1000 and len(set(names)) == 1000
    assert names[9] == "ostrich" and names[0] == "tench" and names[999] == "toilet tissue"


@pytest.mark.parametrize("label", ["ostrich", "OSTRICH", " Ostrich ", "Struthio camelus", 9, "9"])
def test_names_resolve_case_insensitively(label):
    assert _r(label) == 9


def test_unknown_name_lists_close_matches():
    with pytest.raises(AdvexError, match=r"unknown class name 'ostrch'.*'ostrich'"):
        _r("ostrch")


def test_ambiguous_synonym_is_an_error_naming_both():
    assert _r("crane bird") == 134 and _r("construction crane") == 517
    with pytest.raises(AdvexError, match="ambiguous.*134.*517"):
        _r("crane")


def test_index_out_of_range():
    with pytest.raises(AdvexError, match="out of range"):
        _r(1000)
    with pytest.raises(AdvexError, match="out of range"):
        _r(-1)


def test_name_without_class_names():
    with pytest.raises(AdvexError, match="no class names"):
        resolve_class("cat", None, None, num_classes=10)


def test_imagenet_wordnet_ids_are_the_sorted_ilsvrc_ids():
    wnids = imagenet_wnids()
    assert len(wnids) == 1000 and len(set(wnids)) == 1000 and wnids == sorted(wnids)
    assert wnids[0] == "n01440764" and wnids[9] == "n01518878"  # tench, ostrich


def test_wordnet_id_resolves_for_imagenet_classes_only():
    assert _r("n01518878") == 9 and _r("N01440764") == 0
    with pytest.raises(AdvexError, match="'n99999999' is not one of the 1000 ImageNet-1k classes"):
        _r("n99999999")
    with pytest.raises(AdvexError, match="WordNet id, but the model's classes are not the ImageNet-1k list"):
        resolve_class("n01518878", ["cat", "dog"])
