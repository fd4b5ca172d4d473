"""`dsmpacs user ...`: accounts and API tokens, for the first administrator and
for recovery over SSH when nobody can sign in to the web UI."""
from __future__ import annotations

import sys

import click

from dsmpacs.cli import Context, cli_actor, main, open_archive, pass_ctx

ROLES = ("admin", "radiologist", "viewer", "auditor")


class _Session:
    """The archive, its accounts and its audit trail, closed afterwards."""

    def __init__(self, ctx: Context):
        from dsmpacs.archive.audit import AuditTrail
        from dsmpacs.archive.users import Users

        self.archive = open_archive(ctx, upgrade=True)
        self.users = Users(self.archive.index)
        self.audit = AuditTrail.of(self.archive)

    def __enter__(self) -> "_Session":
        return self

    def __exit__(self, *exc) -> None:
        self.archive.close()

    def record(self, action, detail: str) -> None:
        self.audit.record(cli_actor(), action, detail=detail, address="local")


def _read_password(password_stdin: bool, generate: bool) -> tuple[str, bool]:
    """(password, generated)."""
    from dsmpacs.archive.users import generate_password

    if generate:
        return generate_password(), True
    if password_stdin:
        return sys.stdin.readline().rstrip("\r\n"), False
    return click.prompt("Password", hide_input=True, confirmation_prompt=True), False


def _fail(exc: Exception):
    raise click.ClickException(str(exc)) from None


@main.group()
def user() -> None:
    """Web users: add, list, passwd, set, remove, ensure-admin, totp-reset, tokens."""


@user.command("add")
@click.argument("username")
@click.option("--role", type=click.Choice(ROLES), default="viewer", show_default=True)
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@click.option("--generate", is_flag=True, help="Generate a password and print it once.")
@click.option("--institution", default="", help="Code of the institution the user joins (default: the default one).")
@pass_ctx
def user_add(ctx: Context, username: str, role: str, password_stdin: bool, generate: bool,
             institution: str) -> None:
    """Add a user (admin, radiologist: view, export, send; viewer: view only;
    auditor: the audit trail only)."""
    from dsmpacs.archive.audit import AuditAction
    from dsmpacs.archive.institutions import InstitutionError, Institutions
    from dsmpacs.archive.users import UserError

    password, generated = _read_password(password_stdin, generate)
    with _Session(ctx) as s:
        try:
            joins = Institutions(s.users.index).get(institution).id if institution else None
            account = s.users.add(username, password, role, institution=joins)
        except (UserError, InstitutionError) as exc:
            _fail(exc)
        s.record(AuditAction.USER_ADD, f"{account.username} ({account.role.value})")
    click.echo(f"added {account.username} ({account.role.value})")
    if generated:
        click.echo(f"password: {password}")


@user.command("list")
@pass_ctx
def user_list(ctx: Context) -> None:
    """List users with their role and state."""
    with _Session(ctx) as s:
        accounts = s.users.list()
    for a in accounts:
        last = f"{a.last_login_at:%Y-%m-%d %H:%M} UTC" if a.last_login_at else "never"
        state = "disabled" if a.disabled else "enabled"
        click.echo(f"{a.username}\t{a.role.value}\t{state}\tlast login {last}")


@user.command("passwd")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@click.option("--generate", is_flag=True, help="Generate a password and print it once.")
@pass_ctx
def user_passwd(ctx: Context, username: str, password_stdin: bool, generate: bool) -> None:
    """Set a user's password (signs out their sessions)."""
    from dsmpacs.archive.audit import AuditAction
    from dsmpacs.archive.users import UserError

    password, generated = _read_password(password_stdin, generate)
    with _Session(ctx) as s:
        try:
            account = s.users.set_password(username, password)
        except UserError as exc:
            _fail(exc)
        s.record(AuditAction.PASSWORD_CHANGE, account.username)
    click.echo(f"password of {account.username} changed")
    if generated:
        click.echo(f"password: {password}")


@user.command("set")
@click.argument("username")
@click.option("--role", type=click.Choice(ROLES))
@click.option("--disable/--enable", "disabled", default=None, help="Disable or enable the account.")
@pass_ctx
def user_set(ctx: Context, username: str, role: str | None, disabled: bool | None) -> None:
    """Change a user's role or enable/disable the account."""
    from dsmpacs.archive.audit import AuditAction
    from dsmpacs.archive.users import UserError

    with _Session(ctx) as s:
        try:
            if role is not None:
                account = s.users.set_role(username, role)
                s.record(AuditAction.USER_CHANGE, f"{account.username}: role {role}")
            if disabled is not None:
                account = s.users.set_disabled(username, disabled)
                s.record(AuditAction.USER_CHANGE,
                         f"{account.username}: {'disabled' if disabled else 'enabled'}")
        except UserError as exc:
            _fail(exc)
        account = s.users.by_name(username)
    if account is None:
        raise click.ClickException(f"no user named {username!r}")
    click.echo(f"{account.username}: {account.role.value}, {'disabled' if account.disabled else 'enabled'}")


