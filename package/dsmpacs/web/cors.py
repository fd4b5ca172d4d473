"""Cross-origin access to DICOMweb for the origins in web_cors_origins (OHIF or
a portal hosted elsewhere); nothing for any other origin, nothing for the UI.

Only /dicom-web and /wado take part. A preflight (OPTIONS with
Access-Control-Request-Method) from an allowed origin is answered 204 here,
before authentication: browsers never send credentials with a preflight. From
any other origin nothing is answered here, so the preflight meets the normal
401 without allow headers and the browser blocks the request.

Access-Control-Allow-Credentials is never sent. Cross-origin clients
authenticate with an Authorization header (Basic or bearer), which a script
may send without it; cookies and cached HTTP credentials are then not usable
cross-origin, so the session cookie and the CSRF model stay same-origin.
"""
from __future__ import annotations

from flask import Flask, Response, request

from dsmpacs.settings import Settings
from dsmpacs.web.auth import API_PATH_PREFIX

WADO_URI_PATH = "/wado"
ALLOW_METHODS = "GET, POST, OPTIONS"
# Accept, with DICOMweb's quoted parameters, is not CORS-safelisted; the rest are what
# dicomweb-client (OHIF) and ordinary fetch() code send besides it.
ALLOW_HEADERS = "Authorization, Accept, Content-Type, X-Requested-With, Cache-Control"
# Safelisted ones (Content-Type, Content-Length...) are readable anyway.
EXPOSE_HEADERS = "Warning, Content-Location, Location, WWW-Authenticate, Retry-After"
MAX_AGE_SECONDS = "600"
EXTENSION = "dsmpacs.cors_origins"


def is_dicomweb_path(path: str) -> bool:
    return path == API_PATH_PREFIX or path.startswith(API_PATH_PREFIX + "/") or path == WADO_URI_PATH


def allowed_origin(app: Flask) -> str | None:
    """The request's Origin when it may use this DICOMweb route cross-origin, else None."""
    origin = request.headers.get("Origin")
    if origin and origin in app.extensions[EXTENSION] and is_dicomweb_path(request.path):
        return origin
    return None


def _set_common(response: Response, origin: str) -> None:
    response.headers["Access-Control-Allow-Origin"] = origin
    response.vary.add("Origin")


def init_app(app: Flask, settings: Settings) -> None:
    """Register before auth: a preflight must be answered before credentials are asked for."""
    app.extensions[EXTENSION] = settings.cors_origins
    if not settings.cors_origins:
        return

    def preflight():
        if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
            return None
        origin = allowed_origin(app)
        if origin is None:
            return None
        response = app.response_class(status=204)
        _set_common(response, origin)
        response.headers["Access-Control-Allow-Methods"] = ALLOW_METHODS
        response.headers["Access-Control-Allow-Headers"] = ALLOW_HEADERS
        response.headers["Access-Control-Max-Age"] = MAX_AGE_SECONDS
        return response

    def actual(response: Response) -> Response:
        origin = allowed_origin(app)
        if origin is not None and "Access-Control-Allow-Origin" not in response.headers:
            _set_common(response, origin)
            response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
        return response

    app.before_request(preflight)
    app.after_request(actual)
