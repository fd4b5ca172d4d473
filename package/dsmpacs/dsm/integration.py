"""The files through which DSM knows the package's ports: the .sc service file and ui/config.

Both carry ports, and the ports are the wizard's choice (or a later edit of
config.toml), so spk_build.sh ships them with the defaults and postinst writes
them again from the effective settings into the package's target directory.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from dsmpacs.settings import Settings

PACKAGE = "dsmpacs"
APP_ID = "com.dsmpacs.web"                    # INFO dsmappname; the key in ui/config
SERVICE_FILE = "app/dsmpacs.sc"               # relative to target; conf/resource port-config
UI_CONFIG = "ui/config"                       # relative to target; INFO dsmuidir="ui"
ICON_SIZES = (16, 24, 32, 48, 64, 72, 256)    # the desktop icon sizes DSM asks for
ICON_TEMPLATE = "images/dsmpacs_{0}.png"      # relative to ui/; DSM fills in the size


def service_file(settings: Settings) -> str:
    """INI read by DSM's firewall and port-forwarding pages (section names: [a-zA-Z0-9.-])."""
    services = [
        ("dsmpacs-dicom", "DICOM", "DSM PACS: DICOM storage, query and retrieve",
         settings.dicom_port),
        ("dsmpacs-web", "DSM PACS web", "DSM PACS: web viewer and DICOMweb (HTTP)",
         settings.web_port),
    ]
    if settings.dicom_tls_port:
        services.insert(1, ("dsmpacs-dicom-tls", "DICOM TLS", "DSM PACS: DICOM over TLS",
                            settings.dicom_tls_port))
    if not settings.dicom_plain:
        services.pop(0)
    if settings.ups_ws_port:
        services.append(("dsmpacs-ups-events", "DSM PACS UPS events",
                         "DSM PACS: UPS-RS event channel (WebSocket)", settings.ups_ws_port))
    if settings.hl7_port:
        services.append(("dsmpacs-hl7", "HL7 orders", "DSM PACS: HL7 v2 orders over MLLP",
                         settings.hl7_port))
    blocks = [
        f'[{name}]\ntitle="{title}"\ndesc="{desc}"\nport_forward="no"\ndst.ports="{port}/tcp"\n'
        for name, title, desc, port in services
    ]
    return "\n".join(blocks)


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
    """Write both files into the package's target directory; returns their paths."""
    sc = target / SERVICE_FILE
    ui = target / UI_CONFIG
    _replace(sc, service_file(settings))
    _replace(ui, json.dumps(ui_config(settings), indent=2) + "\n")
    return [sc, ui]
