"""The audit chain: keys, record MACs and verification.

Each audit record carries ``mac = HMAC-SHA-256(key, previous mac + the record)``,
with its sequence number inside the signed text. Whoever can edit the index but
cannot read the key file therefore cannot edit, delete, insert or reorder a
record without breaking the chain at that point: an edit changes the record's
MAC, a deletion leaves a gap in ``seq``, a reordering puts a record at a
sequence number it was not signed for.

The keys live in a file outside the index (``audit_key_file``), one
``<key id> <hex key>`` per line, the last one current. Rotating appends a key;
older keys stay so that older records still verify. The file is created 0600 by
whichever process needs it first, atomically (link of a finished temporary
file), so two processes starting together agree on one key.

What the chain alone cannot show is the loss of its newest records: nothing
comes after them to notice. Verification therefore remembers the last position
it saw (sequence number and MAC) in a state file beside the key, outside the
index too, and a trail that ends before that position, or differs there, is
reported broken.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Iterable

# The signed fields, in the order they are signed. Changing this breaks every chain.
SIGNED = ("seq", "at", "actor", "role", "action", "event", "outcome", "study_instance_uid",
          "patient_id", "patient_name", "calling_ae", "called_ae", "detail", "address", "key_id")
PRUNE_ACTION = "audit-prune"
# How far around a broken record to look for where it was signed (reordering).
_REORDER_WINDOW = 16


class ChainKeyError(Exception):
    """The key file is unreadable or malformed."""


def _text(value) -> str | int:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%S")
    if isinstance(value, int):
        return value
    return "" if value is None else str(value)


def signed_message(prev_mac: str, record: dict) -> bytes:
    """The bytes a record's MAC covers: the previous MAC and every signed field."""
    return json.dumps([prev_mac] + [_text(record[name]) for name in SIGNED],
                      ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class ChainKeys:
    """The key file: created on first use, re-read when another process rotates it."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._keys: dict[str, bytes] = {}
        self._current = ""

    def _load(self) -> None:
        stat = self.path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return
        keys, current = {}, ""
        for number, line in enumerate(self.path.read_text("ascii").splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            try:
                key_id, hex_key = line.split()
                keys[key_id] = bytes.fromhex(hex_key)
            except ValueError:
                raise ChainKeyError(f"{self.path}: line {number} is not '<key id> <hex key>'") from None
            current = key_id
        if not keys:
            raise ChainKeyError(f"{self.path} holds no key")
        self._keys, self._current, self._stamp = keys, current, stamp

    def _ensure(self) -> None:
        if not self.path.exists():
            self._create([self._new_line()])
        self._load()

    @staticmethod
    def _new_line() -> str:
        key = secrets.token_bytes(32)
        return f"{hashlib.sha256(key).hexdigest()[:12]} {key.hex()}"

    def _create(self, lines: list[str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as fh:
                fh.write("# DSM PACS audit chain keys: keep secret, keep with backups, never edit\n")
                fh.write("\n".join(lines) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, self.path)          # fails if another process created it first
            except FileExistsError:
                pass
        finally:
            tmp.unlink(missing_ok=True)

    def current(self) -> tuple[str, bytes]:
        with self._lock:
            self._ensure()
            return self._current, self._keys[self._current]

    def get(self, key_id: str) -> bytes | None:
        with self._lock:
            self._ensure()
            return self._keys.get(key_id)

    def rotate(self) -> str:
        """Add a new current key (older ones stay for verification); returns its id."""
        with self._lock:
            self._ensure()
            lines = [f"{k} {v.hex()}" for k, v in self._keys.items()] + [self._new_line()]
            replaced = self.path.with_name(self.path.name + ".old")
            os.replace(self.path, replaced)
            try:
                self._create(lines)
            except BaseException:
                os.replace(replaced, self.path)
                raise
            replaced.unlink()
            self._stamp = None
            self._load()
            return self._current

    def mac(self, prev_mac: str, record: dict) -> str:
        key = self.get(record["key_id"])
        if key is None:
            raise ChainKeyError(f"no key {record['key_id']!r} in {self.path}")
        return hmac.new(key, signed_message(prev_mac, record), hashlib.sha256).hexdigest()


# --- verification -------------------------------------------------------------------
@dataclass
class Verification:
    """The outcome of walking the chain. ``broken_at`` is the first bad sequence number."""
    ok: bool = True
    checked: int = 0
    first_seq: int = 0
    last_seq: int = 0
    last_mac: str = ""
    chain_start: int = 0          # first chained record (0: none yet)
    unchained: int = 0            # records from before the chain (upgraded index)
    broken_at: int = 0
    problem: str = ""             # edited, missing, reordered, unchained, unknown-key, truncated
    message: str = ""
    partial: bool = False         # only the records after a remembered position were checked

    def fail(self, seq: int, problem: str, message: str) -> "Verification":
        self.ok, self.broken_at, self.problem, self.message = False, seq, problem, message
        return self


def _find_reordered(keys: ChainKeys, rows: list[dict], position: int) -> int | None:
    """The sequence number the broken row at ``position`` was signed for, when it is a
    genuine record moved elsewhere: try the nearby positions with the MACs nearby."""
    row = rows[position]
    key = keys.get(row["key_id"])
    if key is None:
        return None
    window = rows[max(0, position - _REORDER_WINDOW):position + _REORDER_WINDOW + 1]
    prevs = {r["mac"] for r in window} | {""}
    for candidate in window:
        seq = candidate["seq"]
        for prev in prevs:
            text = signed_message(prev, dict(row, seq=seq))
            if hmac.compare_digest(hmac.new(key, text, hashlib.sha256).hexdigest(), row["mac"]):
                return seq if seq != row["seq"] else None
    return None


def verify_rows(keys: ChainKeys, batches: Iterable[list[dict]], *, anchor_for=None,
                start: tuple[int, str] | None = None) -> Verification:
    """Walk records in ``seq`` order (given in batches, each a list of dicts with the
    SIGNED fields and ``mac``). ``anchor_for(seq)`` returns the head MAC a pruning left
    for the records before ``seq``, or None. ``start`` = (seq, mac) continues after a
    position verified before instead of from the beginning."""
    result = Verification(partial=start is not None)
    expected = prev = None
    in_chain = False
    if start is not None:
        expected, prev, in_chain = start[0] + 1, start[1], bool(start[1])
    pending: list[dict] = []
    for batch in batches:
        # Keep a little of the previous batch so a reordering across the boundary is found.
        rows = pending[-_REORDER_WINDOW:] + batch
        offset = len(rows) - len(batch)
        for i in range(offset, len(rows)):
            row = rows[i]
            seq = row["seq"]
            if expected is None:
                result.first_seq = seq
                if seq != 1:
                    head = anchor_for(seq) if anchor_for else None
                    if head is None:
                        return result.fail(1, "missing", f"records 1 to {seq - 1} are missing "
                                           "(no pruning record accounts for them)")
                    prev, in_chain = head, bool(head)
                else:
                    prev = ""
                expected = seq
            if seq != expected:
                return result.fail(expected, "missing", f"record {expected} is missing")
            if not row["mac"]:
                if in_chain:
                    return result.fail(seq, "unchained", f"record {seq} carries no MAC inside the chain")
                result.unchained += 1
            else:
                if not in_chain:
                    in_chain, result.chain_start = True, seq
                try:
                    good = hmac.compare_digest(keys.mac(prev, row), row["mac"])
                except ChainKeyError:
                    return result.fail(seq, "unknown-key", f"record {seq} names key {row['key_id']!r}, "
                                       "which the key file does not hold")
                if not good:
                    moved = _find_reordered(keys, rows, i)
                    if moved is not None:
                        return result.fail(seq, "reordered",
                                           f"record {seq} was written as record {moved} (reordered)")
                    return result.fail(seq, "edited", f"record {seq} does not match its MAC "
                                       "(edited, or a record before it was replaced)")
            prev, expected = row["mac"], seq + 1
            result.checked += 1
            result.last_seq, result.last_mac = seq, row["mac"]
        pending = rows
    if result.chain_start == 0 and in_chain and result.checked:
        result.chain_start = result.first_seq
    return result


# --- remembered position -----------------------------------------------------------
@dataclass
class ChainState:
    """What the last verification found, kept outside the index (JSON beside the key)."""
    seq: int = 0
    mac: str = ""
    ok: bool = True
    broken_at: int = 0
    message: str = ""
    checked_at: str = ""
    full_at: str = ""             # when the whole chain was last walked
    extra: dict = field(default_factory=dict)


def state_path(key_file: Path) -> Path:
    return Path(key_file).with_name(Path(key_file).name + ".state.json")


def read_state(path: Path) -> ChainState:
    try:
        data = json.loads(path.read_text("utf-8"))
        return ChainState(**{k: v for k, v in data.items() if k in ChainState.__dataclass_fields__})
    except (OSError, ValueError, TypeError):
        return ChainState()


def write_state(path: Path, state: ChainState) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(asdict(state), fh)
    os.replace(tmp, path)
