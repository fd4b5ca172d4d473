"""`dsmpacs ae add|list|remove|echo` against the real index (SQLite and MariaDB)."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from dsmpacs.archive import Archive
from dsmpacs.archive.peers import PeerRegistry
from dsmpacs.cli import main
from dsmpacs.settings import Settings
from tests.peers import free_port


@pytest.fixture
def dsmpacs(tmp_path, database_url):
    data_dir = tmp_path / "cli"

    def run(*args: str):
        result = CliRunner().invoke(main, ["--data-dir", str(data_dir), "--set", f"database_url={database_url}",
                                           "--set", "connection_timeout=2", *args])
        return result
    run.data_dir = data_dir
    run.database_url = database_url
    return run


def registry_of(run) -> list:
    archive = Archive(Settings.load(data_dir=run.data_dir, env={},
                                    overrides={"database_url": run.database_url}))
    archive.open(upgrade=True)
    try:
        return PeerRegistry(archive.index).list()
    finally:
        archive.close()


def test_add_list_remove(dsmpacs):
    added = dsmpacs("ae", "add", "angio-1", "ANGIO1", "10.0.0.21", "104", "--no-find", "--no-retrieve",
                    "--description", "DSA room 1")
    assert added.exit_code == 0, added.output
    assert "ANGIO1@10.0.0.21:104" in added.output
    assert dsmpacs("ae", "add", "xwp", "SYNGO_XWP", "10.0.0.30", "11112", "--tls").exit_code == 0

    peers = {p.name: p for p in registry_of(dsmpacs)}
    assert peers["angio-1"].may_store and not peers["angio-1"].may_find and not peers["angio-1"].may_retrieve
    assert peers["angio-1"].is_move_destination and peers["angio-1"].description == "DSA room 1"
    assert peers["xwp"].may_find and peers["xwp"].tls

    listed = dsmpacs("ae", "list")
    assert listed.exit_code == 0
    lines = listed.output.splitlines()
    assert lines[0].split()[:4] == ["name", "AE", "title", "host"]
    assert any(line.startswith("angio-1") and "ANGIO1" in line and "DSA room 1" in line for line in lines)
    assert any(line.startswith("xwp") and "SYNGO_XWP" in line for line in lines)

    removed = dsmpacs("ae", "remove", "angio-1")
    assert removed.exit_code == 0 and "removed angio-1" in removed.output
    assert [p.name for p in registry_of(dsmpacs)] == ["xwp"]
    missing = dsmpacs("ae", "remove", "angio-1")
    assert missing.exit_code == 1 and "no remote AE named 'angio-1'" in missing.output


@pytest.mark.parametrize("args, message", [
    (("bad", "BAD\\AE", "h", "104"), "is not a valid AE title"),
    (("bad", "A" * 17, "h", "104"), "is not a valid AE title"),
    (("bad", "   ", "h", "104"), "is not a valid AE title"),
    (("bad", "OK", "h", "0"), "cannot be a move destination"),
    (("bad", "OK", "*", "104"), "cannot be a move destination"),
    (("bad", "OK", "h", "70000"), "70000 is not in the range 0<=x<=65535"),
    (("bad", "OK", "h", "port"), "'port' is not a valid integer"),
    (("bad", "OK", "two words", "104"), "is not a host name or address"),
])
def test_invalid_entries_are_refused_with_a_clear_error(dsmpacs, args, message):
    result = dsmpacs("ae", "add", *args)
    assert result.exit_code != 0
    assert message in result.output
    assert registry_of(dsmpacs) == []


def test_duplicate_name_is_refused(dsmpacs):
    assert dsmpacs("ae", "add", "ws", "WS1", "10.0.0.1", "104").exit_code == 0
    again = dsmpacs("ae", "add", "ws", "WS2", "10.0.0.2", "104")
    assert again.exit_code == 1 and "a remote AE named 'ws' already exists" in again.output
    assert [(p.name, p.ae_title) for p in registry_of(dsmpacs)] == [("ws", "WS1")]


def test_echo_a_registered_ae(dsmpacs, server):
    assert dsmpacs("ae", "add", "archive", server.ae_title, "127.0.0.1", str(server.port)).exit_code == 0
    echoed = dsmpacs("ae", "echo", "archive")
    assert echoed.exit_code == 0, echoed.output
    assert f"C-ECHO archive ({server.ae_title}@127.0.0.1:{server.port}): status 0x0000" in echoed.output

    assert dsmpacs("ae", "add", "gone", "GONE", "127.0.0.1", str(free_port())).exit_code == 0
    down = dsmpacs("ae", "echo", "gone")
    assert down.exit_code == 1 and "rejected or failed" in down.output
    unknown = dsmpacs("ae", "echo", "nobody")
    assert unknown.exit_code == 1 and "no remote AE named 'nobody'" in unknown.output
