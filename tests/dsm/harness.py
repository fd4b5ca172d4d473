"""A stand-in for DSM's Package Center, enough to run a .spk's lifecycle on plain Linux.

It follows the DSM 7 developer guide (reference/spk.md sections 1, 3, 4 and 5):
it checks INFO and the checksum, runs the wizard scripts and fills in answers,
creates the package user from conf/privilege, lays out /var/packages/<name>
with target, var, etc, home and tmp linked to a fake volume's @app* folders,
renders conf/resource with the wizard's answers, plays the port-config,
data-share and mariadb10-db workers at their documented times, and runs each
lifecycle script in DSM's order, as the package user, with the SYNOPKG_*
variables. Install and upgrade steps run with no network (`unshare --net`).

Everything lives under one scratch root; the package's scripts find it through
PACS_DSM_ROOT. The harness runs as root, like DSM.
"""
from __future__ import annotations

import grp
import hashlib
import json
import os
import pwd
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

DSM_ENV = {"SYNOPKG_DSM_VERSION_MAJOR": "7", "SYNOPKG_DSM_VERSION_MINOR": "2",
           "SYNOPKG_DSM_VERSION_BUILD": "72806", "SYNOPKG_DSM_ARCH": "geminilake",
           "SYNOPKG_USERNAME": "admin"}
PATH = "/usr/syno/sbin:/usr/syno/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
VOLUME = "volume1"
APP_DIRS = {"target": "@appstore", "var": "@appdata", "etc": "@appconf", "home": "@apphome",
            "tmp": "@apptemp"}
SCRIPT_TIMEOUT = 300
# The NAS the harness plays: a DS920+-like x86_64 box (platform geminilake) on DSM 7.2.
NAS_ARCHES = ("noarch", "x86_64", "geminilake")
NAS_DSM_VERSION = "7.2-72806"
MARIADB10_SOCKET = "run/mysqld/mysqld10.sock"     # under the root, as on DSM


class DSMError(AssertionError):
    """DSM would refuse this package, or one of its steps failed."""


@dataclass
class ScriptRun:
    name: str
    returncode: int
    message: str          # what Package Center would show (SYNOPKG_TEMP_LOGFILE)
    output: str           # the script's stdout and stderr (DSM's package log)

    def __str__(self) -> str:
        return (f"{self.name} exited {self.returncode}\n--- shown to the user:\n{self.message}"
                f"\n--- log:\n{self.output}")


@dataclass
class Spk:
    """An uploaded .spk, unpacked the way Package Center does before installing."""

    path: Path
    dir: Path
    info: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.info["package"]

    @property
    def version(self) -> str:
        return self.info["version"]


def read_info(text: str) -> dict[str, str]:
    info = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        match = re.fullmatch(r'([a-z_0-9]+)="([^"]*)"', line)
        if not match:
            raise DSMError(f"invalid INFO line (DSM error 261): {line!r}")
        info[match[1]] = match[2]
    return info


def extract_all(tar: tarfile.TarFile, dest: Path) -> None:
    """Unpack with the "tar" filter where this Python has extraction filters. Debian 12's
    python3.11 (3.11.2), which runs the harness inside the container root, has none."""
    if hasattr(tarfile, "tar_filter"):
        tar.extractall(dest, filter="tar")
    else:
        tar.extractall(dest)


