"""CSRF protection for everything a browser session can change.

Each session carries a random token. Every POST, PUT, PATCH or DELETE made
with the session cookie (or anonymously, like the login form) must send it
back, in the ``csrf_token`` form field or the ``X-CSRF-Token`` header; a
cross-site page cannot read it, so it cannot forge the request. Requests
authenticated by Basic or bearer credentials carry no cookie and need no
token, but one coming from another site's page (browsers replay cached Basic
credentials) is refused unless it comes from an origin in web_cors_origins.
"""
from __future__ import annotations

import hmac
import logging
import secrets

from flask import Flask, current_app, g, request, session
from markupsafe import Markup, escape
from werkzeug.exceptions import Forbidden

from dsmpacs.web import cors

log = logging.getLogger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
FIELD = "csrf_token"
HEADER = "X-CSRF-Token"
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class CSRFError(Forbidden):
    description = "csrf"


def token() -> str:
    value = session.get(FIELD)
    if not value:
        value = session[FIELD] = secrets.token_urlsafe(32)
    return value


def field() -> Markup:
    return Markup('<input type="hidden" name="{}" value="{}">').format(FIELD, escape(token()))


def _sent_token() -> str:
    sent = request.headers.get(HEADER, "")
    if not sent and request.mimetype in _FORM_TYPES:
        sent = request.form.get(FIELD, "")
    return sent


def _check():
    if request.method in SAFE_METHODS:
        return None
    if g.get("auth_method") in ("basic", "bearer"):
        # An origin in web_cors_origins may (OHIF storing with STOW-RS from its own host).
        if request.headers.get("Sec-Fetch-Site") == "cross-site" and cors.allowed_origin(current_app) is None:
            log.warning("refused a cross-site %s %s with API credentials", request.method, request.path)
            raise CSRFError()
        return None
    expected = session.get(FIELD)
    sent = _sent_token()
    if not expected or not sent or not hmac.compare_digest(sent.encode(), expected.encode()):
        log.warning("refused %s %s from %s: CSRF token %s", request.method, request.path,
                    request.remote_addr, "missing" if not sent else "wrong")
        raise CSRFError()
    return None


def init_app(app: Flask) -> None:
    # Registered after auth: g.auth_method tells how the request was authenticated.
    app.before_request(_check)
    app.jinja_env.globals.update(csrf_token=token, csrf_field=field)
