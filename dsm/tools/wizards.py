"""The install, upgrade and uninstall wizards, in English, Simplified and Traditional Chinese.

One description yields every file in WIZARD_UIFILES/. The install and upgrade
wizards are shell scripts (`*_uifile.sh`) because they fill in live values: the
NAS's own addresses, and the current settings. DSM runs them before showing the
wizard and reads the JSON they write to SYNOPKG_TEMP_LOGFILE. The uninstall
wizard is static JSON.

The validators' patterns and messages come from dsmpacs.dsm.wizard, the module
preinst and postinst check the answers with, so the three cannot disagree.
The format is the classic ExtJS wizard JSON (reference/spk.md section 4.2).
"""
from __future__ import annotations

import json
from pathlib import Path

from dsmpacs.dsm import wizard as w

LANGS = w.LANGS   # English, Simplified and Traditional Chinese: one file of each wizard per language

# Sentinels replaced by shell expansions in the generated scripts.
_ADDRESSES = "@@ADDRESSES@@"
_CURRENT = {name: f"@@{name.upper()}@@"
            for name in ("ae_title", "dicom_host", "dicom_port", "web_port", "share", "database")}

TEXT = {
    "network_title": ("DICOM network", "DICOM 网络", "DICOM 網路"),
    "intro": (
        "DSM PACS receives images from modalities such as angiography systems over DICOM, keeps "
        "them unchanged in a shared folder, and shows them in its web viewer.",
        "DSM PACS 通过 DICOM 接收血管造影机等设备发送的影像，原样保存在共享文件夹中，并可通过网页阅片查看。",
        "DSM PACS 透過 DICOM 接收血管造影機等裝置傳送的影像，原樣儲存在共用資料夾中，並可透過網頁閱片檢視。"),
    "host_desc": (
        "The address the DICOM service listens on. Keep <b>All interfaces</b>, or choose this "
        "NAS's address on the modality network if the NAS has a port dedicated to it.",
        "DICOM 服务监听的地址。保持<b>所有网络接口</b>，或在 NAS 有专用于设备网络的网口时选择该网口的地址。",
        "DICOM 服務監聽的位址。保持<b>所有網路介面</b>，或在 NAS 有專用於裝置網路的網路埠時選擇該網路埠的位址。"),
    "host": ("Listen on", "监听地址", "監聽位址"),
    "all_interfaces": ("All interfaces", "所有网络接口", "所有網路介面"),
    "dicom_desc": (
        "Modalities and workstations send to this AE title and port. The web viewer opens on the "
        "web port; the DSM desktop icon points to it. Ports below 1024 cannot be used by a DSM "
        "package.",
        "设备和工作站向此 AE 标题和端口发送影像。网页阅片在 Web 端口打开，DSM 桌面图标指向它。DSM 套件不能使用 1024 以下的端口。",
        "裝置和工作站向此 AE 標題和連接埠傳送影像。網頁閱片在 Web 連接埠開啟，DSM 桌面圖示指向它。DSM 套件不能使用 1024 以下的連接埠。"),
    "web_access_desc": (
        "Who reaches the web viewer on its web port. <b>The network</b> lets browsers on the "
        "network open it over plain HTTP, and the DSM desktop icon opens the web port. <b>Only "
        "DSM's reverse proxy</b> (recommended for HTTPS) makes the web port answer this NAS alone; "
        "DSM's reverse proxy then serves the viewer over HTTPS with the NAS's certificate on the "
        "port below, and the desktop icon opens that HTTPS address.",
        "谁可以通过 Web 端口访问网页阅片。<b>网络</b>：网络上的浏览器可通过普通 HTTP 打开它，"
        "DSM 桌面图标打开 Web 端口。<b>仅 DSM 反向代理</b>（推荐用于 HTTPS）：Web 端口只接受本 NAS "
        "自身的访问；由 DSM 反向代理使用 NAS 的证书，在下方端口上以 HTTPS 提供网页阅片，"
        "桌面图标打开该 HTTPS 地址。",
        "誰可以透過 Web 連接埠存取網頁閱片。<b>網路</b>：網路上的瀏覽器可透過一般 HTTP 開啟它，"
        "DSM 桌面圖示開啟 Web 連接埠。<b>僅 DSM 反向代理</b>（建議用於 HTTPS）：Web 連接埠只接受本 NAS "
        "自身的存取；由 DSM 反向代理使用 NAS 的憑證，在下方連接埠上以 HTTPS 提供網頁閱片，"
        "桌面圖示開啟該 HTTPS 位址。"),
    "proxy_desc": (
        "Only with <b>Only DSM's reverse proxy</b>: the HTTPS port of the rule. DSM does not let a "
        "package create the rule: after the installation, in Control Panel > Login Portal > "
        "Advanced > Reverse Proxy, create one with source HTTPS, host name *, this port, and "
        "destination HTTP localhost and the web port; then allow this port in the firewall. "
        "Package Center repeats these steps when the installation ends.",
        "仅在选择<b>仅 DSM 反向代理</b>时使用：反向代理规则的 HTTPS 端口。DSM 不允许套件自行创建该规则："
        "安装完成后，请在 控制面板 > 登录门户 > 高级 > 反向代理 中新增规则：来源 HTTPS、主机名 *、"
        "此端口，目的地 HTTP、localhost 和 Web 端口；然后在防火墙中允许此端口。安装结束时套件中心会"
        "再次显示这些步骤。",
        "僅在選擇<b>僅 DSM 反向代理</b>時使用：反向代理規則的 HTTPS 連接埠。DSM 不允許套件自行建立該規則："
        "安裝完成後，請在 控制台 > 登入入口 > 進階 > 反向代理伺服器 中新增規則：來源 HTTPS、主機名稱 *、"
        "此連接埠，目的地 HTTP、localhost 和 Web 連接埠；然後在防火牆中允許此連接埠。安裝結束時套件中心會"
        "再次顯示這些步驟。"),
    "web_proxy_port": ("Reverse proxy HTTPS port", "反向代理 HTTPS 端口", "反向代理 HTTPS 連接埠"),
    "web_network": ("The network (recommended)", "网络（推荐）", "網路（推薦）"),
    "web_proxy_only": ("Only DSM's reverse proxy", "仅 DSM 反向代理", "僅 DSM 反向代理"),
    "modalities_title": ("Modalities", "设备", "裝置"),
    "store_aes_desc": (
        "Only registered AE titles may send images to this archive. List the AE titles of the "
        "modalities that send to it (for example the angiography system of the DSA room), "
        "separated by commas. Add <b>@address:port</b> to a title when images must also be sent "
        "back to it, such as ANGIO1, WS3D@192.168.1.20:104. Each may send images from the first "
        "day; give more rights, or add others, later on the Remote AEs page.",
        "只有已登记的 AE 标题才能向本归档发送影像。请列出发送影像的设备（例如 DSA 室的血"
        "管造影机）的 AE 标题，以逗号分隔。如果还需要把影像发回给某个设备，请在其标题后加 <"
        "b>@地址:端口</b>，例如 ANGIO1, WS3D@192.168.1.20:104。它们从第一天起即可发送影像；以后可在“远程 AE”页面授予更多权限或添加其他设备。",
        "只有已登記的 AE 標題才能向本歸檔傳送影像。請列出傳送影像的裝置（例如 DSA 室的血"
        "管造影機）的 AE 標題，以逗號分隔。如果還需要把影像發回給某個裝置，請在其標題後加 <"
        "b>@位址:連接埠</b>，例如 ANGIO1, WS3D@192.168.1.20:104。它們從第一天起即可傳送影像；以後可在“遠端 AE”頁面授予更多權限或新增其他裝置。"),
    "store_aes": ("AE titles", "AE 标题", "AE 標題"),
    "ae_title": ("AE title", "AE 标题", "AE 標題"),
    "dicom_port": ("DICOM port", "DICOM 端口", "DICOM 連接埠"),
    "web_port": ("Web port", "Web 端口", "Web 連接埠"),
    "tls_desc": (
        "DICOM TLS encrypts images on the network (modalities and peers that support it use the "
        "TLS port; 2762 is the standard one). Leave the port empty for no TLS. The package creates "
        "a local certificate authority; give its ca.pem to the peers.",
        "DICOM TLS 在网络上加密影像（支持 TLS 的设备和节点使用 TLS 端口，标准"
        "端口为 2762）。不使用 TLS 请留空。套件会创建本地证书颁发机构，请把其 ca.pem 交给对端。",
        "DICOM TLS 在網路上加密影像（支援 TLS 的裝置和節點使用 TLS 連接埠，標"
        "準連接埠為 2762）。不使用 TLS 請留空。套件會建立本地憑證授權單位，請把其 ca.pem 交給對端。"),
    "dicom_tls_port": ("DICOM TLS port", "DICOM TLS 端口", "DICOM TLS 連接埠"),
    "dicom_tls_only": (
        "TLS only (no unencrypted DICOM port)",
        "仅 TLS（不开放未加密的 DICOM 端口）",
        "僅 TLS（不開放未加密的 DICOM 連接埠）"),
    "storage_title": ("Storage and administrator", "存储与管理员", "儲存與管理員"),
    "share_desc": (
        "The shared folder that holds the DICOM files. DSM creates it on the volume where the "
        "package is installed if it does not exist yet. Back it up with Hyper Backup.",
        "保存 DICOM 文件的共享文件夹。如果它还不存在，DSM 会在安装本套件的存储空间上创建它。请用 Hyper Backup 备份它。",
        "儲存 DICOM 檔案的共用資料夾。如果它還不存在，DSM 會在安裝本套件的儲存空間上建立它。請用 Hyper Backup 備份它。"),
    "share": ("Shared folder", "共享文件夹", "共用資料夾"),
    "admin_desc": (
        "Password of the web interface's first administrator, user name <b>admin</b>.",
        "网页界面第一个管理员（用户名 <b>admin</b>）的密码。",
        "網頁介面第一個管理員（使用者名稱 <b>admin</b>）的密碼。"),
    "admin_password": ("Password", "密码", "密碼"),
    "admin_confirm": ("Confirm password", "确认密码", "確認密碼"),
    "database_title": ("Index database", "索引数据库", "索引資料庫"),
    "database_desc": (
        "The index lets DSM PACS find studies in milliseconds. The built-in SQLite suits one NAS; "
        "MariaDB 10 suits large archives.",
        "索引让 DSM PACS 在毫秒内找到检查。内置 SQLite 适合单台 NAS；MariaDB 10 适合大型归档。",
        "索引讓 DSM PACS 在毫秒內找到檢查。內建 SQLite 適合單臺 NAS；MariaDB 10 適合大型歸檔。"),
    "db_sqlite": ("Built-in SQLite (recommended)", "内置 SQLite（推荐）", "內建 SQLite（推薦）"),
    "db_mariadb_create": (
        "MariaDB 10 on this NAS: DSM PACS creates the database and the user (needs the MariaDB 10 "
        "package and its root password)",
        "本 NAS 上的 MariaDB 10：由 DSM PACS 创建数据库和用户（需要 MariaDB 10 套件及其 root 密码）",
        "本 NAS 上的 MariaDB 10：由 DSM PACS 建立資料庫和使用者（需要 MariaDB 10 套件及其 root 密碼）"),
    "db_mariadb_existing": (
        "MariaDB 10 with a database and a user that already exist",
        "使用已存在的 MariaDB 10 数据库和用户",
        "使用已存在的 MariaDB 10 資料庫和使用者"),
    "mariadb_desc": (
        "Only for MariaDB 10. On DSM, open MariaDB 10 and tick <b>Enable TCP/IP connection</b>; "
        "its port is often 3307.",
        "仅用于 MariaDB 10。在 DSM 中打开 MariaDB 10 并勾选<b>启用 TCP/IP 连接</b>；其端口通常为 3307。",
        "僅用於 MariaDB 10。在 DSM 中開啟 MariaDB 10 並勾選<b>啟用 TCP/IP 連線</b>；其連接埠通常為 3307。"),
    "mariadb_host": ("Host", "主机", "主機"),
    "mariadb_port": ("Port", "端口", "連接埠"),
    "mariadb_database": ("Database", "数据库", "資料庫"),
    "mariadb_user": ("User", "用户名", "使用者名稱"),
    "mariadb_password_desc": (
        "The user's password, and the password of the MariaDB administrator (root) if DSM PACS is "
        "to create the database and the user.",
        "该用户的密码；若由 DSM PACS 创建数据库和用户，还需 MariaDB 管理员（root）的密码。",
        "該使用者的密碼；若由 DSM PACS 建立資料庫和使用者，還需 MariaDB 管理員（root）的密碼。"),
    "mariadb_password": ("User's password", "用户密码", "使用者密碼"),
    "mariadb_admin_user": ("Administrator", "管理员", "管理員"),
    "mariadb_root_password": ("root password", "root 密码", "root 密碼"),
    "upgrade_title": ("Upgrade DSM PACS", "升级 DSM PACS", "升級 DSM PACS"),
    "upgrade_desc": (
        "The settings, the index and the images are kept. Current settings: AE title "
        "<b>{ae_title}</b>, DICOM port <b>{dicom_port}</b> on {dicom_host}, web port "
        "<b>{web_port}</b>, shared folder <b>{share}</b>, index {database}. To change them, edit "
        "config.toml in the package's data folder and restart the package (see the administrator "
        "guide).",
        "设置、索引和影像都会保留。当前设置：AE 标题 <b>{ae_title}</b>，DI"
        "COM 端口 <b>{dicom_port}</b>（{dicom_host}），Web"
        " 端口 <b>{web_port}</b>，共享文件夹 <b>{share}</b>，索"
        "引 {database}。如需修改，请编辑套件数据文件夹中的 config.toml 并重新启动套件（见管理员指南）。",
        "設定、索引和影像都會保留。當前設定：AE 標題 <b>{ae_title}</b>，DI"
        "COM 連接埠 <b>{dicom_port}</b>（{dicom_host}），We"
        "b 連接埠 <b>{web_port}</b>，共用資料夾 <b>{share}</b>"
        "，索引 {database}。如需修改，請編輯套件資料資料夾中的 config.toml 並重新啟動套件（見管理員指南）。"),
    "uninstall_title": ("Uninstall DSM PACS", "卸载 DSM PACS", "解除安裝 DSM PACS"),
    "uninstall_desc": (
        "The DICOM files in the shared folder are kept either way: DSM never deletes a shared "
        "folder. Delete it in Control Panel > Shared Folder if the images are no longer needed.",
        "无论选择哪项，共享文件夹中的 DICOM 文件都会保留：DSM 从不删除共享文件夹。如果不再需要这些影像，请在“控制面板 > 共享文件夹”中删除它。",
        "無論選擇哪項，共用資料夾中的 DICOM 檔案都會保留：DSM 從不刪除共用資料夾。如果不再需要這些影像，請在“控制台 > 共用資料夾”中刪除它。"),
    "keep_data": (
        "Keep the data: settings, index and logs stay, and a later installation uses them again",
        "保留数据：设置、索引和日志保留，以后重新安装时继续使用",
        "保留資料：設定、索引和日誌保留，以後重新安裝時繼續使用"),
    "delete_data": (
        "Delete the package's data: settings, index (including its tables in MariaDB) and logs",
        "删除套件数据：设置、索引（包括 MariaDB 中的数据表）和日志",
        "刪除套件資料：設定、索引（包括 MariaDB 中的資料表）和日誌"),
}


