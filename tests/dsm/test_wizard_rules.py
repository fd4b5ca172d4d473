"""The install wizard's rules (dsmpacs.dsm.wizard): the patterns the wizard, preinst and
postinst share, checked against independent definitions of what is valid."""
from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from dsmpacs.dsm import wizard as w
from dsmpacs.settings import Settings, valid_ae_title

MODULE = Path(w.__file__)


def good_env(**changes: str) -> dict[str, str]:
    env = {w.AE_TITLE: "ANGIO_PACS", w.DICOM_HOST: "0.0.0.0", w.DICOM_PORT: "11112",
           w.WEB_PORT: "8080", w.SHARE_NAME: "pacs", w.ADMIN_PASSWORD: "Angio-suite-2026",
           w.ADMIN_PASSWORD_CONFIRM: "Angio-suite-2026", w.DB_SQLITE: "true",
           w.DB_MARIADB_CREATE: "false", w.DB_MARIADB_EXISTING: "false",
           w.MARIADB_HOST: "127.0.0.1", w.MARIADB_PORT: "3307", w.MARIADB_DATABASE: "dsmpacs",
           w.MARIADB_USER: "dsmpacs", w.MARIADB_PASSWORD: "", w.MARIADB_ROOT_PASSWORD: ""}
    env.update(changes)
    return env


def test_ae_title_pattern_is_the_settings_rule():
    samples = [chr(c) for c in range(0, 128)] + [
        "", " ", "   ", "A" * 16, "A" * 17, "ANGIO\\", "  X", "X  ", "中文", "ANGIO-3D_1",
        "A\tB", "ws@1", "a b c", "\x7f", "é"]
    for value in samples:
        assert w.matches("ae_title", value) == valid_ae_title(value), repr(value)


def test_port_patterns_are_the_numeric_ranges():
    for number in range(0, 70000):
        assert w.matches("port", str(number)) == (1024 <= number <= 65535), number
        assert w.matches("any_port", str(number)) == (1 <= number <= 65535), number
    for text in ("01024", "+1024", "1024 ", "", "1e4", "８０８０"):
        assert not w.matches("port", text), text


def test_ipv4_pattern_is_the_address_grammar():
    samples = ["0.0.0.0", "127.0.0.1", "192.168.1.10", "255.255.255.255", "256.1.1.1", "1.2.3",
               "01.2.3.4", "1.2.3.4.5", "10.0.0.1 ", "::1", "a.b.c.d", "1.2.3.04"]
    for value in samples:
        try:
            ipaddress.IPv4Address(value)
            valid = True
        except ValueError:
            valid = False
        assert w.matches("ipv4", value) == valid, value


@pytest.mark.parametrize("name,ok", [
    ("pacs", True), ("PACS 影像", True), ("dicom.archive-2", True), ("x" * 32, True),
    ("x" * 33, False), ("", False), (" pacs", False), ("pacs ", False), ("a/b", False),
    ('a"b', False), ("a&b", False), ("a\\b", False), ("a:b", False), ("a\nb", False)])
def test_share_names(name, ok):
    assert w.matches("share", name) is ok


def test_database_passwords_avoid_what_dsm_templating_would_alter():
    assert w.matches("db_password", "Pw-3f9a!#$%*+,./:;=?@[]^_{|}~")
    for char in "\"&'<>\\`\n":
        assert not w.matches("db_password", f"abc{char}def"), repr(char)


def test_defaults_are_valid():
    for key, value in w.DEFAULTS.items():
        assert w.matches(w.FIELD_PATTERNS[key], value), key


def test_good_answers_parse_to_the_config_values():
    answers = w.parse(good_env())
    assert answers.database == "sqlite" and answers.database_url() is None
    assert answers.config_values("/var/packages/dsmpacs/shares/pacs") == {
        "ae_title": "ANGIO_PACS", "dicom_host": "0.0.0.0", "dicom_port": 11112, "web_host": "0.0.0.0",
        "web_port": 8080, "storage_root": "/var/packages/dsmpacs/shares/pacs",
        "unknown_ae_may_store": False}
    assert answers.store_aes == ()


def test_web_access_is_the_network_unless_the_proxy_alone_is_chosen():
    """The DSM desktop icon opens the web port on the NAS's address: the network stays the
    answer of a wizard that did not ask (an older package) or of its default."""
    assert w.parse(good_env()).web_host == "0.0.0.0"
    assert w.parse(good_env(**{w.WEB_NETWORK: "true", w.WEB_PROXY_ONLY: "false"})).web_host == "0.0.0.0"
    proxy = w.parse(good_env(**{w.WEB_NETWORK: "false", w.WEB_PROXY_ONLY: "true"}))
    assert proxy.web_host == "127.0.0.1"
    settings = Settings(**{k: v for k, v in proxy.config_values("/x").items() if k != "storage_root"})
    assert (settings.web_host, settings.web_trusted_proxy) == ("127.0.0.1", "127.0.0.1")
    assert "web_trusted_proxy" not in w.parse(good_env()).config_values("/x")


