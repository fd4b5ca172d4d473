"""The audit trail: every view, search, export and deletion, every login, refusal and
admin change, chained so that an edit made behind the archive's back shows.

Protocol layers call ``AuditTrail.record`` with the acting user's name, an
action from ``AuditAction`` (or a new value added there), and what they know:
role, client address, AE titles, patient, study, a short free-text detail. Each
action belongs to an IHE ATNA / DICOM PS3.15 A.5 event (``EVENTS``), stored
beside it so that an auditor or a syslog collector reads the standard name.

A failed write raises (IndexUnavailable): an action that cannot be audited
should not silently happen. Appends from several processes serialise on the
unique sequence number (archive/auditchain.py explains the chain): SQLite
takes the write lock up front, MariaDB locks the last record (SELECT ... FOR
UPDATE), and a lost race on the unique key is simply retried.
"""
from __future__ import annotations

import logging
import random
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Iterator, Mapping

import peewee

from dsmpacs.archive.auditchain import (
    PRUNE_ACTION,
    SIGNED,
    ChainKeys,
    ChainState,
    Verification,
    read_state,
    state_path,
    verify_rows,
    write_state,
)
from dsmpacs.archive.database import IndexUnavailable, TransientConflict
from dsmpacs.archive.index import Index
from dsmpacs.archive.models import AuditEvent, utcnow

log = logging.getLogger(__name__)
_ATTEMPTS = 30


class AuditAction(str, Enum):
    LOGIN = "login"
    LOGIN_FAILED = "login-failed"
    LOGIN_THROTTLED = "login-throttled"
    LOGOUT = "logout"
    PASSWORD_CHANGE = "password-change"
    # reading and moving patient data
    SEARCH = "search"                       # study list, QIDO-RS, C-FIND
    VIEW = "view"
    EXPORT = "export"
    SEND = "send"
    DELETE = "delete"
    STORE = "store"                         # STOW-RS, or one association's C-STOREs
    IMPORT = "import"                       # files imported from the command line
    # refusals
    AUTH_REQUIRED = "auth-required"         # HTTP 401
    ACCESS_DENIED = "access-denied"         # HTTP 403; C-STORE/C-FIND/C-MOVE/C-GET refused by policy
    ASSOCIATION_REJECTED = "assoc-rejected"
    # administration
    USER_ADD = "user-add"
    USER_CHANGE = "user-change"
    USER_REMOVE = "user-remove"
    TOKEN_CREATE = "token-create"
    TOKEN_REVOKE = "token-revoke"
    PEER_ADD = "peer-add"
    PEER_CHANGE = "peer-change"
    PEER_REMOVE = "peer-remove"
    PEER_ECHO = "peer-echo"
    SETTINGS_CHANGE = "settings-change"
    DB_UPGRADE = "db-upgrade"
    DB_BACKUP = "db-backup"
    TLS_CHANGE = "tls-change"               # certificates created, renewed, imported, trusted
    # the trail itself
    AUDIT_READ = "audit-read"
    AUDIT_VERIFY = "audit-verify"
    AUDIT_PRUNE = PRUNE_ACTION
    AUDIT_KEY_ROTATE = "audit-key-rotate"

    # sessions, second factor, re-authentication (archive/sessions.py, archive/totp.py)
    SESSION_END = "session-end"
    TOTP_ENROL = "totp-enrol"
    TOTP_RESET = "totp-reset"
    TOTP_FAILED = "totp-failed"
    REAUTH = "reauth"
    SECURITY_ALERT = "security-alert"

    # share links (archive/shares.py)
    SHARE_CREATE = "share-create"
    SHARE_REVOKE = "share-revoke"
    SHARE_USE = "share-use"

    # the reading workflow (archive/orders.py, reading.py, web/reports, UPS-RS, institutions)
    ORDER_CREATE = "order-create"
    ORDER_IMPORT = "order-import"
    ORDER_CHANGE = "order-change"
    ORDER_STATE = "order-state"
    ORDER_LINK = "order-link"
    READING_CREATE = "reading-create"
    READING_ASSIGN = "reading-assign"
    READING_CLAIM = "reading-claim"
    READING_RELEASE = "reading-release"
    READING_STATE = "reading-state"
    READING_RULE = "reading-rule"
    REPORT_START = "report-start"
    REPORT_SIGN = "report-sign"
    REPORT_AMEND = "report-amend"
    UPS_SEARCH = "ups-search"
    UPS_SUBSCRIBE = "ups-subscribe"
    UPS_UNSUBSCRIBE = "ups-unsubscribe"
    INSTITUTION_CHANGE = "institution-change"
    STUDY_MOVE = "study-move"


