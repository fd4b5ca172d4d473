"""The study browser and the viewer: server-rendered pages over archive/browse.py
and frames rendered on the server by dsmpacs.imaging.

Every route needs a signed-in user (auth's default); actions check their
permission: download needs EXPORT, send SEND, delete DELETE.
"""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("studies", __name__)

# Routes register themselves on bp when their module is imported.
from dsmpacs.web.browse import search, study, transfers, viewer  # noqa: E402,F401
