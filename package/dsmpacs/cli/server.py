"""`dsmpacs serve` and `dsmpacs settings`."""
from __future__ import annotations

import sys

import click

from dsmpacs.checks import tls_problem, web_tls_problem
from dsmpacs.cli import Context, main, pass_ctx
from dsmpacs.settings import settings_markdown


def child_command(ctx: Context, role: str, flags: dict) -> list[str]:
    """The command line of one child process: the same data directory, settings
    overrides and flags as this one (the environment is inherited), one role."""
    cmd = [sys.executable, "-m", "dsmpacs"]
    if ctx.data_dir is not None:
        cmd += ["--data-dir", str(ctx.data_dir)]
    for item in ctx.sets:
        cmd += ["--set", item]
    for name, value in flags.items():
        if value is not None:
            cmd += ["--set", f"{name}={value}"]
    cmd += ["serve", "--only", role]
    if role == "dicom":
        cmd.append("--no-recovery")       # the parent recovered before starting the children
    return cmd


@main.command()
@click.option("--only", type=click.Choice(["dicom", "web"]),
              help="Run only the DICOM daemon or only the web server (default: both, as two processes).")
@click.option("--ae-title", help="This archive's AE title.")
@click.option("--host", "dicom_host", help="Address the DICOM listener binds to.")
@click.option("--port", "dicom_port", type=int, help="DICOM port (0 picks a free one).")
@click.option("--web-host", help="Address the web server binds to.")
@click.option("--web-port", type=int, help="Web port (0 picks a free one).")
@click.option("--database-url", help="Index database URL (sqlite:///... or mysql://...).")
@click.option("--no-recovery", is_flag=True, hidden=True,
              help="Skip crash recovery at start (the supervising parent did it).")
@pass_ctx
def serve(ctx: Context, only: str | None, no_recovery: bool, **flags) -> None:
    """Run the archive: the DICOM daemon and the web server, until stopped."""
    from dsmpacs import app
    from dsmpacs.archive.database import IndexProblem
    from dsmpacs.archive.storage import StorageError
    from dsmpacs.logsetup import configure

    settings = ctx.settings(**flags)
    configure(settings, process=only or "serve")
    for problem in (tls_problem(settings) if only != "web" else None,
                    web_tls_problem(settings) if only != "dicom" else None):
        if problem:
            raise click.ClickException(problem)
    try:
        if only == "dicom":
            _listen(settings, "DICOM", settings.dicom_host, settings.dicom_port,
                    lambda: app.serve_dicom(settings, recover=not no_recovery))
        elif only == "web":
            _listen(settings, "web", settings.web_host, settings.web_port, lambda: app.serve_web(settings))
        else:
            commands = {role: child_command(ctx, role, flags) for role in ("dicom", "web")}
            sys.exit(app.serve(settings, commands))
    except (IndexProblem, StorageError) as exc:
        raise click.ClickException(str(exc)) from None


def _listen(settings, what: str, host: str, port: int, run) -> None:
    try:
        run()
    except OSError as exc:
        raise click.ClickException(f"cannot listen for {what} on {host}:{port}: "
                                   f"{exc.strerror or exc}") from None


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
