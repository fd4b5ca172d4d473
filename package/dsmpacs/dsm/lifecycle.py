"""What the DSM lifecycle scripts delegate: install-time setup, the services to run,
waiting for them to listen, and removing the index on "delete data"."""
from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Mapping

from dsmpacs.archive.users import UserError
from dsmpacs.dsm import admin, configfile, first_peers, integration, wizard
from dsmpacs.settings import CONFIG_FILE, Settings


class LifecycleError(Exception):
    """A reason the step cannot go on, worded for the administrator."""


def storage_root_for(package_dir: Path, share_name: str) -> Path:
    # DSM 7 links each data-share into /var/packages/<pkg>/shares/<name>. The link
    # keeps working if the share moves to another volume, and the package user may
    # resolve it (`synoshare --get` is refused to package users).
    return package_dir / "shares" / share_name


INSTALLER_RECORD = "installer.conf"


def write_installer_record(package_dir: Path, answers: wizard.Answers) -> None:
    """What the upgrade wizard needs from the installation and config.toml does not say:
    the data-share's name, which DSM's conf/resource is rendered with again."""
    etc = package_dir / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    (etc / INSTALLER_RECORD).write_text(
        "# Written at installation by `dsmpacs dsm postinst`; read by the upgrade wizard.\n"
        f"share_name={answers.share_name}\ndatabase={answers.database}\n", encoding="utf-8")


def postinst(data_dir: Path, target: Path, package_dir: Path, env: Mapping[str, str]) -> list[str]:
    """Write config.toml from the wizard unless one exists, then the port files. Returns
    notices for the administrator."""
    status = env.get("SYNOPKG_PKG_STATUS", "INSTALL")
    lang = env.get("SYNOPKG_DSM_LANGUAGE", "enu")
    notices: list[str] = []
    written = False
    if not (data_dir / CONFIG_FILE).exists():
        if status == "UPGRADE":
            raise LifecycleError(
                f"{data_dir / CONFIG_FILE} is missing, so this upgrade does not know where the "
                f"images are. Restore the file from a backup, or uninstall with 'keep data' and "
                f"install again.")
        try:
            answers = wizard.parse(env, lang)
        except wizard.AnswersError as exc:
            raise LifecycleError(str(exc)) from None
        if answers.mariadb_create:
            notices.extend(_create_mariadb_database(answers, env))
        root = storage_root_for(package_dir, answers.share_name)
        written = configfile.write_new(data_dir, answers.config_values(str(root)))
        try:
            admin.write_initial_admin(data_dir, answers.admin_password)
        except UserError as exc:
            raise LifecycleError(f"admin password: {exc}") from None
        first_peers.write_initial_peers(data_dir, answers.store_aes)
        write_installer_record(package_dir, answers)
    else:
        notices += keep_earlier_defaults(data_dir, lang)
    settings = Settings.load(data_dir=data_dir, env={})
    if status == "INSTALL" and not written:
        notices.append(
            f"DSM PACS found the settings of an earlier installation in {data_dir / CONFIG_FILE} "
            f"and kept them; the values entered in the wizard were not applied. The images are "
            f"in {settings.effective_storage_root}.")
    notices.extend(_dicom_tls_certificate(settings))
    if written and settings.web_host == "127.0.0.1":
        notices.append(reverse_proxy_steps(settings, lang))
    integration.write(target, settings)
    return notices


def reverse_proxy_steps(settings: Settings, lang: str = "enu") -> str:
    """What the administrator does in DSM once: a package may not create a reverse proxy
    rule (DSM's webservice resource only declares Web Station portals for static and
    PHP sites; the Login Portal's rules are DSM's own configuration, writable by root)."""
    port = settings.web_proxy_port or "<HTTPS port>"
    if lang == "chs":
        return (f"Web 端口 {settings.web_port} 现在只接受本 NAS 的访问。请在 控制面板 > 登录门户 > 高级 > "
                f"反向代理 中新增规则“DSM PACS”：来源 协议 HTTPS、主机名 *、端口 {port}；目的地 协议 HTTP、"
                f"主机名 localhost、端口 {settings.web_port}。在 控制面板 > 安全性 > 证书 > 设置 中为该规则选择"
                f"证书，并在防火墙中允许端口 {port}。之后通过 https://<NAS 地址>:{port}/ 或 DSM 桌面图标打开 DSM PACS。")
    return (f"The web port {settings.web_port} now answers this NAS only. In Control Panel > Login "
            f"Portal > Advanced > Reverse Proxy, create the rule \"DSM PACS\": source protocol HTTPS, "
            f"hostname *, port {port}; destination protocol HTTP, hostname localhost, port "
            f"{settings.web_port}. Choose its certificate in Control Panel > Security > Certificate > "
            f"Settings and allow port {port} in the firewall. Then open DSM PACS at "
            f"https://<NAS address>:{port}/ or with the DSM desktop icon.")