_ALERT = "Security Alert"
_USER_ATTRIBUTES = f"{_ALERT}: User Security Attributes Changed"
_NETWORK = f"{_ALERT}: Network Configuration"
_RESTRICTED = f"{_ALERT}: Use of Restricted Function"
_SECURITY_CONFIG = f"{_ALERT}: Security Configuration"
_TRANSFERRED = "DICOM Instances Transferred"
_AUDIT_LOG_USED = "Audit Log Used"
# PS3.15 A.5.3's Order Record and Procedure Record: changes to orders, and to the procedure (reading
# task, report, UPS workitem) that fulfils them.
_ORDER = "Order Record"
_PROCEDURE = "Procedure Record"

# PS3.15 A.5.3 event (EventID, with the EventTypeCode after a colon where it matters).
EVENTS: dict[AuditAction, str] = {
    AuditAction.LOGIN: "User Authentication: Login",
    AuditAction.LOGIN_FAILED: "User Authentication: Login",
    AuditAction.LOGIN_THROTTLED: "User Authentication: Login",
    AuditAction.LOGOUT: "User Authentication: Logout",
    AuditAction.PASSWORD_CHANGE: _USER_ATTRIBUTES,
    AuditAction.SEARCH: "Query",
    AuditAction.VIEW: "DICOM Instances Accessed",
    AuditAction.EXPORT: "Export",
    AuditAction.SEND: _TRANSFERRED,
    AuditAction.DELETE: "DICOM Study Deleted",
    AuditAction.STORE: _TRANSFERRED,
    AuditAction.IMPORT: "Import",
    AuditAction.AUTH_REQUIRED: _RESTRICTED,
    AuditAction.ACCESS_DENIED: _RESTRICTED,
    AuditAction.ASSOCIATION_REJECTED: f"{_ALERT}: Node Authentication",
    AuditAction.USER_ADD: _USER_ATTRIBUTES,
    AuditAction.USER_CHANGE: f"{_ALERT}: Security Roles Changed",
    AuditAction.USER_REMOVE: _USER_ATTRIBUTES,
    AuditAction.TOKEN_CREATE: _USER_ATTRIBUTES,
    AuditAction.TOKEN_REVOKE: _USER_ATTRIBUTES,
    AuditAction.PEER_ADD: _NETWORK,
    AuditAction.PEER_CHANGE: _NETWORK,
    AuditAction.PEER_REMOVE: _NETWORK,
    AuditAction.PEER_ECHO: "Network Entry",
    AuditAction.SETTINGS_CHANGE: _SECURITY_CONFIG,
    AuditAction.DB_UPGRADE: f"{_ALERT}: Software Configuration",
    AuditAction.DB_BACKUP: "Export",
    AuditAction.TLS_CHANGE: _SECURITY_CONFIG,
    AuditAction.AUDIT_READ: _AUDIT_LOG_USED,
    AuditAction.AUDIT_VERIFY: _AUDIT_LOG_USED,
    AuditAction.AUDIT_PRUNE: _AUDIT_LOG_USED,
    AuditAction.AUDIT_KEY_ROTATE: _SECURITY_CONFIG,
    AuditAction.SESSION_END: "User Authentication: Logout",
    AuditAction.TOTP_ENROL: _USER_ATTRIBUTES,
    AuditAction.TOTP_RESET: _USER_ATTRIBUTES,
    AuditAction.TOTP_FAILED: "User Authentication: Login",
    AuditAction.REAUTH: "User Authentication: Login",
    AuditAction.SECURITY_ALERT: _ALERT,
    AuditAction.SHARE_CREATE: _RESTRICTED,
    AuditAction.SHARE_REVOKE: _RESTRICTED,
    AuditAction.SHARE_USE: "DICOM Instances Accessed",
    AuditAction.ORDER_CREATE: _ORDER,
    AuditAction.ORDER_IMPORT: _ORDER,
    AuditAction.ORDER_CHANGE: _ORDER,
    AuditAction.ORDER_STATE: _ORDER,
    AuditAction.ORDER_LINK: _ORDER,
    AuditAction.READING_CREATE: _PROCEDURE,
    AuditAction.READING_ASSIGN: _PROCEDURE,
    AuditAction.READING_CLAIM: _PROCEDURE,
    AuditAction.READING_RELEASE: _PROCEDURE,
    AuditAction.READING_STATE: _PROCEDURE,
    AuditAction.READING_RULE: _SECURITY_CONFIG,   # a rule decides who may read what
    AuditAction.REPORT_START: _PROCEDURE,
    AuditAction.REPORT_SIGN: _PROCEDURE,
    AuditAction.REPORT_AMEND: _PROCEDURE,
    AuditAction.UPS_SEARCH: "Query",
    AuditAction.UPS_SUBSCRIBE: _PROCEDURE,
    AuditAction.UPS_UNSUBSCRIBE: _PROCEDURE,
    AuditAction.INSTITUTION_CHANGE: _SECURITY_CONFIG,
    AuditAction.STUDY_MOVE: _SECURITY_CONFIG,     # who owns, and so who sees, the study
}


