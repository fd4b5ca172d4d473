"""Specific Character Set decoding for the index, from raw bytes."""
from __future__ import annotations

import pytest

from dsmpacs.archive.charset import decode_text, normalise, parse_charset, person_name_search_forms

NAME = "Zhang^San=张^三=zhang^san"


@pytest.mark.parametrize("charset, codec", [
    ("GB18030", "gb18030"), ("GBK", "gbk"), ("ISO_IR 192", "utf-8"),
])
def test_chinese_single_charsets(charset, codec):
    decoded = decode_text(NAME.encode(codec), parse_charset(charset))
    assert decoded.ok and decoded.text == NAME


def test_iso_2022_ir_58_escape_is_removed():
    # PS3.5 Annex K example: G1 designated to GB 2312 with ESC $ ) A
    raw = b"Zhang^XiaoDong=\x1b$)A\xd5\xc5^\x1b$)A\xd0\xa1\xb6\xab="
    decoded = decode_text(raw, parse_charset("\\ISO 2022 IR 58"))
    assert decoded.ok and decoded.text == "Zhang^XiaoDong=张^小东="
    assert "\x1b" not in decoded.text


def test_gb18030_four_byte_character():
    text = "䶮^𠀀"          # outside GBK: needs GB18030's four-byte forms
    decoded = decode_text(text.encode("gb18030"), ["GB18030"])
    assert decoded.ok and decoded.text == text


def test_latin1_and_japanese():
    assert decode_text("Müller^Jürgen".encode("latin-1"), ["ISO_IR 100"]).text == "Müller^Jürgen"
    raw = b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B="
    decoded = decode_text(raw, parse_charset("\\ISO 2022 IR 87"))
    assert decoded.ok and decoded.text == "Yamada^Tarou=山田^太郎="


def test_undeclared_chinese_is_still_findable():
    decoded = decode_text("王^五".encode("gb18030"), [])
    assert decoded.ok and decoded.text == "王^五"


@pytest.mark.parametrize("raw, charsets", [
    (b"\xff\xfeabc", ["ISO_IR 192"]),
    (b"abc\x80\xff", ["GB18030"]),
    (b"abc", ["NOT A CHARSET"]),
])
def test_broken_text_is_flagged_not_fatal(raw, charsets):
    decoded = decode_text(raw, charsets)
    assert not decoded.ok and decoded.reason
    assert isinstance(decoded.text, str)


def test_search_forms():
    assert person_name_search_forms("ZHANG^SAN^^^=张^三=") == ("zhang^san", "张^三", "")
    assert normalise("ＺＨＡＮＧ*") == "zhang*"        # full-width letters, wildcard kept
