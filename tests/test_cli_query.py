"""`dsmpacs query`: C-FIND SCU against this archive and against Orthanc, with
Chinese names printed and aligned."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from dsmpacs.cli import main
from dsmpacs.cli.table import width
from tests import qr_corpus
from tests.findscu import register
from tests.orthanc import Orthanc, orthanc_available
from tests.peers import require

CLI_AE = "QUERYCLI"


def query(tmp_path, database_url, *args: str):
    return CliRunner().invoke(main, ["--data-dir", str(tmp_path / "cli"), "--set", f"ae_title={CLI_AE}",
                                     "--set", f"database_url={database_url}", *args])


def column_of(header: str, line: str, name: str) -> str:
    """The cell under ``name`` in ``line``, located by display width (ideographs are two columns)."""
    start = header.index(name)
    out, col = "", 0
    for char in line:
        if col >= start:
            out += char
        col += width(char)
    return out.split("  ")[0].strip()


@pytest.fixture
def archive_with_corpus(server_factory, database_url, tmp_path):
    corpus = qr_corpus.build(tmp_path / "corpus")
    server = server_factory(database_url=database_url)
    assert server.storescu(*corpus.files).returncode == 0
    register(server, "cli", CLI_AE)
    return server, corpus


def test_query_prints_matches_with_chinese_names_aligned(archive_with_corpus, tmp_path, database_url):
    server, corpus = archive_with_corpus
    peer = f"{server.ae_title}@127.0.0.1:{server.port}"
    result = query(tmp_path, database_url, "query", peer, "-k", "PatientName=zhang*", "-k", "PatientSex")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    header = lines[0]
    rows = [line for line in lines[2:] if line.strip() and "match" not in line]
    assert len(rows) == 3 and lines[-1] == f"3 matches from {peer}"
    names = sorted(column_of(header, row, "PatientName") for row in rows)
    assert names == ["ZHANG^WEI", "ZHANG^WEI", "Zhang^San=张^三"]
    by_uid = {column_of(header, row, "PatientID"): row for row in rows}
    assert set(by_uid) == {"QR-P1", "QR-P2"}                       # aligned after the Chinese name
    a = corpus.studies["A"]
    assert column_of(header, by_uid["QR-P1"], "AccessionNumber") == a.accession
    assert column_of(header, by_uid["QR-P1"], "ModalitiesInStudy") == a.modalities
    assert column_of(header, by_uid["QR-P1"], "PatientSex") == "M"


def test_query_by_registered_name_levels_and_charset(archive_with_corpus, tmp_path, database_url):
    server, corpus = archive_with_corpus
    added = query(tmp_path, database_url, "ae", "add", "main", server.ae_title, "127.0.0.1", str(server.port))
    assert added.exit_code == 0, added.output
    patients = query(tmp_path, database_url, "query", "main", "--level", "patient", "-k", "PatientName=王*")
    assert patients.exit_code == 0, patients.output
    assert "Wang^XiaoDong=王^小东" in patients.output and "1 match from" in patients.output
    gb = query(tmp_path, database_url, "query", "main", "--charset", "GB18030", "-k", "PatientName=张*")
    assert gb.exit_code == 0 and "Zhang^San=张^三" in gb.output and "1 match from" in gb.output

    b = corpus.studies["B"]
    series = query(tmp_path, database_url, "query", "main", "-l", "SERIES", "-k", f"StudyInstanceUID={b.uid}")
    assert series.exit_code == 0 and b.series[0].uid in series.output and "CT" in series.output


def test_query_refused_and_bad_keys(archive_with_corpus, tmp_path, database_url):
    server, _ = archive_with_corpus
    peer = f"{server.ae_title}@127.0.0.1:{server.port}"
    refused = CliRunner().invoke(main, ["--data-dir", str(tmp_path / "other"), "--set", "ae_title=NOBODY",
                                        "query", peer])
    assert refused.exit_code == 1
    assert "0x0124 Refused: not authorized" in refused.output
    bad = query(tmp_path, database_url, "query", peer, "-k", "PatientNme=X")
    assert bad.exit_code == 2 and "'PatientNme' is not a DICOM keyword" in bad.output


def test_query_orthanc(tmp_path, database_url):
    require(orthanc_available(), "Orthanc not installed (apt-get install orthanc)")
    corpus = qr_corpus.build(tmp_path / "corpus")
    orthanc = Orthanc(tmp_path / "orthanc", modalities={"cli": (CLI_AE, "127.0.0.1", 11113)},
                      extra={"DefaultEncoding": "Utf8"})
    orthanc.start()
    try:
        for path in corpus.files:
            orthanc.upload(path)
        result = query(tmp_path, database_url, "query", f"{orthanc.ae_title}@127.0.0.1:{orthanc.dicom_port}",
                       "-k", "PatientName=ZHANG*")
    finally:
        orthanc.stop()
    assert result.exit_code == 0, result.output
    assert "Zhang^San=张^三" in result.output and "ZHANG^WEI" in result.output
    assert "3 matches from" in result.output
