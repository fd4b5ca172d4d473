"""Web sessions kept in the index: a signed-in browser is a row, not a cookie's word.

The browser holds only a random 256-bit id; the index keeps its SHA-256, the
account, the account's epoch at sign-in, and the times that end it. A session
is valid while its row exists, the account is enabled, the account's epoch is
still the one it started with (a password change, role change or disable bumps
the epoch), it is younger than its absolute lifetime and it was used within the
idle timeout. Ending a session deletes the row, so a copied cookie stops working
at once, on every web process that shares the index: nothing lives in memory.

``stage`` is how far sign-in has come: ``ok`` (signed in), ``totp`` (password
right, TOTP code due), ``enrol`` (password right, the role needs TOTP and the
user has none yet: enrolment is the only thing allowed).

Re-authentication (``reauth_until``) is the decision behind "confirm it is you"
before a dangerous action; archive/ decides, the web layer only asks.
"""
from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from dsmpacs.archive.index import Index
from dsmpacs.archive.models import User, WebSession, utcnow
from dsmpacs.archive.users import Account

STAGE_OK = "ok"
STAGE_TOTP = "totp"
STAGE_ENROL = "enrol"
STAGES = (STAGE_OK, STAGE_TOTP, STAGE_ENROL)


@dataclass(frozen=True)
class SessionState:
    """A live session as the web layer sees it (never the id's hash)."""
    id: int
    account: Account
    stage: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    reauth_until: datetime | None
    address: str
    user_agent: str

    @property
    def signed_in(self) -> bool:
        return self.stage == STAGE_OK

    def reauthenticated(self, now: datetime | None = None) -> bool:
        """True while the user's last identity confirmation is recent enough."""
        return self.reauth_until is not None and (now or utcnow()) < self.reauth_until


def _hash(sid: str) -> str:
    return hashlib.sha256(sid.encode("utf-8")).hexdigest()


def _state(row: WebSession, user: User) -> SessionState:
    return SessionState(row.id, Account.from_row(user), row.stage, row.created_at, row.last_seen_at,
                        row.expires_at, row.reauth_until, row.address, row.user_agent)