def t(key: str, lang: str) -> str:
    return TEXT[key][LANGS.index(lang)]


def _validator(key: str, lang: str, *, allow_blank: bool = False) -> dict:
    pattern = w.FIELD_PATTERNS[key]
    return {"allowBlank": allow_blank,
            "regex": {"expr": "/" + w.PATTERNS[pattern] + "/", "errorText": w.message(pattern, lang)}}


def _field(key: str, label: str, lang: str, *, allow_blank: bool = False, default: str | None = None) -> dict:
    item = {"key": key, "desc": label, "validator": _validator(key, lang, allow_blank=allow_blank)}
    value = w.DEFAULTS.get(key) if default is None else default
    if value is not None:
        item["defaultValue"] = value
    return item


def install_steps(lang: str) -> list[dict]:
    store = {"xtype": "arraystore", "fields": ["address", "label"], "data": _ADDRESSES}
    network = {"step_title": t("network_title", lang), "invalid_next_disabled_v2": True, "items": [
        {"desc": t("intro", lang)},
        {"type": "combobox", "desc": t("host_desc", lang), "subitems": [{
            "key": w.DICOM_HOST, "desc": t("host", lang), "defaultValue": w.DEFAULTS[w.DICOM_HOST],
            "displayField": "label", "valueField": "address", "editable": True,
            "forceSelection": False, "mode": "local", "store": store,
            "validator": _validator(w.DICOM_HOST, lang)}, {
            # RoonServer's wizards report that DSM fills the last combobox of a wizard
            # with its first entry; this hidden one takes that place.
            "key": "wizard_placeholder", "desc": "placeholder", "hidden": True,
            "displayField": "label", "valueField": "address", "editable": False, "mode": "local",
            "store": {"xtype": "arraystore", "fields": ["address", "label"], "data": [["", ""]]}}]},
        {"type": "textfield", "desc": t("dicom_desc", lang), "subitems": [
            _field(w.AE_TITLE, t("ae_title", lang), lang),
            _field(w.DICOM_PORT, t("dicom_port", lang), lang),
            _field(w.WEB_PORT, t("web_port", lang), lang)]},
        {"type": "singleselect", "desc": t("web_access_desc", lang), "subitems": [
            {"key": w.WEB_NETWORK, "desc": t("web_network", lang), "defaultValue": True},
            {"key": w.WEB_PROXY_ONLY, "desc": t("web_proxy_only", lang), "defaultValue": False}]},
        {"type": "textfield", "desc": t("proxy_desc", lang), "subitems": [
            _field(w.WEB_PROXY_PORT, t("web_proxy_port", lang), lang, allow_blank=True)]},
        {"type": "textfield", "desc": t("tls_desc", lang), "subitems": [
            _field(w.DICOM_TLS_PORT, t("dicom_tls_port", lang), lang, allow_blank=True)]},
        {"type": "multiselect", "subitems": [
            {"key": w.DICOM_TLS_ONLY, "desc": t("dicom_tls_only", lang), "defaultValue": False}]},
    ]}
    modalities = {"step_title": t("modalities_title", lang), "invalid_next_disabled_v2": True,
                  "items": [
        {"type": "textfield", "desc": t("store_aes_desc", lang), "subitems": [
            _field(w.STORE_AES, t("store_aes", lang), lang, allow_blank=True, default="")]},
    ]}
    storage = {"step_title": t("storage_title", lang), "invalid_next_disabled_v2": True, "items": [
        {"type": "textfield", "desc": t("share_desc", lang), "subitems": [
            _field(w.SHARE_NAME, t("share", lang), lang)]},
        {"type": "password", "desc": t("admin_desc", lang), "subitems": [
            _field(w.ADMIN_PASSWORD, t("admin_password", lang), lang),
            _field(w.ADMIN_PASSWORD_CONFIRM, t("admin_confirm", lang), lang)]},
    ]}
    database = {"step_title": t("database_title", lang), "invalid_next_disabled_v2": True, "items": [
        {"type": "singleselect", "desc": t("database_desc", lang), "subitems": [
            {"key": w.DB_SQLITE, "desc": t("db_sqlite", lang), "defaultValue": True},
            {"key": w.DB_MARIADB_CREATE, "desc": t("db_mariadb_create", lang), "defaultValue": False},
            {"key": w.DB_MARIADB_EXISTING, "desc": t("db_mariadb_existing", lang),
             "defaultValue": False}]},
        {"type": "textfield", "desc": t("mariadb_desc", lang), "subitems": [
            _field(w.MARIADB_HOST, t("mariadb_host", lang), lang, allow_blank=True),
            _field(w.MARIADB_PORT, t("mariadb_port", lang), lang, allow_blank=True),
            _field(w.MARIADB_DATABASE, t("mariadb_database", lang), lang, allow_blank=True),
            _field(w.MARIADB_USER, t("mariadb_user", lang), lang, allow_blank=True),
            _field(w.MARIADB_ADMIN_USER, t("mariadb_admin_user", lang), lang, allow_blank=True)]},
        {"type": "password", "desc": t("mariadb_password_desc", lang), "subitems": [
            _field(w.MARIADB_PASSWORD, t("mariadb_password", lang), lang, allow_blank=True),
            _field(w.MARIADB_ROOT_PASSWORD, t("mariadb_root_password", lang), lang, allow_blank=True)]},
    ]}
    return [network, modalities, storage, database]


