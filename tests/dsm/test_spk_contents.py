"""What `make spk` (spk_build.sh) produces, checked against DSM 7's rules (reference/spk.md)."""
from __future__ import annotations

import hashlib
import html
import json
import re
import shutil
import stat
import subprocess
import tarfile
from importlib import metadata
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from PIL import Image

from dsmpacs.dsm import configfile, integration
from dsmpacs.dsm import wizard as w
from tests.dsm.harness import fill_wizard, read_info, render_mustache, wizard_fields
from tests.peers import require

ROOT = Path(__file__).resolve().parents[2]
REQUIRED_SCRIPTS = ("preinst", "postinst", "preuninst", "postuninst", "preupgrade", "postupgrade",
                    "start-stop-status")
TOP_LEVEL = {"INFO", "package.tgz", "scripts", "conf", "WIZARD_UIFILES", "PACKAGE_ICON.PNG",
             "PACKAGE_ICON_256.PNG", "LICENSE"}


@pytest.fixture(scope="module")
def spk(spk_builds, tmp_path_factory):
    """The current build, unpacked: (directory, tar members, payload members)."""
    path = spk_builds["current"]
    out = tmp_path_factory.mktemp("unpacked")
    with tarfile.open(path, "r:") as tar:   # "r:": DSM wants a plain, uncompressed tar
        members = {m.name: m for m in tar.getmembers()}
        tar.extractall(out, filter="tar")
    payload = out / "payload"
    with tarfile.open(out / "package.tgz", "r:gz") as tar:
        payload_members = {m.name: m for m in tar.getmembers()}
        tar.extractall(payload, filter="tar")
    return out, members, payload_members


def info_of(path: Path) -> dict[str, str]:
    with tarfile.open(path, "r:") as tar:
        return read_info(tar.extractfile("INFO").read().decode())


def test_layout_is_a_plain_tar_owned_by_root(spk):
    out, members, _ = spk
    assert {name.split("/")[0] for name in members} == TOP_LEVEL
    assert all(m.uid == 0 and m.gid == 0 for m in members.values())
    assert (out / "LICENSE").stat().st_size < 2**20


def test_info_keys_checksum_and_size(spk, spk_builds):
    out, _, payload_members = spk
    info = read_info((out / "INFO").read_text())
    for key in ("package", "version", "os_min_ver", "description", "arch", "maintainer",
                "displayname", "description_chs", "displayname_chs", "description_cht",
                "displayname_cht", "install_dep_packages", "checksum", "extractsize", "dsmuidir",
                "dsmappname", "changelog", "helpurl", "support_url", "maintainer_url",
                "distributor"):
        assert info.get(key), key
    # Package Center shows this version's items of CHANGELOG.md, numbered, as HTML.
    version = info["version"].split("-")[0]
    section = (ROOT / "CHANGELOG.md").read_text().split(f"\n## {version}\n", 1)[1].split("\n## ")[0]
    items = [line[2:] for line in section.splitlines() if line.startswith("- ")]
    assert items and info["changelog"].startswith("1. ") and f"{len(items)}. " in info["changelog"]
    assert html.unescape(info["changelog"]).endswith(items[-1])
    # No public pages yet: links on the reserved .invalid domain unless the build sets them.
    assert all(urlsplit(info[key]).scheme == "https" for key in ("helpurl", "support_url",
                                                                 "maintainer_url"))
    assert info["package"] == "dsmpacs"
    assert info["os_min_ver"] == "7.0-40000"
    assert re.search(r"[\u4e00-\u9fff]", info["description_chs"] + info["displayname_chs"])
    # Traditional Chinese too (Taiwan, Hong Kong); and the viewer is 网页阅片, not a "web browser".
    assert re.search(r"[\u4e00-\u9fff]", info["description_cht"] + info["displayname_cht"])
    assert "网页浏览器" not in info["description_chs"] and "网页阅片" in info["description_chs"]
    assert info["checksum"] == hashlib.md5((out / "package.tgz").read_bytes()).hexdigest()
    unpacked_kib = sum(m.size for m in payload_members.values()) / 1024
    assert int(info["extractsize"]) >= unpacked_kib
    # One noarch package while every wheel is pure Python, else one per arch family;
    # either way it depends on the interpreter package whose wheels it carries.
    wheels = [Path(n).name for n in payload_members if n.endswith(".whl")]
    pure = all(n.endswith("-none-any.whl") for n in wheels)
    assert info["arch"] == ("noarch" if pure else "x86_64")
    # The interpreter package, at a version whose ABI the bundled cp311 wheels need.
    assert info["install_dep_packages"] == "python311>=3.11"
    assert info["dsmuidir"] == "ui" and info["dsmappname"] == integration.APP_ID


