"""MSH-18, the character set of an HL7 v2 message, and decoding by it.

The delimiters are ASCII, but in GB 18030 (and GBK) the second byte of a Chinese
character may be ``|``, ``^``, ``~`` or ``\\``: a message is decoded as a whole
before it is split into fields. MSH-18 is found in the first segment read as
Latin-1 (every byte one character, so the ASCII fields before it stand where
they are), and checked again in the decoded message; when a multi-byte
character before it (a Chinese sending facility) held a delimiter byte, UTF-8 and
GB 18030 are tried, and the one whose decoded MSH-18 names it is kept.
"""
from __future__ import annotations

# HL7 table 0211 (alternate character sets) -> Python codec. Absent: HL7 says ASCII;
# it is read as UTF-8, which decodes ASCII identically and reads right a sender that
# writes UTF-8 without saying so (common in Chinese hospital systems).
CODECS = {
    "": "utf-8",
    "ASCII": "ascii",
    "8859/1": "latin-1",
    "UNICODE UTF-8": "utf-8",
    "UTF-8": "utf-8",
    "GB 18030-2000": "gb18030",
    "GB 18030": "gb18030",
    "GB18030": "gb18030",
    "BIG-5": "big5",
}


class CharsetProblem(ValueError):
    """MSH-18 names a set this archive does not read, or the bytes are not in it."""


def declared(first_segment: str) -> str:
    """MSH-18 (its first repetition) of a first segment, '' when absent or not an MSH."""
    if not first_segment.startswith("MSH") or len(first_segment) < 4:
        return ""
    fields = first_segment.split(first_segment[3])
    if len(fields) <= 17:
        return ""
    repetition = fields[1][1:2] if len(fields[1]) > 1 else "~"
    return fields[17].split(repetition)[0].strip()


def codec(name: str) -> str:
    try:
        return CODECS[name.strip().upper()]
    except KeyError:
        raise CharsetProblem(f"character set {name[:40]!r} (MSH-18) is not supported") from None


def decode(data: bytes) -> tuple[str, str]:
    """(text, MSH-18 value) of one message's bytes."""
    head = data.split(b"\r", 1)[0].split(b"\n", 1)[0].decode("latin-1")
    name = declared(head)
    problem: CharsetProblem | None = None
    try:
        return _decoded_as(data, codec(name))
    except CharsetProblem as exc:
        problem = exc
    # A multi-byte character before MSH-18 (a Chinese sending facility in MSH-4) held
    # a delimiter byte, so the Latin-1 reading found the wrong field: try the sets such
    # a message comes in, and keep the one its own decoded MSH-18 names.
    for candidate in ("utf-8", "gb18030"):
        try:
            return _decoded_as(data, candidate)
        except CharsetProblem:
            continue
    raise problem


def _decoded_as(data: bytes, codec_name: str) -> tuple[str, str]:
    """The text decoded with ``codec_name``, when its MSH-18 names that same codec."""
    try:
        text = data.decode(codec_name)
    except UnicodeDecodeError as exc:
        raise CharsetProblem(f"byte {exc.start} is not {codec_name} (MSH-18)") from None
    name = declared(text.split("\r", 1)[0].split("\n", 1)[0])
    if codec(name) != codec_name:
        raise CharsetProblem(f"MSH-18 {name[:40]!r} does not name the set the message is in")
    return text, name


def encode(text: str, name: str) -> bytes:
    """The acknowledgement in the request's character set (what it echoes came from it)."""
    try:
        return text.encode(codec(name), "replace")
    except CharsetProblem:
        return text.encode("utf-8", "replace")
