"""The HL7 v2.5 original-mode acknowledgement (chapter 2.9.2): ACK with MSH, MSA
and one ERR per problem.

AA: the order was taken. AE: the message was read but its content cannot be
applied (a required field missing, an unknown order, an invalid value); the
sender should correct it, not resend it. AR: the message was rejected as a whole
(not an ORM^O01, an unsupported character set or version, a sender not allowed,
too large, unreadable, or the index unavailable); resending the same message
later may succeed only in the last case.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone

# HL7 table 0357 (message error condition codes), the ones this archive answers.
SEGMENT_SEQUENCE = 100
REQUIRED_MISSING = 101
DATA_TYPE_ERROR = 102
TABLE_VALUE_NOT_FOUND = 103
UNSUPPORTED_MESSAGE_TYPE = 200
UNSUPPORTED_EVENT = 201
UNSUPPORTED_VERSION = 203
UNKNOWN_KEY = 204
DUPLICATE_KEY = 205
INTERNAL_ERROR = 207
TEXT = {
    SEGMENT_SEQUENCE: "Segment sequence error",
    REQUIRED_MISSING: "Required field missing",
    DATA_TYPE_ERROR: "Data type error",
    TABLE_VALUE_NOT_FOUND: "Table value not found",
    UNSUPPORTED_MESSAGE_TYPE: "Unsupported message type",
    UNSUPPORTED_EVENT: "Unsupported event code",
    UNSUPPORTED_VERSION: "Unsupported version id",
    UNKNOWN_KEY: "Unknown key identifier",
    DUPLICATE_KEY: "Duplicate key identifier",
    INTERNAL_ERROR: "Application internal error",
}


@dataclass(frozen=True)
class Problem:
    code: int                   # table 0357
    segment: str = ""           # where: segment ID, field and component (ERR-2)
    field: int = 0
    component: int = 0
    text: str = ""              # for a person (ERR-8)


@dataclass
class Outcome:
    code: str                   # AA, AE or AR
    text: str = ""              # MSA-3
    problems: list[Problem] = field(default_factory=list)


@dataclass(frozen=True)
class Header:
    """What the ACK echoes of the request's MSH (all '' when it had none)."""
    sending_application: str = ""
    sending_facility: str = ""
    receiving_facility: str = ""
    event: str = ""
    control_id: str = ""
    processing_id: str = ""
    version: str = ""
    charset: str = ""


def escape(value: str) -> str:
    """HL7 escape sequences (2.7.4) for the standard delimiters; control characters dropped."""
    value = value.replace("\\", "\\E\\").replace("|", "\\F\\").replace("^", "\\S\\")
    value = value.replace("~", "\\R\\").replace("&", "\\T\\")
    return "".join(c for c in value if c >= " ")


def message(header: Header, outcome: Outcome, application: str) -> str:
    """The ACK as text, segments ended by CR (2.6.1)."""
    now = datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S")
    event = escape(header.event) or ""
    msh = ["MSH", "^~\\&", escape(application), escape(header.receiving_facility),
           escape(header.sending_application), escape(header.sending_facility), now, "",
           f"ACK^{event}^ACK" if event else "ACK", f"DSM{now}{secrets.token_hex(4)}",
           escape(header.processing_id) or "P", escape(header.version) or "2.5",
           "", "", "", "", "", escape(header.charset)]
    segments = ["|".join(msh).rstrip("|"),
                "|".join(["MSA", outcome.code, escape(header.control_id), escape(outcome.text[:80])]).rstrip("|")]
    for problem in outcome.problems:
        where = (f"{problem.segment}^1^{problem.field}^1^{problem.component or ''}".rstrip("^")
                 if problem.segment else "")
        name = TEXT.get(problem.code, "")
        legacy = f"{problem.segment}^1^{problem.field}^{problem.code}&{name}&HL70357" if problem.segment else ""
        severity = "E" if outcome.code != "AA" else "W"
        segments.append("|".join(["ERR", legacy, where, f"{problem.code}^{name}^HL70357", severity,
                                  "", "", "", escape(problem.text[:250])]))
    return "\r".join(segments) + "\r"
