"""``/-/`` introspection: health and version for anyone (monitoring needs no
account and learns nothing about patients), the effective settings for admins.

Anonymous callers learn the product version and whether each health check
passes, and nothing about the platform or the deployment: an interpreter,
operating system or library version tells an attacker which known flaws to try,
and a process id, port, AE title or database error helps map the network. A
signed-in administrator sees those details (for support)."""
from __future__ import annotations

import platform
import sys
from importlib import metadata

from flask import Blueprint, jsonify

from dsmpacs import __version__, health
from dsmpacs.archive.migrations import LATEST_VERSION
from dsmpacs.archive.users import Permission
from dsmpacs.web import auth
from dsmpacs.web.services import services

bp = Blueprint("introspection", __name__, url_prefix="/-")


def _is_admin() -> bool:
    """A signed-in administrator: who sees the details these public pages hold back."""
    user = auth.current_user()
    return user is not None and user.can(Permission.ADMIN)


@bp.route("/health")
@auth.public
def health_check():
    """200 when the index answers, the storage takes writes with space left and
    the DICOM listener runs; 503 with the failing check otherwise. Details for
    a signed-in administrator only."""
    svc = services()
    report = health.check(svc.settings, svc.archive)
    response = jsonify(report if _is_admin() else health.public(report))
    response.status_code = 200 if report["status"] == "ok" else 503
    return response


# The libraries whose versions matter when an administrator reports a problem.
_LIBRARIES = ("pynetdicom", "pydicom", "peewee", "flask", "cheroot", "cryptography",
              "pylibjpeg", "pymysql")


def _platform_details() -> dict:
    libraries = {}
    for name in _LIBRARIES:
        try:
            libraries[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {"schema_version": LATEST_VERSION, "python": platform.python_version(),
            "python_implementation": platform.python_implementation(),
            "platform": platform.platform(), "executable": sys.executable, "libraries": libraries}


@bp.route("/version")
@auth.public
def version():
    """The product version for anyone; platform details only for a signed-in admin."""
    body = {"name": "DSM PACS", "version": __version__}
    if _is_admin():
        body.update(_platform_details())
    return jsonify(body)


@bp.route("/settings")
@auth.requires(Permission.ADMIN)
def settings():
    """Effective settings of this (web) process, secrets redacted."""
    return jsonify(services().settings.redacted())
