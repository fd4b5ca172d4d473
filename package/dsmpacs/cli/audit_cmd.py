"""`dsmpacs audit verify|prune|rotate-key`: the tamper-evident audit trail."""
from __future__ import annotations

import sys

import click

from dsmpacs.cli import Context, audit, main, open_archive, pass_ctx


@main.group("audit")
def audit_group() -> None:
    """Audit trail: verify the chain, prune by retention, rotate the chain key."""


def _trail(ctx: Context):
    from dsmpacs.archive.audit import AuditTrail

    archive = open_archive(ctx)
    return archive, AuditTrail.of(archive)


@audit_group.command("verify")
@pass_ctx
def audit_verify(ctx: Context) -> None:
    """Check every record against the chain. Exit 0 when intact, 1 at the first
    edited, missing or reordered record (its number is printed)."""
    from dsmpacs.archive.audit import AuditAction
    from dsmpacs.archive.auditchain import ChainKeyError

    archive, trail = _trail(ctx)
    try:
        try:
            result = trail.verify()
        except ChainKeyError as exc:
            raise click.ClickException(str(exc)) from None
        if result.ok:
            text = f"audit trail intact: {result.checked} records"
            if result.checked:
                text += f" ({result.first_seq} to {result.last_seq})"
            if result.unchained:
                text += (f"; the chain starts at record {result.chain_start or result.last_seq + 1}, "
                         f"the {result.unchained} records before it predate it")
        else:
            text = f"audit trail BROKEN at record {result.broken_at}: {result.message}"
        audit(archive, AuditAction.AUDIT_VERIFY, text[:1024], outcome="ok" if result.ok else "broken")
    finally:
        archive.close()
    click.echo(text)
    if not result.ok:
        sys.exit(1)


@audit_group.command("prune")
@click.option("--days", type=click.IntRange(min=1),
              help="Delete records older than this. Default: the audit_retention_days setting.")
@pass_ctx
def audit_prune(ctx: Context, days: int | None) -> None:
    """Delete old records; the pruning is itself recorded so the chain still verifies."""
    from dsmpacs.cli import cli_actor

    archive, trail = _trail(ctx)
    days = days or archive.settings.audit_retention_days
    try:
        if not days:
            click.echo("audit_retention_days is 0 (keep forever): nothing pruned")
            return
        from dsmpacs.syslog_export import delivered

        keep = delivered(archive.settings) if archive.settings.audit_syslog_host else None
        deleted = trail.prune(days, actor=cli_actor(), address="local", keep_after=keep)
    finally:
        archive.close()
    click.echo(f"pruned {deleted} records older than {days} days")


@audit_group.command("rotate-key")
@pass_ctx
def audit_rotate_key(ctx: Context) -> None:
    """Start signing with a new key. Older keys stay in the key file: the records they
    signed still verify."""
    from dsmpacs.archive.audit import AuditAction

    archive, trail = _trail(ctx)
    try:
        key_id = trail.keys.rotate()
        audit(archive, AuditAction.AUDIT_KEY_ROTATE, f"new chain key {key_id}")
    finally:
        archive.close()
    click.echo(f"audit chain key rotated: new key {key_id} in {trail.keys.path}")