def event_for(action: str) -> str:
    """The ATNA event of an action; an action some other module invented counts as
    a security alert until it is given its own."""
    try:
        return EVENTS[AuditAction(action)]
    except ValueError:
        return _ALERT


def query_fields(via: str, level: str, filters: Mapping[str, object]) -> dict[str, str]:
    """The record fields of a search: the patient and study it named, and the whole
    query as the detail (a search for a patient is itself a disclosure)."""
    text = {k: str(v) for k, v in filters.items() if v not in (None, "")}
    return dict(patient_id=text.get("PatientID", ""), patient_name=text.get("PatientName", ""),
                study_instance_uid=text.get("StudyInstanceUID", ""),
                detail=f"{via} {level}: " + (", ".join(f"{k}={v}" for k, v in sorted(text.items()))
                                             or "no filter"))


@dataclass(frozen=True)
class AuditEntry:
    at: datetime
    actor: str
    action: str
    outcome: str
    study_instance_uid: str
    detail: str
    address: str
    seq: int = 0
    role: str = ""
    event: str = ""
    patient_id: str = ""
    patient_name: str = ""
    calling_ae: str = ""
    called_ae: str = ""


class OncePer:
    """Remembers keys for ``seconds`` (in this process): a burst of identical events,
    such as refused requests from one address, becomes one record instead of a burst
    of index writes."""

    def __init__(self, seconds: float, max_keys: int = 5000):
        self.seconds, self.max_keys = seconds, max_keys
        self.lock = threading.Lock()
        self.seen: dict[tuple, float] = {}

    def first(self, key: tuple) -> bool:
        now = time.monotonic()
        with self.lock:
            if len(self.seen) > self.max_keys:
                self.seen = {k: t for k, t in self.seen.items() if now - t < self.seconds}
            last = self.seen.get(key)
            if last is not None and now - last < self.seconds:
                return False
            self.seen[key] = now
            return True


_PRUNED = re.compile(r"^pruned through record (\d+)\b.*; head ([0-9a-f]*)$")
_LIMITS = {"actor": 64, "role": 16, "action": 32, "event": 64, "outcome": 16, "study_instance_uid": 64,
           "patient_id": 64, "patient_name": 128, "calling_ae": 16, "called_ae": 16, "detail": 1024,
           "address": 64}
_COLUMNS = [getattr(AuditEvent, name) for name in SIGNED] + [AuditEvent.mac]


