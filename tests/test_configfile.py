"""Writing config.toml from the program: comments kept, values validated, sources told apart."""
from __future__ import annotations

import pytest

from dsmpacs import configfile
from dsmpacs.settings import Settings, SettingsError


def test_update_keeps_comments_and_other_settings(tmp_path):
    (tmp_path / "config.toml").write_text('# our archive\nae_title = "ANGIO_PACS"  # keep\n'
                                          'strict_ae_check = false\n')
    settings = Settings.load(data_dir=tmp_path, env={})
    configfile.update(settings, {"strict_ae_check": True, "check_called_ae": True})
    text = (tmp_path / "config.toml").read_text()
    assert text.startswith("# our archive\nae_title = \"ANGIO_PACS\"  # keep\n")
    assert "strict_ae_check = true" in text and "check_called_ae = true" in text
    reloaded = Settings.load(data_dir=tmp_path, env={})
    assert reloaded.strict_ae_check and reloaded.check_called_ae and reloaded.ae_title == "ANGIO_PACS"


def test_update_refuses_invalid_values_and_leaves_the_file(tmp_path):
    (tmp_path / "config.toml").write_text("dicom_port = 11112\n")
    settings = Settings.load(data_dir=tmp_path, env={})
    with pytest.raises(SettingsError):
        configfile.update(settings, {"dicom_port": 70000})
    with pytest.raises(SettingsError):
        configfile.update(settings, {"no_such_setting": 1})
    with pytest.raises(SettingsError):
        configfile.update(settings, {"ae_title": 'bad\\title'})
    assert (tmp_path / "config.toml").read_text() == "dicom_port = 11112\n"


def test_strings_with_quotes_round_trip(tmp_path):
    settings = Settings.load(data_dir=tmp_path, env={})
    configfile.update(settings, {"web_trusted_proxy": '10.0.0.1"#'})
    assert Settings.load(data_dir=tmp_path, env={}).web_trusted_proxy == '10.0.0.1"#'


def test_sources(tmp_path):
    (tmp_path / "config.toml").write_text("strict_ae_check = true\n")
    at_start = {"strict_ae_check": True}
    settings = Settings.load(data_dir=tmp_path, env={}, overrides={"check_called_ae": "true"})
    env = {"DSMPACS_CHECK_PEER_HOST": "1"}
    assert configfile.source_of(settings, "strict_ae_check", at_start, env) == "config.toml"
    assert configfile.source_of(settings, "check_called_ae", at_start, env) == "command line"
    assert configfile.source_of(settings, "check_peer_host", at_start, env) == "environment"
    assert configfile.source_of(settings, "unknown_ae_may_store", at_start, env) == "default"