def alive(pid: int) -> bool:
    """The process exists and is not a zombie waiting for its parent to reap it."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def version_key(version: str) -> tuple[int, ...]:
    """DSM's order of package versions: the numbers of "1.2.3-0045", compared in turn,
    a missing number counting as 0."""
    numbers = re.findall(r"\d+", version)
    if not numbers:
        raise DSMError(f"invalid version {version!r}")
    return tuple(int(n) for n in numbers)


def version_cmp(a: str, b: str) -> int:
    ka, kb = version_key(a), version_key(b)
    width = max(len(ka), len(kb))
    ka, kb = ka + (0,) * (width - len(ka)), kb + (0,) * (width - len(kb))
    return (ka > kb) - (ka < kb)


def dependency(entry: str) -> tuple[str, str, str]:
    """ "python311>=3.11" -> ("python311", ">=", "3.11"); a bare name has no condition."""
    match = re.fullmatch(r"([A-Za-z0-9._+-]+?)\s*(?:(>=|<=|=|<|>)\s*([0-9][0-9.-]*))?", entry.strip())
    if not match:
        raise DSMError(f"invalid install_dep_packages entry {entry!r}")
    return match[1], match[2] or "", match[3] or ""


def sc_ports(text: str) -> dict[int, str]:
    """TCP port -> section of a DSM service file ("5000,5001/tcp", "6881:6889/tcp,udp")."""
    found = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif line.startswith("dst.ports"):
            ports, _, protocols = line.split("=", 1)[1].strip().strip('"').partition("/")
            if protocols and "tcp" not in protocols.split(","):
                continue
            for part in ports.split(","):
                low, _, high = part.replace("-", ":").partition(":")
                for port in range(int(low), int(high or low) + 1):
                    found[port] = section
    return found


def render_mustache(template: str, values: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}", lambda m: values.get(m[1], ""), template)


def wizard_fields(steps: list[dict]) -> list[tuple[str, dict]]:
    """(item type, subitem) for every keyed field of a wizard."""
    out = []
    for step in steps:
        for item in step.get("items", []):
            for sub in item.get("subitems", []):
                if "key" in sub:
                    out.append((item.get("type", ""), sub))
    return out


def fill_wizard(steps: list[dict], answers: dict[str, object]) -> dict[str, str]:
    """The environment DSM passes on: each field's default, or the given answer,
    checked with the field's own validator the way the wizard's page would."""
    fields = wizard_fields(steps)
    known = {sub["key"] for _, sub in fields}
    unknown = set(answers) - known
    if unknown:
        raise DSMError(f"the wizard has no field {sorted(unknown)}")
    env: dict[str, str] = {}
    for kind, sub in fields:
        value = answers.get(sub["key"], sub.get("defaultValue", ""))
        if isinstance(value, bool):
            value = "true" if value else "false"
        value = str(value)
        validator = sub.get("validator") or {}
        if not (value == "" and validator.get("allowBlank", True)) and "regex" in validator:
            expr = validator["regex"]["expr"]
            assert expr.startswith("/") and expr.endswith("/"), expr
            if not re.fullmatch(expr[1:-1], value):
                raise DSMError(f"the wizard refuses {sub['key']}={value!r}: "
                               f"{validator['regex']['errorText']}")
        elif value == "" and validator.get("allowBlank") is False:
            raise DSMError(f"the wizard requires {sub['key']}")
        env[sub["key"]] = value
    return env


class FakeDSM:
    """One NAS: a scratch root holding /var/packages, a volume and DSM's folders."""

    def __init__(self, root: Path, python: str, *, lang: str = "enu",
                 mariadb_admin: dict | None = None, mariadb_socket: str | None = None,
                 mariadb10: bool | None = None):
        """mariadb10: the MariaDB10 package is installed (by default when mariadb_admin is
        given); mariadb_socket: the real server's socket its fake socket leads to."""
        self.root = root
        self.python = python
        self.lang = lang
        self.mariadb_admin = mariadb_admin
        self.volume = root / VOLUME
        self.packages = root / "var" / "packages"
        self.services_d = root / "usr" / "local" / "etc" / "services.d"   # packages' .sc files
        self.system_services_d = root / "etc" / "services.d"              # DSM's own
        self.harness = root / "@harness"
        self.installed: Spk | None = None
        self.answers: dict[str, str] = {}
        self.running = False
        self.user: str | None = None
        self.registered: list[str] = []     # each .sc text the port-config worker registered
        for path in (self.volume, self.packages, self.services_d, self.system_services_d,
                     self.harness):
            path.mkdir(parents=True, exist_ok=True)
        # What the package writes outside its folders is judged against this moment: the
        # package user's uid is reused by later runs, and an earlier run that was killed can
        # leave files of that uid in /tmp.
        self.started = self.harness / ".started"
        self.started.touch()
        for path in (root, root / "var", root / "usr", self.volume, self.packages):
            path.chmod(0o755)
        self._install_python_package()
        self._install_synopkghelper()
        self._install_dsm_services()
        if mariadb10 or (mariadb10 is None and mariadb_admin is not None):
            self._install_mariadb10(mariadb_socket)

    # --- the machine -------------------------------------------------------------
    def _install_python_package(self) -> None:
        """The interpreter package the .spk depends on, as SynoCommunity lays it out."""
        version = re.search(r"(\d+\.\d+)$", subprocess.run(
            [self.python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True, text=True, check=True).stdout.strip())[1]
        name = "python" + version.replace(".", "")
        bin_dir = self.packages / name / "target" / "bin"
        bin_dir.mkdir(parents=True, exist_ok=True)
        link = bin_dir / f"python{version}"
        if not link.exists():
            link.symlink_to(self.python)
        (self.packages / name / "INFO").write_text(f'package="{name}"\nversion="{version}.0-1"\n')
        for path in (self.packages / name, bin_dir.parent, bin_dir):
            path.chmod(0o755)

    def _install_dsm_services(self) -> None:
        """DSM's own service files, as /etc/services.d holds a few on every NAS."""
        (self.system_services_d / "dsm.sc").write_text(
            '[dsm_http]\ntitle="DSM HTTP"\ndst.ports="5000/tcp"\n\n'
            '[dsm_https]\ntitle="DSM HTTPS"\ndst.ports="5001/tcp"\n')
        (self.system_services_d / "synology_drive.sc").write_text(
            '[synology_drive]\ntitle="Synology Drive Server"\ndst.ports="6690/tcp"\n')

    def _install_mariadb10(self, socket: str | None) -> None:
        """Synology's MariaDB 10 package: its INFO, and its socket (the real server's)."""
        pkg = self.packages / "MariaDB10"
        pkg.mkdir(parents=True, exist_ok=True)
        (pkg / "INFO").write_text('package="MariaDB10"\nversion="10.11.6-1343"\n')
        link = self.root / MARIADB10_SOCKET
        link.parent.mkdir(parents=True, exist_ok=True)
        for path in (self.root / "run", link.parent):
            path.chmod(0o755)
        if socket and not link.is_symlink():
            link.symlink_to(socket)

    def register_service(self, name: str, text: str) -> Path:
        """Another package's service file, as its port-config worker left it."""
        path = self.services_d / f"{name}.sc"
        path.write_text(text)
        return path

    def _install_synopkghelper(self) -> None:
        """DSM's helper that re-acquires a resource; here it records the request, and the
        harness (playing DSM) carries it out after the script."""
        helper = self.root / "usr" / "syno" / "sbin" / "synopkghelper"
        helper.parent.mkdir(parents=True, exist_ok=True)
        helper.write_text('#!/bin/sh\necho "$@" >>"${SYNOPKG_PKGTMP:?}/.synopkghelper.calls"\n')
        helper.chmod(0o755)
        for path in (self.root / "usr", self.root / "usr" / "syno", helper.parent):
            path.chmod(0o755)

    @property
    def uid(self) -> int:
        return pwd.getpwnam(self.user).pw_uid

    @property
    def gid(self) -> int:
        return grp.getgrnam(self.user).gr_gid

    def package_dir(self, name: str | None = None) -> Path:
        return self.packages / (name or self.installed.name)

    def app_dir(self, kind: str, name: str | None = None) -> Path:
        """The real folder behind /var/packages/<name>/<kind>."""
        return self.volume / APP_DIRS[kind] / (name or self.installed.name)

    def share(self, name: str) -> Path:
        return self.volume / name

    # --- unpacking an upload -----------------------------------------------------
    def unpack(self, spk_path: Path) -> Spk:
        with tarfile.open(spk_path, "r:") as tar:  # a plain tar, as pkg_make_spk writes it
            members = tar.getnames()
        for required in ("INFO", "package.tgz", "scripts", "conf", "PACKAGE_ICON.PNG",
                         "PACKAGE_ICON_256.PNG"):
            if required not in members:
                raise DSMError(f"invalid file format: {spk_path.name} has no {required}")
        upload = Path(tempfile.mkdtemp(prefix="pkginstall-", dir=self.harness))
        upload.chmod(0o755)
        with tarfile.open(spk_path) as tar:
            extract_all(tar, upload)
        spk = Spk(spk_path, upload, read_info((upload / "INFO").read_text()))
        for key in ("package", "version", "os_min_ver", "description", "arch", "maintainer"):
            if key not in spk.info:
                raise DSMError(f"INFO lacks {key}")
        if spk.info["checksum"] != hashlib.md5((upload / "package.tgz").read_bytes()).hexdigest():
            raise DSMError("Cannot continue to install package: spk checksum is incorrect")
        arches = spk.info["arch"].split()
        if not set(arches) & set(NAS_ARCHES):
            raise DSMError(f"This package is not compatible with this NAS: it is for "
                           f"{spk.info['arch']}, the NAS is {NAS_ARCHES[-1]} ({NAS_ARCHES[1]})")
        if version_cmp(spk.info["os_min_ver"], NAS_DSM_VERSION) > 0:
            raise DSMError(f"This package needs DSM {spk.info['os_min_ver']} or later; the NAS "
                           f"runs DSM {NAS_DSM_VERSION}")
        for dep in filter(None, spk.info.get("install_dep_packages", "").split(":")):
            dep_name, op, wanted = dependency(dep)
            info_path = self.packages / dep_name / "INFO"
            if not info_path.exists():
                raise DSMError(f"{spk.name} needs the package {dep_name}, which is not installed")
            have = read_info(info_path.read_text())["version"]
            order = version_cmp(have, wanted) if op else 0
            ok = {"": True, ">=": order >= 0, ">": order > 0, "<=": order <= 0, "<": order < 0,
                  "=": order == 0}[op]
            if not ok:
                raise DSMError(f"{spk.name} needs {dep_name} {op} {wanted}; {have} is installed")
        # A resource worker is provided by a package: the mariadb10-db worker by MariaDB10.
        resource = json.loads((upload / "conf" / "resource").read_text()) \
            if (upload / "conf" / "resource").exists() else {}
        if "mariadb10-db" in resource and not (self.packages / "MariaDB10" / "INFO").exists():
            raise DSMError("conf/resource declares the mariadb10-db worker, whose provider, "
                           "the MariaDB10 package, is not installed")
        return spk

    # --- running scripts -----------------------------------------------------------
    def _env(self, spk: Spk, status: str, extra: dict[str, str], log: Path) -> dict[str, str]:
        name = spk.name
        env = {"PATH": PATH, "LANG": "C.UTF-8", "PACS_DSM_ROOT": str(self.root),
               **DSM_ENV, "SYNOPKG_DSM_LANGUAGE": self.lang,
               "SYNOPKG_PKGNAME": name, "SYNOPKG_PKGVER": spk.version,
               "SYNOPKG_PKGDEST": str(self.package_dir(name) / "target"),
               "SYNOPKG_PKGDEST_VOL": f"/{VOLUME}",
               "SYNOPKG_PKGVAR": str(self.package_dir(name) / "var"),
               "SYNOPKG_PKGTMP": str(self.package_dir(name) / "tmp"),
               "SYNOPKG_PKGHOME": str(self.package_dir(name) / "home"),
               "SYNOPKG_PKGINST_TEMP_DIR": str(spk.dir),
               "SYNOPKG_TEMP_SPKFILE": str(spk.path),
               "SYNOPKG_TEMP_UPGRADE_FOLDER": str(self.harness / "upgrade"),
               "SYNOPKG_TEMP_LOGFILE": str(log),
               "SYNOPKG_PKG_STATUS": status}
        env.update(extra)
        return env

    def _logfile(self) -> Path:
        """SYNOPKG_TEMP_LOGFILE: a fresh file the script may write."""
        fd, name = tempfile.mkstemp(prefix="logfile-", dir=self.harness)
        os.close(fd)
        if self.user:
            os.chown(name, self.uid, self.gid)
        return Path(name)

    def run_script(self, spk: Spk, script: Path, *args: str, status: str = "",
                   extra: dict[str, str] | None = None, network: bool = True,
                   as_root: bool = False) -> ScriptRun:
        log = self._logfile()
        env = self._env(spk, status, {**self.answers, **(extra or {})}, log)
        cmd = ["/bin/sh", str(script), *args]
        if not as_root:
            cmd = ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups",
                   "--", *cmd]
        if not network:
            cmd = ["unshare", "--net", "--", *cmd]
        done = subprocess.run(cmd, env=env, cwd="/", capture_output=True, text=True,
                              timeout=SCRIPT_TIMEOUT)
        message = log.read_text(errors="replace")
        log.unlink()
        # DSM keeps what the lifecycle scripts write to stderr in the package's log,
        # which the package user may read but not write.
        if done.stderr:
            package_log = self.package_log(spk.name)
            package_log.parent.mkdir(parents=True, exist_ok=True)
            with package_log.open("a", encoding="utf-8") as fh:
                fh.write(done.stderr)
        return ScriptRun(f"{script.name} {' '.join(args)}".strip(), done.returncode, message,
                         done.stdout + done.stderr)

    def _lifecycle(self, spk: Spk, script: str, *, status: str, installed: bool = False,
                   network: bool = True, extra: dict[str, str] | None = None) -> ScriptRun:
        base = self.package_dir(spk.name) / "scripts" if installed else spk.dir / "scripts"
        run = self.run_script(spk, base / script, status=status, network=network, extra=extra)
        if run.returncode != 0:
            raise DSMError(str(run))
        return run

    # --- wizard ------------------------------------------------------------------------
    def wizard(self, spk: Spk, kind: str, answers: dict[str, object], *,
               as_root: bool) -> dict[str, str]:
        suffix = "" if self.lang == "enu" else f"_{self.lang}"
        base = spk.dir / "WIZARD_UIFILES" / f"{kind}_uifile{suffix}"
        if base.with_name(base.name + ".sh").exists():
            script = base.with_name(base.name + ".sh")
            if not os.access(script, os.X_OK):
                raise DSMError(f"invalid file format: {script.name} is not executable")
            run = self.run_script(spk, script, as_root=as_root, status=kind.upper())
            if run.returncode != 0:
                raise DSMError(str(run))
            text = run.message
        elif base.exists():
            text = base.read_text()
        elif answers:
            raise DSMError(f"answers given, but the package has no {kind} wizard")
        else:
            return {}
        return fill_wizard(json.loads(text), answers)

    # --- resources -----------------------------------------------------------------------
    def resource(self, name: str | None = None) -> dict:
        path = self.package_dir(name) / "conf" / "resource"
        return json.loads(path.read_text()) if path.exists() else {}

    def _install_metadata(self, spk: Spk) -> None:
        """DSM keeps INFO, conf (resource rendered with the wizard's answers), scripts
        and WIZARD_UIFILES in /var/packages/<name>."""
        pkg = self.package_dir(spk.name)
        for item in ("INFO", "scripts", "conf", "WIZARD_UIFILES"):
            dest = pkg / item
            if dest.is_dir():
                shutil.rmtree(dest)
            if (spk.dir / item).is_dir():
                shutil.copytree(spk.dir / item, dest)
            elif (spk.dir / item).exists():
                shutil.copy2(spk.dir / item, dest)
        template = (spk.dir / "conf" / "resource").read_text()
        rendered = render_mustache(template, self.answers)
        try:
            json.loads(rendered)
        except ValueError as exc:
            raise DSMError(f"conf/resource is not JSON once rendered: {exc}\n{rendered}") from None
        (pkg / "conf" / "resource").write_text(rendered)

    def _privilege(self, spk: Spk) -> None:
        privilege = json.loads((spk.dir / "conf" / "privilege").read_text())
        if privilege.get("defaults", {}).get("run-as") != "package":
            raise DSMError("Failed to install. The package should run with a lower privilege level.")
        for entry in privilege.get("ctrl-script", []) + privilege.get("executable", []):
            if entry.get("run-as") == "root":
                raise DSMError("third-party packages may not run anything as root")
        if privilege.get("tool"):
            raise DSMError("privilege tool entries (capabilities) are refused for third-party packages")
        self.user = privilege.get("username", spk.name)
        group = privilege.get("groupname", self.user)
        if group != self.user:
            raise DSMError("the harness models username == groupname only")
        try:
            pwd.getpwnam(self.user)
        except KeyError:
            subprocess.run(["useradd", "--system", "--user-group", "--no-create-home",
                            "--home-dir", str(self.package_dir(spk.name) / "home"),
                            "--shell", "/usr/sbin/nologin", self.user], check=True)

    def _layout(self, spk: Spk) -> None:
        pkg = self.package_dir(spk.name)
        pkg.mkdir(parents=True, exist_ok=True)
        pkg.chmod(0o755)
        for kind in APP_DIRS:
            real = self.app_dir(kind, spk.name)
            real.mkdir(parents=True, exist_ok=True)
            real.parent.chmod(0o755)
            os.chown(real, self.uid, self.gid)
            real.chmod(0o700 if kind == "home" else 0o755)
            link = pkg / kind
            if not link.is_symlink():
                link.symlink_to(real)

    def _acquire_mariadb(self, stage: str) -> None:
        """The mariadb10-db worker: check the admin login before preinst; create the
        database and grant the user before postinst, when the flags say so."""
        config = self.resource().get("mariadb10-db")
        if not config:
            return
        create = str(config.get("create-db", {}).get("flag", "")).lower() == "true"
        grant = str(config.get("grant-user", {}).get("flag", "")).lower() == "true"
        if not (create or grant):
            return
        if self.mariadb_admin is None:
            raise DSMError("the package asks the MariaDB 10 package for a database; none here")
        import pymysql

        admin = dict(self.mariadb_admin)
        if config.get("admin-pw-m10", "") != admin.get("password", ""):
            raise DSMError("mariadb10-db: the MariaDB root password is wrong")
        conn = pymysql.connect(host=admin["host"], port=admin["port"], user=admin["user"],
                               password=admin["password"], autocommit=True)
        try:
            if stage == "postinst":
                with conn.cursor() as cur:
                    if create:
                        cur.execute(f"CREATE DATABASE IF NOT EXISTS `{config['create-db']['db-name']}` "
                                    "CHARACTER SET utf8mb4")
                    if grant:
                        g = config["grant-user"]
                        cur.execute(f"CREATE USER IF NOT EXISTS '{g['user-name']}'@'{g.get('host', 'localhost')}' "
                                    "IDENTIFIED BY %s", (g["user-pw"],))
                        cur.execute(f"GRANT ALL PRIVILEGES ON `{g['db-name']}`.* TO "
                                    f"'{g['user-name']}'@'{g.get('host', 'localhost')}'")
        finally:
            conn.close()

    def _acquire_port_config(self, name: str, *, replace: bool = False) -> None:
        config = self.resource(name).get("port-config")
        if not config:
            return
        source = self.package_dir(name) / "target" / config["protocol-file"]
        dest = self.services_d / f"{name}.sc"
        # An absolute link in the package means a path on the NAS: under the scratch root here.
        while source.is_symlink() and os.readlink(source).startswith("/"):
            source = self.root / os.readlink(source).lstrip("/")
        if not source.exists():
            raise DSMError(f"port-config: {config['protocol-file']} is not in the package "
                           f"(or its link leads nowhere)")
        if replace or not dest.exists():
            text = source.read_text()
            ours = sc_ports(text)
            for other in sorted(self.services_d.glob("*.sc")) + sorted(self.system_services_d.glob("*.sc")):
                if other == dest:
                    continue
                clash = sorted(set(ours) & set(sc_ports(other.read_text())))
                if clash:
                    raise DSMError(f"port-config: port {clash[0]} of {name}.sc is already used "
                                   f"by {other.name}: the install fails")
            dest.write_text(text)
            self.registered.append(text)

    def _helper_requests(self, name: str) -> None:
        calls = self.package_dir(name) / "tmp" / ".synopkghelper.calls"
        if calls.exists():
            for line in calls.read_text().splitlines():
                if line.split() == ["update", name, "port-config"]:
                    self._acquire_port_config(name, replace=True)
            calls.unlink()

    def _acquire_data_share(self) -> None:
        for share in self.resource().get("data-share", {}).get("shares", []):
            name = share["name"]
            if not name:
                raise DSMError("data-share: a shared folder without a name")
            path = self.share(name)
            if not path.exists():
                path.mkdir()
                os.chown(path, 0, self.gid)
                path.chmod(0o770)
            if self.user in share.get("permission", {}).get("rw", []):
                os.chown(path, 0, self.gid)
                path.chmod(0o770)
            links = self.package_dir() / "shares"
            links.mkdir(exist_ok=True)
            links.chmod(0o755)
            link = links / name
            if not link.is_symlink():
                link.symlink_to(path)

    def _release(self) -> None:
        name = self.installed.name
        (self.services_d / f"{name}.sc").unlink(missing_ok=True)
        shutil.rmtree(self.package_dir() / "shares", ignore_errors=True)  # links only

    @staticmethod
    def _empty(path: Path) -> None:
        for child in path.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()

    def _unpack_payload(self, spk: Spk) -> None:
        target = self.app_dir("target", spk.name)
        with tarfile.open(spk.dir / "package.tgz") as tar:
            extract_all(tar, target)
        # run-as package: DSM hands the package's files to its user.
        for path in [target, *target.rglob("*")]:
            os.lchown(path, self.uid, self.gid)

    # --- Package Center's operations ---------------------------------------------------
    def install(self, spk_path: Path, answers: dict[str, object], *, start: bool = True,
                until: str = "") -> list[ScriptRun]:
        """Package Center's install; until="postinst" stops before postinst (what DSM
        checks and registers before it, without the slow environment build)."""
        spk = self.unpack(spk_path)
        self.answers = self.wizard(spk, "install", answers, as_root=True)
        self._privilege(spk)
        self._layout(spk)
        self.installed = spk
        runs = []
        self._install_metadata(spk)  # the resource the workers read
        self._acquire_mariadb("preinst")
        runs.append(self._lifecycle(spk, "preinst", status="INSTALL", network=False))
        self._unpack_payload(spk)
        self._install_metadata(spk)
        self._acquire_port_config(spk.name)
        self._acquire_mariadb("postinst")
        if until == "postinst":
            return runs
        runs.append(self._lifecycle(spk, "postinst", status="INSTALL", installed=True, network=False))
        self._helper_requests(spk.name)
        if start:
            runs.append(self.start(status="INSTALL"))
        return runs

    def start(self, *, status: str = "START") -> ScriptRun:
        self._acquire_data_share()
        pre = self.script("prestart", status=status)
        if pre.returncode != 0:
            raise DSMError(str(pre))
        run = self.script("start", status=status)
        self._helper_requests(self.installed.name)
        if run.returncode != 0:
            raise DSMError(str(run))
        self.running = True
        return run

    def try_start(self) -> ScriptRun:
        """Start, returning the failure instead of raising (to read the reason)."""
        self._acquire_data_share()
        run = self.script("start", status="START")
        self._helper_requests(self.installed.name)
        self.running = run.returncode == 0
        return run

    def script(self, action: str, *, status: str = "", extra: dict[str, str] | None = None) -> ScriptRun:
        return self.run_script(self.installed, self.package_dir() / "scripts" / "start-stop-status",
                               action, status=status, extra=extra)

    def status(self) -> int:
        return self.script("status").returncode

    def stop(self, *, status: str = "STOP", extra: dict[str, str] | None = None) -> ScriptRun:
        for action in ("prestop", "stop"):
            run = self.script(action, status=status, extra=extra)
            if run.returncode != 0:
                raise DSMError(str(run))
        self.running = False
        return run

    def upgrade(self, spk_path: Path, answers: dict[str, object] | None = None) -> list[ScriptRun]:
        old = self.installed
        spk = self.unpack(spk_path)
        if spk.name != old.name:
            raise DSMError("an upgrade must keep the package name")
        if version_cmp(spk.version, old.version) < 0:
            raise DSMError(f"Package Center refuses {spk.version}: a newer version "
                           f"({old.version}) is installed")
        was_running = self.running
        if was_running:
            self.stop(status="UPGRADE")
        extra = {"SYNOPKG_OLD_PKGVER": old.version}
        self.answers = self.wizard(spk, "upgrade", answers or {}, as_root=False)
        runs = [self._lifecycle(spk, "preupgrade", status="UPGRADE", network=False, extra=extra)]
        runs.append(self._lifecycle(old, "preuninst", status="UPGRADE", installed=True, extra=extra))
        self._empty(self.app_dir("target"))
        self._empty(self.app_dir("tmp"))
        runs.append(self._lifecycle(old, "postuninst", status="UPGRADE", installed=True, extra=extra))
        runs.append(self._lifecycle(spk, "preinst", status="UPGRADE", network=False, extra=extra))
        self.installed = spk
        self._unpack_payload(spk)
        self._install_metadata(spk)
        self._acquire_port_config(spk.name)
        self._acquire_mariadb("postinst")
        runs.append(self._lifecycle(spk, "postinst", status="UPGRADE", installed=True,
                                    network=False, extra=extra))
        self._helper_requests(spk.name)
        runs.append(self._lifecycle(spk, "postupgrade", status="UPGRADE", installed=True,
                                    network=False, extra=extra))
        if was_running:
            runs.append(self.start(status="UPGRADE"))
        return runs

    def uninstall(self, answers: dict[str, object]) -> list[ScriptRun]:
        spk = self.installed
        if self.running:
            self.stop(status="UNINSTALL")
        # The uninstall wizard is read from the installed package.
        installed = Spk(spk.path, self.package_dir(), spk.info)
        self.answers = self.wizard(installed, "uninstall", answers, as_root=False)
        runs = [self._lifecycle(spk, "preuninst", status="UNINSTALL", installed=True)]
        self._empty(self.app_dir("target"))
        self._release()
        runs.append(self._lifecycle(spk, "postuninst", status="UNINSTALL", installed=True))
        # var, etc and home have no remove timing in DSM's FHS: they stay on the volume.
        shutil.rmtree(self.package_dir())
        shutil.rmtree(self.app_dir("target"))
        shutil.rmtree(self.app_dir("tmp"))
        self.installed = None
        return runs

    # --- Repair and boot -----------------------------------------------------------------
    def repair(self, spk_path: Path, *, start: bool | None = None) -> list[ScriptRun]:
        """Package Center's Repair. DSM's help says Repair "actually installs the latest
        version of the package" rather than mending the old one; DSM 7.0's release notes add
        that a start-failed package can be repaired and that the package is restarted
        afterwards according to its original state. So: the package installed again over
        itself as an upgrade (var, etc and home kept, target rebuilt from package.tgz),
        conf/resource rendered again with the upgrade wizard's answers and every worker
        acquiring again, then started if it ran (or was meant to run: `start`)."""
        wanted = self.running if start is None else start
        # The workers acquire again: the port-config registration is dropped here so that
        # the upgrade steps register the package's file at the worker's documented time.
        (self.services_d / f"{self.installed.name}.sc").unlink(missing_ok=True)
        runs = self.upgrade(spk_path)
        if wanted and not self.running:
            runs.append(self.start(status="UPGRADE"))
        return runs

    def power_loss(self) -> list[int]:
        """The NAS loses power: every process of the package ends at once (SIGKILL), and
        nothing runs prestop or stop; PID files and sockets stay as they were."""
        killed = [pid for pid, _uid, _cmd in self.processes_of_root_path()]
        for pid in killed:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in killed):
            if time.monotonic() > deadline:
                raise DSMError(f"processes {killed} survived SIGKILL")
            time.sleep(0.05)
        self.running = False
        return killed

    def shutdown(self) -> None:
        """An orderly shutdown: DSM stops each running package (prestop, stop)."""
        if self.running:
            self.stop(status="")

    def boot(self) -> ScriptRun:
        """DSM starts the package at boot (prestart, then start; DSM 7.0 "considers the
        prestart script on bootup"). Nobody answers a wizard then: the scripts get DSM's
        variables only, no wizard_* value, and SYNOPKG_PKG_STATUS is empty. The package
        must run from what it saved at install time."""
        self.answers = {}
        self._acquire_data_share()
        for action in ("prestart", "start"):
            run = self.script(action, status="")
            if run.returncode != 0:
                raise DSMError(f"start at boot failed:\n{run}")
        self._helper_requests(self.installed.name)
        self.running = True
        return run

    # --- observations ------------------------------------------------------------------
    def package_log(self, name: str | None = None) -> Path:
        """/var/log/packages/<name>.log: the lifecycle scripts' stderr."""
        return self.root / "var" / "log" / "packages" / f"{name or self.installed.name}.log"

    def pids(self) -> dict[str, int]:
        """The started process (PID files) and the children its run files name."""
        run_dir = self.package_dir() / "var" / "run"
        pids = {p.stem: int(p.read_text()) for p in run_dir.glob("*.pid")}
        for run_file in run_dir.glob("*.json"):
            try:
                info = json.loads(run_file.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(info, dict) and "role" in info and "pid" in info:
                pids[info["role"]] = int(info["pid"])
        return pids

    def processes_of_root_path(self) -> list[tuple[int, int, str]]:
        """(pid, uid, cmdline) of every process whose command line mentions the scratch root."""
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                uid = int(re.search(r"^Uid:\s+(\d+)", (proc / "status").read_text(), re.M)[1])
            except (OSError, TypeError):
                continue
            if str(self.root) in cmdline and int(proc.name) != os.getpid():
                found.append((int(proc.name), uid, cmdline.strip()))
        return found

    def allowed_dirs(self) -> list[Path]:
        name = self.installed.name if self.installed else "dsmpacs"
        shares = [self.share(s["name"]) for s in self.resource(name).get("data-share", {})
                  .get("shares", [])] if self.installed else []
        return [self.app_dir(kind, name) for kind in APP_DIRS] + shares + [self.harness]

    def files_owned_outside(self, allowed: list[Path]) -> list[str]:
        """Paths the package user owns outside the allowed folders: anywhere in the scratch
        root, and in the world-writable places an unprivileged user can reach."""
        allowed_text = [str(p) for p in allowed]
        hits = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            for entry in dirnames + filenames:
                path = os.path.join(dirpath, entry)
                if any(path == a or path.startswith(a + "/") for a in allowed_text):
                    continue
                if os.lstat(path).st_uid == self.uid:
                    hits.append(path)
        outside = [d for d in ("/tmp", "/var/tmp", "/dev/shm", "/run/lock") if os.path.isdir(d)]
        # Other harness runs on this machine (their scratch roots, also inside a container's
        # overlay) use the same user name, so the same uid: theirs is not this package's doing.
        found = subprocess.run(["find", *outside, "-xdev", "(", "-path", str(self.root), "-o",
                                "-name", "dsmpacs-dsm-*", ")", "-prune",
                                "-o", "-uid", str(self.uid), "-newer", str(self.started), "-print0"],
                               capture_output=True, text=True)
        return hits + [p for p in found.stdout.split("\0") if p]

    def as_package_user(self, *cmd: str, network: bool = True) -> subprocess.CompletedProcess:
        """Run a command the way an administrator would over SSH as the package user."""
        env = {"PATH": PATH, "LANG": "C.UTF-8", "HOME": str(self.package_dir() / "home"),
               "TMPDIR": str(self.package_dir() / "tmp")}
        full = ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups", "--", *cmd]
        return subprocess.run(full, env=env, cwd="/", capture_output=True, text=True, timeout=120)

    def dsmpacs(self, *args: str) -> subprocess.CompletedProcess:
        return self.as_package_user(str(self.package_dir() / "target" / "env" / "bin" / "dsmpacs"),
                                    "--data-dir", str(self.package_dir() / "var"), *args)

    def remove_user(self) -> None:
        """DSM removes the package user with the package; so does the harness, at the end."""
        if self.user:
            try:
                pwd.getpwnam(self.user)
            except KeyError:
                return
            done = subprocess.run(["userdel", self.user], capture_output=True, text=True)
            if done.returncode != 0:
                raise DSMError(f"could not remove the package user: {done.stderr}")
