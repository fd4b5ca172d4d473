"""The DSM install wizard's fields: their rules, and the answers DSM hands to the scripts.

Package Center passes each wizard field to preinst and postinst as an environment
variable named by the field's key (``true``/``false`` for radio buttons).

Standard library only, and nothing imported from dsmpacs: preinst runs this file
with the interpreter package's Python before the application is unpacked
(spk_build.sh copies it next to the scripts). spk_build.sh also takes each
field's pattern from here for the wizard's validators, so the wizard, preinst and
postinst apply one set of rules. Patterns use the common subset of JavaScript and
Python regular expressions, because the wizard evaluates them in the browser.
"""
from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from typing import Mapping, Sequence
from urllib.parse import quote

# --- keys (= environment variable names) ---------------------------------------
DICOM_HOST = "wizard_dicom_host"
AE_TITLE = "wizard_ae_title"
DICOM_PORT = "wizard_dicom_port"
WEB_PORT = "wizard_web_port"
WEB_NETWORK = "wizard_web_network"        # the web port answers the network (0.0.0.0)
WEB_PROXY_ONLY = "wizard_web_proxy_only"  # only DSM's reverse proxy reaches it (127.0.0.1)
WEB_PROXY_PORT = "wizard_web_proxy_port"  # the HTTPS port of that reverse proxy rule
STORE_AES = "wizard_store_aes"            # AE titles registered as peers that may store
DICOM_TLS_PORT = "wizard_dicom_tls_port"   # blank: no DICOM TLS listener
DICOM_TLS_ONLY = "wizard_dicom_tls_only"   # true: no plaintext DICOM listener
SHARE_NAME = "wizard_share_name"
ADMIN_PASSWORD = "wizard_admin_password"
ADMIN_PASSWORD_CONFIRM = "wizard_admin_password_confirm"
DB_SQLITE = "wizard_db_sqlite"
DB_MARIADB_CREATE = "wizard_db_mariadb_create"      # postinst creates db + user (dsm/mariadb.py)
DB_MARIADB_EXISTING = "wizard_db_mariadb_existing"  # the administrator created them
MARIADB_HOST = "wizard_mariadb_host"
MARIADB_PORT = "wizard_mariadb_port"
MARIADB_DATABASE = "wizard_mariadb_database"
MARIADB_USER = "wizard_mariadb_user"
MARIADB_PASSWORD = "wizard_mariadb_password"
MARIADB_ADMIN_USER = "wizard_mariadb_admin_user"   # who creates them: DSM's MariaDB 10 has root
MARIADB_ROOT_PASSWORD = "wizard_mariadb_root_password"
KEEP_DATA = "wizard_keep_data"
DELETE_DATA = "wizard_delete_data"

DEFAULTS = {
    # Ports no DSM service, no Synology package and no SynoCommunity package registers
    # (docs/dsm-package.md "Ports"): 11112 and 8080 are often taken on a NAS already
    # (other DICOM software, SABnzbd and many web apps), and a clash refuses the install.
    DICOM_HOST: "0.0.0.0", AE_TITLE: "DSMPACS", DICOM_PORT: "10104", WEB_PORT: "10180",
    DICOM_TLS_PORT: "2762",       # IANA's DICOM-over-TLS port; plain and TLS side by side
    # DSM's nginx listens on the reverse proxy rule's port (as root: any port). Not 443,
    # which DSM's own sites and Web Station answer on every host name.
    WEB_PROXY_PORT: "11443",
    SHARE_NAME: "pacs", MARIADB_HOST: "127.0.0.1", MARIADB_PORT: "3307",
    MARIADB_DATABASE: "dsmpacs", MARIADB_USER: "dsmpacs", MARIADB_ADMIN_USER: "root",
}

# --- patterns ------------------------------------------------------------------
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_HOST = r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?"
_ANY_PORT = r"([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
# One AE of the store list: TITLE, TITLE@HOST or TITLE@HOST:PORT. A title here has no
# space, comma or @ (the list's separators); the AE VR allows more, the CLI takes those.
_AE_ENTRY = rf"[\x21-\x2B\x2D-\x3F\x41-\x5B\x5D-\x7E]{{1,16}}(@{_HOST}(:{_ANY_PORT})?)?"
# Characters DSM's resource templating or the shell could alter on the way to MariaDB.
_UNSAFE = r"\x00-\x1F\"&'<>\\`"