def upgrade_steps(lang: str) -> list[dict]:
    """Shows the current settings; hands DSM the values conf/resource is rendered with."""
    return [{"step_title": t("upgrade_title", lang), "items": [
        {"desc": t("upgrade_desc", lang).format(**_CURRENT)},
        # conf/resource is rendered again with the upgrade's answers: the data-share
        # must keep its name.
        {"type": "textfield", "subitems": [
            {"key": w.SHARE_NAME, "desc": t("share", lang), "defaultValue": _CURRENT["share"],
             "hidden": True}]},
    ]}]


def uninstall_steps(lang: str) -> list[dict]:
    return [{"step_title": t("uninstall_title", lang), "items": [
        {"type": "singleselect", "desc": t("uninstall_desc", lang), "subitems": [
            {"key": w.KEEP_DATA, "desc": t("keep_data", lang), "defaultValue": True},
            {"key": w.DELETE_DATA, "desc": t("delete_data", lang), "defaultValue": False}]},
    ]}]


def _heredoc_json(steps: list[dict]) -> str:
    """JSON for an unquoted heredoc: escape what the shell would expand, then put the
    shell expansions in place of the sentinels."""
    text = json.dumps(steps, ensure_ascii=False, indent=1)
    text = text.replace("\\", "\\\\").replace("$", "\\$").replace("`", "\\`")
    text = text.replace(f'"{_ADDRESSES}"', "[${addresses}]")
    for name, sentinel in _CURRENT.items():
        text = text.replace(sentinel, "${" + name + "}")
    return text


