"""The files through which DSM knows the package's ports: the .sc service file and ui/config.

Both carry ports, and the ports are the wizard's choice (or a later edit of
config.toml). DSM's port-config worker copies ``target/app/dsmpacs.sc`` into its
services before postinst runs, so the package ships that path as a link to
``/var/packages/dsmpacs/var/dsmpacs.sc``, which preinst writes from the wizard's
answers: the worker registers the chosen ports from the start. postinst and
every start write both files again from the effective settings.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from dsmpacs.dsm import wizard
from dsmpacs.settings import Settings

PACKAGE = "dsmpacs"
APP_ID = "com.dsmpacs.web"                    # INFO dsmappname; the key in ui/config
SERVICE_FILE = "app/dsmpacs.sc"               # relative to target; conf/resource port-config
SERVICE_FILE_DATA = "dsmpacs.sc"              # relative to var (the data dir): the link's target
SERVICE_FILE_LINK = f"/var/packages/{PACKAGE}/var/{SERVICE_FILE_DATA}"
UI_CONFIG = "ui/config"                       # relative to target; INFO dsmuidir="ui"
ICON_SIZES = (16, 24, 32, 48, 64, 72, 256)    # the desktop icon sizes DSM asks for
ICON_TEMPLATE = "images/dsmpacs_{0}.png"      # relative to ui/; DSM fills in the size


def service_file(settings: Settings) -> str:
    """INI read by DSM's firewall and port-forwarding pages (preinst writes the wizard's part
    of it: the ports below are not in the wizard, so postinst adds them)."""
    extra = []
    if settings.ups_ws_port:
        extra.append(("dsmpacs-ups-events", "DSM PACS UPS events",
                      "DSM PACS: UPS-RS event channel (WebSocket)", settings.ups_ws_port))
    if settings.hl7_port:
        extra.append(("dsmpacs-hl7", "HL7 orders", "DSM PACS: HL7 v2 orders over MLLP",
                      settings.hl7_port))
    return wizard.service_file(settings.dicom_port, settings.web_port, settings.dicom_tls_port,
                               settings.dicom_plain, extra)


def icon_address(settings: Settings) -> tuple[str, int]:
    """(protocol, port) the desktop icon opens on the NAS's address: DSM's reverse proxy
    rule when there is one (HTTPS with the NAS's certificate), else the web port."""
    if settings.web_proxy_port:
        return "https", settings.web_proxy_port
    return ("https" if settings.web_tls else "http"), settings.web_port


def ui_config(settings: Settings) -> dict:
    """A DSM desktop icon that opens the web UI in a new window."""
    protocol, port = icon_address(settings)
    return {".url": {APP_ID: {
        "type": "url",
        "title": "DSM PACS",
        "desc": "DICOM archive and web viewer",
        "icon": ICON_TEMPLATE,
        "protocol": protocol,
        "port": str(port),
        "url": "/",
        "allUsers": True,
        "grantPrivilege": "all",
        "advanceGrantPrivilege": True,
    }}}


def _replace(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    # Read by DSM itself (its web server for the desktop icon, its firewall page),
    # not by the package user: world-readable whatever the process umask says.
    tmp.chmod(0o644)
    os.replace(tmp, path)


def write(target: Path, settings: Settings) -> list[Path]:
    """Write the .sc file (into the data directory, where the package's link points; into
    target itself where it holds a plain file) and ui/config; returns their paths."""
    written = [settings.data_dir / SERVICE_FILE_DATA]
    sc = target / SERVICE_FILE
    if not sc.is_symlink():
        written.append(sc)
    for path in written:
        _replace(path, service_file(settings))
    ui = target / UI_CONFIG
    _replace(ui, json.dumps(ui_config(settings), indent=2) + "\n")
    return [*written, ui]