PATTERNS = {
    # PS3.5 AE VR: printable ASCII without backslash, 1-16 characters, not only spaces.
    "ae_title": r"^(?! *$)[\x20-\x5B\x5D-\x7E]{1,16}$",
    # DSM 7 packages run unprivileged, so ports below 1024 cannot be bound.
    "port": (r"^(102[4-9]|10[3-9][0-9]|1[1-9][0-9]{2}|[2-9][0-9]{3}|[1-5][0-9]{4}|"
             r"6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$"),
    "any_port": rf"^{_ANY_PORT}$",
    "ipv4": rf"^({_OCTET}\.){{3}}{_OCTET}$",
    # DSM shared-folder names: no leading/trailing space, none of DSM's reserved characters.
    "share": r"^(?! )(?!.* $)[^\x00-\x1F!\"#$%&'()*+,\/:;<=>?@\[\]^`{|}~\\]{1,32}$",
    "admin_password": r"^[^\x00-\x1F\x7F]{10,128}$",   # archive/users.py MIN_PASSWORD_LENGTH
    "host": rf"^{_HOST}$",
    "ae_list": rf"^ *{_AE_ENTRY}( *[, ] *{_AE_ENTRY})* *$",
    "db_name": r"^[A-Za-z0-9_]{1,64}$",
    "db_user": r"^[A-Za-z0-9_]{1,32}$",
    "db_password": rf"^[^{_UNSAFE}]{{1,128}}$",
}

# Field key -> the pattern it must match (when given).
FIELD_PATTERNS = {
    DICOM_HOST: "ipv4", AE_TITLE: "ae_title", DICOM_PORT: "port", WEB_PORT: "port",
    DICOM_TLS_PORT: "port", WEB_PROXY_PORT: "any_port",
    SHARE_NAME: "share", ADMIN_PASSWORD: "admin_password", ADMIN_PASSWORD_CONFIRM: "admin_password",
    MARIADB_HOST: "host", MARIADB_PORT: "any_port", MARIADB_DATABASE: "db_name",
    MARIADB_USER: "db_user", MARIADB_PASSWORD: "db_password", MARIADB_ROOT_PASSWORD: "db_password",
    MARIADB_ADMIN_USER: "db_user",
    STORE_AES: "ae_list",
}

