"""Domain values on pages, in the reader's language.

The archive keeps stable values: audit actions, outcomes and ATNA event names,
quarantine reasons, integrity findings, association failure codes, and audit
details as the English text they were recorded with (the audit trail is a
signed chain: its rows are never rewritten). This adapter maps each known value
to a catalog key (web/i18n/*/values.json) when a page shows it; a value it does
not know is shown as stored, so nothing is ever hidden.

Audit details are matched whole against the patterns below, one per kind of
text the code records (the producers are named beside each); a pattern's named
groups become the text's parameters. tests/test_web_labels.py renders every
page that shows such values in Chinese and fails on English left over.
"""
from __future__ import annotations

import re
from collections.abc import Callable

from dsmpacs.archive.audit import EVENTS, AuditAction
from dsmpacs.archive.ingest import CONFLICT_REASON
from dsmpacs.archive.maintenance import DUPLICATE_REASON, ORPHAN_REASON
from dsmpacs.web.i18n import _

OUTCOMES = ("ok", "failed", "refused", "alert", "started", "partial")
ROLES = ("admin", "radiologist", "viewer", "auditor")
FINDINGS = ("missing", "mismatch", "unreadable")
ASSOCIATION_FAILURES = ("unreachable", "rejected", "aborted", "no_answer", "tls", "other")
ORIGINS = ("dicom", "stow", "import", "reindex", "recovery")
LOGIN_METHODS = {"form": "sign_in_form", "form+totp": "sign_in_form_totp",
                 "form+totp-enrolment": "sign_in_form_enrolment", "http-basic": "http_basic",
                 "bearer-token": "bearer_token", "code": "by_code", "password": "by_password"}
FIXED_DETAILS = {"study page": "study_page", "viewer": "viewer", "audit trail page": "audit_trail_page",
                 "wrong current password": "wrong_current_password", **LOGIN_METHODS}
QUARANTINE_REASONS = {CONFLICT_REASON: "conflict", DUPLICATE_REASON: "duplicate", ORPHAN_REASON: "orphan"}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def action_key(value: str) -> str:
    return "audit.action." + _slug(value)


def event_key(value: str) -> str:
    return "audit.event." + _slug(value)


def audit_action(value: str) -> str:
    return _(action_key(value)) if value in _ACTIONS else value


def audit_event(value: str) -> str:
    return _(event_key(value)) if value in _EVENTS else value


def audit_outcome(value: str) -> str:
    return _(f"audit.outcome.{value}") if value in OUTCOMES else value


def role(value: str) -> str:
    return _(f"audit.role.{value}") if value in ROLES else value


def association_failure_message(text: str) -> tuple[str, dict[str, str]]:
    """The catalog key and parameters of an ``AssociationFailed`` message (as
    ``dicom.connect.failure`` and the transport word it): the address, and an
    OpenSSL reason code (CERTIFICATE_VERIFY_FAILED) when there is one, survive."""
    if match := re.search(r"cannot connect to (\S+?)(?::? connection refused)?$", text):
        return "assoc.failure.unreachable", {"address": match.group(1)}
    if match := re.search(r"TLS handshake with (\S+) failed: (.*)$", text):
        address, detail = match.groups()
        if "connection_timeout" in detail:
            return "assoc.failure.tls_timeout", {"address": address}
        if re.fullmatch(r"[A-Z0-9_]+", detail):
            return "assoc.failure.tls_handshake", {"address": address, "code": detail}
        return "assoc.failure.tls_handshake_plain", {"address": address}
    for code, marker in (("no_answer", "no connection or no answer"), ("tls", "TLS"),
                         ("rejected", "was rejected"), ("aborted", "was aborted")):
        if marker in text:
            return f"assoc.failure.{code}", {}
    return "assoc.failure.other", {}


def _association_text(text: str) -> str:
    key, params = association_failure_message(text)
    return _(key, **params)


def quarantine_reason(value: str) -> str:
    code = QUARANTINE_REASONS.get(value)
    return _(f"quarantine.reason.{code}") if code else value


