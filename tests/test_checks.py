"""`dsmpacs check`: each failure comes with a reason an administrator can act on."""
from __future__ import annotations

import socket

import pytest
from click.testing import CliRunner

from dsmpacs import checks
from dsmpacs.archive import Archive, database
from dsmpacs.archive.models import SchemaVersion
from dsmpacs.cli import main
from dsmpacs.settings import Settings
from tests.peers import free_port


def test_free_ports_pass_and_a_taken_port_is_named(tmp_path):
    dicom, web = free_port(), free_port()
    settings = Settings(data_dir=tmp_path, dicom_host="127.0.0.1", dicom_port=dicom,
                        web_host="127.0.0.1", web_port=web)
    assert checks.port_problems(settings) == []
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", web))
        taken.listen()
        problems = checks.port_problems(settings)
    assert len(problems) == 1
    assert f"web port {web} is already in use" in problems[0] and "web_port" in problems[0]
    hl7 = free_port()
    with_hl7 = Settings(data_dir=tmp_path, dicom_host="127.0.0.1", dicom_port=dicom, web_host="127.0.0.1",
                        web_port=web, hl7_port=hl7)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", hl7))
        taken.listen()
        problems = checks.port_problems(with_hl7)
    assert len(problems) == 1 and f"HL7 port {hl7} is already in use" in problems[0], problems
    assert "hl7_port" in problems[0]
    assert "hl7_port 4242 is also" in checks.port_problems(Settings(data_dir=tmp_path, dicom_port=4242,
                                                                    hl7_port=4242))[0]
    assert "ups_ws_port 4242 is also" in checks.port_problems(Settings(data_dir=tmp_path, web_port=4242,
                                                                       ups_ws_port=4242))[0]


def test_an_address_the_machine_does_not_have_and_a_shared_port(tmp_path):
    settings = Settings(data_dir=tmp_path, dicom_host="192.0.2.77", dicom_port=free_port(),
                        web_host="127.0.0.1", web_port=free_port())
    [problem] = checks.port_problems(settings)
    assert "192.0.2.77 is not an address of this machine" in problem and "dicom_host" in problem
    same = Settings(data_dir=tmp_path, dicom_port=4242, web_port=4242)
    assert "both 4242" in checks.port_problems(same)[0]


def test_storage_missing_share_and_creatable_folder(tmp_path):
    assert checks.storage_problems(Settings(data_dir=tmp_path / "new" / "data")) == []
    share = tmp_path / "shares" / "pacs"
    share.parent.mkdir()
    share.symlink_to(tmp_path / "volume1" / "pacs")   # the share's volume is gone
    [problem] = checks.storage_problems(Settings(data_dir=tmp_path, storage_root=share))
    assert "points to a folder that is not there" in problem and "'pacs'" in problem
    a_file = tmp_path / "file"
    a_file.write_text("")
    assert "not a folder" in checks.storage_problems(Settings(data_dir=tmp_path, storage_root=a_file))[0]


def test_the_index_answers_or_says_why(settings):
    assert checks.database_problems(settings) == []
    archive = Archive(settings)
    archive.open(upgrade=True)
    try:
        with archive.index.write():
            SchemaVersion.create(version=database.LATEST_VERSION + 1)
    finally:
        archive.close()
    [problem] = checks.database_problems(settings)
    assert "newer than this program's" in problem


def test_an_unreachable_mariadb_is_explained(tmp_path):
    url = f"mysql://dsmpacs:secret@127.0.0.1:{free_port()}/dsmpacs?connect_timeout=2"
    [problem] = checks.database_problems(Settings(data_dir=tmp_path, database_url=url))
    assert "cannot be reached" in problem and "TCP/IP" in problem and "database_url" in problem


@pytest.mark.mariadb
def test_a_wrong_mariadb_password_is_explained(tmp_path, mariadb_url):
    url = mariadb_url.replace("mysql://root@", "mysql://root:wrong-password@")
    [problem] = checks.database_problems(Settings(data_dir=tmp_path, database_url=url))
    assert "cannot be reached" in problem and "Access denied" in problem


def test_check_command_exit_codes(tmp_path):
    data = str(tmp_path / "data")
    ok = CliRunner().invoke(main, ["--data-dir", data, "--set", f"dicom_port={free_port()}",
                                   "--set", f"web_port={free_port()}", "check"])
    assert ok.exit_code == 0 and ok.output.startswith("ok: ports, storage, database")
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", port))
        taken.listen()
        busy = CliRunner().invoke(main, ["--data-dir", data, "--set", f"dicom_port={port}",
                                         "--set", f"web_port={free_port()}", "check", "--no-database"])
    assert busy.exit_code == 1 and f"DICOM port {port} is already in use" in busy.output
