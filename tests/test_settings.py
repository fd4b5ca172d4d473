"""Settings: layering, validation, redaction, and the generated reference staying true."""
from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from dsmpacs.cli import main
from dsmpacs.settings import REDACTED, Settings, SettingsError, settings_markdown

ROOT = Path(__file__).resolve().parent.parent


def test_layers_in_order(tmp_path):
    (tmp_path / "config.toml").write_text('ae_title = "FROMFILE"\ndicom_port = 2000\nmax_pdu = 1000\n')
    s = Settings.load(data_dir=tmp_path, env={"DSMPACS_DICOM_PORT": "3000", "DSMPACS_MAX_PDU": "2000"},
                      overrides={"max_pdu": "4000"})
    assert (s.ae_title, s.dicom_port, s.max_pdu) == ("FROMFILE", 3000, 4000)
    assert s.data_dir == tmp_path


def test_derived_defaults(tmp_path):
    s = Settings.load(data_dir=tmp_path, env={})
    assert s.effective_storage_root == tmp_path / "storage"
    assert s.effective_database_url == f"sqlite:///{(tmp_path / 'index.sqlite3').absolute()}"


@pytest.mark.parametrize("overrides, message", [
    ({"ae_title": "A" * 17}, "not a valid AE title"),
    ({"ae_title": "BAD\\AE"}, "not a valid AE title"),
    ({"dicom_port": "70000"}, "at most"),
    ({"duplicate_policy": "keep-last"}, "must be one of"),
    ({"max_associations": "many"}, "not a valid int"),
    ({"database_url": "postgres://x"}, "must start with"),
    ({"strict_ae_check": "perhaps"}, "not a valid bool"),
])
def test_invalid_values_are_refused_with_a_reason(tmp_path, overrides, message):
    with pytest.raises(SettingsError, match=message):
        Settings.load(data_dir=tmp_path, env={}, overrides=overrides)


def test_unknown_names_are_refused(tmp_path):
    (tmp_path / "config.toml").write_text("ae_titel = 'X'\n")
    with pytest.raises(SettingsError, match="unknown setting 'ae_titel'"):
        Settings.load(data_dir=tmp_path, env={})
    with pytest.raises(SettingsError, match="DSMPACS_NOPE"):
        Settings.load(data_dir=tmp_path / "other", env={"DSMPACS_NOPE": "1"})


def test_secrets_are_redacted(tmp_path):
    s = Settings.load(data_dir=tmp_path, env={},
                      overrides={"database_url": "mysql://pacs:s3cr%40t@db:3307/pacs"})
    shown = s.redacted()["database_url"]
    assert "s3cr" not in shown and REDACTED in shown and "pacs@db:3307" not in shown
    result = CliRunner().invoke(main, ["--data-dir", str(tmp_path), "--set",
                                       "database_url=mysql://pacs:hunter2@db/pacs", "settings"])
    assert result.exit_code == 0 and "hunter2" not in result.output and "ae_title = DSMPACS" in result.output


def test_settings_reference_matches_the_code():
    """docs/settings.md is generated; regenerate with `make settings-doc` after a change."""
    assert (ROOT / "docs" / "settings.md").read_text() == settings_markdown()
