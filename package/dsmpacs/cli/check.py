"""`dsmpacs check`: can the archive start? Prints a reason an administrator can act on."""
from __future__ import annotations

import sys

import click

from dsmpacs.cli import Context, main, pass_ctx


@main.command()
@click.option("--ports/--no-ports", default=True, help="The DICOM and web ports are free.")
@click.option("--storage/--no-storage", default=True, help="The storage root exists and is writable.")
@click.option("--database/--no-database", default=True, help="The index database answers.")
@pass_ctx
def check(ctx: Context, ports: bool, storage: bool, database: bool) -> None:
    """Check what the archive needs to start (run it while the archive is stopped)."""
    from dsmpacs import checks

    names = [name for name, wanted in (("ports", ports), ("storage", storage),
                                       ("database", database)) if wanted]
    problems = checks.run(ctx.settings(), names)
    for line in problems:
        click.echo(line)
    if problems:
        sys.exit(1)
    click.echo(f"ok: {', '.join(names)}")