def test_versions_order_as_dsm_compares_them(spk_builds):
    """DSM compares the numbers of [feature]-[build]; build 2 must come after build 1."""
    def key(version: str) -> tuple[int, ...]:
        assert re.fullmatch(r"\d+(\.\d+)*-\d+", version), version
        return tuple(int(n) for n in re.split(r"[.-]", version))

    previous, current = info_of(spk_builds["previous"])["version"], info_of(spk_builds["current"])["version"]
    assert previous.endswith("-0001") and current.endswith("-0002")
    assert key(previous) < key(current)


def test_payload_bundles_every_wheel_it_needs(spk):
    out, _, payload_members = spk
    payload = out / "payload"
    assert {"app", "ui", "wheels"} == {name.split("/")[0] for name in payload_members}
    wheels = sorted(p.name for p in (payload / "wheels").glob("*.whl"))
    required = (payload / "wheels" / "requirements.txt").read_text().split()
    assert len(required) == len(wheels)
    norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()   # noqa: E731 (PEP 503)
    names = {norm(re.split(r"==", r)[0]) for r in required}
    depends = {norm(re.split(r"[<>=!~ ;\[]", r)[0]) for r in metadata.requires("dsmpacs")
               if "extra ==" not in r}
    assert depends | {"dsmpacs"} <= names
    pinned = (ROOT / "constraints.txt").read_text().lower()
    pinned = {norm(line.split("==")[0]) + "==" + line.split("==")[1].strip()
              for line in pinned.splitlines() if "==" in line and not line.startswith("#")}
    for requirement in required:
        name, version = requirement.lower().split("==")
        assert norm(name) == "dsmpacs" or f"{norm(name)}=={version}" in pinned, requirement
    for name in wheels:
        tags = name[:-len(".whl")].split("-")[-3:]
        # glibc <= 2.17 (DSM 7.1 has 2.26): manylinux2014/_2_17 or older, such as websockets'
        # manylinux1 (= _2_5) wheel.
        assert tags[2] == "any" or re.search(
            r"manylinux(1|2010|2014|_2_(5|12|17))_x86_64", tags[2]), name
        assert tags[1] in ("none", "abi3", "cp311"), name


def test_ui_config_and_every_icon_size(spk):
    out, _, _ = spk
    ui = out / "payload" / "ui"
    config = json.loads((ui / "config").read_text())
    entry = config[".url"][integration.APP_ID]
    assert entry["type"] == "url" and entry["protocol"] == "http" and entry["url"] == "/"
    assert entry["port"] == w.DEFAULTS[w.WEB_PORT] == "10180"
    for size in (16, 24, 32, 48, 64, 72, 256):
        with Image.open(ui / entry["icon"].format(size)) as image:
            assert image.size == (size, size) and image.format == "PNG"
    with Image.open(out / "PACKAGE_ICON.PNG") as image:
        assert image.size == (64, 64)
    with Image.open(out / "PACKAGE_ICON_256.PNG") as image:
        assert image.size == (256, 256)


def test_privilege_runs_everything_as_the_package_user(spk):
    out, _, _ = spk
    privilege = json.loads((out / "conf" / "privilege").read_text())
    assert privilege["defaults"] == {"run-as": "package"}
    assert "root" not in json.dumps(privilege)
    assert not {"ctrl-script", "executable", "tool"} & set(privilege)


def test_resource_ports_and_share_and_no_mariadb_worker(spk):
    out, _, payload_members = spk
    template = (out / "conf" / "resource").read_text()
    privilege = json.loads((out / "conf" / "privilege").read_text())
    resource = json.loads(template)
    # The .sc file DSM registers before postinst is the one preinst writes from the wizard.
    sc = payload_members[resource["port-config"]["protocol-file"]]
    assert sc.issym() and sc.linkname == integration.SERVICE_FILE_LINK
    assert integration.SERVICE_FILE_LINK == "/var/packages/dsmpacs/var/" + integration.SERVICE_FILE_DATA
    share = resource["data-share"]["shares"][0]
    assert share["name"] == "{{wizard_share_name}}"
    assert privilege["username"] in share["permission"]["rw"]
    # Its provider is the MariaDB10 package: declared, it would refuse NASes without one.
    assert set(resource) == {"port-config", "data-share"}


