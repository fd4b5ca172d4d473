"""`dsmpacs ae add|list|remove|echo`: the registry of remote AEs."""
from __future__ import annotations

import sys

import click

from dsmpacs.cli import Context, audit, main, open_archive, pass_ctx
from dsmpacs.cli.table import print_table


def _registry(ctx: Context):
    from dsmpacs.archive.peers import PeerRegistry

    archive = open_archive(ctx, upgrade=True)
    return archive, PeerRegistry(archive.index)


@main.group()
def ae() -> None:
    """Remote AEs: who may store, query and retrieve, and where C-MOVE may send."""


@ae.command("add")
@click.argument("name")
@click.argument("ae_title")
@click.argument("host")
@click.argument("port", type=click.IntRange(0, 65535))
@click.option("--store/--no-store", "may_store", default=True, show_default=True,
              help="May send us C-STORE.")
@click.option("--find/--no-find", "may_find", default=True, show_default=True,
              help="May query us (C-FIND).")
@click.option("--retrieve/--no-retrieve", "may_retrieve", default=True, show_default=True,
              help="May retrieve from us (C-MOVE, C-GET).")
@click.option("--move-destination/--no-move-destination", "is_move_destination", default=True,
              show_default=True, help="We may send to it (C-MOVE destination, push).")
@click.option("--tls/--no-tls", default=False, show_default=True,
              help="DICOM TLS both ways: this archive reaches it over TLS, and it is refused on "
                   "the plain port (it must use dicom_tls_port).")
@click.option("--client-cert/--no-client-cert", "tls_client_cert", default=False, show_default=True,
              help="With --tls: it must show a TLS client certificate signed by a trusted CA.")
@click.option("--description", default="", help="Free text, e.g. the room or the vendor.")
@pass_ctx
def ae_add(ctx: Context, name: str, ae_title: str, host: str, port: int, **flags) -> None:
    """Register a remote AE: NAME AE_TITLE HOST PORT.

    A modality that only sends needs no address: HOST '*' and PORT 0 register its AE
    title alone (with --no-move-destination), and it may store from any address.
    Unregistered AEs may not store unless unknown_ae_may_store is on."""
    from dsmpacs.archive.audit import AuditAction
    from dsmpacs.archive.peers import Peer, PeerError

    archive, registry = _registry(ctx)
    try:
        peer = registry.add(Peer(name=name, ae_title=ae_title, host=host, port=port, **flags))
        audit(archive, AuditAction.PEER_ADD, f"{peer.name}: {peer}")
    except PeerError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        archive.close()
    click.echo(f"added {peer.name}: {peer}")


@ae.command("list")
@pass_ctx
def ae_list(ctx: Context) -> None:
    """List the registered remote AEs and what each may do."""
    archive, registry = _registry(ctx)
    try:
        peers = registry.list()
    finally:
        archive.close()
    if not peers:
        click.echo("no remote AEs registered")
        return
    yes = {True: "yes", False: "-"}
    print_table(["name", "AE title", "host", "port", "store", "find", "retrieve", "move dest",
                 "tls", "description"],
                [[p.name, p.ae_title, p.host, str(p.port), yes[p.may_store], yes[p.may_find],
                  yes[p.may_retrieve], yes[p.is_move_destination],
                  ("cert" if p.tls_client_cert else "yes") if p.tls else "-", p.description]
                 for p in peers])


@ae.command("remove")
@click.argument("name")
@pass_ctx
def ae_remove(ctx: Context, name: str) -> None:
    """Remove a registered remote AE."""
    from dsmpacs.archive.audit import AuditAction

    archive, registry = _registry(ctx)
    try:
        removed = registry.remove(name)
        if removed:
            audit(archive, AuditAction.PEER_REMOVE, name)
    finally:
        archive.close()
    if not removed:
        raise click.ClickException(f"no remote AE named {name!r}")
    click.echo(f"removed {name}")


@ae.command("echo")
@click.argument("name")
@pass_ctx
def ae_echo(ctx: Context, name: str) -> None:
    """C-ECHO a registered remote AE."""
    from dsmpacs.archive.audit import AuditAction
    from dsmpacs.dicom.scu import AssociationFailed, echo

    archive, registry = _registry(ctx)
    try:
        peer = registry.get(name)
        if peer is None:
            raise click.ClickException(f"no remote AE named {name!r} (see `dsmpacs ae list`)")
        try:
            status = echo(ctx.settings(), peer)
        except AssociationFailed as exc:
            audit(archive, AuditAction.PEER_ECHO, f"{peer.name}: {exc}", outcome="failed")
            raise click.ClickException(str(exc)) from None
        audit(archive, AuditAction.PEER_ECHO, f"{peer.name}: status 0x{status:04X}",
              outcome="ok" if status == 0 else "failed")
    finally:
        archive.close()
    click.echo(f"C-ECHO {peer.name} ({peer}): status 0x{status:04X}")
    if status != 0:
        sys.exit(1)
