"""`dsmpacs dsm ...`: the work behind the Synology package's lifecycle scripts.

The scripts in dsm/scripts/ stay thin shell; what they need decided or written
happens here, where it is tested Python. Each command prints what the
administrator should read; the scripts pass it on to Package Center.
"""
from __future__ import annotations

import os
from pathlib import Path

import click

from dsmpacs.cli import Context, main, pass_ctx


def _data_dir(ctx: Context) -> Path:
    if not ctx.data_dir:
        raise click.UsageError("--data-dir is required (the package's SYNOPKG_PKGVAR)")
    return Path(ctx.data_dir)


@main.group()
def dsm() -> None:
    """Synology DSM package lifecycle (run by the package's scripts)."""


@dsm.command()
@click.option("--target", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The package's target directory (SYNOPKG_PKGDEST).")
@click.option("--package-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="/var/packages/<package>: its shares/ holds the data-share links.")
@pass_ctx
def postinst(ctx: Context, target: Path, package_dir: Path) -> None:
    """Write config.toml from the wizard's answers (never over an existing one) and the
    files that carry the ports to DSM."""
    from dsmpacs.dsm import lifecycle
    from dsmpacs.settings import SettingsError

    try:
        notices = lifecycle.postinst(_data_dir(ctx), target, package_dir, os.environ)
    except (lifecycle.LifecycleError, SettingsError) as exc:
        raise click.ClickException(str(exc)) from None
    for line in notices:
        click.echo(line)


@dsm.command()
@click.option("--target", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The package's target directory (SYNOPKG_PKGDEST).")
@pass_ctx
def prestart(ctx: Context, target: Path) -> None:
    """Refresh the port files, check ports, shared folder and index, bring the index schema
    forward, then print the processes to start, one per line: NAME DSMPACS-ARGUMENTS..."""
    from dsmpacs.dsm import lifecycle
    from dsmpacs.logsetup import configure

    settings = ctx.settings()
    configure(settings, to_file=False)
    try:
        started = lifecycle.prestart(settings, target)
    except lifecycle.LifecycleError as exc:
        raise click.ClickException(str(exc)) from None
    for name, args in started:
        click.echo(" ".join([name, *args]))


@dsm.command("wait-ready")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait.")
@pass_ctx
def wait_ready(ctx: Context, timeout: float) -> None:
    """Wait until each started service (a PID file in <data_dir>/run) listens on its port."""
    from dsmpacs.dsm import lifecycle

    data_dir = _data_dir(ctx)
    problems = lifecycle.wait_ready(ctx.settings(), data_dir / "run", data_dir / "logs", timeout)
    if problems:
        raise click.ClickException("\n".join(problems))


@dsm.command("drop-index")
@pass_ctx
def drop_index(ctx: Context) -> None:
    """Remove the index tables from MariaDB (uninstall with "delete data")."""
    from dsmpacs.dsm import lifecycle

    try:
        click.echo(lifecycle.drop_index(ctx.settings()))
    except Exception as exc:  # the uninstall goes on; say what is left behind
        raise click.ClickException(f"the index tables could not be dropped: {exc}") from None