def origin(value: str) -> str:
    """``ingest.Origin`` as stored: ``kind`` or ``kind(calling AE and peer)``."""
    match = re.fullmatch(r"(\w+)(?:\((.*)\))?", value)
    if not match or match.group(1) not in ORIGINS:
        return value
    text = _(f"quarantine.origin.{match.group(1)}")
    return f"{text} ({match.group(2)})" if match.group(2) else text


def corrupt_reason(value: str) -> str:
    """``integrity.mark_corrupt``'s reason: the finding, a colon, the detail."""
    finding = value.split(":", 1)[0]
    return _(f"integrity.finding.{finding}") if finding in FINDINGS else value


# archive/auditchain.py and archive/audit.py: a remembered failure keeps only its message.
CHAIN_PROBLEMS = (("truncated", "the trail ends before"), ("missing", "missing"), ("unchained", "carries no MAC"),
                  ("unknown_key", "names key"), ("reordered", "reordered"), ("edited", "MAC"),
                  ("edited", "changed since it was verified"))


def chain_problem(message: str) -> str:
    """Why the audit chain is broken, from ``Verification.message``."""
    for code, marker in CHAIN_PROBLEMS:
        if marker in message:
            return _(f"audit.chain.{code}")
    return message


PEER_ERRORS = ("invalid", "name", "ae_title", "host", "port", "port_number", "client_cert", "not_reachable",
               "exists", "unknown")
USER_ERRORS = ("invalid", "password_short", "password_long", "username", "role", "unknown", "exists", "hash",
               "last_admin")


def peer_error(exc) -> str:
    """A ``PeerError`` in the reader's language."""
    code = exc.code if exc.code in PEER_ERRORS else "invalid"
    return _(f"peer.error.{code}", **exc.params)


def user_error(exc) -> str:
    """A ``UserError`` in the reader's language."""
    code = exc.code if exc.code in USER_ERRORS else "invalid"
    return _(f"user.error.{code}", **exc.params)


def _size(value: str) -> str:
    from dsmpacs.web.filters import filesize
    return filesize(int(value))


def _count(key: str) -> Callable[[str], str]:
    return lambda value: _(key, count=int(value))


# (pattern matched against the whole detail, catalog key, converters of groups)
_DETAILS: list[tuple[re.Pattern, str, dict[str, Callable[[str], str]]]] = [(re.compile(p), k, c) for p, k, c in [
    # web/admin/users.py, web/account_security.py
    (r"(?P<name>.+) \(reset by an administrator\)", "audit.detail.reset_by_admin", {}),
    (r"(?P<name>.+) \(by themselves\)", "audit.detail.by_themselves", {}),
    (r"(?P<name>.+): disabled", "audit.detail.user_disabled", {}),
    (r"(?P<name>.+): enabled", "audit.detail.user_enabled", {}),
    (r"(?P<name>.+): role (?P<role>\w+)", "audit.detail.user_role", {"role": role}),
    (r"(?P<name>\S+) \((?P<role>admin|radiologist|viewer|auditor)\)", "audit.detail.user_added", {"role": role}),
    (r"token (?P<id>\d+)", "audit.detail.token", {}),
    (r"(?P<name>.+): session (?P<id>\d+)", "audit.detail.session", {}),
    (r"(?P<name>.+): (?P<count>\d+) sessions \(by an administrator\)", "audit.detail.sessions_by_admin", {}),
    # web/admin/peers.py (echo)
    (r"(?P<name>[^:]+): success", "audit.detail.echo_ok", {}),
    (r"(?P<name>[^:]+): status (?P<status>0x[0-9A-F]{4})", "audit.detail.echo_status", {}),
    (r"(?P<name>[^:]+): (?P<reason>association with .*|.* is marked TLS.*)", "audit.detail.echo_failed",
     {"reason": _association_text}),
    # web/auth.py
    (r"more than (?P<count>\d+) failed logins within a minute", "audit.detail.login_burst", {}),
    # web/browse/study.py
    (r"zip: (?P<count>\d+) instances, (?P<size>\d+) bytes", "audit.detail.zip", {"size": _size}),
    (r"(?P<series>\d+) series, (?P<instances>\d+) instances, (?P<size>\d+) bytes", "audit.detail.deleted",
     {"series": _count("count.series"), "instances": _count("count.instances"), "size": _size}),
    # web/browse/transfers.py
    (r"to (?P<peer>[^:(]+?) \((?P<address>[^)]*)\): (?P<count>\d+) instances", "audit.detail.send_started", {}),
    (r"to (?P<peer>[^:]+): sent (?P<sent>\d+) \((?P<converted>\d+) converted\), failed (?P<failed>\d+)",
     "audit.detail.send_result", {}),
    (r"to (?P<peer>[^:]+): sent (?P<sent>\d+) \((?P<converted>\d+) converted\), failed (?P<failed>\d+): "
     r"(?P<reason>.*)", "audit.detail.send_result_reason", {"reason": _association_text}),
    (r"web send of study (?P<study>\S+) by (?P<name>.+)", "audit.detail.web_send", {}),
    # dicom/auditing.py
    (r"C-STORE association: (?P<completed>\d+) completed, (?P<warnings>\d+) warnings, (?P<failed>\d+) failed, "
     r"(?P<size>\d+) bytes", "audit.detail.store_association", {"size": _size}),
    # archive/audit.py query_fields (study list, QIDO-RS, C-FIND)
    (r"(?P<via>study list|QIDO-RS|C-FIND) (?P<level>[A-Z]+): no filter", "audit.detail.query_no_filter",
     {"via": lambda v: _("audit.detail.study_list") if v == "study list" else v}),
    (r"(?P<via>study list|QIDO-RS|C-FIND) (?P<level>[A-Z]+): (?P<filters>.+)", "audit.detail.query",
     {"via": lambda v: _("audit.detail.study_list") if v == "study list" else v}),
]]


