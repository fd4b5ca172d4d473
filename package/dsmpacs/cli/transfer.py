"""DICOM client commands: echo and send."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from dsmpacs.cli import Context, main, open_archive, pass_ctx


def resolve_peer(ctx: Context, spec: str | None):
    """A registered remote AE by name, ``AE@HOST:PORT``, or (None) this archive itself."""
    from dsmpacs.archive.peers import Peer, PeerError

    settings = ctx.settings()
    if spec is None:
        from dsmpacs.dicom.connect import this_archive

        return this_archive(settings)
    try:
        parsed = Peer.parse(spec) if "@" in spec else None
        from dsmpacs.archive.peers import PeerRegistry

        try:
            archive = open_archive(ctx)
        except click.ClickException:
            if parsed is None:
                raise
            return parsed           # no index here: an ad-hoc peer cannot be a registered one
        try:
            # AE@HOST:PORT of a registered entry is that entry, with its TLS flag.
            return PeerRegistry(archive.index).resolve(spec)
        finally:
            archive.close()
    except PeerError as exc:
        raise click.BadParameter(str(exc), param_hint="PEER") from None


@main.command()
@click.argument("target", required=False, metavar="[PEER]")
@pass_ctx
def echo(ctx: Context, target: str | None) -> None:
    """C-ECHO a peer (registered name or AE@HOST:PORT; default: this archive)."""
    from dsmpacs.dicom.scu import AssociationFailed
    from dsmpacs.dicom.scu import echo as do_echo

    tgt = resolve_peer(ctx, target)
    try:
        status = do_echo(ctx.settings(), tgt)
    except AssociationFailed as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"C-ECHO {tgt}: status 0x{status:04X}")
    if status != 0:
        sys.exit(1)


@main.command()
@click.argument("target", metavar="PEER")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--study", "study_uid", metavar="UID",
              help="Send this stored study instead of files (see `dsmpacs retrieve` for pulling).")
@click.option("--series", "series_uids", multiple=True, metavar="UID",
              help="With --study: only this series. Repeatable.")
@pass_ctx
def send(ctx: Context, target: str, paths: tuple[Path, ...], study_uid: str | None,
         series_uids: tuple[str, ...]) -> None:
    """C-STORE files (or folders of files), or a stored study, to a peer (name or AE@HOST:PORT).

    Files go out unchanged. A stored study goes out in each instance's stored
    transfer syntax, converted losslessly to an uncompressed one only where the
    peer refuses the stored syntax.
    """
    if bool(paths) == bool(study_uid):
        raise click.UsageError("give either files to send or --study UID")
    if series_uids and not study_uid:
        raise click.UsageError("--series needs --study")
    if study_uid:
        from dsmpacs.cli.retrieve import send_study

        send_study(ctx, target, study_uid, series_uids)
        return
    from dsmpacs.dicom.scu import AssociationFailed, send_files

    files = sorted(f for p in paths for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file())
    tgt = resolve_peer(ctx, target)
    failed = 0
    with click.progressbar(length=len(files), label=f"Sending to {tgt}", file=sys.stderr) as bar:
        def progress(result):
            nonlocal failed
            bar.update(1)
            if not result.ok:
                failed += 1
                click.echo(f"\nfailed {result.path}: status 0x{result.status & 0xFFFF:04X} "
                           f"{result.message}", err=True)
        try:
            results = send_files(ctx.settings(), tgt, files, progress)
        except AssociationFailed as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"sent {len(results) - failed}, failed {failed}")
    if failed:
        sys.exit(2)