@user.command("remove")
@click.argument("username")
@click.confirmation_option(prompt="Remove this user and their API tokens?")
@pass_ctx
def user_remove(ctx: Context, username: str) -> None:
    """Remove a user (the audit trail keeps their name)."""
    from dsmpacs.archive.audit import AuditAction
    from dsmpacs.archive.users import UserError

    with _Session(ctx) as s:
        try:
            s.users.remove(username)
        except UserError as exc:
            _fail(exc)
        s.record(AuditAction.USER_REMOVE, username)
    click.echo(f"removed {username}")


@user.command("ensure-admin")
@click.option("--username", default="admin", show_default=True)
@pass_ctx
def user_ensure_admin(ctx: Context, username: str) -> None:
    """Create an administrator with a generated password if there is none.

    The password is printed once, here, and stored only as a hash."""
    from dsmpacs.archive.audit import AuditAction

    with _Session(ctx) as s:
        created = s.users.ensure_admin(username)
        if created is not None:
            s.record(AuditAction.USER_ADD, f"{created[0].username} (admin, generated password)")
    if created is None:
        click.echo("an administrator account exists; nothing to do")
        return
    account, password = created
    click.echo("")
    click.echo(f"  Created the administrator account {account.username!r}.")
    click.echo(f"  Password (shown only now): {password}")
    click.echo("  Sign in to the web UI and change it under Account.")
    click.echo("")


@user.group("token")
def token() -> None:
    """API tokens (Authorization: Bearer ...) for DICOMweb clients."""


@token.command("create")
@click.argument("username")
@click.option("--label", default="", help="What the token is for, e.g. 'OHIF on ward PC'.")
@pass_ctx
def token_create(ctx: Context, username: str, label: str) -> None:
    """Create a token for USERNAME and print it once."""
    from dsmpacs.archive.audit import AuditAction
    from dsmpacs.archive.users import UserError

    with _Session(ctx) as s:
        try:
            info, secret = s.users.create_token(username, label)
        except UserError as exc:
            _fail(exc)
        s.record(AuditAction.TOKEN_CREATE, f"{info.username}: {info.prefix}… {label}".strip())
    click.echo(secret)


@token.command("list")
@click.argument("username", required=False)
@pass_ctx
def token_list(ctx: Context, username: str | None) -> None:
    """List tokens (all, or USERNAME's): id, user, prefix, label, last use."""
    with _Session(ctx) as s:
        tokens = s.users.tokens(username)
    for t in tokens:
        used = f"{t.last_used_at:%Y-%m-%d %H:%M} UTC" if t.last_used_at else "never used"
        click.echo(f"{t.id}\t{t.username}\t{t.prefix}…\t{t.label}\t{used}")


@token.command("revoke")
@click.argument("token_id", type=int)
@pass_ctx
def token_revoke(ctx: Context, token_id: int) -> None:
    """Revoke the token with this id (see `user token list`)."""
    from dsmpacs.archive.audit import AuditAction

    with _Session(ctx) as s:
        if not s.users.revoke_token(token_id):
            raise click.ClickException(f"no token with id {token_id}")
        s.record(AuditAction.TOKEN_REVOKE, f"token {token_id}")
    click.echo(f"revoked token {token_id}")


@user.command("totp-reset")
@click.argument("username")
@pass_ctx
def user_totp_reset(ctx: Context, username: str) -> None:
    """Forget USERNAME's second factor (lost phone and recovery codes) and end their
    sessions; they enrol again at the next sign-in, or from their account page."""
    from dsmpacs.archive.audit import AuditAction
    from dsmpacs.archive.sessions import Sessions
    from dsmpacs.archive.totp import SecondFactor
    from dsmpacs.archive.users import UserError

    with _Session(ctx) as s:
        try:
            had = SecondFactor(s.archive.index).reset(username)
        except UserError as exc:
            _fail(exc)
        account = s.users.by_name(username)
        ended = Sessions.from_settings(s.archive.index, s.archive.settings).end_all(account.id)
        s.record(AuditAction.TOTP_RESET, f"{account.username} ({ended} sessions ended)")
    click.echo(f"{account.username}: second factor {'reset' if had else 'was not set up'}; "
               f"{ended} sessions ended")