# --- messages: English, Simplified Chinese (chs), Traditional Chinese (cht) ---------------
MESSAGES = {
    "ae_title": (
        "AE title: 1 to 16 letters, digits, spaces or punctuation; no backslash, not "
        "only spaces.",
        "AE 标题：1 到 16 个字符（字母、数字、空格或标点）；不能含反斜杠，也不能全是空格。",
        "AE 標題：1 到 16 個字元（字母、數字、空格或標點）；不能含反斜槓，也不能全是空格。"),
    "port": (
        "Port: a number from 1024 to 65535 (DSM packages cannot use ports below 1024).",
        "端口：1024 到 65535 之间的数字（DSM 套件不能使用 1024 以下的端口）。",
        "連接埠：1024 到 65535 之間的數字（DSM 套件不能使用 1024 以下的連接埠）。"),
    "any_port": (
        "Port: a number from 1 to 65535.",
        "端口：1 到 65535 之间的数字。",
        "連接埠：1 到 65535 之間的數字。"),
    "ipv4": (
        "Address: 0.0.0.0 for all interfaces, or an IPv4 address of this NAS such as "
        "192.168.1.10.",
        "地址：0.0.0.0 表示所有网络接口，或填写本 NAS 的 IPv4 地址，例如 192.168.1.10。",
        "位址：0.0.0.0 表示所有網路介面，或填寫本 NAS 的 IPv4 位址，例如 192.168.1.10。"),
    "share": (
        'Shared folder: 1 to 32 characters, no leading or trailing space, none of ! " '
        "# $ % & ' ( ) * + , / : ; < = > ? @ [ ] ^ ` { | } ~ \\",
        '共享文件夹：1 到 32 个字符，首尾不能是空格，不能含 ! " # $ % & \' ('
        ' ) * + , / : ; < = > ? @ [ ] ^ ` { | } ~ \\',
        '共用資料夾：1 到 32 個字元，首尾不能是空格，不能含 ! " # $ % & \' ('
        ' ) * + , / : ; < = > ? @ [ ] ^ ` { | } ~ \\'),
    "admin_password": (
        "Administrator password: at least 10 characters.",
        "管理员密码：至少 10 个字符。",
        "管理員密碼：至少 10 個字元。"),
    "host": (
        "MariaDB host: a host name or an IPv4 address, such as 127.0.0.1.",
        "MariaDB 主机：主机名或 IPv4 地址，例如 127.0.0.1。",
        "MariaDB 主機：主機名稱或 IPv4 位址，例如 127.0.0.1。"),
    "db_name": (
        "MariaDB database: letters, digits and underscores, at most 64 characters.",
        "MariaDB 数据库名：字母、数字和下划线，最多 64 个字符。",
        "MariaDB 資料庫名稱：英文字母、數字和底線，最多 64 個字元。"),
    "db_user": (
        "MariaDB user: letters, digits and underscores, at most 32 characters.",
        "MariaDB 用户名：字母、数字和下划线，最多 32 个字符。",
        "MariaDB 使用者名稱：英文字母、數字和底線，最多 32 個字元。"),
    "db_password": (
        'MariaDB password: up to 128 characters, none of " & \' < > \\ ` (the way from '
        "the wizard to MariaDB could alter them).",
        'MariaDB 密码：最多 128 个字符，不能含 " & \' < > \\ `（从向导传到 MariaDB 的途中它们可能被改变）。',
        'MariaDB 密碼：最多 128 個字元，不能含 " & \' < > \\ `（從精靈傳到 MariaDB 的途中它們可能被改變）。'),
    "ae_list": (
        "Modalities: AE titles separated by commas, each optionally followed by @ and "
        "its address and :port, such as ANGIO1, ANGIO2@192.168.1.20:104.",
        "设备：以逗号分隔的 AE 标题，每个后面可加 @地址 和 :端口，例如 ANGIO1, ANGIO2@192.168.1.20:104。",
        "裝置：以逗號分隔的 AE 標題，每個後面可加 @位址 和 :連接埠，例如 ANGIO1, ANGIO2@192.168.1.20:104。"),
    "ports_differ": (
        "The DICOM port and the web port must differ.",
        "DICOM 端口和 Web 端口不能相同。",
        "DICOM 連接埠和 Web 連接埠不能相同。"),
    "tls_port_differs": (
        "The DICOM TLS port must differ from the DICOM port and the web port.",
        "DICOM TLS 端口不能与 DICOM 端口或 Web 端口相同。",
        "DICOM TLS 連接埠不能與 DICOM 連接埠或 Web 連接埠相同。"),
    "tls_only_needs_port": (
        "TLS only was chosen: enter a DICOM TLS port.",
        "已选择仅使用 TLS：请填写 DICOM TLS 端口。",
        "已選擇僅使用 TLS：請填寫 DICOM TLS 連接埠。"),
    "proxy_port_differs": (
        "The reverse proxy's HTTPS port must differ from the DICOM, DICOM TLS and web "
        "ports, and from DSM's own ports 5000 and 5001.",
        "反向代理的 HTTPS 端口不能与 DICOM、DICOM TLS 或 Web 端口相同，也不能是 DSM 自身的端口 5000 和 5001。",
        "反向代理的 HTTPS 連接埠不能與 DICOM、DICOM TLS 或 Web 連接埠相同，也不能是 DSM 自身的連接埠 5000 和 5001。"),
    "passwords_differ": (
        "The two administrator passwords are not the same.",
        "两次输入的管理员密码不一致。",
        "兩次輸入的管理員密碼不一致。"),
    "choose_database": (
        "Choose one index database: SQLite or MariaDB 10.",
        "请选择一种索引数据库：SQLite 或 MariaDB 10。",
        "請選擇一種索引資料庫：SQLite 或 MariaDB 10。"),
    "mariadb_fields": (
        "MariaDB 10 was chosen: enter its host, port, database, user and password.",
        "已选择 MariaDB 10：请填写主机、端口、数据库、用户名和密码。",
        "已選擇 MariaDB 10：請填寫主機、連接埠、資料庫、使用者名稱和密碼。"),
    "root_password": (
        "To let DSM PACS create the MariaDB database and user, enter the MariaDB root "
        "password.",
        "要由 DSM PACS 创建 MariaDB 数据库和用户，请填写 MariaDB 的 root 密码。",
        "要由 DSM PACS 建立 MariaDB 資料庫和使用者，請填寫 MariaDB 的 root 密碼。"),
    "port_registered": (
        "The {label} {port} is already used on this N"
        "AS by “{service}” (registered in {file}). Choose another port.",
        "{label} {port} 已被本 NAS 上的“{service}”使用（登记于 {file}）。请选择其他端口。",
        "{label} {port} 已被本 NAS 上的“{service}”使用（登記於 {file}）。請選擇其他連接埠。"),
    "mariadb_missing": (
        "DSM PACS is to create its MariaDB database, but MariaDB 10 does not run on "
        "this NAS ({socket} is missing). Install and start MariaDB 10 in Package "
        "Center, or choose SQLite or an existing MariaDB database.",
        "要由 DSM PACS 创建 MariaDB 数据库，但本 NAS 上没有运行 Mari"
        "aDB 10（找不到 {socket}）。请在套件中心安装并启动 MariaDB 10，或选择 SQLite 或已存在的 MariaDB 数据库。",
        "要由 DSM PACS 建立 MariaDB 資料庫，但本 NAS 上沒有執行 Mari"
        "aDB 10（找不到 {socket}）。請在套件中心安裝並啟動 MariaDB 10，或選擇 SQLite 或已存在的 MariaDB 資料庫。"),
    "dicom_port_label": (
        "DICOM port",
        "DICOM 端口",
        "DICOM 連接埠"),
    "web_port_label": (
        "web port",
        "Web 端口",
        "Web 連接埠"),
    "dicom_tls_port_label": (
        "DICOM TLS port",
        "DICOM TLS 端口",
        "DICOM TLS 連接埠"),
}