class Sessions:
    def __init__(self, index: Index, *, lifetime: timedelta, idle: timedelta, reauth: timedelta):
        self.index = index
        self.lifetime = lifetime
        self.idle = idle
        self.reauth = reauth
        # last_seen_at is written at most this often, so a page with dozens of image
        # requests costs one write, yet the idle timeout stays accurate to a few percent.
        self.touch_every = min(timedelta(seconds=60), idle / 10)

    @classmethod
    def from_settings(cls, index: Index, settings) -> "Sessions":
        return cls(index, lifetime=timedelta(hours=settings.web_session_hours),
                   idle=timedelta(minutes=settings.web_idle_minutes),
                   reauth=timedelta(minutes=settings.web_reauth_minutes))

    def create(self, account: Account, *, stage: str = STAGE_OK, address: str = "",
               user_agent: str = "") -> str:
        """A new session; returns the secret id for the cookie (never stored)."""
        if stage not in STAGES:
            raise ValueError(f"unknown session stage {stage!r}")
        sid = secrets.token_urlsafe(32)
        now = utcnow()
        with self.index.write():
            # Sessions abandoned without signing out would otherwise stay as rows;
            # sign-ins are rare enough to sweep them here.
            self._end_where((WebSession.expires_at <= now) | (WebSession.last_seen_at <= now - self.idle))
            WebSession.create(token_hash=_hash(sid), user=account.id, epoch=account.epoch, stage=stage,
                              created_at=now, last_seen_at=now, expires_at=now + self.lifetime,
                              # A fresh password (and code) is as good as a re-authentication.
                              reauth_until=now + self.reauth if stage == STAGE_OK else None,
                              address=address[:64], user_agent=user_agent[:255])
        return sid

    def resolve(self, sid: str, now: datetime | None = None) -> SessionState | None:
        """The live session of a cookie id, or None (and its row is gone) when it ended."""
        if not sid or len(sid) > 128:
            return None
        now = now or utcnow()
        with self.index.read():
            row = (WebSession.select(WebSession, User).join(User)
                   .where(WebSession.token_hash == _hash(sid)).first())
        if row is None:
            return None
        user = row.user
        if (user.disabled or user.epoch != row.epoch or now >= row.expires_at
                or now - row.last_seen_at >= self.idle):
            with self.index.write():
                WebSession.delete().where(WebSession.id == row.id).execute()
            return None
        if now - row.last_seen_at >= self.touch_every:
            with self.index.write():
                WebSession.update(last_seen_at=now).where(WebSession.id == row.id).execute()
            row.last_seen_at = now
        return _state(row, user)

    def advance(self, session_id: int, stage: str) -> None:
        """Sign-in went a step further (code given, enrolment done)."""
        if stage not in STAGES:
            raise ValueError(f"unknown session stage {stage!r}")
        now = utcnow()
        changes = {WebSession.stage: stage}
        if stage == STAGE_OK:
            changes[WebSession.reauth_until] = now + self.reauth
        with self.index.write():
            WebSession.update(changes).where(WebSession.id == session_id).execute()

    def mark_reauthenticated(self, session_id: int) -> None:
        with self.index.write():
            WebSession.update(reauth_until=utcnow() + self.reauth).where(
                WebSession.id == session_id).execute()

    def adopt_epoch(self, session_id: int, account: Account) -> None:
        """Keep this session after its own user changed their password (the others end)."""
        with self.index.write():
            WebSession.update(epoch=account.epoch).where(
                (WebSession.id == session_id) & (WebSession.user == account.id)).execute()
            self._end_where((WebSession.user == account.id) & (WebSession.id != session_id))

    # --- listing and ending ----------------------------------------------------------
    def of_user(self, user_id: int) -> list[SessionState]:
        """The user's live sessions, newest activity first."""
        return [s for s in self._live(WebSession.user == user_id)]

    def counts(self) -> dict[int, int]:
        """Live sessions per user id (for the admin users page)."""
        out: dict[int, int] = {}
        for state in self._live(None):
            out[state.account.id] = out.get(state.account.id, 0) + 1
        return out

    def _live(self, where) -> list[SessionState]:
        now = utcnow()
        with self.index.read():
            query = WebSession.select(WebSession, User).join(User)
            if where is not None:
                query = query.where(where)
            rows = list(query.order_by(WebSession.last_seen_at.desc()))
        return [_state(r, r.user) for r in rows
                if not r.user.disabled and r.user.epoch == r.epoch and now < r.expires_at
                and now - r.last_seen_at < self.idle]

    def end(self, sid: str) -> None:
        with self.index.write():
            WebSession.delete().where(WebSession.token_hash == _hash(sid)).execute()

    def end_one(self, session_id: int, user_id: int | None = None) -> bool:
        """End a session by its row id (only the user's own, when user_id is given)."""
        where = WebSession.id == session_id
        if user_id is not None:
            where &= WebSession.user == user_id
        with self.index.write():
            return self._end_where(where) > 0

    def end_all(self, user_id: int, *, except_id: int | None = None) -> int:
        where = WebSession.user == user_id
        if except_id is not None:
            where &= WebSession.id != except_id
        with self.index.write():
            return self._end_where(where)

    @staticmethod
    def _end_where(where) -> int:
        return WebSession.delete().where(where).execute()

    def reauthenticate(self, state: SessionState, *, password: str = "", code: str = "",
                       users, second_factor) -> bool | str:
        """Confirm a signed-in user's identity again, with their password or a TOTP
        (or recovery) code. True when confirmed (and recorded on the session), else the
        reason: "wrong" or "replay"."""
        from dsmpacs.archive.totp import CodeCheck

        if code:
            result = second_factor.verify(state.account, code)
            ok = result is CodeCheck.OK
            reason = "replay" if result is CodeCheck.REPLAY else "wrong"
        else:
            ok = bool(password) and users.authenticate(state.account.username, password) is not None
            reason = "wrong"
        if not ok:
            return reason
        self.mark_reauthenticated(state.id)
        return True
