"""Error pages: a localized page for a browser, JSON for an API client."""
from __future__ import annotations

import logging

from flask import Flask, jsonify, render_template, request
from werkzeug.exceptions import HTTPException, ServiceUnavailable

from dsmpacs.archive.database import IndexProblem
from dsmpacs.web import auth
from dsmpacs.web.i18n import _

log = logging.getLogger(__name__)
TITLED = (400, 403, 404, 405, 410, 413, 429, 500, 503)     # error.<code> exists in the catalogs


def _respond(exc: HTTPException):
    code = exc.code or 500
    if code == 401:
        return auth.unauthorized()
    headers = {}
    retry = getattr(exc, "retry_after", None)
    if retry:
        headers["Retry-After"] = str(retry)
    title_key = f"error.{code}" if code in TITLED else "error.other"
    if auth.wants_html():
        body = render_template("error.html", code=code, title_key=title_key,
                               reason=exc.description if isinstance(exc.description, str) else "")
        return body, code, headers
    # detail stays English for API clients and logs; title is what a page shows the user.
    response = jsonify(error=exc.name, status=code, title=_(title_key, code=code),
                       detail=exc.description if isinstance(exc.description, str) else "")
    response.status_code = code
    response.headers.update(headers)
    return response


def _index_problem(exc: IndexProblem):
    log.error("%s %s: %s", request.method, request.path, exc)
    return _respond(ServiceUnavailable("index"))


def init_app(app: Flask) -> None:
    app.register_error_handler(HTTPException, _respond)
    app.register_error_handler(IndexProblem, _index_problem)