_HEADER = """#!/bin/sh
# Generated by dsm/tools/wizards.py ({what}, {lang}); edit that file, not this one.
# DSM runs this before showing the wizard, and shows the JSON written to SYNOPKG_TEMP_LOGFILE.
"""

_ADDRESSES_SH = """PATH="$PATH:/sbin:/usr/sbin"

# "All interfaces", then each IPv4 address of the NAS but loopback, for the drop-down.
list_addresses() {{
    printf '["0.0.0.0", "%s"]' "{all_interfaces}"
    ip -o -4 addr show 2>/dev/null | while read -r _ iface _ cidr _; do
        address=${{cidr%/*}}
        case $address in
            127.* | "") continue ;;
        esac
        printf ', ["%s", "%s (%s)"]' "$address" "$address" "$iface"
    done
}}

addresses=$(list_addresses)
"""

_CURRENT_SH = """# The current values: config.toml in the package's data folder, and what the
# installation recorded in its etc folder (see `dsmpacs dsm postinst`).
pkg="${SYNOPKG_PKGNAME:-dsmpacs}"
config="${SYNOPKG_PKGVAR:-${PACS_DSM_ROOT:-}/var/packages/$pkg/var}/config.toml"
installer="${PACS_DSM_ROOT:-}/var/packages/$pkg/etc/installer.conf"

# A `name = value` line of config.toml, its TOML quoting undone, then escaped for JSON.
setting() {
    sed -n "s/^$1 *= *//p" "$config" 2>/dev/null | head -n 1 \\
        | sed -e 's/^"\\(.*\\)"$/\\1/' -e 's/\\\\\\(.\\)/\\1/g' \\
        | sed -e 's/\\\\/\\\\\\\\/g' -e 's/"/\\\\"/g'
}

ae_title=$(setting ae_title)
dicom_host=$(setting dicom_host)
dicom_port=$(setting dicom_port)
web_port=$(setting web_port)
share=$(sed -n 's/^share_name=//p' "$installer" 2>/dev/null | head -n 1)
share=${share:-pacs}
case $(setting database_url) in
    mysql:*) database="MariaDB" ;;
    *) database="SQLite" ;;
esac
"""


