"""``/-/`` introspection: health and version for anyone (monitoring needs no
account and learns nothing about patients), the effective settings for admins."""
from __future__ import annotations

import platform

from flask import Blueprint, jsonify

from dsmpacs import __version__, health
from dsmpacs.archive.migrations import LATEST_VERSION
from dsmpacs.archive.users import Permission
from dsmpacs.web import auth
from dsmpacs.web.services import services

bp = Blueprint("introspection", __name__, url_prefix="/-")


@bp.route("/health")
@auth.public
def health_check():
    """200 when the index answers, the storage takes writes with space left and
    the DICOM listener runs; 503 with the failing check otherwise."""
    svc = services()
    report = health.check(svc.settings, svc.archive)
    response = jsonify(report)
    response.status_code = 200 if report["status"] == "ok" else 503
    return response


@bp.route("/version")
@auth.public
def version():
    return jsonify(name="DSM PACS", version=__version__, schema_version=LATEST_VERSION,
                   python=platform.python_version())


@bp.route("/settings")
@auth.requires(Permission.ADMIN)
def settings():
    """Effective settings of this (web) process, secrets redacted."""
    return jsonify(services().settings.redacted())