LANGS = ("enu", "chs", "cht")   # DSM's language codes (SYNOPKG_DSM_LANGUAGE)


def message(key: str, lang: str = "enu", **values: object) -> str:
    """The text in DSM's language (English for any other), with its {placeholders} filled."""
    text = MESSAGES[key][LANGS.index(lang) if lang in LANGS else 0]
    return text.format(**values) if values else text


def matches(pattern: str, value: str) -> bool:
    return re.fullmatch(PATTERNS[pattern], value) is not None


def _true(value: str | None) -> bool:
    return (value or "").strip().lower() == "true"


@dataclass(frozen=True)
class StoreAE:
    """A modality of the store list: may store from the day of installation."""

    ae_title: str
    host: str = ""        # empty: any address
    port: int = 0         # 0: nothing to connect to (not a move destination)


def store_aes(text: str) -> tuple[StoreAE, ...]:
    """The store list's entries (TITLE, TITLE@HOST, TITLE@HOST:PORT), duplicates dropped."""
    found: dict[str, StoreAE] = {}
    for item in re.split(r"[, ]+", text.strip()):
        if not item:
            continue
        title, _, where = item.partition("@")
        host, _, port = where.partition(":")
        entry = StoreAE(title, host, int(port) if port else 0)
        found.setdefault(f"{title}@{host}", entry)
    return tuple(found.values())