def install_script(lang: str) -> str:
    return (_HEADER.format(what="install wizard", lang=lang)
            + _ADDRESSES_SH.format(all_interfaces=t("all_interfaces", lang))
            + '\ncat >"${SYNOPKG_TEMP_LOGFILE:?}" <<EOF\n' + _heredoc_json(install_steps(lang))
            + "\nEOF\n")


def _defaults_sh() -> str:
    """A setting absent from config.toml has the application's default value (not the
    wizard's: the wizard always writes the ports, so a file without them predates it)."""
    from dsmpacs.settings import Settings

    defaults = Settings()
    return "".join(f'{name}=${{{name}:-{getattr(defaults, name)}}}\n'
                   for name in ("ae_title", "dicom_host", "dicom_port", "web_port"))


def upgrade_script(lang: str) -> str:
    return (_HEADER.format(what="upgrade wizard", lang=lang) + _CURRENT_SH + _defaults_sh()
            + '\ncat >"${SYNOPKG_TEMP_LOGFILE:?}" <<EOF\n' + _heredoc_json(upgrade_steps(lang))
            + "\nEOF\n")


def write_all(out: Path) -> list[Path]:
    """Write WIZARD_UIFILES/*: scripts 0755 (DSM refuses a non-executable one), JSON 0644."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for lang in LANGS:
        suffix = "" if lang == "enu" else f"_{lang}"
        for name, text, mode in (
                (f"install_uifile{suffix}.sh", install_script(lang), 0o755),
                (f"upgrade_uifile{suffix}.sh", upgrade_script(lang), 0o755),
                (f"uninstall_uifile{suffix}",
                 json.dumps(uninstall_steps(lang), ensure_ascii=False, indent=1) + "\n", 0o644)):
            path = out / name
            path.write_text(text, encoding="utf-8")
            path.chmod(mode)
            written.append(path)
    return written
