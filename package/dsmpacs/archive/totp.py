"""The second factor: TOTP (RFC 6238) codes and single-use recovery codes.

Codes are computed by pyotp (30-second steps, 6 digits, SHA-1: what every
authenticator app expects). A code is accepted for the current step and one
step either side (clock drift), and only for a step newer than the last one
used: a code seen once, on the screen or the wire, cannot be replayed. The
"newer than" check is one conditional UPDATE, so two web processes racing
with the same code cannot both win.

The TOTP secret has to be stored so codes can be computed; the index keeps it
like the password hash, readable to the service user only. Recovery codes
are random (80 bits), so, like API tokens, a SHA-256 is enough to store them.

Enrolment: ``begin`` stores an unconfirmed secret (a new one each time),
``confirm`` checks a first code against it and returns ten recovery codes,
the only time they exist in clear. ``reset`` (the CLI's totp-reset) forgets
both, so the user enrols again.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timezone
from enum import Enum

import pyotp

from dsmpacs.archive.index import Index
from dsmpacs.archive.models import RecoveryCode, TotpCredential, User, utcnow
from dsmpacs.archive.users import Account, Role, UserError, username_key

ISSUER = "DSM PACS"
RECOVERY_CODES = 10
_RECOVERY_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"   # 32 symbols: 5 bits each, no 0/O 1/I


class CodeCheck(Enum):
    OK = "ok"
    WRONG = "wrong"
    REPLAY = "replay"          # right code, but its time step was already used
    NOT_ENROLLED = "not-enrolled"


def roles_requiring(setting: str) -> frozenset[str]:
    """The roles named in require_totp_roles. An unknown name is an error, not ignored:
    a typo must not quietly turn the requirement off."""
    from dsmpacs.settings import SettingsError

    names = frozenset(part.strip() for part in setting.split(",") if part.strip())
    unknown = names - {r.value for r in Role}
    if unknown:
        raise SettingsError(f"require_totp_roles names unknown roles {', '.join(sorted(unknown))}; "
                            f"roles are {', '.join(r.value for r in Role)}")
    return names


def _hash(code: str) -> str:
    return hashlib.sha256(code.encode("ascii")).hexdigest()


def _normal_recovery(code: str) -> str:
    return "".join(ch for ch in code.upper() if ch.isalnum())


def _new_recovery_code() -> str:
    raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(16))
    return "-".join(raw[i:i + 4] for i in range(0, 16, 4))


class SecondFactor:
    def __init__(self, index: Index, *, clock=lambda: datetime.now(timezone.utc)):
        self.index = index
        self.clock = clock

    def enrolled(self, user_id: int) -> bool:
        with self.index.read():
            return TotpCredential.select().where((TotpCredential.user == user_id)
                                                 & TotpCredential.confirmed_at.is_null(False)).exists()

    def required_for(self, account: Account, setting: str) -> bool:
        return account.role.value in roles_requiring(setting)

    def stage_after_password(self, account: Account, require_totp_roles: str) -> str:
        """Where sign-in goes once the password was right: a code is due from an
        enrolled user, enrolment from one whose role needs TOTP, else signed in."""
        from dsmpacs.archive.sessions import STAGE_ENROL, STAGE_OK, STAGE_TOTP

        if self.enrolled(account.id):
            return STAGE_TOTP
        return STAGE_ENROL if self.required_for(account, require_totp_roles) else STAGE_OK

    # --- enrolment -------------------------------------------------------------------
    def begin(self, account: Account) -> str:
        """A new unconfirmed secret for the account (refused while one is confirmed)."""
        secret = pyotp.random_base32()
        with self.index.write():
            existing = TotpCredential.get_or_none(TotpCredential.user == account.id)
            if existing is not None and existing.confirmed_at is not None:
                raise UserError(f"{account.username!r} already has a second factor")
            if existing is None:
                TotpCredential.create(user=account.id, secret=secret)
            else:
                TotpCredential.update(secret=secret, last_step=0).where(
                    TotpCredential.id == existing.id).execute()
        return secret

    def pending_secret(self, user_id: int) -> str | None:
        with self.index.read():
            row = TotpCredential.get_or_none((TotpCredential.user == user_id)
                                             & TotpCredential.confirmed_at.is_null(True))
        return row.secret if row else None

    @staticmethod
    def provisioning_uri(account: Account, secret: str) -> str:
        return pyotp.TOTP(secret).provisioning_uri(name=account.username, issuer_name=ISSUER)

    def confirm(self, account: Account, code: str) -> list[str] | None:
        """Confirm enrolment with a first code; the recovery codes, or None if the code is wrong."""
        with self.index.read():
            row = TotpCredential.get_or_none((TotpCredential.user == account.id)
                                             & TotpCredential.confirmed_at.is_null(True))
        if row is None or self._check_step(row, code) is not CodeCheck.OK:
            return None
        codes = [_new_recovery_code() for _ in range(RECOVERY_CODES)]
        with self.index.write():
            TotpCredential.update(confirmed_at=utcnow()).where(TotpCredential.id == row.id).execute()
            RecoveryCode.delete().where(RecoveryCode.user == account.id).execute()
            RecoveryCode.insert_many([{"user": account.id, "code_hash": _hash(_normal_recovery(c))}
                                      for c in codes]).execute()
        return codes

    def reset(self, username: str) -> bool:
        """Forget the user's TOTP secret and recovery codes; False if there was none."""
        with self.index.write():
            user = User.get_or_none(User.username_key == username_key(username))
            if user is None:
                raise UserError(f"no user named {username!r}")
            removed = TotpCredential.delete().where(TotpCredential.user == user.id).execute()
            RecoveryCode.delete().where(RecoveryCode.user == user.id).execute()
        return removed > 0

    def recovery_codes_left(self, user_id: int) -> int:
        with self.index.read():
            return RecoveryCode.select().where((RecoveryCode.user == user_id)
                                               & RecoveryCode.used_at.is_null(True)).count()

    # --- checking codes --------------------------------------------------------------
    def verify(self, account: Account, code: str) -> CodeCheck:
        """A TOTP code or a recovery code of an enrolled user."""
        code = (code or "").strip().replace(" ", "")
        with self.index.read():
            row = TotpCredential.get_or_none((TotpCredential.user == account.id)
                                             & TotpCredential.confirmed_at.is_null(False))
        if row is None:
            return CodeCheck.NOT_ENROLLED
        if code.isdigit():
            return self._check_step(row, code)
        return self._use_recovery(account.id, code)

    def _check_step(self, row: TotpCredential, code: str) -> CodeCheck:
        if not (code.isdigit() and len(code) == 6):
            return CodeCheck.WRONG
        totp = pyotp.TOTP(row.secret)
        now = self.clock()
        step_now = totp.timecode(now)
        for offset in (0, -1, 1):
            if hmac.compare_digest(totp.generate_otp(step_now + offset), code):
                step = step_now + offset
                with self.index.write():
                    won = TotpCredential.update(last_step=step).where(
                        (TotpCredential.id == row.id) & (TotpCredential.last_step < step)).execute()
                return CodeCheck.OK if won else CodeCheck.REPLAY
        return CodeCheck.WRONG

    def _use_recovery(self, user_id: int, code: str) -> CodeCheck:
        normal = _normal_recovery(code)
        if len(normal) != 16:
            return CodeCheck.WRONG
        with self.index.write():
            used = RecoveryCode.update(used_at=utcnow()).where(
                (RecoveryCode.user == user_id) & (RecoveryCode.code_hash == _hash(normal))
                & RecoveryCode.used_at.is_null(True)).execute()
        return CodeCheck.OK if used else CodeCheck.WRONG