def run_wizard_script(script: Path, tmp_path: Path, env: dict[str, str]) -> list[dict]:
    """Run a wizard script as DSM does, with a fake `ip` that knows three addresses."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake_ip = bin_dir / "ip"
    fake_ip.write_text(
        "#!/bin/sh\ncat <<'EOF'\n"
        "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever\n"
        "2: eth0    inet 192.168.1.10/24 brd 192.168.1.255 scope global eth0\\       valid_lft forever\n"
        "3: eth1    inet 10.20.0.5/16 brd 10.20.255.255 scope global eth1\\       valid_lft forever\n"
        "EOF\n")
    fake_ip.chmod(0o755)
    log = tmp_path / f"{script.name}.json"
    done = subprocess.run(["/bin/sh", str(script)], capture_output=True, text=True, env={
        "PATH": f"{bin_dir}:/usr/bin:/bin", "SYNOPKG_TEMP_LOGFILE": str(log), **env})
    assert done.returncode == 0, done.stderr
    return json.loads(log.read_text())


def keys(steps: list[dict]) -> list[str]:
    return [sub["key"] for _, sub in wizard_fields(steps)]


def validators(steps: list[dict]) -> dict[str, str]:
    return {sub["key"]: sub["validator"]["regex"]["expr"] for _, sub in wizard_fields(steps)
            if "regex" in sub.get("validator", {})}


def test_wizard_files_modes_and_languages(spk):
    out, members, _ = spk
    files = {n.split("/", 1)[1]: m for n, m in members.items() if n.startswith("WIZARD_UIFILES/")}
    expected = {f"{kind}_uifile{lang}{ext}" for kind, ext in
                (("install", ".sh"), ("upgrade", ".sh"), ("uninstall", ""))
                for lang in ("", "_chs", "_cht")}
    assert set(files) == expected
    for name, member in files.items():
        assert stat.S_IMODE(member.mode) == (0o755 if name.endswith(".sh") else 0o644), name


def test_install_wizard_lists_the_nas_addresses_and_validates_like_preinst(spk, tmp_path):
    out, _, _ = spk
    by_lang = {lang: run_wizard_script(out / "WIZARD_UIFILES" / f"install_uifile{suffix}.sh",
                                       tmp_path, {})
               for lang, suffix in (("enu", ""), ("chs", "_chs"), ("cht", "_cht"))}
    english, chinese = by_lang["enu"], by_lang["chs"]
    assert keys(english) == keys(chinese) == keys(by_lang["cht"])
    assert validators(english) == validators(chinese) == validators(by_lang["cht"])
    # Each language's own error texts, and Traditional characters in the cht wizard.
    texts = {lang: json.dumps(steps, ensure_ascii=False) for lang, steps in by_lang.items()}
    assert w.message("port", "cht") in texts["cht"] and w.message("port", "chs") in texts["chs"]
    assert "連接埠" in texts["cht"] and "端口" not in texts["cht"] and "网络" not in texts["cht"]
    # The viewer is 网页阅片 / 網頁閱片 ("reading images on the web"), never "web browser".
    assert "网页浏览器" not in texts["chs"] and "网页阅片" in texts["chs"] and "網頁閱片" in texts["cht"]
    assert {w.DICOM_HOST, w.AE_TITLE, w.DICOM_PORT, w.WEB_PORT, w.SHARE_NAME, w.ADMIN_PASSWORD,
            w.DB_SQLITE, w.DB_MARIADB_CREATE, w.MARIADB_HOST, w.MARIADB_PORT, w.MARIADB_USER,
            w.MARIADB_PASSWORD} <= set(keys(english))
    assert re.search(r"[\u4e00-\u9fff]", json.dumps(chinese, ensure_ascii=False))
    host = next(sub for _, sub in wizard_fields(english) if sub["key"] == w.DICOM_HOST)
    assert host["store"]["data"] == [["0.0.0.0", "All interfaces"], ["192.168.1.10", "192.168.1.10 (eth0)"],
                                     ["10.20.0.5", "10.20.0.5 (eth1)"]]
    # The validators are the module's own patterns, so the wizard and preinst agree.
    for key, expr in validators(english).items():
        assert expr == "/" + w.PATTERNS[w.FIELD_PATTERNS[key]] + "/"
    # Defaults alone make a valid installation, once a password is typed twice.
    env = fill_wizard(english, {w.ADMIN_PASSWORD: "long enough", w.ADMIN_PASSWORD_CONFIRM: "long enough"})
    assert w.problems(env) == []
    assert (env[w.DICOM_PORT], env[w.WEB_PORT]) == ("10104", "10180")
    assert env[w.DB_SQLITE] == "true" and env[w.DB_MARIADB_CREATE] == "false"
    # ... reachable from the network (the desktop icon), and with no modality registered
    assert env[w.WEB_NETWORK] == "true" and env[w.WEB_PROXY_ONLY] == "false" and env[w.STORE_AES] == ""
    assert w.parse(env).web_host == "0.0.0.0"
    assert w.parse(fill_wizard(english, {w.ADMIN_PASSWORD: "long enough", w.ADMIN_PASSWORD_CONFIRM: "long enough",
                                         w.WEB_NETWORK: False, w.WEB_PROXY_ONLY: True,
                                         w.STORE_AES: "ANGIO1, WS@10.0.0.5:104"})).web_host == "127.0.0.1"


def test_resource_renders_from_install_and_upgrade_answers(spk, tmp_path):
    """DSM renders conf/resource with each operation's answers: an upgrade must keep the
    share's name."""
    out, _, _ = spk
    template = (out / "conf" / "resource").read_text()
    install = run_wizard_script(out / "WIZARD_UIFILES" / "install_uifile.sh", tmp_path, {})
    used = set(re.findall(r"\{\{(\w+)\}\}", template))
    assert used <= set(keys(install))

    var = tmp_path / "var"
    configfile.write_new(var, {"ae_title": 'ANGIO "3"', "dicom_port": 4242, "web_port": 8042,
                               "storage_root": "/var/packages/dsmpacs/shares/PACS 影像",
                               "database_url": "mysql://u:p@127.0.0.1:3307/pacs"})
    etc = tmp_path / "root" / "var" / "packages" / "dsmpacs" / "etc"
    etc.mkdir(parents=True)
    (etc / "installer.conf").write_text("share_name=PACS 影像\ndatabase=mariadb\n")
    upgrade = run_wizard_script(out / "WIZARD_UIFILES" / "upgrade_uifile.sh", tmp_path, {
        "SYNOPKG_PKGNAME": "dsmpacs", "SYNOPKG_PKGVAR": str(var),
        "PACS_DSM_ROOT": str(tmp_path / "root"), "LANG": "C.UTF-8"})
    shown = upgrade[0]["items"][0]["desc"]
    for text in ('ANGIO "3"', "<b>4242</b>", "<b>8042</b>", "PACS 影像", "MariaDB", "0.0.0.0"):
        assert text in shown, (text, shown)
    answers = fill_wizard(upgrade, {})
    rendered = json.loads(render_mustache(template, answers))
    assert rendered["data-share"]["shares"][0]["name"] == "PACS 影像"