@dataclass(frozen=True)
class Answers:
    """What the administrator chose in the install wizard, checked."""

    ae_title: str
    dicom_host: str
    dicom_port: int
    web_port: int
    share_name: str
    admin_password: str
    database: str                  # "sqlite" or "mariadb"
    mariadb_create: bool = False   # postinst creates the database and user (dsm/mariadb.py)
    dicom_tls_port: int = 0        # 0: no DICOM TLS listener
    dicom_tls_only: bool = False   # no plaintext DICOM listener
    mariadb_host: str = ""
    mariadb_port: int = 0
    mariadb_database: str = ""
    mariadb_user: str = ""
    mariadb_password: str = ""
    mariadb_admin_user: str = ""       # for mariadb_create only; never written anywhere
    mariadb_admin_password: str = ""
    web_host: str = "0.0.0.0"      # the desktop icon opens the web port on the NAS's address
    web_proxy_port: int = 0        # with 127.0.0.1: the icon opens DSM's reverse proxy here
    store_aes: tuple[StoreAE, ...] = ()

    def database_url(self) -> str | None:
        """None for the built-in SQLite index (its default place in the data directory)."""
        if self.database != "mariadb":
            return None
        user = quote(self.mariadb_user, safe="")
        password = quote(self.mariadb_password, safe="")
        return (f"mysql://{user}:{password}@{self.mariadb_host}:{self.mariadb_port}/"
                f"{self.mariadb_database}")

    def config_values(self, storage_root: str) -> dict[str, object]:
        """The settings config.toml gets from the wizard, in a stable order."""
        values: dict[str, object] = {
            "ae_title": self.ae_title, "dicom_host": self.dicom_host,
            "dicom_port": self.dicom_port, "web_host": self.web_host, "web_port": self.web_port,
            "storage_root": storage_root,
            # Written out although it is the default: an upgrade that finds it absent
            # knows the config predates the strict default (dsm/lifecycle.py).
            "unknown_ae_may_store": False,
        }
        if self.web_host == "127.0.0.1":
            # Every request then comes through DSM's reverse proxy on this NAS: believe
            # its X-Forwarded-For and -Proto (client address in the audit trail, HTTPS).
            values["web_trusted_proxy"] = "127.0.0.1"
            if self.web_proxy_port:
                values["web_proxy_port"] = self.web_proxy_port
        if self.dicom_tls_port:
            values["dicom_tls_port"] = self.dicom_tls_port
            if self.dicom_tls_only:
                values["dicom_plain"] = False
        url = self.database_url()
        if url:
            values["database_url"] = url
        return values


class AnswersError(ValueError):
    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


def problems(env: Mapping[str, str], lang: str = "enu") -> list[str]:
    """Every reason the answers cannot be used, in the user's language."""
    found: list[str] = []

    def bad(key: str) -> None:
        text = message(key, lang)
        if text not in found:
            found.append(text)

    def value(key: str) -> str:
        return env.get(key, "")

    for key in (AE_TITLE, DICOM_HOST, DICOM_PORT, WEB_PORT, SHARE_NAME, ADMIN_PASSWORD):
        if not matches(FIELD_PATTERNS[key], value(key)):
            bad(FIELD_PATTERNS[key])
    if value(DICOM_PORT) and value(DICOM_PORT) == value(WEB_PORT):
        bad("ports_differ")
    tls_port = value(DICOM_TLS_PORT).strip()
    if tls_port and not matches("port", tls_port):
        bad("port")
    elif tls_port and tls_port in (value(DICOM_PORT), value(WEB_PORT)):
        bad("tls_port_differs")
    proxy_port = value(WEB_PROXY_PORT).strip()
    if _true(value(WEB_PROXY_ONLY)) and not _true(value(WEB_NETWORK)) and proxy_port:
        if not matches("any_port", proxy_port):
            bad("any_port")
        elif proxy_port in (value(DICOM_PORT), value(WEB_PORT), tls_port, "5000", "5001"):
            bad("proxy_port_differs")
    if _true(value(DICOM_TLS_ONLY)) and not tls_port:
        bad("tls_only_needs_port")
    if value(ADMIN_PASSWORD) != value(ADMIN_PASSWORD_CONFIRM):
        bad("passwords_differ")
    if value(STORE_AES).strip() and not matches("ae_list", value(STORE_AES)):
        bad("ae_list")

    chosen = [key for key in (DB_SQLITE, DB_MARIADB_CREATE, DB_MARIADB_EXISTING) if _true(value(key))]
    if len(chosen) != 1:
        bad("choose_database")
    elif chosen[0] != DB_SQLITE:
        fields = (MARIADB_HOST, MARIADB_PORT, MARIADB_DATABASE, MARIADB_USER, MARIADB_PASSWORD)
        if any(not value(key) for key in fields):
            bad("mariadb_fields")
        for key in fields:
            if value(key) and not matches(FIELD_PATTERNS[key], value(key)):
                bad(FIELD_PATTERNS[key])
        if chosen[0] == DB_MARIADB_CREATE:
            admin = value(MARIADB_ADMIN_USER) or DEFAULTS[MARIADB_ADMIN_USER]
            if not matches("db_user", admin):
                bad("db_user")
            root = value(MARIADB_ROOT_PASSWORD)
            if not root:
                bad("root_password")
            elif not matches("db_password", root):
                bad("db_password")
    return found


