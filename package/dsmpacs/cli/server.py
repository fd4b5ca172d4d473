"""`dsmpacs serve` and `dsmpacs settings`."""
from __future__ import annotations

import functools
import sys

import click

from dsmpacs.checks import tls_problem, web_tls_problem
from dsmpacs.cli import Context, main, pass_ctx
from dsmpacs.settings import settings_markdown


def run_role(settings, role: str, *, recover: bool = False) -> int:
    """``serve --only ROLE``, and each child of ``serve`` in the process forked for it
    (supervisor.py): one role, with its own log file; returns the exit status, with
    errors shown as click shows them. A child does no crash recovery (``recover``):
    its parent did it before starting the children, and a restarted DICOM process
    would take the web process's staged files for leftovers."""
    from dsmpacs import app
    from dsmpacs.archive.database import IndexProblem
    from dsmpacs.archive.storage import StorageError
    from dsmpacs.logsetup import configure

    configure(settings, process=role)
    try:
        if role == "dicom":
            app.serve_dicom(settings, recover=recover)
        else:
            app.serve_web(settings)
    except OSError as exc:
        what, host, port = (("DICOM", settings.dicom_host, settings.dicom_port) if role == "dicom"
                            else ("web", settings.web_host, settings.web_port))
        problem = f"cannot listen for {what} on {host}:{port}: {exc.strerror or exc}"
    except (IndexProblem, StorageError) as exc:
        problem = str(exc)
    else:
        return 0
    click.ClickException(problem).show()
    return 1


@main.command()
@click.option("--only", type=click.Choice(["dicom", "web"]),
              help="Run only the DICOM daemon or only the web server (default: both, as two processes).")
@click.option("--ae-title", help="This archive's AE title.")
@click.option("--host", "dicom_host", help="Address the DICOM listener binds to.")
@click.option("--port", "dicom_port", type=int, help="DICOM port (0 picks a free one).")
@click.option("--web-host", help="Address the web server binds to.")
@click.option("--web-port", type=int, help="Web port (0 picks a free one).")
@click.option("--database-url", help="Index database URL (sqlite:///... or mysql://...).")
@pass_ctx
def serve(ctx: Context, only: str | None, **flags) -> None:
    """Run the archive: the DICOM daemon and the web server, until stopped."""
    from dsmpacs import app
    from dsmpacs.archive.database import IndexProblem
    from dsmpacs.archive.storage import StorageError
    from dsmpacs.logsetup import configure

    settings = ctx.settings(**flags)
    for problem in (tls_problem(settings) if only != "web" else None,
                    web_tls_problem(settings) if only != "dicom" else None):
        if problem:
            raise click.ClickException(problem)
    if only is not None:
        # Alone, the DICOM daemon recovers from a crash; the web process never does:
        # the DICOM daemon may be receiving at that moment.
        sys.exit(run_role(settings, only, recover=only == "dicom"))
    configure(settings, process="serve")
    roles = {role: functools.partial(run_role, settings, role) for role in ("dicom", "web")}
    try:
        sys.exit(app.serve(settings, roles))
    except (IndexProblem, StorageError) as exc:
        raise click.ClickException(str(exc)) from None


@main.command("settings")
@click.option("--markdown", is_flag=True, help="Print the settings reference instead.")
@pass_ctx
def settings_cmd(ctx: Context, markdown: bool) -> None:
    """Print the effective settings (secrets redacted)."""
    if markdown:
        click.echo(settings_markdown(), nl=False)
        return
    for name, value in ctx.settings().redacted().items():
        click.echo(f"{name} = {value}")


@main.command("dicom-receiver", hidden=True)
@click.option("--channel-fd", type=int, required=True)
def dicom_receiver(channel_fd: int) -> None:
    """A receiving process of the DICOM daemon, which alone starts it (dicom/receiver.py)."""
    from dsmpacs.dicom import receiver

    sys.exit(receiver.run(channel_fd))