def _create_mariadb_database(answers: wizard.Answers, env: Mapping[str, str]) -> list[str]:
    """The wizard's "DSM PACS creates the database and the user": done before config.toml
    is written, so that a failure leaves nothing a later attempt would keep."""
    from dsmpacs.dsm import mariadb

    request = mariadb.Request(
        socket=wizard.dsm_path(wizard.MARIADB10_SOCKET, env), admin_user=answers.mariadb_admin_user,
        admin_password=answers.mariadb_admin_password, database=answers.mariadb_database,
        user=answers.mariadb_user, password=answers.mariadb_password)
    try:
        mariadb.create(request)
    except mariadb.MariaDBError as exc:
        raise LifecycleError(str(exc)) from None
    return []


# Settings whose default became stricter (issue 9): a config.toml written before,
# which does not name them, gets the value it ran with, so an upgrade neither hides
# the viewer from the network (the desktop icon opens the web port on the NAS's
# address) nor refuses the modalities that stored without being registered.
EARLIER_DEFAULTS = {"web_host": "0.0.0.0", "unknown_ae_may_store": True}
_KEPT_NOTICE = (
    "DSM PACS kept the behaviour of the earlier version: unregistered AE titles may still "
    "store images (unknown_ae_may_store = true in {config}). Register the modalities on the "
    "Remote AEs page, then turn this off on the Access policy page.",
    "DSM PACS 保留了旧版本的行为：未登记的 AE 标题仍可存储影像（{config} 中 unknown_ae_may_store = "
    "true）。请在“远程 AE”页面登记设备，然后在“访问策略”页面关闭此项。")


def keep_earlier_defaults(data_dir: Path, lang: str) -> list[str]:
    """Pin, in an existing config.toml, the earlier defaults it relied on; returns notices."""
    from dsmpacs import configfile as editable

    settings = Settings.load(data_dir=data_dir, env={})
    present = editable.read_values(settings)
    missing = {name: value for name, value in EARLIER_DEFAULTS.items() if name not in present}
    if not missing:
        return []
    editable.update(settings, missing)
    if "unknown_ae_may_store" not in missing:
        return []
    english, chinese = _KEPT_NOTICE
    return [(chinese if lang == "chs" else english).format(config=data_dir / CONFIG_FILE)]


def _dicom_tls_certificate(settings: Settings) -> list[str]:
    """The DICOM TLS port needs a certificate: a local CA's, created once (an
    existing or imported one is kept)."""
    from dsmpacs.tls import TlsFiles, authority

    files = TlsFiles.of(settings)
    if not settings.dicom_tls_port or files.has_server_identity():
        return []
    hosts = authority.default_hosts()
    if settings.dicom_host not in ("0.0.0.0", "::", ""):
        hosts.insert(0, settings.dicom_host)
    try:
        authority.init(files, list(dict.fromkeys(hosts)))
    except (authority.AuthorityError, OSError) as exc:
        raise LifecycleError(f"DICOM TLS: could not create a certificate ({exc}); run "
                             f"`dsmpacs tls init` or set dicom_tls_port = 0") from None
    return [f"DICOM TLS listens on port {settings.dicom_tls_port} with a certificate from a new local "
            f"CA; give peers {files.ca_cert} (`dsmpacs tls show`)."]


