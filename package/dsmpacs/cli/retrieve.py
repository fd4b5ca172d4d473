"""Moving studies between this archive and other AEs: `retrieve` (pull) and
`send --study` (push, registered in cli/transfer.py)."""
from __future__ import annotations

import sys

import click

from dsmpacs.cli import Context, main, open_archive, pass_ctx
from dsmpacs.cli.transfer import resolve_peer


def _check_uids(study_uid: str, series_uids: tuple[str, ...]) -> None:
    from dsmpacs.archive.uids import is_valid_uid

    for option, uid in [("--study", study_uid)] + [("--series", s) for s in series_uids]:
        if not is_valid_uid(uid):
            raise click.BadParameter(f"{uid!r} is not a valid UID", param_hint=option)


class _LazyBar:
    """A progress bar whose length is known only from the first C-MOVE/C-GET response."""

    def __init__(self, label: str):
        self.label = label
        self.bar = None

    def update(self, status) -> None:
        done = sum(int(status.get(k, 0) or 0) for k in (
            "NumberOfCompletedSuboperations", "NumberOfFailedSuboperations", "NumberOfWarningSuboperations"))
        remaining = int(status.get("NumberOfRemainingSuboperations", 0) or 0)
        if self.bar is None:
            if not remaining and not done:
                return
            self.bar = click.progressbar(length=done + remaining, label=self.label, file=sys.stderr)
            self.bar.__enter__()
        self.bar.update(max(done - self.bar.pos, 0))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)


@main.command()
@click.argument("target", metavar="PEER")
@click.option("--study", "study_uid", required=True, metavar="UID", help="Study Instance UID to retrieve.")
@click.option("--series", "series_uids", multiple=True, metavar="UID",
              help="Retrieve only this series of the study. Repeatable.")
@click.option("--method", type=click.Choice(["move", "get"]), default="move", show_default=True,
              help="C-MOVE to this archive's AE title, or C-GET on the same association.")
@pass_ctx
def retrieve(ctx: Context, target: str, study_uid: str, series_uids: tuple[str, ...], method: str) -> None:
    """Pull a study from another PACS (registered name or AE@HOST:PORT) into this archive.

    With C-MOVE the remote must know this archive's AE title, host and DICOM
    port. If the archive daemon is running it receives the instances;
    otherwise this command listens on the archive's port until the retrieve
    ends. Either way every instance is stored through the same ingest as a
    C-STORE from a modality.
    """
    from dsmpacs.archive.retrieve import RetrieveKeys, select_instances
    from dsmpacs.dicom.retrieve_scu import retrieve_get, retrieve_move
    from dsmpacs.dicom.scu import AssociationFailed

    _check_uids(study_uid, series_uids)
    peer = resolve_peer(ctx, target)
    settings = ctx.settings()
    archive = open_archive(ctx, upgrade=True)
    bar = _LazyBar(f"Retrieving from {peer}")

    def on_received(item) -> None:
        line = f"stored {item.sop_instance_uid}" if item.status == 0 else (
            f"stored {item.sop_instance_uid} with warning 0x{item.status:04X} {item.message}" if item.ok
            else f"refused {item.sop_instance_uid}: status 0x{item.status:04X} {item.message}")
        click.echo(line)

    run = retrieve_move if method == "move" else retrieve_get
    try:
        report = run(settings, archive, peer, study_uid, tuple(series_uids), progress=bar.update,
                     on_received=on_received)
    except AssociationFailed as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        bar.close()
    try:
        for uid in report.failed_uids:
            click.echo(f"failed at {peer.ae_title}: {uid}")
        click.echo(f"{peer.ae_title} reported status 0x{report.status:04X}: {report.completed} completed, "
                   f"{report.failed} failed, {report.warning} warnings; received by {report.receiver}")
        if report.status == 0xA801:
            click.echo(f"{peer.ae_title} does not know this archive's AE title {settings.ae_title}: register it "
                       f"there with this host and port {settings.dicom_port}", err=True)
        held = select_instances(archive.index, RetrieveKeys.study(study_uid, series_uids))
        click.echo(f"this archive now holds {len(held)} instances of the requested "
                   f"{'series' if series_uids else 'study'}")
    finally:
        archive.close()
    if not report.ok:
        sys.exit(2)


def send_study(ctx: Context, target: str, study_uid: str, series_uids: tuple[str, ...]) -> None:
    """`dsmpacs send PEER --study UID`: push a stored study, original bytes where the peer
    takes them, a lossless conversion where it does not."""
    from dsmpacs.archive.retrieve import RetrieveKeys, describe, select_instances
    from dsmpacs.dicom.scu import AssociationFailed, client_ae
    from dsmpacs.dicom.sender import push

    _check_uids(study_uid, series_uids)
    peer = resolve_peer(ctx, target)
    archive = open_archive(ctx)
    try:
        instances = select_instances(archive.index, RetrieveKeys.study(study_uid, series_uids))
        if not instances:
            raise click.ClickException(f"no stored instances for study {study_uid}"
                                       + (" and those series" if series_uids else ""))
        lines: list[str] = []

        with click.progressbar(length=len(instances), label=f"Sending to {peer}", file=sys.stderr) as bar:
            def progress(instance, result) -> None:
                bar.update(1)
                if result.category == "failure":
                    status = "not sent" if result.status < 0 else f"status 0x{result.status:04X}"
                    lines.append(f"failed {instance.sop_instance_uid}: {status} {result.message}")
                else:
                    how = f"converted to {describe(result.transfer_syntax_uid)}" if result.converted \
                        else f"as stored ({describe(result.transfer_syntax_uid)})"
                    warn = f", warning 0x{result.status:04X}" if result.category == "warning" else ""
                    lines.append(f"sent {instance.sop_instance_uid} {how}{warn}")
            try:
                results = push(client_ae(ctx.settings()), archive.storage, peer, instances, progress,
                               refuse=archive.refusal)
            except AssociationFailed as exc:
                raise click.ClickException(str(exc)) from None
    finally:
        archive.close()
    for line in lines:
        click.echo(line)
    failed = sum(r.category == "failure" for r in results)
    converted = sum(r.converted and r.category != "failure" for r in results)
    click.echo(f"sent {len(results) - failed} ({converted} converted), failed {failed}")
    if failed:
        sys.exit(2)
