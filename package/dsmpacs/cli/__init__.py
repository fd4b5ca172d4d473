"""Command line: every action an administrator needs, usable over SSH on the NAS."""
from __future__ import annotations

import click

from dsmpacs import __version__
from dsmpacs.settings import Settings, SettingsError


class Context:
    def __init__(self, data_dir: str | None, sets: tuple[str, ...]):
        self.data_dir = data_dir
        self.sets = sets

    def settings(self, **flags) -> Settings:
        overrides = {}
        for item in self.sets:
            if "=" not in item:
                raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="--set")
            name, value = item.split("=", 1)
            overrides[name.strip()] = value
        overrides.update({k: v for k, v in flags.items() if v is not None})
        try:
            return Settings.load(data_dir=self.data_dir, overrides=overrides)
        except SettingsError as exc:
            raise click.ClickException(str(exc)) from None


pass_ctx = click.make_pass_decorator(Context)


def open_archive(ctx: Context, *, upgrade: bool = False, **flags):
    from dsmpacs.app import build_archive
    from dsmpacs.archive.database import IndexProblem
    from dsmpacs.archive.storage import StorageError
    from dsmpacs.logsetup import configure

    settings = ctx.settings(**flags)
    configure(settings, to_file=False)
    try:
        return build_archive(settings, upgrade=upgrade)
    except (IndexProblem, StorageError) as exc:
        raise click.ClickException(str(exc)) from None


def cli_actor() -> str:
    """Who runs the command, as the audit trail names them."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"[:64]
    except (KeyError, OSError):
        return "cli"


def audit(archive, action, detail: str = "", outcome: str = "ok", **fields) -> None:
    """Record an administrative command in the audit trail (it raises if it cannot:
    the command has then done its work but the operator sees the failure)."""
    from dsmpacs.archive.audit import AuditTrail

    AuditTrail.of(archive).record(cli_actor(), action, detail=detail, outcome=outcome,
                                  address="local", **fields)


@click.group(invoke_without_command=True)
@click.version_option(__version__, prog_name="dsmpacs")
@click.option("--data-dir", envvar="DSMPACS_DATA_DIR", type=click.Path(file_okay=False),
              help="Data directory (config.toml, index, logs). Default: ./data")
@click.option("--set", "sets", multiple=True, metavar="NAME=VALUE",
              help="Override any setting (see `dsmpacs settings`). Repeatable.")
@click.pass_context
def main(click_ctx: click.Context, data_dir: str | None, sets: tuple[str, ...]) -> None:
    """DSM PACS: DICOM archive and web viewer."""
    from dsmpacs.app import install_engine, restrict_file_modes

    restrict_file_modes()
    install_engine()
    click_ctx.obj = Context(data_dir, sets)
    if click_ctx.invoked_subcommand is None:
        click_ctx.invoke(main.commands["serve"])


# Each module adds its commands to `main` when imported.
from dsmpacs.cli import (  # noqa: E402,F401
    ae,
    audit_cmd,
    check,
    dsm,
    maintenance,
    ohif,
    query,
    retrieve,
    server,
    tls,
    transfer,
    users,
)
