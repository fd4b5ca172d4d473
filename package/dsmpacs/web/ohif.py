"""OHIF Viewer 3 served same-origin at /ohif/ (setting ohif_dir; docs/viewer.md).

The build is the unmodified ``dist/`` of the @ohif/app npm package (``dsmpacs
ohif fetch`` puts the pinned one in place). Served from this origin, OHIF's
DICOMweb requests go to our own /dicom-web with the session cookie: no CORS, no
password in the browser, and the same roles, scopes and audit trail as the
built-in viewer. Like every page, it needs a signed-in user (auth.py): an
anonymous request gets the login page (401), which comes back here afterwards.

That build was made for the site root (webpack publicPath "/", absolute links in
index.html and the CSS), and we cannot rebuild it. So three things are
rewritten on the way out, each a fixed string that is checked to be there:
index.html (links under /ohif/, no inline script), the webpack runtime's
public path in the few bundles that carry one, and ``url(/`` in stylesheets.
``app-config.js`` is ours: OHIF's data source pointed at /dicom-web.
"""
from __future__ import annotations

import json
import logging
import re
import threading
from pathlib import Path

from flask import Blueprint, Flask, Response, abort, request, send_file
from werkzeug.security import safe_join

from dsmpacs.web.services import EXTENSION

log = logging.getLogger(__name__)
bp = Blueprint("ohif", __name__, url_prefix="/ohif")
_BUILD = "dsmpacs.ohif"

# What OHIF needs beyond the rest of the UI's policy (security.py): its
# codecs compile WebAssembly, its UI libraries insert <style> elements, and
# its workers may start from blob: URLs. Still nothing from another origin.
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self' 'wasm-unsafe-eval'",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data: blob:",
    "media-src 'self' blob:",
    "connect-src 'self' data: blob:",
    "worker-src 'self' blob:",
    "font-src 'self' data:",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'self'",
])
WEBPACK_PUBLIC_PATH = b'__webpack_require__.p = "/";'
_INLINE_SCRIPT = re.compile(r"<script>.*?</script>", re.S)
_ROOT_LINK = re.compile(r'\b(href|src)="/(?!/)')
_CSS_ROOT_URL = re.compile(rb"url\(/(?!/)")