def parse(env: Mapping[str, str], lang: str = "enu") -> Answers:
    """The checked answers, or AnswersError listing every problem."""
    found = problems(env, lang)
    if found:
        raise AnswersError(found)
    database = "sqlite" if _true(env.get(DB_SQLITE)) else "mariadb"
    proxy = _true(env.get(WEB_PROXY_ONLY)) and not _true(env.get(WEB_NETWORK))
    common = dict(
        ae_title=env[AE_TITLE], dicom_host=env[DICOM_HOST], dicom_port=int(env[DICOM_PORT]),
        web_port=int(env[WEB_PORT]), share_name=env[SHARE_NAME],
        admin_password=env[ADMIN_PASSWORD], database=database,
        # Reachable from the network unless the administrator chose the reverse proxy
        # only (an older wizard, without the choice, meant the network).
        web_host="127.0.0.1" if proxy else "0.0.0.0",
        # Blank: the administrator will pick the port in the rule; the icon then keeps
        # the web port (which answers only the NAS itself).
        web_proxy_port=int(env.get(WEB_PROXY_PORT, "").strip() or 0) if proxy else 0,
        store_aes=store_aes(env.get(STORE_AES, "")),
        dicom_tls_port=int(env.get(DICOM_TLS_PORT, "").strip() or 0),
        dicom_tls_only=_true(env.get(DICOM_TLS_ONLY)))
    if database == "sqlite":
        return Answers(**common)
    return Answers(**common, mariadb_create=_true(env.get(DB_MARIADB_CREATE)),
                   mariadb_host=env[MARIADB_HOST], mariadb_port=int(env[MARIADB_PORT]),
                   mariadb_database=env[MARIADB_DATABASE], mariadb_user=env[MARIADB_USER],
                   mariadb_password=env[MARIADB_PASSWORD],
                   mariadb_admin_user=env.get(MARIADB_ADMIN_USER) or DEFAULTS[MARIADB_ADMIN_USER],
                   mariadb_admin_password=env.get(MARIADB_ROOT_PASSWORD, ""))


# --- what DSM already runs: registered services and MariaDB 10 ---------------------------
PACKAGE = "dsmpacs"
# Where DSM keeps the service files (.sc) its firewall and port forwarding read: packages'
# (the port-config worker copies them here) and DSM's own. The port-config worker refuses
# a package whose .sc names a port another file here has.
SERVICE_DIRS = ("usr/local/etc/services.d", "etc/services.d")
# The socket of Synology's MariaDB 10 package (TCP is off unless the administrator enables it).
MARIADB10_SOCKET = "/run/mysqld/mysqld10.sock"
_PORT_LABELS = {DICOM_PORT: "dicom_port_label", WEB_PORT: "web_port_label",
                DICOM_TLS_PORT: "dicom_tls_port_label"}


def dsm_path(path: str, env: Mapping[str, str]) -> str:
    """A DSM path; under the test harness's scratch root when it sets PACS_DSM_ROOT."""
    return env.get("PACS_DSM_ROOT", "") + path


def service_file(dicom_port: int, web_port: int, dicom_tls_port: int = 0,
                 dicom_plain: bool = True, extra: Sequence[tuple[str, str, str, int]] = ()) -> str:
    """The .sc file for DSM's firewall and port-forwarding pages (section names [a-zA-Z0-9.-]);
    extra: more (section, title, description, port) after the wizard's."""
    services = [("dsmpacs-dicom", "DICOM", "DSM PACS: DICOM storage, query and retrieve", dicom_port),
                ("dsmpacs-web", "DSM PACS web", "DSM PACS: web viewer and DICOMweb (HTTP)",
                 web_port)]
    if dicom_tls_port:
        services.insert(1, ("dsmpacs-dicom-tls", "DICOM TLS", "DSM PACS: DICOM over TLS",
                            dicom_tls_port))
    if not dicom_plain:
        services.pop(0)
    services.extend(extra)
    return "\n".join(f'[{name}]\ntitle="{title}"\ndesc="{desc}"\nport_forward="no"\n'
                     f'dst.ports="{port}/tcp"\n' for name, title, desc, port in services)