def test_the_reverse_proxy_choice_points_the_desktop_icon_at_its_https_port():
    """Through DSM's reverse proxy the icon opens https on the rule's port (the NAS's
    certificate); the web port, bound to 127.0.0.1, is not reachable from a browser."""
    from dsmpacs.dsm import integration

    def icon(answers: w.Answers) -> dict:
        values = {k: v for k, v in answers.config_values("/x").items() if k != "storage_root"}
        return integration.ui_config(Settings(**values))[".url"][integration.APP_ID]

    proxy = w.parse(good_env(**{w.WEB_NETWORK: "false", w.WEB_PROXY_ONLY: "true",
                                w.WEB_PROXY_PORT: "11443"}))
    assert proxy.config_values("/x")["web_proxy_port"] == 11443
    assert (icon(proxy)["protocol"], icon(proxy)["port"]) == ("https", "11443")
    # The network: the port is ignored, the icon opens the web port over plain HTTP.
    network = w.parse(good_env(**{w.WEB_PROXY_PORT: "11443"}))
    assert "web_proxy_port" not in network.config_values("/x")
    assert (icon(network)["protocol"], icon(network)["port"]) == ("http", "8080")
    # HTTPS on the web port itself (web_tls, set later in config.toml): https there.
    tls = integration.ui_config(Settings(web_tls=True, web_port=8443))[".url"][integration.APP_ID]
    assert (tls["protocol"], tls["port"]) == ("https", "8443")
    # The rule's port cannot be one the archive or DSM itself listens on.
    for taken in ("8080", "11112", "5001"):
        found = w.problems(good_env(**{w.WEB_NETWORK: "false", w.WEB_PROXY_ONLY: "true",
                                       w.WEB_PROXY_PORT: taken}))
        assert found == [w.message("proxy_port_differs")], taken


@pytest.mark.parametrize("text,entries", [
    ("ANGIO1", [("ANGIO1", "", 0)]),
    (" ANGIO1, WS_3D@192.168.1.20:104 ", [("ANGIO1", "", 0), ("WS_3D", "192.168.1.20", 104)]),
    ("A@nas-2.local B", [("A", "nas-2.local", 0), ("B", "", 0)]),
    ("ANGIO1,ANGIO1", [("ANGIO1", "", 0)]),
])
def test_store_list_entries(text, entries):
    assert w.matches("ae_list", text)
    parsed = w.parse(good_env(**{w.STORE_AES: text})).store_aes
    assert [(e.ae_title, e.host, e.port) for e in parsed] == entries
    for entry in parsed:
        assert valid_ae_title(entry.ae_title)


@pytest.mark.parametrize("text", ["A,,B", "A@", "A@h:0", "A@h:70000", "A" * 17, "A\\B", "@h", "A@h_1"])
def test_bad_store_lists_are_refused_in_both_languages(text):
    assert not w.matches("ae_list", text)
    assert w.message("ae_list", "enu") in w.problems(good_env(**{w.STORE_AES: text}), "enu")
    assert w.message("ae_list", "chs") in w.problems(good_env(**{w.STORE_AES: text}), "chs")


def test_mariadb_answers_give_a_url_that_keeps_the_password():
    password = "p@ss:w/rd#1%"
    answers = w.parse(good_env(**{w.DB_SQLITE: "false", w.DB_MARIADB_EXISTING: "true",
                                  w.MARIADB_PASSWORD: password}))
    url = answers.database_url()
    parts = urlsplit(url)
    assert (parts.hostname, parts.port, parts.path) == ("127.0.0.1", 3307, "/dsmpacs")
    assert unquote(parts.password) == password and unquote(parts.username) == "dsmpacs"
    assert Settings(database_url=url).database_url == url