def prestart(settings: Settings, target: Path) -> list[tuple[str, list[str]]]:
    """Everything start needs before the services run; returns the services to start.

    The port files are written again because an administrator may have changed the
    ports in config.toml since the installation. Then the checks, each failure with
    its reason, and the index schema brought forward (SQLite backed up first) once,
    before two processes could race to do it.
    """
    from dsmpacs import checks
    from dsmpacs.archive import Archive, database

    integration.write(target, settings)
    problems = checks.run(settings, list(checks.CHECKS))
    if problems:
        raise LifecycleError("\n".join(problems))
    from dsmpacs.archive.audit import AuditTrail
    from dsmpacs.archive.peers import PeerRegistry
    from dsmpacs.archive.users import Users

    archive = Archive(settings)
    try:
        database.upgrade(archive.db, backup_dir=settings.data_dir / "backups")
        admin.create_initial_admin(settings.data_dir, Users(archive.index))
        first_peers.register_initial_peers(settings.data_dir, PeerRegistry(archive.index),
                                           AuditTrail.of(archive))
    except database.IndexProblem as exc:
        raise LifecycleError(str(exc)) from None
    finally:
        archive.close()
    return services()


def services() -> list[tuple[str, list[str]]]:
    """The processes to start, each as (name, dsmpacs arguments): one, ``serve``.

    ``serve`` runs the DICOM and web processes under its watchdog, which restarts
    either when it dies and records the crash for the administration pages and DSM's
    package log (supervisor.py, notices.py). Its run files (``run/dicom.json``,
    ``run/web.json``) name the children.
    """
    return [("serve", ["serve"])]


def _alive(pid: int) -> bool:
    """Running, and not a zombie waiting for the start script to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _listening(host: str, port: int) -> bool:
    target = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    try:
        with socket.create_connection((target, port), timeout=1):
            return True
    except OSError:
        return False


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no output)"


def _serving(settings: Settings, role: str, since: float) -> bool:
    """The process of ``role`` wrote its run file (runfiles.py) since ``since``: it
    serves. A port that takes connections is not enough: the DICOM daemon binds its
    port before its receiving processes are up and accepts only after (dicom/server.py),
    and a power loss leaves the run files of the processes it killed."""
    from dsmpacs import runfiles

    info = runfiles.read(settings, role)
    return runfiles.is_up(info) and float(info.get("started", 0)) >= since


def wait_ready(settings: Settings, run_dir: Path, log_dir: Path, timeout: float) -> list[str]:
    """Wait until every service with a PID file in run_dir listens on its port and
    says it serves (its run file, written since its PID file)."""
    dicom_port = settings.dicom_port if settings.dicom_plain else settings.dicom_tls_port
    dicom, web = (settings.dicom_host, dicom_port), (settings.web_host, settings.web_port)
    endpoints = {"dicom": [dicom], "web": [web], "serve": [dicom, web]}
    roles = {"dicom": ["dicom"], "web": ["web"], "serve": ["dicom", "web"]}
    pending = {p.stem: p for p in run_dir.glob("*.pid")}
    if not pending:
        return [f"No service was started (no PID file in {run_dir})."]
    deadline = time.monotonic() + timeout
    while True:
        for name, pid_file in list(pending.items()):
            pid = int(pid_file.read_text().strip() or 0)
            log = log_dir / f"{name}.console.log"
            if not pid or not _alive(pid):
                return [f"The {name} service stopped while starting. Its last output "
                        f"({log}):\n{_tail(log)}"]
            # A second of slack: the PID file's time and time.time() may round apart.
            since = pid_file.stat().st_mtime - 1
            if (all(_listening(*endpoint) for endpoint in endpoints.get(name, []))
                    and all(_serving(settings, role, since) for role in roles.get(name, []))):
                del pending[name]
        if not pending:
            return []
        if time.monotonic() > deadline:
            return [f"The {' and '.join(sorted(pending))} service did not listen within "
                    f"{timeout:.0f} s; see {log_dir}."]
        time.sleep(0.2)


def drop_index(settings: Settings) -> str:
    """Remove the index tables from MariaDB ("delete data" at uninstall).

    An SQLite index is a file in the data directory, which postuninst removes with
    the rest of the package's own data. The MariaDB database and user stay: only
    the MariaDB administrator may drop them.
    """
    url = settings.effective_database_url
    if url.startswith("sqlite:"):
        return "index: SQLite file, removed with the data directory"
    from dsmpacs.archive import database
    from dsmpacs.archive.models import MODELS

    db = database.open_database(url, max_connections=2)
    database.bind(db)
    try:
        with database.session(db):
            db.drop_tables(list(MODELS), safe=True)
    finally:
        db.close_all()
    return f"index: tables dropped from MariaDB database {db.database}"
