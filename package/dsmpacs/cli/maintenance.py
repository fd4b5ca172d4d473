"""Archive maintenance: import, db upgrade/check/backup, verify, reindex."""
from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import click

from dsmpacs.cli import Context, audit, main, open_archive, pass_ctx


@main.command("import")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--source-ae", default="", help="Record this AE title as the sender.")
@pass_ctx
def import_cmd(ctx: Context, paths: tuple[Path, ...], source_ae: str) -> None:
    """Import files, folders, zip files or DICOMDIR media."""
    from dsmpacs.archive.importer import ZipLimits, count_sources, import_paths
    from dsmpacs.archive.ingest import Origin

    archive = open_archive(ctx, upgrade=True)
    limits = ZipLimits(archive.settings.zip_max_mb * 2**20, archive.settings.zip_max_entries)
    total = count_sources(list(paths), limits)
    with click.progressbar(length=total, label="Importing", file=sys.stderr) as bar:
        report = import_paths(archive.ingest, list(paths), Origin("import", source_ae),
                              progress=bar.update, limits=limits)
    for source, reason in report.rejected:
        click.echo(f"rejected {source}: {reason}", err=True)
    summary = (f"stored {report.stored}, duplicates {report.duplicates}, rejected {len(report.rejected)}"
               + (f" ({report.warnings} stored with warnings)" if report.warnings else ""))
    from dsmpacs.archive.audit import AuditAction

    try:
        audit(archive, AuditAction.IMPORT, f"{', '.join(str(p) for p in paths)}: {summary}",
              outcome="ok" if not report.rejected else "partial", calling_ae=source_ae)
    finally:
        archive.close()
    click.echo(summary)
    if report.rejected:
        sys.exit(2)


@main.group()
def db() -> None:
    """Index database: upgrade, check, backup."""


@db.command()
@pass_ctx
def upgrade(ctx: Context) -> None:
    """Create the index or migrate it to this program's schema version."""
    from dsmpacs.archive import Archive, database
    from dsmpacs.logsetup import configure

    settings = ctx.settings()
    configure(settings, to_file=False)
    archive = Archive(settings)
    try:
        before, after = database.upgrade(archive.db, backup_dir=settings.data_dir / "backups")
    except database.IndexProblem as exc:
        raise click.ClickException(str(exc)) from None
    if before != after:
        from dsmpacs.archive.audit import AuditAction

        audit(archive, AuditAction.DB_UPGRADE, f"index schema version {before} -> {after}")
    click.echo(f"index schema: version {before} -> {after}" if before != after
               else f"index schema: version {after}, up to date")


@db.command("check")
@pass_ctx
def db_check(ctx: Context) -> None:
    """Check that the index is reachable and its schema matches this program."""
    from dsmpacs.archive import Archive, database

    archive = Archive(ctx.settings())
    try:
        version = database.check(archive.db)
        count = archive.index.instance_count()
    except database.IndexProblem as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"index ok: schema version {version}, {count} instances")


@db.command()
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="Backup file. Default: <data_dir>/backups/index-<time>.(sqlite3|sql)")
@pass_ctx
def backup(ctx: Context, output: Path | None) -> None:
    """Write a consistent copy of the index while the archive runs."""
    from urllib.parse import unquote, urlsplit

    from dsmpacs.archive import Archive, database

    settings = ctx.settings()
    archive = Archive(settings)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    url = settings.effective_database_url
    if url.startswith("sqlite:"):
        output = output or settings.data_dir / "backups" / f"index-{stamp}.sqlite3"
        database.backup_sqlite(archive.db, output)
    else:
        output = output or settings.data_dir / "backups" / f"index-{stamp}.sql"
        output.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, MYSQL_PWD=unquote(urlsplit(url).password or ""))
        with open(output, "wb") as fh:
            done = subprocess.run(database.backup_mysql_command(url), stdout=fh, env=env)
        if done.returncode != 0:
            output.unlink(missing_ok=True)
            raise click.ClickException("mariadb-dump failed; see the message above")
    from dsmpacs.archive.audit import AuditAction

    if database.current_version(archive.db) == database.LATEST_VERSION:
        audit(archive, AuditAction.DB_BACKUP, f"index backed up to {output}")
    else:
        click.echo("warning: the index predates this program's audit trail; the backup is not "
                   "recorded in it (run `dsmpacs db upgrade`)", err=True)
    click.echo(f"index backed up to {output}")


@main.command()
@pass_ctx
def verify(ctx: Context) -> None:
    """Re-hash every stored file and compare it with the index; report orphan files.

    A mismatch marks the instance corrupt (never served); a match clears the mark.
    Exits 1 when anything is missing, altered or orphaned."""
    from dsmpacs.archive.maintenance import verify as run_verify

    archive = open_archive(ctx)
    total = archive.index.instance_count()
    with click.progressbar(length=total, label="Verifying", file=sys.stderr) as bar:
        report = run_verify(archive, progress=bar.update)
    for uid in report.missing:
        click.echo(f"missing file: {uid}")
    for uid in report.mismatched:
        click.echo(f"checksum mismatch: {uid}")
    for relpath in report.orphans:
        click.echo(f"orphan file (in storage, not in the index; left in place): {relpath}")
    click.echo(f"checked {report.checked}, missing {len(report.missing)}, "
               f"mismatched {len(report.mismatched)}, orphans {len(report.orphans)}")
    if report.missing or report.mismatched:
        click.echo("missing and mismatched instances are marked corrupt and are not served; "
                   "restore their files from a backup and run verify again", err=True)
    if not report.ok:
        sys.exit(1)


@main.command()
@click.confirmation_option(prompt="Rebuild the patient/study/series/instance index from the files?")
@pass_ctx
def reindex(ctx: Context) -> None:
    """Rebuild the index from the files in storage (run with the archive stopped)."""
    from dsmpacs.archive.maintenance import reindex as run_reindex

    archive = open_archive(ctx, upgrade=True)
    total = sum(1 for _ in archive.storage.iter_published())
    with click.progressbar(length=total, label="Reindexing", file=sys.stderr) as bar:
        report = run_reindex(archive, progress=bar.update)
    click.echo(f"indexed {report.indexed}, unreadable {len(report.unreadable)}, "
               f"duplicates quarantined {len(report.duplicates)}")