@pytest.mark.parametrize("changes,problem", [
    ({w.AE_TITLE: "A" * 17}, "ae_title"),
    ({w.DICOM_PORT: "104"}, "port"),
    ({w.WEB_PORT: "11112"}, "ports_differ"),
    ({w.ADMIN_PASSWORD_CONFIRM: "something else"}, "passwords_differ"),
    ({w.ADMIN_PASSWORD: "short", w.ADMIN_PASSWORD_CONFIRM: "short"}, "admin_password"),
    ({w.DB_SQLITE: "false"}, "choose_database"),
    ({w.DB_MARIADB_CREATE: "true"}, "choose_database"),
    ({w.DB_SQLITE: "false", w.DB_MARIADB_EXISTING: "true"}, "mariadb_fields"),
    ({w.DB_SQLITE: "false", w.DB_MARIADB_CREATE: "true", w.MARIADB_PASSWORD: "Pw-12345"},
     "root_password"),
    ({w.DB_SQLITE: "false", w.DB_MARIADB_EXISTING: "true", w.MARIADB_PASSWORD: "a<b"}, "db_password"),
    ({w.DICOM_HOST: "my-nas"}, "ipv4"),
])
def test_each_problem_is_named_in_both_languages(changes, problem):
    env = good_env(**changes)
    assert w.message(problem, "enu") in w.problems(env, "enu")
    assert w.message(problem, "chs") in w.problems(env, "chs")
    with pytest.raises(w.AnswersError):
        w.parse(env)


def test_existing_mariadb_needs_no_root_password():
    env = good_env(**{w.DB_SQLITE: "false", w.DB_MARIADB_EXISTING: "true", w.MARIADB_PASSWORD: "Pw-12345"})
    assert w.problems(env) == []
    assert not w.parse(env).mariadb_create


def test_runs_standalone_with_only_the_standard_library(tmp_path):
    """preinst runs the file with the interpreter package's Python, dsmpacs not installed."""
    python = next((p for p in ("/usr/bin/python3.11", "/usr/bin/python3") if os.path.exists(p)),
                  sys.executable)
    copy = tmp_path / "wizard.py"
    copy.write_bytes(MODULE.read_bytes())

    def check(env: dict[str, str]) -> subprocess.CompletedProcess:
        return subprocess.run([python, "-I", str(copy), "check"], capture_output=True, text=True,
                              env={"PATH": "/usr/bin:/bin", **env}, cwd=tmp_path)

    assert check(good_env()).returncode == 0
    bad = check(good_env(**{w.DICOM_PORT: "80", "SYNOPKG_DSM_LANGUAGE": "chs"}))
    assert bad.returncode == 1 and w.message("port", "chs") in bad.stdout
    assert check({"SYNOPKG_PKG_STATUS": "UPGRADE"}).returncode == 0


def test_dicom_tls_side_by_side_or_alone():
    side = w.parse(good_env(**{w.DICOM_TLS_PORT: "2762"}))
    values = side.config_values("/s")
    assert values["dicom_tls_port"] == 2762 and "dicom_plain" not in values
    alone = w.parse(good_env(**{w.DICOM_TLS_PORT: "2762", w.DICOM_TLS_ONLY: "true"}))
    assert alone.config_values("/s")["dicom_plain"] is False
    Settings(**{k: v for k, v in alone.config_values("/s").items() if k != "storage_root"})
    assert "dicom_tls_port" not in w.parse(good_env(**{w.DICOM_TLS_PORT: ""})).config_values("/s")
    for changes, problem in (({w.DICOM_TLS_PORT: "11112"}, "tls_port_differs"),
                             ({w.DICOM_TLS_PORT: "443"}, "port"),
                             ({w.DICOM_TLS_PORT: "", w.DICOM_TLS_ONLY: "true"}, "tls_only_needs_port")):
        assert w.message(problem, "chs") in w.problems(good_env(**changes), "chs"), changes


# --- what the NAS says against the answers (preinst) -------------------------------------
def nas_root(tmp_path: Path) -> Path:
    """A DSM root with DSM's own services, another package's and an earlier DSM PACS's."""
    (tmp_path / "etc" / "services.d").mkdir(parents=True)
    (tmp_path / "etc" / "services.d" / "dsm.sc").write_text(
        '[dsm]\ntitle="DSM"\ndst.ports="5000,5001/tcp"\n')
    packages = tmp_path / "usr" / "local" / "etc" / "services.d"
    packages.mkdir(parents=True)
    (packages / "sabnzbd.sc").write_text(
        '[sabnzbd]\ntitle="SABnzbd"\ndesc="SABnzbd"\nport_forward="yes"\ndst.ports="8080/tcp"\n\n'
        '[sabnzbd_https]\ntitle="SABnzbd HTTPS"\ndst.ports="9090:9095/tcp,udp"\n\n'
        '[sabnzbd_discovery]\ntitle="SABnzbd discovery"\ndst.ports="11112/udp"\n')
    (packages / "dsmpacs.sc").write_text('[dsmpacs-web]\ntitle="DSM PACS web"\ndst.ports="10180/tcp"\n')
    return tmp_path