class Build:
    """One OHIF build directory and the rewritten copies of its few root-bound files."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self._lock = threading.Lock()
        self._rewritten: dict[str, tuple[tuple[int, int], bytes | None]] = {}

    def file(self, relative: str) -> Path | None:
        joined = safe_join(str(self.directory), relative)
        path = Path(joined) if joined else None
        return path if path is not None and path.is_file() else None

    def rewritten(self, path: Path, prefix: str) -> bytes | None:
        """The file with its root-relative references moved under ``prefix``, or
        None when it has none (then it is sent as it is, with conditional GETs).
        Cached per file and size/mtime: the main bundle is 17 MB."""
        if path.suffix not in (".js", ".css"):
            return None
        stat = path.stat()
        key = (stat.st_size, stat.st_mtime_ns)
        with self._lock:
            cached = self._rewritten.get(str(path))
            if cached is not None and cached[0] == key:
                return cached[1]
        data = path.read_bytes()
        if path.suffix == ".js":
            pointed = f'__webpack_require__.p = "{prefix}";'.encode()
            body = data.replace(WEBPACK_PUBLIC_PATH, pointed) if WEBPACK_PUBLIC_PATH in data else None
        else:
            body = _CSS_ROOT_URL.sub(b"url(" + prefix.encode(), data)
            body = None if body == data else body
        with self._lock:
            self._rewritten[str(path)] = (key, body)
        return body

    def index_html(self, prefix: str) -> str:
        """The build's index.html under ``prefix``, its inline scripts (PUBLIC_URL,
        the dynamic-import helper) replaced by our app-config.js, which sets both."""
        page = self.directory.joinpath("index.html").read_text(encoding="utf-8")
        page = _INLINE_SCRIPT.sub("", page)
        return _ROOT_LINK.sub(lambda m: f'{m.group(1)}="{prefix}', page)


def app_config(prefix: str, dicomweb: str, wado: str) -> str:
    """OHIF's window.config: one DICOMweb data source, this archive, same origin.
    Values as docs/dicomweb.md recommends for OHIF; the roots are made absolute
    in the browser (some OHIF code parses them as URLs)."""
    source = {
        "friendlyName": "DSM PACS",
        "name": "dsmpacs",
        "qidoSupportsIncludeField": True,
        "imageRendering": "wadors",
        "thumbnailRendering": "thumbnail",
        "thumbnailRequestStrategy": "fetch",
        "enableStudyLazyLoad": True,
        "supportsFuzzyMatching": False,
        "supportsWildcard": True,
        "staticWado": False,
        "singlepart": "bulkdata,video,pdf",
        "bulkDataURI": {"enabled": True},
        "omitQuotationForMultipartRequest": True,
    }
    config = {
        "routerBasename": prefix.rstrip("/") or "/",
        "extensions": [],
        "modes": [],
        "showStudyList": True,
        "maxNumberOfWebWorkers": 3,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": True,
        "showLoadingIndicator": True,
        "strictZSpacingForVolumeViewport": True,
        "defaultDataSourceName": "dsmpacs",
        "dataSources": [{"namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
                         "sourceName": "dsmpacs", "configuration": source}],
    }
    return (
        "// Written by DSM PACS (web/ohif.py) for this server: do not edit.\n"
        f"window.PUBLIC_URL = {json.dumps(prefix)};\n"
        "window.browserImportFunction = function (name) { return import(name); };\n"
        f"window.config = {json.dumps(config, indent=1)};\n"
        "(function (source) {\n"
        "  var origin = window.location.origin;\n"
        f"  source.qidoRoot = source.wadoRoot = origin + {json.dumps(dicomweb)};\n"
        f"  source.wadoUriRoot = origin + {json.dumps(wado)};\n"
        "})(window.config.dataSources[0].configuration);\n"
    )


def _build() -> Build:
    from flask import current_app

    return current_app.extensions[_BUILD]


def _prefix() -> str:
    return request.script_root + bp.url_prefix + "/"


def _headers(response: Response, cache: str) -> Response:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    # Cross-origin isolation lets OHIF use SharedArrayBuffer (its 3D views); every
    # resource it loads is from this origin, so require-corp costs nothing.
    response.headers["Cross-Origin-Embedder-Policy"] = "require-corp"
    response.headers["Cache-Control"] = cache
    return response


@bp.route("/", defaults={"path": ""})
@bp.route("/<path:path>")
def serve(path: str):
    build = _build()
    prefix = _prefix()
    if path == "app-config.js":
        body = app_config(prefix, request.script_root + "/dicom-web", request.script_root + "/wado")
        return _headers(Response(body, mimetype="text/javascript"), "no-store")
    found = build.file(path) if path and path != "index.html" else None
    if found is None:
        if "." in path.rsplit("/", 1)[-1]:
            abort(404)                       # a missing asset, not one of OHIF's routes
        # /ohif/, /ohif/viewer?StudyInstanceUIDs=...: the single-page app decides.
        return _headers(Response(build.index_html(prefix), mimetype="text/html"), "no-store")
    # Not patient data, but only for signed-in users: private, revalidated (ETag).
    body = build.rewritten(found, prefix)
    if body is None:
        response = send_file(found, conditional=True, max_age=None)
    else:
        response = Response(body, mimetype="text/css" if found.suffix == ".css" else "text/javascript")
        response.set_etag(f"{found.stat().st_mtime_ns:x}-{len(body):x}")
        response.make_conditional(request)
    return _headers(response, "private, no-cache")


def register(app: Flask) -> None:
    """Serve OHIF at /ohif/ when ohif_dir is set; otherwise /ohif/ does not exist (404)."""
    directory = app.extensions[EXTENSION].settings.ohif_dir
    if directory is None:
        return
    if not Path(directory, "index.html").is_file():
        # Logged, not fatal: the archive and its own viewer matter more than OHIF.
        log.error("ohif_dir %s holds no OHIF build (no index.html): /ohif/ is off; "
                  "`dsmpacs ohif fetch --dir %s` puts one there", directory, directory)
        return
    app.extensions[_BUILD] = Build(directory)
    app.register_blueprint(bp)