def test_uninstall_wizard_asks_keep_or_delete(spk):
    out, _, _ = spk
    for name in ("uninstall_uifile", "uninstall_uifile_chs", "uninstall_uifile_cht"):
        steps = json.loads((out / "WIZARD_UIFILES" / name).read_text())
        fields = wizard_fields(steps)
        assert [(kind, sub["key"], sub["defaultValue"]) for kind, sub in fields] == [
            ("singleselect", w.KEEP_DATA, True), ("singleselect", w.DELETE_DATA, False)]


def test_scripts_are_executable_posix_sh_and_pass_shellcheck(spk):
    out, members, _ = spk
    scripts = out / "scripts"
    for name in REQUIRED_SCRIPTS:
        member = members[f"scripts/{name}"]
        assert stat.S_IMODE(member.mode) == 0o755, name
        text = (scripts / name).read_text()
        assert text.startswith("#!/bin/sh\n"), name
        # DSM 7 packages cannot write there; everything goes under SYNOPKG_PKGVAR.
        assert "/var/run" not in text and "/var/log" not in text, name
    common = (scripts / "common").read_text()
    assert "@PYTHON" not in common and 'PYTHON_PACKAGE="python311"' in common
    # preinst runs the application's own wizard rules, copied verbatim.
    assert (scripts / "wizard.py").read_bytes() == (ROOT / "package/dsmpacs/dsm/wizard.py").read_bytes()
    shellcheck = shutil.which("shellcheck")
    require(shellcheck is not None, "shellcheck is not installed (apt-get install shellcheck)")
    wizard_scripts = sorted((out / "WIZARD_UIFILES").glob("*.sh"))
    done = subprocess.run([shellcheck, "-x", "-s", "sh", *REQUIRED_SCRIPTS, "common",
                           *map(str, wizard_scripts)], cwd=scripts, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout
    build = subprocess.run([shellcheck, "-s", "sh", str(ROOT / "spk_build.sh")],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stdout


def test_license_names_every_bundled_component(spk):
    out, _, _ = spk
    text = (out / "LICENSE").read_text()
    for wheel in (out / "payload" / "wheels").glob("*.whl"):
        name, version = wheel.name.split("-")[:2]
        if name != "dsmpacs":
            assert f"{name} {version}:" in text