@pytest.mark.parametrize("lang", ["enu", "chs", "cht"])
def test_ports_another_service_registered_are_refused_with_its_name(tmp_path, lang):
    root = nas_root(tmp_path)
    env = good_env(PACS_DSM_ROOT=str(root), **{w.DICOM_PORT: "10104", w.WEB_PORT: "8080",
                                               w.DICOM_TLS_PORT: "9093"})
    found = w.dsm_problems(env, lang)
    assert found == [
        w.message("port_registered", lang, label=w.message("web_port_label", lang), port="8080",
                  service="SABnzbd", file="/usr/local/etc/services.d/sabnzbd.sc"),
        w.message("port_registered", lang, label=w.message("dicom_tls_port_label", lang),
                  port="9093", service="SABnzbd HTTPS", file="/usr/local/etc/services.d/sabnzbd.sc")]
    assert ("连接" not in found[0]) and (("連接埠" in found[0]) is (lang == "cht"))
    # DSM's own services count; UDP-only ones, and this package's own file, do not.
    assert w.dsm_problems(good_env(PACS_DSM_ROOT=str(root), **{w.WEB_PORT: "5001"}), lang)
    assert w.dsm_problems(good_env(PACS_DSM_ROOT=str(root), **{w.DICOM_PORT: "11112",
                                                              w.WEB_PORT: "10180"}), lang) == []
    # TLS only: the plain DICOM port is not opened, so not checked.
    assert w.dsm_problems(good_env(PACS_DSM_ROOT=str(root), **{
        w.DICOM_PORT: "5000", w.WEB_PORT: "10180", w.DICOM_TLS_PORT: "2762",
        w.DICOM_TLS_ONLY: "true"}), lang) == []


def test_creating_the_mariadb_database_needs_mariadb10_on_the_nas(tmp_path):
    env = good_env(PACS_DSM_ROOT=str(tmp_path), **{
        w.DB_SQLITE: "false", w.DB_MARIADB_CREATE: "true", w.MARIADB_PASSWORD: "Pw-12345",
        w.MARIADB_ROOT_PASSWORD: "Root-12345"})
    assert w.problems(env) == []
    assert w.dsm_problems(env, "cht") == [w.message("mariadb_missing", "cht",
                                                    socket=w.MARIADB10_SOCKET)]
    socket_path = tmp_path / w.MARIADB10_SOCKET.lstrip("/")
    socket_path.parent.mkdir(parents=True)
    socket_path.touch()
    assert w.dsm_problems(env) == []
    # SQLite, or a database that exists already, asks nothing of MariaDB 10 here.
    assert w.dsm_problems(good_env(PACS_DSM_ROOT=str(tmp_path / "none"))) == []
    assert w.parse(env).mariadb_admin_user == "root"


def test_preinst_writes_the_chosen_ports_and_skips_a_kept_config(tmp_path):
    """`wizard.py check` then `service-file`, standalone as preinst runs them."""
    root = nas_root(tmp_path / "root")
    copy = tmp_path / "wizard.py"
    copy.write_bytes(MODULE.read_bytes())
    var = tmp_path / "var"
    var.mkdir()

    def run(*args: str, **changes: str) -> subprocess.CompletedProcess:
        env = good_env(PACS_DSM_ROOT=str(root), SYNOPKG_PKGVAR=str(var),
                       SYNOPKG_DSM_LANGUAGE="cht", **changes)
        return subprocess.run([sys.executable, "-I", str(copy), *args], capture_output=True,
                              text=True, env={"PATH": "/usr/bin:/bin", **env}, cwd=tmp_path)

    refused = run("check", **{w.DICOM_PORT: "10104", w.WEB_PORT: "8080"})
    assert refused.returncode == 1 and "SABnzbd" in refused.stdout and "連接埠" in refused.stdout
    chosen = {w.DICOM_PORT: "10104", w.WEB_PORT: "10190", w.DICOM_TLS_PORT: "2762"}
    assert run("check", **chosen).returncode == 0
    assert run("service-file", str(var / "dsmpacs.sc"), **chosen).returncode == 0
    written = (var / "dsmpacs.sc").read_text()
    from dsmpacs.dsm import integration
    assert written == integration.service_file(Settings(dicom_port=10104, web_port=10190,
                                                        dicom_tls_port=2762))
    assert (var / "dsmpacs.sc").stat().st_mode & 0o777 == 0o644
    # A reinstall keeping config.toml keeps its ports: the wizard's are not checked.
    (var / "config.toml").write_text("web_port = 8080\n")
    assert run("check", **{w.WEB_PORT: "8080"}).returncode == 0
