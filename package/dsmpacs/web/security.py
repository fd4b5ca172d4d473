"""Response headers that make the browser enforce what the templates promise.

No inline script anywhere (script-src 'self'): patient names and descriptions
come from DICOM senders, and even a missed escape cannot run code. Pages may
be framed only by this origin (DSM opens the UI in a window of its own).
Pages with patient data are not cached by the browser or proxies.

A response to an HTTPS request (served by us with web_tls, or by the trusted
reverse proxy, which says so in X-Forwarded-Proto) carries HSTS: the browser
then uses HTTPS for this host for a year, even when a link or a typed address
says http. Without includeSubDomains: the NAS's name may have subdomains that
serve other things, not all of them over HTTPS. Never on plain HTTP (RFC 6797
forbids it, and it would lock out a site that only speaks HTTP).
"""
from __future__ import annotations

from flask import Flask, Response, request

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data: blob:",
    "media-src 'self' blob:",
    "connect-src 'self'",
    "worker-src 'self'",
    "font-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'self'",
])
HSTS = "max-age=31536000"


# Added when the response has not set them itself. Lower-cased names to compare:
# werkzeug's Headers.setdefault scans every header, case-folding each, once per name.
_DEFAULTS = tuple((name, name.lower(), value) for name, value in (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "SAMEORIGIN"),
    ("Referrer-Policy", "same-origin"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
))


def _headers(response: Response) -> Response:
    h = response.headers
    present = {key.lower() for key in h.keys()}
    for name, folded, value in _DEFAULTS:
        if folded not in present:
            h.add(name, value)
    if request.is_secure and "strict-transport-security" not in present:
        h.add("Strict-Transport-Security", HSTS)
    if "cache-control" not in present and request.endpoint != "static":
        h.add("Cache-Control", "no-store")
    return response


def init_app(app: Flask) -> None:
    app.after_request(_headers)
