"""Request bodies: refuse a Content-Encoding before anything reads the body.

A gzip or deflate body inflates to any size from a small upload, and nothing
here would bound it: werkzeug passes the compressed stream through, and the
STOW-RS size limits count the bytes on the wire. No DICOMweb client we serve
compresses its uploads (a Deflated transfer syntax inside a part is another
matter: archive/inflate.py bounds that). So anything but identity gets 415,
after authentication (an anonymous caller still gets 401) and before the body.
"""
from __future__ import annotations

from flask import Flask, request
from werkzeug.exceptions import UnsupportedMediaType

ACCEPTED = frozenset({"", "identity"})


def _check_encoding():
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in ACCEPTED:
        raise UnsupportedMediaType(
            f"Content-Encoding {encoding[:40]!r} is not accepted; send the body uncompressed")
    return None


def init_app(app: Flask) -> None:
    app.before_request(_check_encoding)
