"""`dsmpacs tls`: the local CA, this archive's certificate, and the CAs it trusts."""
from __future__ import annotations

from pathlib import Path

import click

from dsmpacs.cli import Context, audit, main, open_archive, pass_ctx


def _files(ctx: Context):
    from dsmpacs.tls import TlsFiles

    return TlsFiles.of(ctx.settings())


def _record(ctx: Context, detail: str) -> None:
    from dsmpacs.archive.audit import AuditAction

    archive = open_archive(ctx, upgrade=True)
    try:
        audit(archive, AuditAction.TLS_CHANGE, detail)
    finally:
        archive.close()


def _run(step):
    from dsmpacs.tls.authority import AuthorityError

    try:
        return step()
    except (AuthorityError, OSError) as exc:
        raise click.ClickException(str(exc)) from None


@main.group("tls")
def tls() -> None:
    """Certificates for DICOM TLS and HTTPS, kept in <data_dir>/tls/."""


@tls.command("init")
@click.option("--host", "hosts", multiple=True,
              help="Name or address peers and browsers use to reach the archive (repeatable). "
                   "Default: this host's name, localhost, 127.0.0.1 and its outward address.")
@click.option("--force", is_flag=True, help="Replace an existing CA and certificate.")
@pass_ctx
def init_cmd(ctx: Context, hosts: tuple[str, ...], force: bool) -> None:
    """Create a local CA and this archive's certificate signed by it."""
    from dsmpacs.tls import authority

    files = _files(ctx)
    names = list(hosts) or authority.default_hosts()
    issued = _run(lambda: authority.init(files, names, force=force))
    _record(ctx, f"local CA created; server certificate for {', '.join(names)}")
    click.echo(f"server certificate {issued.cert_path} for {', '.join(names)}, "
               f"valid until {issued.not_after:%Y-%m-%d}")
    click.echo(f"give peers and browsers the CA certificate: {files.ca_cert}")


@tls.command("renew")
@click.option("--host", "hosts", multiple=True,
              help="Names and addresses for the new certificate. Default: the current ones.")
@pass_ctx
def renew_cmd(ctx: Context, hosts: tuple[str, ...]) -> None:
    """New key and certificate for this archive from the same local CA."""
    from dsmpacs.tls import authority

    files = _files(ctx)
    issued = _run(lambda: authority.renew_server(files, list(hosts)))
    _record(ctx, f"server certificate renewed: {issued.subject}")
    click.echo(f"server certificate {issued.cert_path} valid until {issued.not_after:%Y-%m-%d}; "
               "restart the service to use it")


@tls.command("issue")
@click.argument("name")
@click.option("--host", "hosts", multiple=True, help="Name or address of the device (repeatable).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory to write NAME.pem, NAME.key and ca.pem to.")
@pass_ctx
def issue_cmd(ctx: Context, name: str, hosts: tuple[str, ...], out_dir: Path) -> None:
    """Sign a certificate for a modality or workstation with the local CA."""
    from dsmpacs.tls import authority

    files = _files(ctx)
    issued = _run(lambda: authority.issue(files, name, list(hosts), out_dir))
    _record(ctx, f"certificate issued: {issued.subject}")
    click.echo(f"{issued.cert_path} and {issued.key_path} (valid until {issued.not_after:%Y-%m-%d})")


@tls.command("trust")
@click.argument("ca_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@pass_ctx
def trust_cmd(ctx: Context, ca_file: Path) -> None:
    """Accept peer certificates signed by this CA (a hospital's own CA)."""
    from dsmpacs.tls import authority

    added = _run(lambda: authority.trust(_files(ctx), ca_file))
    _record(ctx, f"CA trusted: {'; '.join(added) or 'already trusted'}")
    click.echo("trusted: " + ("; ".join(added) or "nothing new"))


@tls.command("import")
@click.option("--cert", "cert_file", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Certificate (PEM), followed by its chain.")
@click.option("--key", "key_file", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Its private key (PEM, unencrypted).")
@pass_ctx
def import_cmd(ctx: Context, cert_file: Path, key_file: Path) -> None:
    """Use a certificate issued elsewhere (the NAS's, a hospital CA's) as this archive's."""
    from dsmpacs.tls import authority

    issued = _run(lambda: authority.import_identity(_files(ctx), cert_file, key_file))
    _record(ctx, f"server certificate imported: {issued.subject}")
    click.echo(f"imported {issued.subject}, valid until {issued.not_after:%Y-%m-%d}")


@tls.command("show")
@pass_ctx
def show_cmd(ctx: Context) -> None:
    """The certificates in use and the CAs trusted."""
    from dsmpacs.tls import authority

    rows = _run(lambda: authority.describe(_files(ctx)))
    if not rows:
        raise click.ClickException("no certificates yet: run `dsmpacs tls init`")
    for row in rows:
        click.echo(f"{row['role']}: {row['subject']}  until {row['not_after']}  sha256 {row['sha256']}"
                   + (f"  hosts {row['hosts']}" if row["hosts"] else ""))