def detail(value: str) -> str:
    """An audit or association-log detail in the reader's language (as stored when
    it is none of the known texts: protocol names, HTTP refusals, free text)."""
    if value in FIXED_DETAILS:
        return _(f"audit.detail.{FIXED_DETAILS[value]}")
    for pattern, key, convert in _DETAILS:
        match = pattern.fullmatch(value)
        if match:
            params = {name: convert.get(name, str)(text) for name, text in match.groupdict().items()}
            return _(key, **params)
    return value


def all_keys() -> set[str]:
    """Every catalog key this module can produce (for tests/test_i18n.py)."""
    return ({action_key(a.value) for a in AuditAction} | {event_key(e) for e in set(EVENTS.values())}
            | {f"audit.outcome.{o}" for o in OUTCOMES} | {f"audit.role.{r}" for r in ROLES}
            | {f"assoc.failure.{c}" for c in ASSOCIATION_FAILURES}
            | {"assoc.failure.tls_handshake", "assoc.failure.tls_handshake_plain", "assoc.failure.tls_timeout"}
            | {f"quarantine.reason.{c}" for c in QUARANTINE_REASONS.values()}
            | {f"quarantine.origin.{o}" for o in ORIGINS} | {f"integrity.finding.{f}" for f in FINDINGS}
            | {f"audit.detail.{k}" for k in FIXED_DETAILS.values()} | {k for _p, k, _c in _DETAILS}
            | {"audit.detail.study_list"} | {f"peer.error.{c}" for c in PEER_ERRORS}
            | {f"user.error.{c}" for c in USER_ERRORS} | {f"audit.chain.{c}" for c, _m in CHAIN_PROBLEMS})


_ACTIONS = {a.value for a in AuditAction}
_EVENTS = set(EVENTS.values())
def institution_name(institution) -> str:
    """The name an institution is shown by: as its administrator typed it, except the
    default institution the schema creates, whose stored English name is a label."""
    from dsmpacs.archive.visibility import DEFAULT_CODE, DEFAULT_NAME

    if getattr(institution, "code", None) == DEFAULT_CODE and getattr(institution, "name", None) == DEFAULT_NAME:
        return _("institution.default_name")
    return getattr(institution, "name", "")


FILTERS = {"audit_action": audit_action, "audit_event": audit_event, "audit_outcome": audit_outcome,
           "audit_role": role, "audit_detail": detail, "quarantine_reason": quarantine_reason,
           "origin": origin, "corrupt_reason": corrupt_reason, "chain_problem": chain_problem,
           "institution_name": institution_name}