class AuditTrail:
    def __init__(self, index: Index, keys: ChainKeys | None = None):
        """Without ``keys`` the trail can be read but not written or verified."""
        self.index = index
        self._keys = keys
        self._mysql = index._mysql

    @classmethod
    def of(cls, archive) -> "AuditTrail":
        """The trail of an Archive, keyed by its settings' audit_key_file."""
        return cls(archive.index, ChainKeys(archive.settings.effective_audit_key_file))

    @property
    def keys(self) -> ChainKeys:
        if self._keys is None:
            raise RuntimeError("this AuditTrail was built without the chain keys (use AuditTrail.of)")
        return self._keys

    @property
    def state_file(self) -> Path:
        return state_path(self.keys.path)

    # --- writing ---------------------------------------------------------------------
    def record(self, actor: str, action: AuditAction | str, *, study_instance_uid: str = "",
               detail: str = "", address: str = "", outcome: str = "ok", role: str = "",
               patient_id: str = "", patient_name: str = "", calling_ae: str = "",
               called_ae: str = "") -> int:
        """Append one record; returns its sequence number."""
        action = action.value if isinstance(action, AuditAction) else str(action)
        values = dict(actor=actor, role=role, action=action, event=event_for(action), outcome=outcome,
                      study_instance_uid=study_instance_uid, patient_id=patient_id,
                      patient_name=patient_name, calling_ae=calling_ae, called_ae=called_ae,
                      detail=detail, address=address)
        values = {k: str(v or "")[:_LIMITS[k]] for k, v in values.items()}
        return self._with_retry(lambda: self._append(values))

    def _with_retry(self, work):
        for attempt in range(_ATTEMPTS):
            try:
                with self.index.write():
                    return work()
            except (peewee.IntegrityError, TransientConflict) as exc:
                # Another process took this sequence number first: read the new head, sign again.
                if attempt == _ATTEMPTS - 1:
                    raise IndexUnavailable(f"audit trail: could not append after {_ATTEMPTS} "
                                           f"attempts: {exc}") from exc
                time.sleep(random.uniform(0.001, 0.02) * (attempt + 1))

    def _head(self) -> tuple[int, str]:
        query = (AuditEvent.select(AuditEvent.seq, AuditEvent.mac)
                 .order_by(AuditEvent.seq.desc()).limit(1))
        if self._mysql:
            query = query.for_update()
        row = query.tuples().first()
        return (int(row[0]), row[1]) if row else (0, "")

    def _append(self, values: dict, head: tuple[int, str] | None = None) -> int:
        seq, prev = head or self._head()
        key_id, _key = self.keys.current()
        # Whole seconds: MariaDB's DATETIME keeps no fraction, and the MAC must survive the round trip.
        record = dict(values, seq=seq + 1, at=utcnow().replace(microsecond=0), key_id=key_id)
        record["mac"] = self.keys.mac(prev, record)
        AuditEvent.insert(**record).execute()
        return seq + 1

    # --- retention -------------------------------------------------------------------
    def prune(self, days: int, *, actor: str = "system", address: str = "",
              keep_after: int | None = None) -> int:
        """Delete records older than ``days`` (and not after ``keep_after``, e.g. records a
        syslog export has not delivered yet) and record that, with the MAC of the last
        deleted record so that the chain still verifies. Returns how many were deleted."""
        if days <= 0:
            return 0
        cutoff = utcnow() - timedelta(days=days)

        def work() -> int:
            head = self._head()
            old = AuditEvent.at < cutoff
            if keep_after is not None:
                old &= AuditEvent.seq <= keep_after
            last = (AuditEvent.select(AuditEvent.seq, AuditEvent.mac).where(old)
                    .order_by(AuditEvent.seq.desc()).limit(1).tuples().first())
            if last is None:
                return 0
            through, through_mac = int(last[0]), last[1]
            deleted = AuditEvent.delete().where(AuditEvent.seq <= through).execute()
            self._append({**{k: "" for k in _LIMITS}, "actor": actor[:64], "action": PRUNE_ACTION,
                          "event": event_for(PRUNE_ACTION), "outcome": "ok", "address": address[:64],
                          "detail": f"pruned through record {through}, {deleted} records older than "
                                    f"{days} days; head {through_mac}"}, head)
            return deleted

        deleted = self._with_retry(work)
        if deleted:
            log.info("audit trail: pruned %d records older than %d days", deleted, days)
        return deleted

    # --- reading ---------------------------------------------------------------------
    def _query(self, actor: str | None, action: str | None, study_instance_uid: str | None,
               patient_id: str | None = None):
        query = AuditEvent.select()
        if actor:
            query = query.where(AuditEvent.actor == actor)
        if action:
            query = query.where(AuditEvent.action == action)
        if study_instance_uid:
            query = query.where(AuditEvent.study_instance_uid == study_instance_uid)
        if patient_id:
            query = query.where(AuditEvent.patient_id == patient_id)
        return query

    def recent(self, *, limit: int = 50, offset: int = 0, actor: str | None = None,
               action: str | None = None, study_instance_uid: str | None = None,
               patient_id: str | None = None) -> list[AuditEntry]:
        """Newest first."""
        with self.index.read():
            rows = (self._query(actor, action, study_instance_uid, patient_id)
                    .order_by(AuditEvent.seq.desc()).limit(limit).offset(offset))
            return [AuditEntry(r.at, r.actor, r.action, r.outcome, r.study_instance_uid, r.detail,
                               r.address, r.seq, r.role, r.event, r.patient_id, r.patient_name,
                               r.calling_ae, r.called_ae) for r in rows]

    def count(self, *, actor: str | None = None, action: str | None = None,
              study_instance_uid: str | None = None, patient_id: str | None = None) -> int:
        with self.index.read():
            return self._query(actor, action, study_instance_uid, patient_id).count()

    # --- verification ----------------------------------------------------------------
    def _rows(self, after: int = 0, limit: int | None = None, batch: int = 2000) -> Iterator[list[dict]]:
        """Records with seq > after, in order, in batches (constant memory)."""
        remaining = limit
        while remaining is None or remaining > 0:
            size = batch if remaining is None else min(batch, remaining)
            with self.index.read():
                rows = list(AuditEvent.select(*_COLUMNS).where(AuditEvent.seq > after)
                            .order_by(AuditEvent.seq).limit(size).dicts())
            if not rows:
                return
            yield rows
            after = rows[-1]["seq"]
            if remaining is not None:
                remaining -= len(rows)

    def _anchor_for(self, seq: int) -> str | None:
        with self.index.read():
            details = (AuditEvent.select(AuditEvent.detail).where(AuditEvent.action == PRUNE_ACTION)
                       .order_by(AuditEvent.seq.desc()).tuples())
            for (detail,) in details:
                match = _PRUNED.match(detail)
                if match and int(match.group(1)) == seq - 1:
                    return match.group(2)
        return None

    def verify(self) -> Verification:
        """Walk the whole chain (a CLI or background job on a large trail) and remember
        the result outside the index."""
        result = verify_rows(self.keys, self._rows(), anchor_for=self._anchor_for)
        state = read_state(self.state_file)
        if result.ok and state.seq > result.last_seq:
            result.fail(result.last_seq + 1, "truncated",
                        f"records {result.last_seq + 1} to {state.seq} are missing: the trail ends "
                        f"before the position verified on {state.checked_at or 'an earlier run'}")
        self._remember(result, state, full=True)
        return result

    def status(self, max_rows: int) -> Verification:
        """The verification state for a page: the whole chain when it is short, otherwise
        the records added since the last remembered position (at most ``max_rows``)."""
        with self.index.read():
            total = AuditEvent.select().count()
        if total <= max_rows:
            return self.verify()
        state = read_state(self.state_file)
        if not state.ok:
            return Verification(ok=False, broken_at=state.broken_at, message=state.message,
                                last_seq=state.seq, partial=True)
        with self.index.read():
            at_state = (AuditEvent.select(AuditEvent.mac).where(AuditEvent.seq == state.seq)
                        .tuples().first())
        if state.seq == 0 or at_state is None:
            return Verification(ok=True, partial=True, last_seq=0,
                                message="not verified yet: run `dsmpacs audit verify`")
        if at_state[0] != state.mac:
            result = Verification(partial=True).fail(
                state.seq, "edited", f"record {state.seq} changed since it was verified")
        else:
            result = verify_rows(self.keys, self._rows(state.seq, max_rows),
                                 start=(state.seq, state.mac))
            if result.checked == 0:
                result.last_seq, result.last_mac = state.seq, state.mac
        self._remember(result, state, full=False)
        return result

    def _remember(self, result: Verification, state: ChainState, *, full: bool) -> None:
        now = utcnow().strftime("%Y-%m-%d %H:%M:%S UTC")
        if not full:
            # A newer full walk may have found a break meanwhile; never paper over it.
            latest = read_state(self.state_file)
            if not latest.ok:
                return
        if result.ok:
            state.seq, state.mac = result.last_seq, result.last_mac
        state.ok, state.broken_at, state.message = result.ok, result.broken_at, result.message
        state.checked_at = now
        if full:
            state.full_at = now
        try:
            write_state(self.state_file, state)
        except OSError as exc:
            log.warning("audit trail: cannot remember the verified position in %s: %s",
                        self.state_file, exc)

    def last_full_verification(self) -> str:
        return read_state(self.state_file).full_at


def housekeeping(trail: AuditTrail, retention_days: int, keep_after: int | None = None) -> Verification:
    """The daily job: prune by retention, then walk the whole chain (which is what the
    audit page's quick check continues from). A broken chain is logged as an error."""
    if retention_days:
        trail.prune(retention_days, keep_after=keep_after)
    result = trail.verify()
    if result.ok:
        log.info("audit trail verified: %d records, intact", result.checked)
    else:
        log.error("audit trail broken at record %d: %s", result.broken_at, result.message)
    return result