def _port_numbers(spec: str) -> set[int]:
    """The TCP ports of a dst.ports value: "5000,5001/tcp", "6881:6890/tcp,udp", "80"."""
    ports, _, protocols = spec.partition("/")
    if protocols and "tcp" not in protocols.lower().split(","):
        return set()
    found: set[int] = set()
    for part in ports.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:[:-]\s*(\d+))?\s*", part)
        if match:
            first = int(match.group(1))
            last = int(match.group(2) or first)
            found.update(range(first, min(last, 65535) + 1))
    return found


def registered_ports(env: Mapping[str, str]) -> dict[int, tuple[str, str]]:
    """port -> (service title, .sc file) for every service DSM has registered, but this
    package's own file (a repair or reinstall meets it)."""
    found: dict[int, tuple[str, str]] = {}
    for folder in SERVICE_DIRS:
        directory = dsm_path("/" + folder, env)
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            continue
        for name in names:
            if not name.endswith(".sc") or name == f"{PACKAGE}.sc":
                continue
            path = os.path.join(directory, name)
            try:
                with open(path, encoding="utf-8", errors="replace") as fh:
                    text = fh.read()
            except OSError:
                continue
            for section, body in re.findall(r"^\[([^\]]+)\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S):
                title = re.search(r'^title\s*=\s*"?([^"\n]*)"?', body, re.M)
                ports = re.search(r'^dst\.ports\s*=\s*"?([^"\n]*)"?', body, re.M)
                for port in _port_numbers(ports.group(1)) if ports else ():
                    found.setdefault(port, (title.group(1) if title else section, path))
    return found


def dsm_problems(env: Mapping[str, str], lang: str = "enu") -> list[str]:
    """What the NAS says against the answers: a chosen port another service has registered,
    or MariaDB 10 missing when DSM PACS is to create its database there."""
    found: list[str] = []
    taken = registered_ports(env)
    keys = [WEB_PORT, DICOM_TLS_PORT] if _true(env.get(DICOM_TLS_ONLY)) else [
        DICOM_PORT, WEB_PORT, DICOM_TLS_PORT]
    for key in keys:
        value = env.get(key, "").strip()
        if value.isdigit() and int(value) in taken:
            service, path = taken[int(value)]
            found.append(message("port_registered", lang, label=message(_PORT_LABELS[key], lang),
                                 port=value, service=service, file=path[len(env.get("PACS_DSM_ROOT", "")):]))
    if _true(env.get(DB_MARIADB_CREATE)) and not os.path.exists(dsm_path(MARIADB10_SOCKET, env)):
        found.append(message("mariadb_missing", lang, socket=MARIADB10_SOCKET))
    return found


def main(argv: list[str], env: Mapping[str, str]) -> int:
    """preinst's commands, run with the interpreter package's Python:

    ``wizard.py check``: the install wizard's answers, then what the NAS says against them.
    ``wizard.py service-file PATH``: write the .sc file for the answers' ports, so that the
    port-config worker registers the chosen ports, not defaults (docs/dsm-package.md).
    """
    if argv[1:] == ["check"]:
        if env.get("SYNOPKG_PKG_STATUS") == "UPGRADE":
            return 0  # the upgrade wizard changes nothing; the existing config stays
        lang = env.get("SYNOPKG_DSM_LANGUAGE", "enu")
        found = problems(env, lang)
        # A reinstall that finds an earlier config.toml keeps it (postinst): its ports
        # and database are the ones in use, not the wizard's.
        var = env.get("SYNOPKG_PKGVAR", "")
        if not found and not (var and os.path.exists(os.path.join(var, "config.toml"))):
            found = dsm_problems(env, lang)
        for line in found:
            print(line)
        return 1 if found else 0
    if len(argv) == 3 and argv[1] == "service-file":
        answers = parse(env)
        text = service_file(answers.dicom_port, answers.web_port, answers.dicom_tls_port,
                            not answers.dicom_tls_only)
        tmp = argv[2] + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)     # read by DSM's worker, whatever the umask
        os.replace(tmp, argv[2])
        return 0
    print("usage: wizard.py check | wizard.py service-file PATH", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv, os.environ))
