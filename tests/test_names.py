"""Typed person names to DICOM patterns (archive/names.py)."""
from __future__ import annotations

from dsmpacs.archive.names import typed_name_patterns


def test_spaces_become_component_separators_in_every_place():
    assert typed_name_patterns("Wang Xiaoming") == ["Wang^Xiaoming*", "Wang Xiaoming*"]
    assert typed_name_patterns("Li Xiao Long") == ["Li^Xiao^Long*", "Li^Xiao Long*",
                                                   "Li Xiao^Long*", "Li Xiao Long*"]


def test_an_unseparated_chinese_name_splits_after_a_one_or_two_character_family_name():
    assert typed_name_patterns("王小明") == ["王小明*", "王^小明*", "王小^明*"]
    assert typed_name_patterns("王") == ["王*"]


def test_dicom_forms_and_wildcards_are_taken_as_typed():
    assert typed_name_patterns("张^晓龙") == ["张^晓龙*"]
    assert typed_name_patterns("li*") == ["li*"]
    assert typed_name_patterns("Zhang^San=张^三") == ["Zhang^San=张^三*"]
    assert typed_name_patterns("  ") == []


def test_full_width_input_is_folded_and_alternatives_stay_bounded():
    assert typed_name_patterns("Ｗａｎｇ") == ["Wang*"]
    assert len(typed_name_patterns(" ".join("abcdefghij"))) <= 5
