"""DICOMweb under /dicom-web (QIDO-RS, WADO-RS, STOW-RS) and WADO-URI at /wado.

Small modules, one job each: accept.py (content negotiation), multipart.py
(multipart/related both ways), dicomjson.py (DICOM JSON), qido.py, wado.py
(instances, metadata, bulk data), frames.py, rendered.py (rendered and
thumbnail), stow.py, wado_uri.py, ups.py (UPS-RS workitems: the reading worklist), ups_subscribers.py
(UPS-RS subscriptions; the events go out over web/upsws.py). The views are thin:
matching is archive/query.py, selection archive/retrieve.py, storing
archive/ingest.py. See docs/dicomweb.md.
"""
from __future__ import annotations

from flask import Flask


def register(app: Flask) -> None:
    from dsmpacs.web.dicomweb import (  # noqa: F401  (routes)
        frames,
        qido,
        rendered,
        stow,
        ups,
        ups_subscribers,
        wado,
        wado_uri,
    )
    from dsmpacs.web.dicomweb.common import bp, uri_bp

    app.register_blueprint(bp)
    app.register_blueprint(uri_bp)
